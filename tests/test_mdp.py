"""Tests for tdjax.mdp: builders against hand-checked cases, policy evaluation and value iteration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tdjax


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def test_circle_mdp_by_hand_and_its_value_function():
    P, r = tdjax.circle_mdp(3, 1)
    np.testing.assert_array_equal(P, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(r, [0, 1, 0])
    P, r = tdjax.circle_mdp()
    assert P.shape == (50, 50) and r[25] == 1 and r.sum() == 1
    gamma = 0.9
    v = np.asarray(tdjax.policy_evaluation(P, r, gamma))
    x = np.arange(50)
    np.testing.assert_allclose(v, gamma ** ((25 - x) % 50) / (1 - gamma**50), rtol=1e-12)
    lam = np.linalg.eigvals(P)  # n-th roots of unity
    np.testing.assert_allclose(np.abs(lam), 1.0, atol=1e-12)


@pytest.mark.parametrize("use_jit", [False, True])
def test_policy_evaluation_against_numpy_solve(use_jit):
    rng = np.random.default_rng(0)
    A = rng.random((7, 7))
    P, r = A / A.sum(1, keepdims=True), rng.standard_normal(7)
    fn = jax.jit(tdjax.policy_evaluation) if use_jit else tdjax.policy_evaluation
    v = np.asarray(fn(P, r, 0.95))
    np.testing.assert_allclose(v, np.linalg.solve(np.eye(7) - 0.95 * P, r), rtol=1e-12)
    np.testing.assert_allclose(v, r + 0.95 * P @ v, atol=1e-12)  # the Bellman fixed point (eq. 2)


def test_random_walk_mdp_structure_and_seeding():
    P, r = tdjax.random_walk_mdp(40, seed=3)
    tdjax.check_transition_matrix(P)
    A = P > 0
    np.testing.assert_array_equal(A, A.T)  # undirected
    deg = A.sum(1)
    np.testing.assert_allclose(P[A], (1.0 / deg[:, None] * np.ones((1, 40)))[A])  # uniform over neighbours
    pi = deg / deg.sum()  # reversible with respect to the degree distribution
    np.testing.assert_allclose(pi[:, None] * P, (pi[:, None] * P).T, atol=1e-15)
    np.testing.assert_allclose(np.linalg.eigvals(P).imag, 0.0, atol=1e-8)
    P2, r2 = tdjax.random_walk_mdp(40, seed=3)
    np.testing.assert_array_equal(P, P2)
    np.testing.assert_array_equal(r, r2)
    assert not np.array_equal(P, tdjax.random_walk_mdp(40, seed=4)[0])
    Pd, rd = tdjax.random_walk_mdp(40, directed=True, seed=3, reward_state=5)
    tdjax.check_transition_matrix(Pd)
    assert np.sum(np.abs(np.linalg.eigvals(Pd).imag) > 1e-6) > 0  # complex pairs
    np.testing.assert_array_equal(rd, np.eye(40)[5])
    Pe, _ = tdjax.random_walk_mdp(5, edge_prob=0.0)  # no edges: every state gets a self-loop
    np.testing.assert_array_equal(Pe, np.eye(5))


def test_gridworld_by_hand():
    mdp = tdjax.gridworld_mdp(["..G"], step_reward=-0.1)
    np.testing.assert_array_equal(mdp.states, [[0, 0], [0, 1], [0, 2]])
    np.testing.assert_array_equal(mdp.terminal, [False, False, True])
    up, right, down, left = 0, 1, 2, 3
    np.testing.assert_array_equal(mdp.P[0, right], [0, 1, 0])
    np.testing.assert_array_equal(mdp.P[0, left], [1, 0, 0])
    np.testing.assert_array_equal(mdp.P[0, up], [1, 0, 0])
    np.testing.assert_array_equal(mdp.P[0, down], [1, 0, 0])  # one row: down bumps into the wall too
    np.testing.assert_array_equal(mdp.P[1, right], [0, 0, 1])
    np.testing.assert_array_equal(mdp.P[2, left], [0, 0, 1])  # absorbing goal
    np.testing.assert_allclose(mdp.R[1], [-0.1, 0.9, -0.1, -0.1])
    np.testing.assert_allclose(mdp.R[2], 0.0)
    slippy = tdjax.gridworld_mdp(["..G"], slip=0.4)
    # from state 1, action right: 0.6 intended + 0.4/4 for each of the four actions.
    np.testing.assert_allclose(slippy.P[1, right], [0.1, 0.2, 0.7])
    np.testing.assert_allclose(slippy.R[1, right], 0.7)
    walls = tdjax.gridworld_mdp([".#", ".G"])
    assert walls.P.shape == (3, 4, 3)
    np.testing.assert_array_equal(walls.P[0, right], [1, 0, 0])  # blocked by the wall


def _brute_force_optimal_value(P, R, gamma):
    n, A = R.shape
    best = np.full(n, -np.inf)
    for actions in itertools.product(range(A), repeat=n):
        idx = np.arange(n)
        v = np.linalg.solve(np.eye(n) - gamma * P[idx, actions], R[idx, actions])
        best = np.maximum(best, v)
    return best


@pytest.mark.parametrize("use_jit", [False, True])
def test_value_iteration_against_brute_force(use_jit):
    rng = np.random.default_rng(1)
    n, A, gamma = 5, 3, 0.9
    P = rng.random((n, A, n)) ** 2
    P /= P.sum(-1, keepdims=True)
    R = rng.standard_normal((n, A))
    fn = jax.jit(lambda P, R: tdjax.value_iteration(P, R, gamma)) if use_jit else (
        lambda P, R: tdjax.value_iteration(P, R, gamma))
    res = fn(P, R)
    v_star = _brute_force_optimal_value(P, R, gamma)
    np.testing.assert_allclose(res.v, v_star, atol=1e-9)
    P_pi, r_pi = tdjax.policy_markov_chain(P, R, res.policy)
    np.testing.assert_allclose(tdjax.policy_evaluation(P_pi, r_pi, gamma), v_star, atol=1e-9)
    np.testing.assert_allclose(res.q, R + gamma * P @ np.asarray(res.v), atol=1e-12)


def test_value_iteration_with_gamma_zero_and_on_a_gridworld():
    R = np.array([[1.0, 2.0], [0.5, -1.0]])
    P = np.tile(np.eye(2)[:, None, :], (1, 2, 1))
    np.testing.assert_allclose(tdjax.value_iteration(P, R, 0.0).v, [2.0, 0.5])
    mdp = tdjax.gridworld_mdp(["...", "..G"])
    res = tdjax.value_iteration(mdp.P, mdp.R, 0.9)
    # Distance d to the goal: V = 0.9^(d−1) (reward 1 on entering).
    dist = np.abs(mdp.states - np.array([1, 2])).sum(1)
    expected = np.where(mdp.terminal, 0.0, 0.9 ** (dist - 1))
    np.testing.assert_allclose(res.v, expected, atol=1e-9)


def test_policy_markov_chain_deterministic_and_stochastic():
    mdp = tdjax.gridworld_mdp(["..G"])
    P_pi, r_pi = tdjax.policy_markov_chain(mdp.P, mdp.R, np.array([1, 1, 0]))
    np.testing.assert_array_equal(P_pi, [[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(r_pi, [0, 1, 0])
    uniform = np.full((3, 4), 0.25)
    P_u, r_u = tdjax.policy_markov_chain(mdp.P, mdp.R, uniform)
    np.testing.assert_allclose(P_u, mdp.P.mean(1))
    np.testing.assert_allclose(r_u, mdp.R.mean(1))


def test_mountain_car_transition_by_hand():
    mdp = tdjax.mountain_car_mdp(5, 5)
    n = 25
    assert mdp.P.shape == (n, 3, n) and mdp.R.shape == (n, 3) and mdp.states.shape == (n, 2)
    tdjax.check_transition_matrix(mdp.P)
    xs, vs = np.linspace(-1.2, 0.5, 5), np.linspace(-0.07, 0.07, 5)
    # State (x = −0.775, v = 0), push right: classic physics by hand, then bilinear weights.
    s = 1 * 5 + 2
    np.testing.assert_allclose(mdp.states[s], [xs[1], vs[2]])
    v1 = 0.0 + 0.001 - 0.0025 * np.cos(3 * xs[1])
    x1 = xs[1] + v1
    wx = (x1 - xs[1]) / (xs[2] - xs[1]) if x1 >= xs[1] else None
    assert v1 > 0 and wx is not None
    wv = (v1 - vs[2]) / (vs[3] - vs[2])
    expected = np.zeros(n)
    expected[1 * 5 + 2] = (1 - wx) * (1 - wv)
    expected[1 * 5 + 3] = (1 - wx) * wv
    expected[2 * 5 + 2] = wx * (1 - wv)
    expected[2 * 5 + 3] = wx * wv
    np.testing.assert_allclose(mdp.P[s, 2], expected, atol=1e-12)
    # The goal column is absorbing with zero reward; other states pay −1.
    goal = np.flatnonzero(mdp.terminal)
    np.testing.assert_array_equal(goal, np.arange(20, 25))
    np.testing.assert_allclose(mdp.P[goal[0], 1], np.eye(n)[goal[0]])
    np.testing.assert_allclose(mdp.R[mdp.terminal], 0.0)
    np.testing.assert_allclose(mdp.R[~mdp.terminal], -1.0)


def test_mountain_car_value_iteration_policy_is_near_optimal():
    mdp = tdjax.mountain_car_mdp(20, 20)
    gamma = 0.99
    res = tdjax.value_iteration(mdp.P, mdp.R, gamma)
    P_vi, r_vi = tdjax.policy_markov_chain(mdp.P, mdp.R, res.policy)
    v_vi = np.asarray(tdjax.policy_evaluation(P_vi, r_vi, gamma))
    P_e, r_e = tdjax.policy_markov_chain(mdp.P, mdp.R, tdjax.mountain_car_energy_policy(mdp.states))
    v_e = np.asarray(tdjax.policy_evaluation(P_e, r_e, gamma))
    assert np.all(v_vi >= v_e - 1e-8)  # optimal in the discretised MDP
    assert v_vi.min() > -80  # every state reaches the goal (a never-ending episode would be −100)
    assert v_e.min() > -90  # the heuristic reaches it too, a little slower
    # Starting at rest in the valley takes dozens of steps: a non-trivial value function.
    valley = np.argmin(np.abs(mdp.states[:, 0] + 0.5) + np.abs(mdp.states[:, 1]))
    assert -70 < v_vi[valley] < -15


def test_bad_inputs_name_the_argument():
    P, r = tdjax.circle_mdp(4, 0)
    with pytest.raises(ValueError, match="`P` must be a square"):
        tdjax.policy_evaluation(P[:3], r, 0.9)
    with pytest.raises(ValueError, match="`P` must be row-stochastic"):
        tdjax.policy_evaluation(2 * P, r, 0.9)
    with pytest.raises(ValueError, match="`gamma` must lie in"):
        tdjax.policy_evaluation(P, r, 1.0)
    with pytest.raises(ValueError, match="`r` must have shape"):
        tdjax.policy_evaluation(P, r[:3], 0.9)
    with pytest.raises(ValueError, match="`P` must be row-stochastic"):
        tdjax.check_transition_matrix(P * 0.5)
    with pytest.raises(ValueError, match=r"`P` must have shape \[n, A, n\]"):
        tdjax.value_iteration(P, np.zeros((4, 1)), 0.9)
    with pytest.raises(ValueError, match="`R` must have shape"):
        tdjax.value_iteration(P[:, None, :], np.zeros((4, 2)), 0.9)
    with pytest.raises(ValueError, match="`policy`"):
        tdjax.policy_markov_chain(P[:, None, :], np.zeros((4, 1)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="`reward_state`"):
        tdjax.circle_mdp(10, 10)
    with pytest.raises(ValueError, match="`layout`"):
        tdjax.gridworld_mdp(["..", "..."])
    with pytest.raises(ValueError, match="`edge_prob`"):
        tdjax.random_walk_mdp(10, edge_prob=1.5)
    # Under jit the shape checks still run at trace time.
    with pytest.raises(ValueError, match="`P` must be a square"):
        jax.jit(lambda P: tdjax.policy_evaluation(P, r, 0.9))(jnp.ones((4, 3)))
