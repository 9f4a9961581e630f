"""The actor-critic loop: config errors, PPO learning CartPole, the in-loop probes against the library
and a naive loop, DAAC's separation of actor and critic, ProcGen train/test levels, data-parallel
runs, checkpoints, NaN handling and a tiny ProcGen run with the IMPALA CNN."""

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tdjax
from tdjax.train import actor_critic as ac
from tdjax.train import load_checkpoint, make_agent, make_train, mean_return, train_with_checkpoints
from tdjax.train.actor_critic import ActorCriticConfig

_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: _COMPILES.append(event) if event.endswith("backend_compile_duration") else None
)

# tiny CartPole runs: 4 envs × 16 steps per iteration
TINY = dict(env="CartPole-v1", hidden=(8,), num_envs=4, num_steps=16, num_minibatches=2, num_epochs=2,
            total_steps=4 * 16 * 4)
# the probe and DAAC tests share agents (and so their compiled functions)
PROBED = dict(TINY, total_steps=4 * 16 * 2, probe_interval=1, probe_k=4, probe_fresh=False, daac_value_freq=2,
              daac_value_epochs=2)


@functools.lru_cache(maxsize=None)
def _agent(algo):
    agent = make_agent(ActorCriticConfig(**PROBED, algo=algo))
    return agent, jax.jit(agent.init), jax.jit(agent.collect), jax.jit(agent.learner_update)


def _equal_trees(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------------------------------
# Config validation: before any compilation, naming the field.


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(algo="a2c"), "algo"),
        (dict(env="CartPole-v7"), "env"),
        (dict(num_envs=6, num_devices=64), "num_devices"),
        (dict(num_steps=100, num_minibatches=8), "num_minibatches"),
        (dict(num_envs=2.0), "num_envs"),
        (dict(hidden=[8]), "hidden"),
        (dict(gamma=1.5), "gamma"),
        (dict(gae_lambda=-0.1), "gae_lambda"),
        (dict(clip_eps=0.0), "clip_eps"),
        (dict(lr=-1.0), "lr"),
        (dict(entropy_coef=-0.01), "entropy_coef"),
        (dict(daac_value_freq=0), "daac_value_freq"),
        (dict(total_steps=10), "total_steps"),
        (dict(probe_interval=1, probe_k=1), "probe_k"),
        (dict(probe_interval=1, probe_k=10_000), "probe_k"),
        (dict(network="impala_cnn"), "network"),
        (dict(network="mlp", env="Breakout-MinAtar"), "network"),
        (dict(env="BigfishEasy-v0", num_devices=2, num_envs=2), "num_devices"),
        (dict(env="BigfishEasy-v0", num_levels=10, test_start_level=5), "test_start_level"),
        (dict(env="BigfishEasy-v0", num_levels=0), "num_levels"),
        (dict(env="BigfishEasy-v0", env_options=(("num_levels", 10),)), "env_options"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    before = len(_COMPILES)
    with pytest.raises(ValueError, match=rf"ActorCriticConfig\.{field}\b") as err:
        make_train(ActorCriticConfig(**changes))
    assert len(_COMPILES) == before, "something was compiled before the config error"
    assert "Fix" in str(err.value) or "expected" in str(err.value)


def test_config_is_frozen_and_paper_configs_validate():
    cfg = ActorCriticConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert cfg.replace(lr=1.0).lr == 1.0 and cfg.lr == 5e-4
    ppo = ac.ppo_procgen_paper_config("bigfish")
    daac = ac.daac_procgen_paper_config("heist", daac_value_epochs=3)
    assert (ppo.env, ppo.num_envs, ppo.num_steps, ppo.total_steps, ppo.gamma, ppo.num_minibatches) == (
        "BigfishEasy-v0", 64, 256, 25_000_000, 0.999, 8)
    assert (daac.env, daac.algo, daac.daac_policy_epochs, daac.daac_value_epochs, daac.daac_advantage_coef) == (
        "HeistEasy-v0", "daac", 1, 3, 0.25)
    for c in (ppo, daac):
        ac._validate(c)  # valid as they stand (building them would start 128 ProcGen environments)


# ----------------------------------------------------------------------------------------------------
# Learning.


def test_ppo_learns_cartpole_many_seeds():
    cfg = ActorCriticConfig(env="CartPole-v1", algo="ppo", hidden=(32, 32), num_envs=8, num_steps=64,
                            num_minibatches=4, num_epochs=4, total_steps=30_000, lr=2.5e-3)
    state, metrics = jax.jit(jax.vmap(make_train(cfg)))(jax.random.split(jax.random.key(0), 2))
    assert metrics.loss.shape == (2, 58)
    first, last = mean_return(metrics, last=None), mean_return(metrics, last=10)
    early = mean_return(jax.tree.map(lambda x: x[:, :5], metrics))
    # a uniformly random policy scores ~22 on CartPole; both seeds clearly learn
    assert np.all(early < 40), early
    assert np.all(last > 100), (first, last)
    assert np.isfinite(np.asarray(metrics.loss)).all()
    assert bool(np.asarray(metrics.critic_updated).all())


# ----------------------------------------------------------------------------------------------------
# Probes: the loop's policy / value update matrices are the library's, and a naive loop's.


def _naive_update_matrix(loss_fn, out_fn, compare, optimizer, params, opt_state, examples):
    """Row i: one optax step on example i alone, then compare(out(θᵢ, xⱼ), out(θ, xⱼ)) for each j."""
    k = examples.action.shape[0]

    @jax.jit
    def stepped(i):
        ex = jax.tree.map(lambda x: x[i], examples)
        updates, _ = optimizer.update(jax.grad(loss_fn)(params, ex), opt_state, params)
        return optax.apply_updates(params, updates)

    out = jax.jit(out_fn)
    base = [out(params, examples.obs[j]) for j in range(k)]
    rows = []
    for i in range(k):
        p_i = stepped(i)
        rows.append([float(compare(out(p_i, examples.obs[j]), base[j])) for j in range(k)])
    return np.array(rows)


@pytest.mark.parametrize("algo", ["daac", "ppo"])
def test_probe_equals_library_and_naive_loop(algo):
    agent, init, collect, update = _agent(algo)
    state1, batch0, _ = collect(init(jax.random.key(3)), 0)
    state1 = state1._replace(learner=update(state1.learner, batch0, 0)[0])  # Adam moments non-zero
    state1, batch, _ = collect(state1, 1)  # iteration 1's rollout
    learner = state1.learner
    # the loop's probe sample: the third key of split(fold_in(actor.key, i), 3)
    k_sample = jax.random.split(jax.random.fold_in(state1.actor.key, 1), 3)[2]
    examples = agent.probe_sample(batch, k_sample)
    assert float(examples.weight.sum()) == 4.0

    mats = jax.jit(agent.update_matrices)(learner, examples, jax.random.key(0))
    pa, oa = learner.params[agent.actor_name], learner.opt_state[agent.actor_name]
    pc, oc = learner.params[agent.critic_name], learner.opt_state[agent.critic_name]
    assert int(oa.inner_state[1][0].count) == (2 if algo == "ppo" else 1) * 2  # epochs × minibatches of 1 iteration
    lib = jax.jit(lambda: (
        tdjax.policy_update_matrix(agent.policy_loss, agent.policy_logits, agent.optimizer, pa, oa, examples,
                                   examples.obs),
        tdjax.update_matrix(agent.value_loss, agent.value, agent.optimizer, pc, oc, examples, examples.obs)))
    lib_pi, lib_v = lib()
    naive_pi = _naive_update_matrix(agent.policy_loss, lambda p, x: jax.nn.softmax(agent.policy_logits(p, x)),
                                    lambda a, b: jnp.linalg.norm(a - b), agent.optimizer, pa, oa, examples)
    naive_v = _naive_update_matrix(agent.value_loss, agent.value, lambda a, b: a - b, agent.optimizer, pc, oc,
                                   examples)
    np.testing.assert_allclose(mats["actor"], lib_pi, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mats["critic"], lib_v, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mats["actor"], naive_pi, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mats["critic"], naive_v, rtol=1e-4, atol=1e-6)
    assert np.abs(naive_pi).max() > 0 and np.abs(naive_v).max() > 0

    if algo == "daac":  # the loop records exactly this (the probe code is the same for every algo)
        run = jax.jit(agent.run, static_argnums=2)
        state, m0 = run(init(jax.random.key(3)), 0, 1)
        _equal_trees(state.learner, state1.learner)  # the loop's iteration 0 is collect + update
        _, m1 = run(state, 1, 1)  # iteration 1 probes state1 on the rollout recomputed above
        assert bool(m0.probes.probed[0]) and bool(m1.probes.probed[0])
        assert float(m1.probes.actor_update_rank[0]) == float(tdjax.update_rank(lib_pi, 0.1))
        assert float(m1.probes.critic_update_rank[0]) == float(tdjax.update_rank(lib_v, 0.1))
        assert np.isnan(float(m1.probes.actor_update_rank_fresh[0]))  # probe_fresh=False


# ----------------------------------------------------------------------------------------------------
# DAAC: actor and critic share nothing.


@pytest.mark.parametrize("algo", ["daac", "reinforce"])
def test_separate_actor_gets_no_critic_gradients_and_vice_versa(algo):
    agent, init, collect, update = _agent(algo)  # DAAC: E_π = 1, N_π = 2, E_V = 2; REINFORCE: 1, 1, 1
    assert set(agent.networks) == {"actor", "critic"}
    state, batch, _ = collect(init(jax.random.key(0)), 0)
    learner = state.learner

    def perturb(learner, name):
        params = dict(learner.params)
        params[name] = jax.tree.map(lambda x: x + 0.3, params[name])
        return learner._replace(params=params)

    base, m0 = update(learner, batch, 0)
    assert bool(m0["critic_updated"]) and np.isfinite(float(m0["value_loss"]))
    # each network has its own Adam state, stepped by its own schedule: epochs × minibatches
    steps = {"daac": (1 * 2, 2 * 2), "reinforce": (1, 1)}[algo]
    assert (int(base.opt_state["actor"].inner_state[1][0].count),
            int(base.opt_state["critic"].inner_state[1][0].count)) == steps
    # the actor's update does not depend on the critic's parameters, and vice versa
    other_critic, _ = update(perturb(learner, "critic"), batch, 0)
    _equal_trees(base.params["actor"], other_critic.params["actor"])
    _equal_trees(base.opt_state["actor"], other_critic.opt_state["actor"])
    other_actor, _ = update(perturb(learner, "actor"), batch, 0)
    _equal_trees(base.params["critic"], other_actor.params["critic"])
    _equal_trees(base.opt_state["critic"], other_actor.opt_state["critic"])
    assert not np.array_equal(base.params["critic"]["params"]["value_head"]["bias"],
                              learner.params["critic"]["params"]["value_head"]["bias"])
    # the gradient of the critic's loss has no actor component; the actor's loss none in the critic
    full = learner.params
    ex = jax.tree.map(lambda x: x[0, 0], batch)
    g = jax.grad(lambda p: agent.value_loss(p["critic"], ex) + agent.policy_loss(p["actor"], ex))(full)
    g_critic_only = jax.grad(lambda p: agent.value_loss(p["critic"], ex))(full)
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g_critic_only["actor"]))
    _equal_trees(g["critic"], g_critic_only["critic"])
    if algo == "daac":
        # N_π = 2: at iteration 1 the critic is not trained at all (parameters and Adam state unchanged)
        skipped, m1 = update(learner, batch, 1)
        assert not bool(m1["critic_updated"]) and np.isnan(float(m1["value_loss"]))
        _equal_trees(skipped.params["critic"], learner.params["critic"])
        _equal_trees(skipped.opt_state["critic"], learner.opt_state["critic"])
        assert not np.array_equal(skipped.params["actor"]["params"]["policy_head"]["kernel"],
                                  learner.params["actor"]["params"]["policy_head"]["kernel"])  # the actor still is
        assert np.isfinite(float(m0["advantage_loss"]))
    else:
        assert np.isnan(float(m0["advantage_loss"]))


# ----------------------------------------------------------------------------------------------------
# ProcGen through envpool.


def test_procgen_train_and_test_levels_are_disjoint():
    pytest.importorskip("envpool")
    cfg = ActorCriticConfig(env="BigfishEasy-v0", num_envs=8, num_steps=8, num_minibatches=1, total_steps=64,
                            num_levels=5, start_level=3, eval_interval=1, eval_num_envs=8)
    agent = make_agent(cfg)  # builds both environment sets, compiles nothing
    assert agent.train_env_options == {"num_levels": 5, "start_level": 3}
    assert agent.test_env_options == {"num_levels": 100_000, "start_level": 8}
    assert (agent.env.pool.spec.config.num_levels, agent.env.pool.spec.config.start_level) == (5, 3)
    assert (agent.test_env.pool.spec.config.num_levels, agent.test_env.pool.spec.config.start_level) == (100_000, 8)
    # the levels envpool actually plays (info["level_seed"]), on fresh pools with the same options
    seen = {}
    for name, opts in (("train", agent.train_env_options), ("test", agent.test_env_options)):
        pool = tdjax.envs.make_envpool("BigfishEasy-v0", num_envs=8, seed=0, **opts)
        _, info = pool.reset()
        levels = set(np.asarray(info["level_seed"]).tolist())
        rng = np.random.default_rng(0)
        for _ in range(200):
            _, _, _, _, info = pool.step(rng.integers(0, 15, 8).astype(np.int32))
            levels |= set(np.asarray(info["level_seed"]).tolist())
        seen[name] = levels
    assert seen["train"] <= set(range(3, 8)) and len(seen["train"]) >= 3, seen["train"]
    assert min(seen["test"]) >= 8 and len(seen["test"]) > 8, seen["test"]
    assert not seen["train"] & seen["test"]


def test_bigfish_impala_ppo_runs_through_envpool():
    pytest.importorskip("envpool")
    cfg = ActorCriticConfig(env="BigfishEasy-v0", algo="ppo", num_envs=2, num_steps=8, num_minibatches=2,
                            num_epochs=1, total_steps=2 * 8 * 2, num_levels=5, eval_interval=1, eval_num_envs=2,
                            eval_steps=4)
    agent = make_agent(cfg)
    assert "ImpalaTorso" in type(agent.networks["shared"].torso).__name__
    state, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
    assert metrics.loss.shape == (2,)
    assert np.isfinite(np.asarray(metrics.loss)).all() and np.isfinite(np.asarray(metrics.entropy)).all()
    assert bool(np.asarray(metrics.evaluated).all())
    assert state.actor.obs.shape == (2, 64, 64, 3)
    assert float(metrics.entropy[0]) > 2.6  # near-uniform over 15 actions at initialisation (log 15 = 2.71)


# ----------------------------------------------------------------------------------------------------
# Checkpoints and NaN.


class _Killed(Exception):
    pass


def test_checkpoint_kill_and_resume_is_bit_identical(tmp_path):
    cfg = ActorCriticConfig(**TINY, algo="ppo", eval_interval=2, eval_num_envs=2, eval_steps=8,
                            normalize_rewards=True, checkpoint_interval=2)
    key = jax.random.key(0)
    full_state, full_metrics = train_with_checkpoints(cfg, key, tmp_path / "full", progress=False)

    def kill(iteration):
        if iteration == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_with_checkpoints(cfg, key, tmp_path / "cut", progress=False, on_chunk=kill)
    resumed_state, resumed_metrics = train_with_checkpoints(cfg, key, tmp_path / "cut", progress=False)
    _equal_trees(full_state, resumed_state)
    _equal_trees(full_metrics, resumed_metrics)
    assert full_metrics.loss.shape == (4,)
    assert np.asarray(full_metrics.evaluated).tolist() == [True, False, True, False]
    assert float(full_state.learner.reward_stats.count) > 4 * 16 * 4  # reward statistics are checkpointed too
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert "generalization_gap" in rows[0] and "probe_actor_update_rank" in rows[0] and len(rows) == 3


def test_nan_loss_stops_and_names_the_step(tmp_path):
    # one update per iteration: iteration 0's loss (taken before its step) is finite, the absurd step
    # size makes iteration 1's loss non-finite
    cfg = ActorCriticConfig(**dict(TINY, num_epochs=1, num_minibatches=1), lr=1e30, max_grad_norm=None,
                            checkpoint_interval=1)
    with pytest.raises(FloatingPointError, match=r"iteration 1, env step 128.*checkpoints/1 \(iteration 1\)"):
        train_with_checkpoints(cfg, jax.random.key(0), tmp_path, progress=False)
    _, meta = load_checkpoint(tmp_path, jax.eval_shape(make_agent(cfg).init, jax.random.key(0)))
    assert meta["iteration"] == 1


# ----------------------------------------------------------------------------------------------------
# Data-parallel: 4 fake CPU devices in a subprocess.


@pytest.mark.slow
def test_sharded_run_equals_single_device():
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    script = Path(__file__).with_name("_multidevice_actor_critic.py")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "MULTIDEVICE OK" in out.stdout
