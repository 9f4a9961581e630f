"""Run by tests/test_train_actor_critic.py in a subprocess with 4 fake CPU devices (XLA_FLAGS set
before jax is imported). Exits non-zero with a message on the first failed check."""

import os

assert "--xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", ""), "run with XLA_FLAGS set"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from tdjax.train import make_agent, make_train  # noqa: E402
from tdjax.train.actor_critic import ActorCriticConfig  # noqa: E402

assert jax.device_count() == 4, jax.devices()


def allclose(a, b, what, rtol=2e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=what)


TINY = dict(env="CartPole-v1", hidden=(8,), num_envs=8, num_steps=8, num_minibatches=2, num_epochs=2,
            total_steps=8 * 8 * 4)

# 1. A whole update (every epoch and minibatch, both networks, DAAC's critic schedule included) on a
#    rollout split over 4 devices by environment equals the single-device update on the whole rollout.
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
for algo in ("daac",):  # PPO's joint phase is the same code path with one network
    agent = make_agent(ActorCriticConfig(**TINY, algo=algo, daac_value_epochs=2, daac_value_freq=2))
    state, batch, _ = jax.jit(lambda k: agent.collect(agent.init(k), 0))(jax.random.key(0))  # [T, E = 8]
    batch_spec = jax.tree.map(lambda _: P(None, "data"), batch)
    single = jax.jit(agent.learner_update)
    sharded = jax.jit(jax.shard_map(lambda l, b, i: agent.learner_update(l, b, i, "data"), mesh=mesh,
                                    in_specs=(P(), batch_spec, P()), out_specs=(P(), P())))
    l1 = l4 = state.learner
    for i in range(2):
        l1, m1 = single(l1, batch, i)
        l4, m4 = sharded(l4, batch, i)
        allclose(m1, m4, f"{algo} metrics, iteration {i}")
        allclose(l1.params, l4.params, f"{algo} params, iteration {i}")
        allclose(l1.opt_state, l4.opt_state, f"{algo} optimizer state, iteration {i}")

# 2. A whole data-parallel run: replicated learner, per-device actors, probes, evaluation.
#    (Kill-and-resume of sharded runs is tested for the value-based loop; the driver is the same.)
cfg4 = ActorCriticConfig(**TINY, algo="ppo", num_devices=4, probe_interval=2, probe_k=8, eval_interval=2,
                         eval_num_envs=4, eval_steps=16, normalize_rewards=True)
state, metrics = jax.jit(make_train(cfg4))(jax.random.key(1))
assert metrics.loss.shape == (4,), metrics.loss.shape
assert state.actor.obs.shape == (4, 2, 4), state.actor.obs.shape
assert np.isfinite(np.asarray(metrics.loss)).all()
assert np.asarray(metrics.probes.probed).tolist() == [True, False, True, False]
assert np.isfinite(np.asarray(metrics.probes.actor_update_rank)[::2]).all()
assert np.asarray(metrics.evaluated).tolist() == [True, False] * 2
assert int(np.asarray(metrics.env_steps)[-1]) == 8 * 8 * 4
for leaf in jax.tree.leaves(state.learner.params):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert len(shards) == 4 and all(np.array_equal(shards[0], s) for s in shards), "params not replicated"
obs = np.asarray(state.actor.obs)
assert not all(np.array_equal(obs[0], obs[d]) for d in range(1, 4)), "devices ran the same environments"
print("MULTIDEVICE OK")
