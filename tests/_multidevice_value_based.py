"""Run by tests/test_train_multidevice.py in a subprocess with 4 fake CPU devices (XLA_FLAGS set
before jax is imported). Exits non-zero with a message on the first failed check."""

import os

assert "--xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", ""), "run with XLA_FLAGS set"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from tdjax.train import ValueConfig, make_agent, make_train  # noqa: E402
from tdjax.train.replay import Transition  # noqa: E402
from tdjax.train.value_based import LearnerState  # noqa: E402

assert jax.device_count() == 4, jax.devices()


def allclose(a, b, what, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=what)


def random_batch(key, n, obs_dim, num_actions):
    ks = jax.random.split(key, 5)
    return Transition(
        obs=jax.random.normal(ks[0], (n, obs_dim)), action=jax.random.randint(ks[1], (n,), 0, num_actions),
        reward=jax.random.normal(ks[2], (n,)), discount=(jax.random.uniform(ks[3], (n,)) > 0.2).astype(jnp.float32),
        next_obs=jax.random.normal(ks[4], (n, obs_dim)), done=jnp.zeros((n,), bool), valid=jnp.ones((n,), bool),
    )


# 1. The sharded learner update (batch split over 4 devices, gradients pmean-ed) equals the
#    single-device update on the whole batch, for a few consecutive steps (Adam state included).
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
for algo in ("dqn", "c51"):
    cfg = ValueConfig(algo=algo, hidden=(16,), num_envs=4, total_steps=800, buffer_size=200, batch_size=16,
                      learning_starts=32, n_atoms=11)
    agent = make_agent(cfg)
    params = agent.network.init(jax.random.key(0), jnp.zeros((4,)))
    learner = LearnerState(params, jax.tree.map(lambda x: x + 0.1, params), agent.optimizer.init(params))
    single = jax.jit(agent.learner_update)
    sharded = jax.jit(jax.shard_map(lambda l, b: agent.learner_update(l, b, "data"), mesh=mesh,
                                    in_specs=(P(), P("data")), out_specs=(P(), P())))
    l1 = l4 = learner
    for step in range(3):
        batch = random_batch(jax.random.key(10 + step), 16, 4, 2)
        l1, loss1 = single(l1, batch)
        l4, loss4 = sharded(l4, batch)
        allclose(loss1, loss4, f"{algo} loss, step {step}")
        allclose(l1.params, l4.params, f"{algo} params, step {step}")
        allclose(l1.opt_state, l4.opt_state, f"{algo} optimizer state, step {step}")

# 2. A whole data-parallel run: replicated learner, per-device actors, finite losses, probes.
cfg4 = ValueConfig(hidden=(16,), num_envs=4, total_steps=800, buffer_size=200, batch_size=16, learning_starts=32,
                   num_devices=4, probe_interval=50, probe_k=8, probe_sign_steps=8)
agent4 = make_agent(cfg4)
state, metrics = jax.jit(make_train(cfg4))(jax.random.key(1))
n = agent4.num_iterations
assert metrics.loss.shape == (n,), metrics.loss.shape
assert state.actor.obs.shape == (4, 1, 4), state.actor.obs.shape
learned = np.asarray(metrics.learned)
assert learned.sum() == n - agent4.warmup_iterations
assert np.isfinite(np.asarray(metrics.loss)[learned]).all()
assert int(np.asarray(metrics.probes.probed).sum()) == (n - agent4.warmup_iterations) // 50
assert np.isfinite(np.asarray(metrics.probes.update_rank)[np.asarray(metrics.probes.probed)]).all()
for leaf in jax.tree.leaves(state.learner.params):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    assert len(shards) == 4 and all(np.array_equal(shards[0], s) for s in shards), "params not replicated"
# the four devices ran different environments (per-device keys)
obs = np.asarray(state.actor.obs)
assert not all(np.array_equal(obs[0], obs[d]) for d in range(1, 4))
# every episode counted once: env steps seen by the return bookkeeping match the global count
assert int(np.asarray(metrics.env_steps)[-1]) == 800

# (Many seeds of a data-parallel run at once, vmapped and sharded: tests/_mesh_seeds.py.)

# 3. Checkpointed data-parallel run: killed after one chunk, resumed, bit-identical.
import tempfile  # noqa: E402

from tdjax.train import train_with_checkpoints  # noqa: E402

cfg_ck = cfg4.replace(probe_interval=0, checkpoint_interval=100)


class Killed(Exception):
    pass


def kill(it):
    if it == 100:
        raise Killed


with tempfile.TemporaryDirectory() as d:
    full, _ = train_with_checkpoints(cfg_ck, jax.random.key(3), d + "/full", progress=False)
    try:
        train_with_checkpoints(cfg_ck, jax.random.key(3), d + "/cut", progress=False, on_chunk=kill)
        raise AssertionError("not killed")
    except Killed:
        pass
    resumed, _ = train_with_checkpoints(cfg_ck, jax.random.key(3), d + "/cut", progress=False)
    for x, y in zip(jax.tree.leaves(full.learner), jax.tree.leaves(resumed.learner)):
        assert np.array_equal(np.asarray(x), np.asarray(y)), "sharded resume not bit-identical"
print("MULTIDEVICE OK")
