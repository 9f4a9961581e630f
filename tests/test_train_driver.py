"""tdjax.train.run_host_driven: one jitted iteration per call computes the same run as one lax.scan."""

import jax
import numpy as np
import pytest

from tdjax.train import ActorCriticConfig, ValueConfig, actor_critic, run_host_driven, value_based


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=1e-5)


def test_value_loop_host_driven_equals_scan():
    cfg = ValueConfig(env="CartPole-v1", total_steps=400, learning_starts=64, batch_size=16, buffer_size=200,
                      target_update_interval=10, probe_interval=20, probe_k=4, probe_sign_steps=8)
    agent = value_based.make_agent(cfg)
    s0 = jax.jit(agent.init)(jax.random.key(0))
    ref_state, ref_m = jax.jit(agent.run, static_argnums=2)(s0, 0, agent.num_iterations)
    state, m = run_host_driven(agent, jax.jit(agent.init)(jax.random.key(0)), 0, agent.num_iterations)
    assert m.loss.shape == ref_m.loss.shape == (agent.num_iterations,)
    np.testing.assert_array_equal(np.asarray(m.probes.probed), np.asarray(ref_m.probes.probed))
    _close(state.learner.params, ref_state.learner.params)
    _close(m.loss, ref_m.loss)


def test_actor_critic_host_driven_unrolled_equals_scan_batched_seeds():
    cfg = ActorCriticConfig(env="CartPole-v1", network="mlp", hidden=(16,), num_envs=4, num_steps=8,
                            total_steps=128, num_epochs=2, num_minibatches=2, probe_interval=2, probe_k=4)
    keys = jax.random.split(jax.random.key(1), 2)
    agent = actor_critic.make_agent(cfg)
    ref_state, ref_m = jax.jit(jax.vmap(lambda s: agent.run(s, 0, agent.num_iterations)))(
        jax.jit(jax.vmap(agent.init))(keys))
    unrolled = actor_critic.make_agent(cfg.replace(loop="host"))
    state, m = run_host_driven(unrolled, jax.jit(jax.vmap(unrolled.init))(keys), 0, unrolled.num_iterations,
                               batched=True)
    assert m.loss.shape == (2, agent.num_iterations)
    _close(state.learner.params, ref_state.learner.params)
    _close(m.probes.actor_update_rank, ref_m.probes.actor_update_rank)


def test_host_driven_rejects_empty_run():
    agent = value_based.make_agent(ValueConfig(total_steps=400, learning_starts=64, batch_size=16, buffer_size=200))
    with pytest.raises(ValueError, match="length"):
        run_host_driven(agent, None, 0, 0)


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            j = getattr(x, "jaxpr", x)  # ClosedJaxpr -> Jaxpr
            if hasattr(j, "eqns"):
                yield j


def _count(jaxpr, name, inside_cond=False):
    """Number of `name` equations in `jaxpr` (recursively); with inside_cond, only those in cond branches."""
    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name and not inside_cond:
            n += 1
        for sub in _subjaxprs(eqn):
            if inside_cond and eqn.primitive.name == "cond":
                n += _count(sub, name, inside_cond=False)
            else:
                n += _count(sub, name, inside_cond)
    return n


def test_value_loop_static_phase_takes_the_update_out_of_the_cond():
    cfg = ValueConfig(env="CartPole-v1", total_steps=400, learning_starts=64, batch_size=16, buffer_size=200,
                      target_update_interval=10, probe_interval=20, probe_k=4, probe_sign_steps=8)
    agent = value_based.make_agent(cfg)
    w = agent.warmup_iterations
    assert agent.phase(w - 1) == (False, False)
    assert agent.phase(w) == (True, False)
    assert agent.phase(w + 19) == (True, True) and agent.phase(w + 20) == (True, False)
    s0 = jax.eval_shape(agent.init, jax.random.key(0))
    traced = jax.make_jaxpr(lambda s, i: agent.run(s, i, 1))(s0, w).jaxpr
    static = jax.make_jaxpr(lambda s, i: agent.run(s, i, 1, phase=(True, False)))(s0, w).jaxpr
    probing = jax.make_jaxpr(lambda s, i: agent.run(s, i, 1, phase=(True, True)))(s0, w).jaxpr
    # traced: the update's matmuls (forward and backward) and the probe's sit inside conds
    assert _count(traced, "dot_general", inside_cond=True) > 0
    # static: no matmul inside any cond (only the target copy stays a cond), and the update is there
    assert _count(static, "dot_general", inside_cond=True) == 0
    assert _count(probing, "dot_general", inside_cond=True) == 0
    # the same work, moved out of the conds: update + probe as traced; without the probe, less
    assert _count(probing, "dot_general") == _count(traced, "dot_general")
    assert _count(static, "dot_general") < _count(probing, "dot_general")
    warm = jax.make_jaxpr(lambda s, i: agent.run(s, i, 1, phase=(False, False)))(s0, 0).jaxpr
    assert _count(warm, "dot_general") < _count(static, "dot_general")  # no update in warm-up


def test_actor_critic_host_loop_writes_the_update_as_straight_line_code():
    cfg = ActorCriticConfig(env="CartPole-v1", network="mlp", hidden=(8,), num_envs=4, num_steps=8, total_steps=64,
                            num_epochs=3, num_minibatches=2)
    jaxprs = {}
    for loop in ("scan", "host"):
        agent = actor_critic.make_agent(cfg.replace(loop=loop))
        s0 = jax.eval_shape(agent.init, jax.random.key(0))
        jaxprs[loop] = jax.make_jaxpr(lambda s, i: agent.run(s, i, 1))(s0, 0).jaxpr
    # host: one barrier after each of the 3 × 2 optimizer steps and after each epoch; scan: none
    assert _count(jaxprs["host"], "optimization_barrier") == 3 * 2 + 3
    assert _count(jaxprs["scan"], "optimization_barrier") == 0
    # the two scans of the update (epochs, minibatches) are gone; the rollout's and GAE's stay
    assert _count(jaxprs["scan"], "scan") - _count(jaxprs["host"], "scan") == 2
    assert _count(jaxprs["host"], "dot_general") > _count(jaxprs["scan"], "dot_general")  # 6 copies of the step


def test_value_loop_static_phase_is_checked():
    agent = value_based.make_agent(ValueConfig(total_steps=400, learning_starts=64, batch_size=16, buffer_size=200))
    s0 = jax.eval_shape(agent.init, jax.random.key(0))
    with pytest.raises(ValueError, match="one iteration"):
        jax.eval_shape(lambda s: agent.run(s, 0, 2, phase=(True, False)), s0)
    with pytest.raises(ValueError, match="tuple of 2 bools"):
        jax.eval_shape(lambda s: agent.run(s, 0, 1, phase=True), s0)
