"""tdjax.train.seeds: S seeds vmapped, looped (envpool) or host-driven all compute the per-seed runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tdjax.train import ValueConfig, make_train
from tdjax.train import seeds as seeds_lib

CFG = ValueConfig(env="CartPole-v1", total_steps=160, learning_starts=64, batch_size=16, buffer_size=100,
                  target_update_interval=10)
S = 2


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference():
    """One run per seed, from `jax.random.split(key, S)`, stacked by hand: the independent reference."""
    keys = jax.random.split(jax.random.key(3), S)
    train = jax.jit(make_train(CFG))
    runs = [train(keys[s]) for s in range(S)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *runs)


def test_vmapped_seeds_equal_one_run_per_seed(reference):
    state, m = seeds_lib.train_seeds(CFG, jax.random.key(3), S)
    assert m.loss.shape == (S, CFG.total_steps // CFG.num_envs)
    assert jax.tree.leaves(state.learner.params)[0].shape[0] == S
    _close(m.loss, reference[1].loss)
    _close(state.learner.params, reference[0].learner.params)


def test_looped_seeds_set_env_seed_and_stack(reference, monkeypatch):
    # An envpool game cannot be vmapped: checked on CartPole posing as one (gymnax ignores env_seed).
    seen = []
    real = seeds_lib.core.make_agent

    def spy(config):
        seen.append(config.env_seed)
        return real(config)

    monkeypatch.setattr(seeds_lib, "_jittable", lambda agent: False)
    monkeypatch.setattr(seeds_lib.core, "make_agent", spy)
    state, m = seeds_lib.train_seeds(CFG.replace(env_seed=5), jax.random.key(3), S)
    assert seen[-S:] == [5 + s for s in range(S)]
    assert m.loss.shape == (S, CFG.total_steps // CFG.num_envs)
    _close(m.loss, reference[1].loss)
    _close(state.actor.replay.data.reward, reference[0].actor.replay.data.reward)
    # one seed: the state gets its seed axis without a copy (donated)
    state, m = seeds_lib.train_seeds(CFG, jax.random.key(3), 1)
    assert state.actor.replay.data.reward.shape == (1,) + reference[0].actor.replay.data.reward.shape[1:]
    assert m.loss.shape == (1, CFG.total_steps // CFG.num_envs)
    assert bool(np.all(np.isfinite(m.loss[:, -1])))  # NaN only during the warm-up


def test_runner_in_chunks_host_driven_equals_one_run(reference):
    runner = seeds_lib.make_seed_runner(CFG.replace(loop="host"), S)
    assert runner.batched
    n = runner.num_iterations
    state = runner.init(jax.random.key(3))
    state, m1 = runner.run(state, 0, n // 2)
    state, m2 = runner.run(state, n // 2, n - n // 2)
    _close(np.concatenate([m1.loss, m2.loss], axis=1), reference[1].loss)
    _close(state.learner.params, reference[0].learner.params)


def test_bad_num_seeds_is_a_clear_error():
    with pytest.raises(ValueError, match="num_seeds"):
        seeds_lib.make_seed_runner(CFG, 0)
    with pytest.raises(ValueError, match="seed_devices"):  # seeds vmapped over more devices than exist
        seeds_lib.make_seed_runner(CFG.replace(seed_devices=64), 64)


def test_learning_rates_as_data_equal_configured_runs(reference):
    """A sweep of 2 learning rates × S seeds is one vmapped program (the rate in the optimizer state);
    each block equals the runs configured with that rate, from the same S seeds."""
    lrs = [CFG.lr, 3e-3]
    runner = seeds_lib.make_seed_runner(CFG, len(lrs) * S)
    state = runner.init(jax.random.key(3), seeds_per_value=S, lr=seeds_lib.sweep_values(lrs, S))
    np.testing.assert_allclose(state.learner.opt_state.hyperparams["learning_rate"], np.repeat(lrs, S))
    state, m = runner.run(state, 0, runner.num_iterations)
    _close(m.loss[:S], reference[1].loss)
    _close(jax.tree.map(lambda x: x[:S], state.learner.params), reference[0].learner.params)
    other_state, other = seeds_lib.train_seeds(CFG.replace(lr=lrs[1]), jax.random.key(3), S)
    _close(m.loss[S:], other.loss)
    _close(jax.tree.map(lambda x: x[S:], state.learner.params), other_state.learner.params)
    assert not np.allclose(np.asarray(m.loss[:S, -1]), np.asarray(m.loss[S:, -1]))  # the rate mattered


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=jnp.array([1e-3, -1.0])), r"lr must lie in \(0.0, inf\]"),
    (dict(lr=jnp.array([1e-3, np.nan])), r"lr must lie"),
    (dict(lr=jnp.array([1e-3, 1e-3, 1e-3])), r"lr must have one value per run, shape \(2,\)"),
    (dict(gamma=jnp.array([0.9, 0.99])), r"cannot take \['gamma'\] as data"),
    (dict(td_lambda=jnp.array([0.5, 0.9])), r"cannot take \['td_lambda'\] as data"),
    (dict(lr=jnp.array([1e-3, 1e-3]), seeds_per_value=3), r"seeds_per_value=3 must divide"),
])
def test_bad_sweep_values_name_the_argument(kwargs, match):
    runner = seeds_lib.make_seed_runner(CFG, 2)
    with pytest.raises(ValueError, match=match):
        runner.init(jax.random.key(0), **kwargs)
