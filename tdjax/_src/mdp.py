"""Tabular MDPs and Markov reward processes, with exact policy evaluation and value iteration.

The environments of Lyle et al. 2022 §4 and App. C.2: the circle MDP of Fig. 9, random walks on random
graphs (Fig. 10), a discretised MountainCar with a near-optimal policy (Fig. 1), and small gridworlds.

Conventions (shared with `tdjax.dynamics`):
  * A Markov reward process under a fixed policy π is a pair `(P, r)`: `P` is the [n, n] row-stochastic
    matrix Pπ (`P[x, y] = Pr(x' = y | x)`) and `r` the [n] expected reward Rπ(x).
  * An MDP with actions is a `TabularMDP` with `P` of shape [n, A, n] (`P[x, a, y] = Pr(y | x, a)`) and
    `R` of shape [n, A]; `policy_markov_chain(P, R, policy)` turns it into `(Pπ, Rπ)`.
  * Builders run on the host and return NumPy float64 arrays. tdjax functions accept them and compute
    in JAX's default precision (float32 unless x64 is enabled: `with jax.enable_x64(True): ...`).
  * Value checks (row sums, γ range) run when the inputs are concrete; under `jax.jit` only shapes are
    checked at trace time, so validate once outside jit with `check_transition_matrix` if needed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tdjax._src import validation

__all__ = [
    "TabularMDP",
    "ValueIterationResult",
    "check_transition_matrix",
    "policy_evaluation",
    "value_iteration",
    "policy_markov_chain",
    "circle_mdp",
    "random_walk_mdp",
    "gridworld_mdp",
    "mountain_car_mdp",
    "mountain_car_energy_policy",
]


# --------------------------------------------------------------------------------------------------
# Argument checks (shared with tdjax._src.dynamics). Shape checks always run (at trace time under jit);
# value checks only run on concrete inputs.
# --------------------------------------------------------------------------------------------------


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _float_dtype(*xs: Any) -> Any:
    """The common floating dtype of the arrays in `xs` (ints promote to JAX's default float)."""
    dtype = jnp.result_type(*xs, float)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError("tdjax.dynamics/mdp work with real arrays; got a complex input.")
    return dtype


def _value_tol(dtype: Any) -> float:
    return float(np.sqrt(jnp.finfo(dtype).eps))


def _check_matrix(P: Any, name: str, fn: str, dtype: Any = None, stochastic: bool = True) -> jax.Array:
    value = validation.concrete(P)  # before jnp.asarray, which stages NumPy inputs under jit
    P = jnp.asarray(P)
    if jnp.issubdtype(P.dtype, jnp.complexfloating):
        raise ValueError(f"{fn}: `{name}` must be real, got dtype {P.dtype}.")
    P = P.astype(dtype if dtype is not None else _float_dtype(P))
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"{fn}: `{name}` must be a square [n, n] matrix, got shape {P.shape}.")
    if P.shape[0] == 0:
        raise ValueError(f"{fn}: `{name}` is empty (shape {P.shape}).")
    if stochastic and value is not None:
        _check_stochastic_values(value.astype(jnp.dtype(P.dtype)), name, fn)
    return P


def _check_stochastic_values(P: np.ndarray, name: str, fn: str) -> None:
    tol = _value_tol(P.dtype)
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{fn}: `{name}` has non-finite entries.")
    if P.min() < -tol:
        x, y = np.unravel_index(np.argmin(P), P.shape)
        raise ValueError(f"{fn}: `{name}` must be row-stochastic but {name}[{x}, {y}] = {P[x, y]:.3g} < 0.")
    sums = P.sum(axis=-1)
    bad = np.abs(sums - 1.0) > tol * max(1.0, math.sqrt(P.shape[-1]))
    if np.any(bad):
        row = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
        raise ValueError(
            f"{fn}: `{name}` must be row-stochastic (each row sums to 1) but row {row if len(row) > 1 else row[0]} "
            f"sums to {sums[row]:.6g}. Normalise with P / P.sum(-1, keepdims=True)."
        )


def check_transition_matrix(P: Any, name: str = "P") -> None:
    """Raises a ValueError naming `name` unless P is finite and row-stochastic: [n, n] or [n, A, n].

    The tdjax functions run this check themselves on concrete inputs; under `jax.jit` they can only check
    shapes, so call this once outside jit to validate values.
    """
    P = np.asarray(P)
    if not ((P.ndim == 2 or P.ndim == 3) and P.shape[0] == P.shape[-1]):
        raise ValueError(f"check_transition_matrix: `{name}` must be a square [n, n] matrix (or an [n, A, n] "
                         f"MDP transition tensor), got {P.shape}.")
    _check_stochastic_values(P.astype(np.float64), name, "check_transition_matrix")


def _check_gamma(gamma: Any, fn: str, dtype: Any) -> jax.Array:
    value = validation.concrete(gamma)  # before jnp.asarray, which stages a Python float under jit
    g = jnp.asarray(gamma)
    if g.shape != ():
        raise ValueError(f"{fn}: `gamma` must be a scalar, got shape {g.shape}.")
    if value is None:
        validation.check_interval(fn, "gamma", g, 0.0, 1.0, closed_hi=False)
    else:
        gv = float(value)
        if not (0.0 <= gv < 1.0):
            raise ValueError(f"{fn}: `gamma` must lie in [0, 1), got {gv}.")
        validation.check_precision(dtype, 1.0 / (1.0 - gv), f"`gamma` = {gv:g}: the horizon 1/(1 − γ)")
    return g.astype(dtype)


def _check_vector(v: Any, n: int, name: str, fn: str, dtype: Any) -> jax.Array:
    value = validation.concrete(v)  # before jnp.asarray, which stages NumPy inputs under jit
    v = jnp.asarray(v)
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        raise ValueError(f"{fn}: `{name}` must be real, got dtype {v.dtype}.")
    if v.shape != (n,):
        raise ValueError(f"{fn}: `{name}` must have shape ({n},) (one entry per state), got {v.shape}.")
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(f"{fn}: `{name}` has non-finite entries (NaN or inf) at states "
                         f"{np.flatnonzero(~np.isfinite(value))[:5].tolist()}.")
    return v.astype(dtype)


# --------------------------------------------------------------------------------------------------
# Policy evaluation and value iteration
# --------------------------------------------------------------------------------------------------


def policy_evaluation(P: Any, r: Any, gamma: Any) -> jax.Array:
    """Vπ = (I − γPπ)⁻¹ Rπ, the fixed point of the Bellman operator Tπ V = Rπ + γPπ V (eq. 2).

    One O(n³) LU solve. Jit-able (shape checks at trace time; row sums and γ ∈ [0, 1) are checked on
    concrete inputs only).

    Args:
      P: [n, n] row-stochastic transition matrix Pπ.
      r: [n] expected reward Rπ.
      gamma: scalar discount in [0, 1).

    Returns:
      [n] value function Vπ.

    Float32 loses about log10(1/(1 − γ)) digits; use float64 for γ near 1.
    """
    fn = "policy_evaluation"
    dtype = _float_dtype(P, r, gamma)
    P = _check_matrix(P, "P", fn, dtype)
    n = P.shape[0]
    r = _check_vector(r, n, "r", fn, dtype)
    g = _check_gamma(gamma, fn, dtype)
    validation.report_nonfinite(P=P, r=r, gamma=g)
    return jnp.linalg.solve(jnp.eye(n, dtype=dtype) - g * P, r)


class ValueIterationResult(NamedTuple):
    v: jax.Array  # shape=[n]: V* to within `tol` in the sup norm.
    q: jax.Array  # shape=[n, A]: R + γ P V.
    policy: jax.Array  # shape=[n], int: greedy action argmax_a q.
    iterations: jax.Array  # shape=(), int: Bellman-optimality backups performed.


def _check_mdp(P: Any, R: Any, fn: str) -> tuple[jax.Array, jax.Array]:
    dtype = _float_dtype(P, R)
    P = jnp.asarray(P).astype(dtype)
    R = jnp.asarray(R).astype(dtype)
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"{fn}: `P` must have shape [n, A, n] (P[x, a, y] = Pr(y | x, a)), got {P.shape}.")
    if R.shape != P.shape[:2]:
        raise ValueError(f"{fn}: `R` must have shape [n, A] = {P.shape[:2]}, got {R.shape}.")
    if _is_concrete(P):
        _check_stochastic_values(np.asarray(P), "P", fn)
    return P, R


def value_iteration(
    P: Any, R: Any, gamma: Any, *, tol: Optional[float] = None, max_iterations: int = 100_000
) -> ValueIterationResult:
    """Value iteration V ← max_a [R(·, a) + γ Σ_y P(·, a, y) V(y)] (Bellman optimality operator, eq. 3).

    Stops when ‖V_{k+1} − V_k‖∞ ≤ tol·(1 − γ)/γ, which guarantees ‖V − V*‖∞ ≤ tol (or when the change
    reaches the rounding floor 10·eps·‖V‖∞). Each backup costs O(n²A); about log(tol)/log(γ) backups.
    Jit-able (a `lax.while_loop`).

    Args:
      P: [n, A, n] transition probabilities.
      R: [n, A] expected rewards.
      gamma: scalar discount in [0, 1).
      tol: sup-norm accuracy of V; default 1e-10·max(1, ‖R‖∞/(1 − γ)) in float64, 1e-5·(same) in float32.
      max_iterations: cap on the number of backups.

    Returns:
      A `ValueIterationResult` (v, q, greedy policy, iterations).
    """
    fn = "value_iteration"
    P, R = _check_mdp(P, R, fn)
    dtype = P.dtype
    g = _check_gamma(gamma, fn, dtype)
    eps = jnp.finfo(dtype).eps
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(R)) / (1.0 - g))
    tol_ = (1e-10 if dtype == jnp.float64 else 1e-5) * scale if tol is None else tol
    threshold = jnp.where(g > 0, tol_ * (1.0 - g) / jnp.maximum(g, eps), jnp.inf)

    def backup(v):
        return R + g * jnp.einsum("xay,y->xa", P, v)

    def cond(state):
        _, delta, it = state
        return ((it == 0) | (delta > threshold)) & (it < max_iterations)

    def body(state):
        v, _, it = state
        v_new = jnp.max(backup(v), axis=-1)
        delta = jnp.max(jnp.abs(v_new - v))
        floor = 10.0 * eps * jnp.max(jnp.abs(v_new))
        return v_new, jnp.where(delta <= floor, 0.0, delta), it + 1

    v0 = jnp.zeros(P.shape[0], dtype)
    v, _, iterations = jax.lax.while_loop(cond, body, (v0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0)))
    q = backup(v)
    return ValueIterationResult(v=v, q=q, policy=jnp.argmax(q, axis=-1), iterations=iterations)


def policy_markov_chain(P: Any, R: Any, policy: Any) -> tuple[jax.Array, jax.Array]:
    """(Pπ, Rπ): the Markov reward process an MDP induces under a policy.

    Pπ(x, y) = Σ_a π(a|x) P(x, a, y), Rπ(x) = Σ_a π(a|x) R(x, a). Jit-able.

    Args:
      P: [n, A, n] transition probabilities.
      R: [n, A] expected rewards.
      policy: [n] integer actions (deterministic) or [n, A] action probabilities. Integer actions are
        checked when concrete; traced ones only under `tdjax.checked` (JAX would give an all-zero row).

    Returns:
      (Pπ [n, n], Rπ [n]).
    """
    fn = "policy_markov_chain"
    P, R = _check_mdp(P, R, fn)
    n, A = R.shape
    policy = jnp.asarray(policy)
    if policy.shape == (n,) and jnp.issubdtype(policy.dtype, jnp.integer):
        validation.check_index(fn, "policy", policy, A, "actions")
        pi = jax.nn.one_hot(policy, A, dtype=P.dtype)
    elif policy.shape == (n, A):
        pi = policy.astype(P.dtype)
        if _is_concrete(pi):
            _check_stochastic_values(np.asarray(pi), "policy", fn)
    else:
        raise ValueError(
            f"{fn}: `policy` must be [n] integer actions or [n, A] probabilities with (n, A) = {(n, A)}, "
            f"got shape {policy.shape} and dtype {policy.dtype}."
        )
    return jnp.einsum("xa,xay->xy", pi, P), jnp.sum(pi * R, axis=-1)


# --------------------------------------------------------------------------------------------------
# Builders (host-side NumPy; float64)
# --------------------------------------------------------------------------------------------------


class TabularMDP(NamedTuple):
    """A finite MDP. Build (Pπ, Rπ) with `policy_markov_chain(mdp.P, mdp.R, policy)`."""

    P: np.ndarray  # shape=[n, A, n], float64: P[x, a, y] = Pr(x' = y | x, a).
    R: np.ndarray  # shape=[n, A], float64: expected reward of taking a in x.
    states: np.ndarray  # shape=[n, d], float64: coordinates of each state (plotting, kernels).
    terminal: np.ndarray  # shape=[n], bool: absorbing states (self-loop under every action, reward 0).


def circle_mdp(n_states: int = 50, reward_state: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """The circle MDP of Lyle et al. 2022 Fig. 9 under its fixed policy: x → x + 1 mod n, reward at one state.

    States are indexed 0, ..., n − 1 (the paper numbers them 1, ..., 50); `r[reward_state] = 1`, all other
    rewards 0, so Vπ(x) = γ^((reward_state − x) mod n) / (1 − γⁿ). Pπ is a permutation matrix: normal,
    with eigenvalues the n-th roots of unity (complex pairs).

    Returns:
      (P [n, n], r [n]) as NumPy float64 arrays.
    """
    if int(n_states) != n_states or n_states < 1:
        raise ValueError(f"circle_mdp: `n_states` must be a positive integer, got {n_states}.")
    if not 0 <= reward_state < n_states:
        raise ValueError(f"circle_mdp: `reward_state` must lie in [0, {n_states}), got {reward_state}.")
    idx = np.arange(n_states)
    P = np.zeros((n_states, n_states))
    P[idx, (idx + 1) % n_states] = 1.0
    r = np.zeros(n_states)
    r[reward_state] = 1.0
    return P, r


def random_walk_mdp(
    n_states: int,
    *,
    edge_prob: Optional[float] = None,
    directed: bool = False,
    seed: int = 0,
    reward_state: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random walk on an Erdős–Rényi graph G(n, p) (Lyle et al. 2022 Fig. 10, App. C.2).

    Pπ(x, y) = A(x, y) / deg(x) for the unweighted adjacency A (no self-loops). Undirected graphs give a
    reversible Pπ with a real spectrum; directed graphs (each ordered pair drawn independently) give
    complex eigenvalue pairs. A state without out-edges gets a self-loop so that Pπ stays stochastic.

    Args:
      n_states: number of states n.
      edge_prob: p; default min(1, 2·log(n)/n) (connected with high probability).
      directed: draw a directed graph.
      seed: NumPy seed; the same seed gives the same graph and rewards.
      reward_state: if given, r is one-hot at this state; otherwise r ~ N(0, 1) i.i.d. per state.

    Returns:
      (P [n, n], r [n]) as NumPy float64 arrays.
    """
    fn = "random_walk_mdp"
    if int(n_states) != n_states or n_states < 2:
        raise ValueError(f"{fn}: `n_states` must be an integer ≥ 2, got {n_states}.")
    p = min(1.0, 2.0 * math.log(n_states) / n_states) if edge_prob is None else float(edge_prob)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: `edge_prob` must lie in [0, 1], got {edge_prob}.")
    rng = np.random.default_rng(seed)
    A = (rng.random((n_states, n_states)) < p).astype(np.float64)
    np.fill_diagonal(A, 0.0)
    if not directed:
        A = np.triu(A, 1)
        A = A + A.T
    lonely = A.sum(axis=1) == 0
    A[lonely, lonely] = 1.0
    P = A / A.sum(axis=1, keepdims=True)
    if reward_state is None:
        r = rng.standard_normal(n_states)
    else:
        if not 0 <= reward_state < n_states:
            raise ValueError(f"{fn}: `reward_state` must lie in [0, {n_states}), got {reward_state}.")
        r = np.zeros(n_states)
        r[reward_state] = 1.0
    return P, r


_GRID_MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # up, right, down, left
_DEFAULT_GRID = ("....", "....", ".#..", "...G")


def gridworld_mdp(
    layout: Sequence[str] = _DEFAULT_GRID,
    *,
    slip: float = 0.0,
    goal_reward: float = 1.0,
    step_reward: float = 0.0,
) -> TabularMDP:
    """A gridworld from a text layout: '.' free cell, '#' wall, 'G' absorbing goal.

    Four actions (0 up, 1 right, 2 down, 3 left). A move into a wall or off the grid leaves the agent in
    place. With probability `slip` the action is replaced by one drawn uniformly from the four. Entering a
    goal pays `goal_reward`; every step from a non-goal cell also pays `step_reward`; goals are absorbing
    with reward 0. Walls are not states. States are the free cells in row-major order, with coordinates
    (row, column) in `states`.
    """
    fn = "gridworld_mdp"
    if isinstance(layout, str):
        raise ValueError(
            f"{fn}: `layout` must be a sequence of row strings, got the single string {layout!r} (which "
            f"would be read as one row per character). Fix: pass {layout.splitlines() or [layout]!r}, "
            "i.e. `layout.splitlines()` or a list of rows."
        )
    rows = [str(row) for row in layout]
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError(f"{fn}: `layout` must be a non-empty list of equal-length strings, got {layout!r}.")
    bad = {c for row in rows for c in row} - set(".#GS")
    if bad:
        raise ValueError(f"{fn}: `layout` may only contain '.', '#', 'G' (and 'S' as '.'), got {sorted(bad)}.")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"{fn}: `slip` must lie in [0, 1], got {slip}.")
    cells = [(i, j) for i, row in enumerate(rows) for j, c in enumerate(row) if c != "#"]
    if not cells:
        raise ValueError(f"{fn}: `layout` has no free cells.")
    index = {cell: k for k, cell in enumerate(cells)}
    n, A = len(cells), len(_GRID_MOVES)
    terminal = np.array([rows[i][j] == "G" for i, j in cells])
    det = np.zeros((n, A, n))  # deterministic effect of each action
    for k, (i, j) in enumerate(cells):
        for a, (di, dj) in enumerate(_GRID_MOVES):
            target = (i + di, j + dj)
            det[k, a, index.get(target, k) if not terminal[k] else k] = 1.0
    P = (1.0 - slip) * det + slip * det.mean(axis=1, keepdims=True)
    R = goal_reward * (P[:, :, terminal].sum(axis=-1)) + step_reward
    R[terminal] = 0.0
    return TabularMDP(P=P, R=R, states=np.array(cells, dtype=np.float64), terminal=terminal)


# Classic MountainCar (Moore 1990; gym's MountainCar-v0) constants.
_MC_MIN_POS, _MC_MAX_POS, _MC_GOAL = -1.2, 0.6, 0.5
_MC_MAX_SPEED, _MC_FORCE, _MC_GRAVITY = 0.07, 0.001, 0.0025


def _mountain_car_step(x: np.ndarray, v: np.ndarray, a: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.clip(v + (a - 1) * _MC_FORCE - _MC_GRAVITY * np.cos(3.0 * x), -_MC_MAX_SPEED, _MC_MAX_SPEED)
    x = np.clip(x + v, _MC_MIN_POS, _MC_MAX_POS)
    v = np.where((x <= _MC_MIN_POS) & (v < 0), 0.0, v)
    return x, v


def _interp_weights(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index and weight of the upper neighbour for linear interpolation on a uniform grid."""
    step = grid[1] - grid[0]
    pos = np.clip((values - grid[0]) / step, 0.0, len(grid) - 1.0)
    lo = np.minimum(np.floor(pos).astype(int), len(grid) - 2)
    return lo, pos - lo


def mountain_car_mdp(n_position: int = 30, n_velocity: int = 30, *, action_repeat: int = 1) -> TabularMDP:
    """A discretised MountainCar (Lyle et al. 2022 Fig. 1) with the classic deterministic physics.

    States are the grid points of positions linspace(−1.2, 0.5, n_position) × velocities
    linspace(−0.07, 0.07, n_velocity), position-major (`V.reshape(n_position, n_velocity)`). From a grid
    point, action a ∈ {0 push left, 1 no push, 2 push right} is applied `action_repeat` times with the
    MountainCar-v0 update

        v ← clip(v + (a − 1)·0.001 − 0.0025·cos(3x), ±0.07),  x ← clip(x + v, −1.2, 0.6),  v ← 0 at the left wall,

    and the continuous successor is spread over its four surrounding grid points with bilinear weights
    (a barycentric discretisation, Munos & Moore 2002: the next-state expectation of any function linear
    in (x, v) is exact). Reaching x ≥ 0.5 ends the episode: the grid points at x = 0.5 are absorbing with
    reward 0. Every decision in a non-terminal state pays −1.

    A near-optimal policy for Fig. 1: `value_iteration(mdp.P, mdp.R, γ).policy` (optimal for this
    discretisation), or the energy-pumping heuristic `mountain_car_energy_policy(mdp.states)`.
    """
    fn = "mountain_car_mdp"
    if n_position < 2 or n_velocity < 2:
        raise ValueError(f"{fn}: `n_position` and `n_velocity` must be ≥ 2, got {n_position}, {n_velocity}.")
    if int(action_repeat) != action_repeat or action_repeat < 1:
        raise ValueError(f"{fn}: `action_repeat` must be a positive integer, got {action_repeat}.")
    xs = np.linspace(_MC_MIN_POS, _MC_GOAL, n_position)
    vs = np.linspace(-_MC_MAX_SPEED, _MC_MAX_SPEED, n_velocity)
    X, V = np.meshgrid(xs, vs, indexing="ij")
    x0, v0 = X.ravel(), V.ravel()
    n = x0.size
    terminal = x0 >= _MC_GOAL
    P = np.zeros((n, 3, n))
    rows = np.arange(n)
    for a in range(3):
        x, v = x0.copy(), v0.copy()
        done = terminal.copy()
        for _ in range(action_repeat):
            x_new, v_new = _mountain_car_step(x, v, a)
            x, v = np.where(done, x, x_new), np.where(done, v, v_new)
            done = done | (x >= _MC_GOAL)
        x = np.where(done, _MC_GOAL, x)
        i, wx = _interp_weights(x, xs)
        j, wv = _interp_weights(v, vs)
        for di, wi in ((0, 1.0 - wx), (1, wx)):
            for dj, wj in ((0, 1.0 - wv), (1, wv)):
                np.add.at(P, (rows, a, (i + di) * n_velocity + (j + dj)), wi * wj)  # type: ignore[arg-type]
        P[terminal, a, :] = 0.0
        P[terminal, a, rows[terminal]] = 1.0
    R = np.where(terminal[:, None], 0.0, -1.0) * np.ones((1, 3))
    return TabularMDP(P=P, R=R, states=np.stack([x0, v0], axis=-1), terminal=terminal)


def mountain_car_energy_policy(states: Any) -> np.ndarray:
    """The energy-pumping heuristic for MountainCar: push in the direction of the velocity (right at rest).

    Args:
      states: [n, 2] (position, velocity), e.g. `mountain_car_mdp(...).states`.

    Returns:
      [n] integer actions (0 push left, 2 push right).
    """
    states = np.asarray(states)
    if states.ndim != 2 or states.shape[1] != 2:
        raise ValueError(f"mountain_car_energy_policy: `states` must be [n, 2] (position, velocity), "
                         f"got {states.shape}.")
    return np.where(states[:, 1] >= 0.0, 2, 0).astype(np.int32)
