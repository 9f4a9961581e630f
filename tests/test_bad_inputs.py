"""Bad inputs give an error or a warning that names the argument and the fix, never a silent number.

Each row of CASES is one bad input a new user might pass; the test checks the error type (or warning
category), that the message names the argument, and that it says what to do. The same table, with
the message each case gives, is docs/bad_inputs.md; regenerate it after changing a message with

    PYTHONPATH=$PWD python tests/test_bad_inputs.py > docs/bad_inputs.md

(test_docs_table_is_current fails when it is stale).
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import tdjax

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
RUNTIME = checkify.JaxRuntimeError


class Case(NamedTuple):
    id: str
    group: str
    what: str  # the bad input, as a user would describe it
    call: Callable[[], object]
    expect: type  # an exception type, or a Warning subclass
    names: str  # the argument the message must name (in backticks)
    fix: Optional[str] = "Fix"  # a word of the remedy the message must contain (None: none required)


A = 3
Q = jnp.array([1.0, 2.0, 3.0])
Z = jnp.linspace(-1.0, 1.0, 5)
LOGITS = jnp.zeros((A, 5))
PARAMS = {"w": jnp.ones((3, 2))}
XS = jnp.ones((4, 3))


def _apply(p, x):
    return x @ p["w"]


def _q_loss(p, ex):
    x, a = ex
    q = _apply(p, x)
    return tdjax.q_learning_loss(q, a, 1.0, 0.9, q)


def _sum_out(p, x):
    return _apply(p, x).sum()


_OPT = optax.sgd(0.1)
_MDP = tdjax.circle_mdp(6, reward_state=3)
P6, R6 = np.asarray(_MDP[0]), np.asarray(_MDP[1])
V0 = np.zeros(6)
TS = np.array([0.0, 1.0])
ALL = np.ones(6, bool)
GRID = tdjax.gridworld_mdp()


def _nan_at(x, idx):
    x = np.array(x, dtype=np.float64)
    x[idx] = np.nan
    return x


def _jit_vmap_q(actions):
    n = len(actions)
    qs = jnp.tile(Q, (n, 1))
    f = jax.jit(jax.vmap(tdjax.q_learning_loss))
    return tdjax.checked(f)(qs, jnp.asarray(actions), jnp.ones(n), jnp.full(n, 0.9), qs)


CASES = [
    # ---- integer indices out of range: concrete -> ValueError; traced -> the checked route
    Case("q_action_eager", "indices", "`q_learning_loss` with action 3 of 3", lambda: tdjax.q_learning_loss(Q, 3, 1.0, 0.9, Q),
         ValueError, "a_tm1", "range"),
    Case("q_action_float", "indices", "`q_learning_loss` with a float action", lambda: tdjax.q_learning_loss(Q, 1.0, 1.0, 0.9, Q),
         ValueError, "a_tm1"),
    Case("q_action_jit_vmap", "indices", "`jit(vmap(q_learning_loss))` with actions [0, 3], run through `tdjax.checked`",
         lambda: _jit_vmap_q([0, 3]), RUNTIME, "a_tm1", "range"),
    Case("q_action_negative_jit", "indices", "`jit(vmap(q_learning_loss))` with action −1, through `tdjax.checked`",
         lambda: _jit_vmap_q([-1, 0]), RUNTIME, "a_tm1", "range"),
    Case("c51_action_jit", "indices", "`jit(categorical_q_learning_loss)` with action 7, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.categorical_q_learning_loss))(Z, LOGITS, 7, 1.0, 0.9, Z, LOGITS),
         RUNTIME, "a_tm1", "range"),
    Case("reinforce_action_jit", "indices", "`jit(reinforce_loss)` with action −1, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.reinforce_loss))(Q, -1, 1.0), RUNTIME, "a_t", "range"),
    Case("ppo_action_jit", "indices", "`jit(ppo_clip_loss)` with action 9, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.ppo_clip_loss))(Q, 9, 0.0, 1.0), RUNTIME, "a_t", "range"),
    Case("bc_action_jit", "indices", "`jit(behaviour_cloning_loss)` with action 5, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.behaviour_cloning_loss))(Q, 5), RUNTIME, "a", "range"),
    Case("reduce_action_jit", "indices", "`jit(reduce_output(..., 'action', a))` with a = 5, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(lambda o, a: tdjax.reduce_output(o, "action", a)))(Q, 5),
         RUNTIME, "action", "range"),
    Case("per_example_grads_action", "indices", "`per_example_grads` of a Q-learning loss on a batch with action 5 of 2, "
         "through `tdjax.checked`",
         lambda: tdjax.checked(lambda p, b: tdjax.per_example_grads(_q_loss, p, b, method="vmap"))(
             PARAMS, (XS, jnp.array([0, 1, 1, 5]))),
         RUNTIME, "a_tm1", "range"),
    Case("update_matrix_action", "indices", "`update_matrix` of a Q-learning loss on a batch with action 5 of 2, "
         "through `tdjax.checked`",
         lambda: tdjax.checked(lambda p, b: tdjax.update_matrix(
             _q_loss, lambda p, x: _apply(p, x).max(), _OPT, p, _OPT.init(p), b, XS))(PARAMS, (XS, jnp.array([0, 5, 1, 1]))),
         RUNTIME, "a_tm1", "range"),
    Case("policy_jit", "indices", "`jit(policy_markov_chain)` with policy action 9 of 4, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.policy_markov_chain))(GRID.P, GRID.R, jnp.full(GRID.P.shape[0], 9)),
         RUNTIME, "policy", "range"),
    Case("policy_eager", "indices", "`policy_markov_chain` with policy action −1",
         lambda: tdjax.policy_markov_chain(GRID.P, GRID.R, np.full(GRID.P.shape[0], -1)), ValueError, "policy", "range"),
    # ---- parameters outside their domain (concrete values)
    Case("td_discount", "domain", "`td_loss` with discount 1.5", lambda: tdjax.td_loss(1.0, 1.0, 1.5, 1.0),
         ValueError, "discount_t"),
    Case("q_discount_negative", "domain", "`q_learning_loss` with discount −0.1",
         lambda: tdjax.q_learning_loss(Q, 0, 1.0, -0.1, Q), ValueError, "discount_t"),
    Case("td_lambda_discount", "domain", "`td_lambda_loss` with a discount 1.2 in the trajectory",
         lambda: tdjax.td_lambda_loss(jnp.ones(2), jnp.ones(2), jnp.array([1.2, 0.9]), jnp.ones(2), 0.5),
         ValueError, "discount_t"),
    Case("gae_discount", "domain", "`generalized_advantage_estimation` with discounts 1.5",
         lambda: tdjax.generalized_advantage_estimation(jnp.ones(3), jnp.full(3, 1.5), jnp.ones(3), 0.0, 0.9),
         ValueError, "discounts"),
    Case("lambda_returns_discount", "domain", "`lambda_returns` with discounts −1",
         lambda: tdjax.lambda_returns(jnp.ones(3), jnp.full(3, -1.0), jnp.ones(3), 0.0, 0.9), ValueError, "discounts"),
    Case("gamma_jit", "domain", "`jit(policy_evaluation)` with γ = 1.5, through `tdjax.checked`",
         lambda: tdjax.checked(jax.jit(tdjax.policy_evaluation))(P6, R6, 1.5), RUNTIME, "gamma", None),
    Case("c51_atoms", "domain", "`categorical_q_learning_loss` with a decreasing support",
         lambda: tdjax.categorical_q_learning_loss(Z[::-1], LOGITS, 0, 1.0, 0.9, Z[::-1], LOGITS), ValueError, "q_atoms_tm1"),
    Case("qr_tau", "domain", "`quantile_q_learning_loss` with a quantile level 1.5",
         lambda: tdjax.quantile_q_learning_loss(LOGITS, jnp.linspace(0, 1.5, 5), 0, 1.0, 0.9, LOGITS, LOGITS),
         ValueError, "tau_q_tm1"),
    Case("euler_step", "domain", "`td_euler_trajectory` with step size −0.1",
         lambda: tdjax.td_euler_trajectory(P6, R6, 0.9, V0, -0.1, 3), ValueError, "step_size", "negative"),
    Case("mc_euler_step", "domain", "`mc_euler_trajectory` with step size 0",
         lambda: tdjax.mc_euler_trajectory(R6, V0, 0.0, 3), ValueError, "step_size", "positive"),
    Case("rtol", "domain", "`td_value_trajectory(method='krylov')` with rtol = 0",
         lambda: tdjax.td_value_trajectory(P6, R6, 0.9, V0, TS, method="krylov", rtol=0.0), ValueError, "rtol", "positive"),
    Case("krylov_dim", "domain", "`kernel_td_trajectory` with krylov_dim = 0",
         lambda: tdjax.kernel_td_trajectory(np.eye(6), P6, R6, 0.9, ALL, V0, TS, krylov_dim=0), ValueError, "krylov_dim",
         "int"),
    Case("kernel_td_not_psd", "domain", "`kernel_td_dynamics` with K = −I (not PSD)",
         lambda: tdjax.kernel_td_dynamics(-np.eye(6), P6, R6, 0.9, ALL).eigenvalues, tdjax.InputWarning, "K"),
    Case("kernel_td_asym", "domain", "`kernel_td_dynamics` with a non-symmetric K",
         lambda: tdjax.kernel_td_dynamics(np.triu(np.ones((6, 6))), P6, R6, 0.9, ALL), tdjax.InputWarning, "K"),
    Case("kernel_mc_not_psd", "domain", "`kernel_mc_trajectory` with K = −I (not PSD)",
         lambda: tdjax.kernel_mc_trajectory(-np.eye(6), R6, ALL, V0, TS), tdjax.InputWarning, "K"),
    Case("mask_all_false", "domain", "`kernel_td_trajectory` with an all-False train mask",
         lambda: tdjax.kernel_td_trajectory(np.eye(6), P6, R6, 0.9, np.zeros(6, bool), V0, TS), tdjax.InputWarning,
         "train_mask"),
    Case("gridworld_string", "domain", "`gridworld_mdp` with the layout as one string",
         lambda: tdjax.gridworld_mdp("...\n..G"), ValueError, "layout", "splitlines"),
    # ---- float32 precision
    Case("precision_policy_evaluation", "precision", "`policy_evaluation` with γ = 0.9999 in float32",
         lambda: tdjax.policy_evaluation(P6.astype(np.float32), R6.astype(np.float32), 0.9999), tdjax.PrecisionWarning,
         "gamma", "float64"),
    Case("precision_gae", "precision", "`generalized_advantage_estimation` over 20000 steps with γλ = 0.9999 in float32",
         lambda: tdjax.generalized_advantage_estimation(jnp.ones(20000), jnp.full(20000, 0.9999), jnp.zeros(20000), 0.0,
                                                        1.0), tdjax.PrecisionWarning, "discounts", "float64"),
    Case("precision_euler", "precision", "`mc_euler_trajectory`, 20000 steps of size 1e-4 in float32",
         lambda: tdjax.mc_euler_trajectory(R6.astype(np.float32), V0.astype(np.float32), 1e-4, 20000),
         tdjax.PrecisionWarning, "num_steps", "float64"),
    # ---- NaN inputs to the dynamics under jit
    Case("nan_P_jit", "nan", "`jit(td_value_trajectory)` with a NaN in P",
         lambda: jax.jit(tdjax.td_value_trajectory)(_nan_at(P6, (0, 0)), R6, 0.9, V0, TS), tdjax.NonFiniteInputWarning,
         "P", "isfinite"),
    Case("nan_v0_jit", "nan", "`jit(td_value_trajectory)` with a NaN in v0",
         lambda: jax.jit(tdjax.td_value_trajectory)(P6, R6, 0.9, _nan_at(V0, 0), TS), tdjax.NonFiniteInputWarning,
         "v0", "isfinite"),
    Case("nan_K_jit", "nan", "`jit(kernel_mc_dynamics)` with a NaN in K",
         lambda: jax.jit(lambda K: tdjax.kernel_mc_dynamics(K, R6, ALL).eigenvalues)(_nan_at(np.eye(6), (1, 1))),
         tdjax.NonFiniteInputWarning, "K", "isfinite"),
    Case("nan_r_eager", "nan", "`td_value_trajectory` with a NaN in r (outside jit)",
         lambda: tdjax.td_value_trajectory(P6, _nan_at(R6, 2), 0.9, V0, TS), ValueError, "r", None),
    # ---- errors that used to come from deep inside JAX
    Case("empty_batch", "confusing", "`per_example_grads` with an empty batch",
         lambda: tdjax.per_example_grads(_sum_out, PARAMS, jnp.ones((0, 3))), ValueError, "batch", "at least one"),
    Case("unbatched_x", "confusing", "`per_example_grads` with one unbatched x of shape (3,)",
         lambda: tdjax.per_example_grads(_sum_out, PARAMS, jnp.ones(3)), ValueError, "batch", "leading example axis"),
    Case("params_none", "confusing", "`per_example_grads` with params=None",
         lambda: tdjax.per_example_grads(_sum_out, None, XS), ValueError, "params"),
    Case("params_int", "confusing", "`gram_matrix` with integer params",
         lambda: tdjax.gram_matrix(_sum_out, {"w": jnp.ones((3, 2), jnp.int32)}, XS), ValueError, "params", "astype"),
    Case("probe_features", "confusing", "`update_matrix` with probes of 4 features for a 3-feature network",
         lambda: tdjax.update_matrix(_sum_out, _sum_out, _OPT, PARAMS, _OPT.init(PARAMS), XS, jnp.ones((5, 4))),
         ValueError, "probe_xs", "feature size"),
    Case("empty_probes", "confusing", "`update_matrix` with no probe inputs",
         lambda: tdjax.update_matrix(_sum_out, _sum_out, _OPT, PARAMS, _OPT.init(PARAMS), XS, jnp.ones((0, 3))),
         ValueError, "probe_xs", "at least one"),
    # ---- training configs (checked before anything is traced)
    Case("config_gamma", "configs", "`ValueConfig(gamma=1.5)` given to `make_train`",
         lambda: _make_train("value", gamma=1.5), ValueError, "ValueConfig.gamma"),
    Case("config_hidden_list", "configs", "`ValueConfig(hidden=[8])` (a list)",
         lambda: _make_train("value", hidden=[8]), ValueError, "ValueConfig.hidden", "tuple"),
    Case("config_minibatches", "configs", "`ActorCriticConfig(num_steps=16, num_minibatches=3)`",
         lambda: _make_train("actor_critic", num_minibatches=3), ValueError, "ActorCriticConfig.num_minibatches"),
    Case("config_probe_offset", "configs", "`ValueConfig(buffer_size=32, probe_max_offset=16)`: offsets beyond the buffer",
         lambda: _make_train("value", probe_interval=4, probe_k=4, probe_sign_steps=8, probe_max_offset=16),
         ValueError, "ValueConfig.probe_max_offset", "probe_max_offset <= 15"),
    Case("config_probe_rho_c51", "configs", "`ValueConfig(algo='c51', probe_rho_terms=True)`",
         lambda: _make_train("value", algo="c51", probe_rho_terms=True), ValueError, "ValueConfig.probe_rho_terms"),
]
BY_ID = {c.id: c for c in CASES}


def _make_train(family, **changes):
    from tdjax.train import ActorCriticConfig, ValueConfig, make_train

    if family == "value":
        base = dict(env="CartPole-v1", hidden=(8,), total_steps=64, num_envs=1, buffer_size=32, batch_size=4,
                    learning_starts=8)
        return make_train(ValueConfig(**{**base, **changes}))
    base = dict(env="CartPole-v1", hidden=(8,), num_envs=4, num_steps=16, num_minibatches=2, total_steps=128)
    return make_train(ActorCriticConfig(**{**base, **changes}))


@functools.lru_cache(maxsize=None)
def outcome(case_id: str) -> tuple[str, str]:
    """(kind, message) of running one case: kind is the exception or warning class name, or 'no error'."""
    case = BY_ID[case_id]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            jax.block_until_ready(case.call())
        except Exception as e:  # noqa: BLE001 - the table records whatever happens
            return type(e).__name__, str(e).splitlines()[0].replace(" (`check` failed)", "")
        jax.effects_barrier()  # the NaN report comes from a jax.debug.callback
    for w in caught:
        if issubclass(w.category, case.expect) if issubclass(case.expect, Warning) else False:
            return w.category.__name__, str(w.message)
    kinds = ", ".join(w.category.__name__ for w in caught)
    return "no error", f"(warnings: {kinds})" if kinds else ""


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_bad_input_gives_a_named_error_or_warning(case_id):
    case = BY_ID[case_id]
    kind, message = outcome(case_id)
    assert kind == case.expect.__name__, (kind, message)
    named = f"{case.names}=" if "." in case.names else f"`{case.names}`"  # configs: `Cfg.field=value`
    assert named in message, message
    if case.fix is not None:
        assert case.fix in message, message


def test_the_checked_route_leaves_good_inputs_alone():
    """Within `checked`, valid actions give the same numbers, and outside it nothing is checked."""
    qs = jnp.tile(Q, (2, 1))
    f = jax.jit(jax.vmap(tdjax.q_learning_loss))
    args = (qs, jnp.array([0, 2]), jnp.ones(2), jnp.full(2, 0.9), qs)
    np.testing.assert_array_equal(tdjax.checked(f)(*args), f(*args))
    bad = (qs, jnp.array([0, 3]), jnp.ones(2), jnp.full(2, 0.9), qs)
    assert np.isfinite(np.asarray(f(*bad))).all()  # the documented unchecked default: JAX clamps
    with pytest.raises(RUNTIME):
        tdjax.checked(f)(*bad)
    assert not tdjax.debug_checks_enabled()


def _value_learner(actions):
    from tdjax.train import ValueConfig
    from tdjax.train import replay as replay_lib
    from tdjax.train import value_based as vb

    spec = vb.build_spec(ValueConfig(env="CartPole-v1", hidden=(8,), total_steps=64, num_envs=1, buffer_size=32,
                                     batch_size=4, learning_starts=8, probe_interval=0))
    params = spec.network.init(jax.random.key(0), jnp.zeros(spec.env.obs_shape))
    learner = vb.LearnerState(params=params, target_params=params, opt_state=spec.optimizer.init(params))
    n = len(actions)
    obs = jax.random.normal(jax.random.key(1), (n,) + spec.env.obs_shape)
    batch = replay_lib.Transition(obs=obs, action=jnp.asarray(actions, jnp.int32), reward=jnp.ones(n),
                                  discount=jnp.ones(n), next_obs=obs[::-1], done=jnp.zeros(n, bool),
                                  valid=jnp.ones(n, bool))
    return jax.jit(functools.partial(vb.learner_update, spec)), learner, batch


def test_training_loop_update_runs_under_the_checked_route():
    """The value-based loop's learner step, through `tdjax.checked`: a replayed action outside the
    environment's action set raises naming `a_tm1`; valid ones give the unchecked step's numbers."""
    update, learner, batch = _value_learner([0, 1, 1, 0])
    (new, loss), (new_c, loss_c) = update(learner, batch), tdjax.checked(update)(learner, batch)
    np.testing.assert_array_equal(loss, loss_c)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_c.params)):
        np.testing.assert_array_equal(a, b)
    _, _, bad = _value_learner([0, 1, 2, 0])  # CartPole has 2 actions
    with pytest.raises(RUNTIME, match="`a_tm1`=2 is out of range for 2 actions"):
        tdjax.checked(update)(learner, bad)


@pytest.mark.paper_scale
@pytest.mark.parametrize("name", ["dqn", "ppo"])
def test_whole_training_loop_under_the_checked_route_is_unchanged(name):
    """The golden configs' whole runs through `tdjax.checked` give the unchecked parameters (~30 s each)."""
    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from make_golden_loops import CONFIGS

    from tdjax.train import make_train

    train = jax.jit(make_train(CONFIGS[name]))
    s1, _ = train(jax.random.key(7))
    s2, _ = tdjax.checked(train)(jax.random.key(7))
    for a, b in zip(jax.tree.leaves(s1.learner.params), jax.tree.leaves(s2.learner.params)):
        np.testing.assert_array_equal(a, b)


def _precision_call():
    return tdjax.policy_evaluation(P6.astype(np.float32), R6.astype(np.float32), 0.9999)


def test_precision_warning_once_per_call_site():
    """Python's default filter shows a warning once per call site: the warning must point at the caller
    (not at tdjax or JAX), also when the call is traced under jit."""
    jitted = jax.jit(lambda P, r: tdjax.policy_evaluation(P, r, 0.9999))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            tdjax.policy_evaluation(P6.astype(np.float32), R6.astype(np.float32), 0.9999)  # site 1
        for _ in range(2):
            _precision_call()  # site 2 (inside _precision_call)
        jitted(P6.astype(np.float32), R6.astype(np.float32))  # site 3: traced; γ is a concrete constant
    precision = [w for w in caught if issubclass(w.category, tdjax.PrecisionWarning)]
    assert len(precision) == 3, [(w.filename, w.lineno) for w in precision]
    assert all(w.filename == __file__ for w in precision), [w.filename for w in precision]
    assert len({w.lineno for w in precision}) == 3


def test_no_precision_warning_in_float64_or_for_moderate_gamma():
    with warnings.catch_warnings():
        warnings.simplefilter("error", tdjax.PrecisionWarning)
        tdjax.policy_evaluation(P6.astype(np.float32), R6.astype(np.float32), 0.99)
        with jax.enable_x64(True):
            tdjax.policy_evaluation(P6, R6, 0.9999)


def test_float32_error_at_the_warned_gamma_is_real():
    """The warning is not a false alarm: at γ = 0.9999 float32 policy evaluation is off by > 1e-4."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tdjax.PrecisionWarning)
        v32 = np.asarray(tdjax.policy_evaluation(P6.astype(np.float32), R6.astype(np.float32), 0.9999), np.float64)
    v64 = np.linalg.solve(np.eye(6) - 0.9999 * P6, R6)
    assert np.max(np.abs(v32 - v64) / np.abs(v64)) > 1e-5


def test_nan_inputs_are_not_reported_as_a_conditioning_fallback():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = jax.jit(tdjax.td_value_trajectory)(_nan_at(P6, (0, 0)), R6, 0.9, V0, TS)
        jax.block_until_ready(out)
        jax.effects_barrier()
    kinds = {w.category for w in caught}
    assert tdjax.NonFiniteInputWarning in kinds
    assert tdjax.NumericalFallbackWarning not in kinds
    assert np.isnan(np.asarray(out)).any()


def render() -> str:
    """docs/bad_inputs.md: every case and the message it gives now."""
    lines = [
        "# Bad inputs and what tdjax says",
        "",
        "<!-- Generated by `PYTHONPATH=$PWD python tests/test_bad_inputs.py > docs/bad_inputs.md`;",
        "     tests/test_bad_inputs.py checks that this page is current. -->",
        "",
        "Every row is a bad input tried on the public API and the message it gives now; each is a test in",
        "`tests/test_bad_inputs.py`. Errors name the argument and the fix; where the maths is still defined",
        "tdjax warns instead (`tdjax.InputWarning`, `tdjax.PrecisionWarning`, `tdjax.NonFiniteInputWarning`).",
        "",
        "## What is checked when",
        "",
        "* **Shapes and dtypes** are checked at trace time, always, also under `jax.jit`/`jax.vmap`.",
        "* **Values** (an action index in range, a discount in [0, 1], increasing atoms, a positive step size,",
        "  a PSD kernel, finite inputs) are checked when they are concrete: eager calls, Python numbers,",
        "  NumPy arrays closed over by a jitted function. This costs nothing under jit.",
        "* **Traced values are unchecked by default.** Under `jax.jit`/`jax.vmap`/`lax.scan`, JAX clamps an",
        "  action index ≥ the number of actions to the last action and wraps a negative one, silently. Run",
        "  the computation through `tdjax.checked(fn)` (`jax.experimental.checkify` with tdjax's checks",
        "  switched on by `tdjax.debug_checks()`) to get a `JaxRuntimeError` naming the argument instead:",
        "  `tdjax.checked(jax.jit(loss))(...)`, `tdjax.checked(make_train(config))(key)`. The checks are",
        "  part of JAX's jit cache key, so they never change a result, and the unchecked trace is kept for",
        "  calls outside `checked`.",
        "* **Precision**: with a concrete γ (or discounts and λ), tdjax warns once per call site when float",
        "  rounding over the effective horizon 1/(1 − γ) (or the number of steps) exceeds 1e-4 relative,",
        "  e.g. float32 at γ ≥ 0.9988. The fix is float64.",
        "* **NaN inputs** to the dynamics under jit are reported at run time (a `jax.debug.callback`, only",
        "  when an input is not finite) as `NonFiniteInputWarning` naming the input, and no longer trigger",
        "  the Krylov/expm fallbacks and their conditioning warnings.",
        "",
    ]
    titles = {"indices": "Integer indices out of range", "domain": "Parameters outside their domain",
              "precision": "Float32 precision", "nan": "NaN inputs", "confusing": "Errors that named no argument",
              "configs": "Training configs"}
    for group, title in titles.items():
        lines += [f"## {title}", "", "| bad input | result | message |", "|---|---|---|"]
        for case in CASES:
            if case.group != group:
                continue
            kind, message = outcome(case.id)
            message = message.replace("|", "\\|")
            lines.append(f"| {case.what} | {kind} | {message} |")
        lines.append("")
    return "\n".join(lines)


def test_docs_table_is_current():
    assert DOC.exists(), "generate docs/bad_inputs.md: PYTHONPATH=$PWD python tests/test_bad_inputs.py > docs/bad_inputs.md"
    assert DOC.read_text() == render(), (
        "docs/bad_inputs.md is stale: PYTHONPATH=$PWD python tests/test_bad_inputs.py > docs/bad_inputs.md"
    )


if __name__ == "__main__":
    sys.stdout.write(render())
