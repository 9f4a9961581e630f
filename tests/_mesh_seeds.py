"""Run by tests/test_train_mesh.py in a subprocess with 4 fake CPU devices (set before jax is imported)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tdjax.train import ValueConfig, make_train, mesh  # noqa: E402

CFG = ValueConfig(hidden=(16,), total_steps=240, num_envs=2, buffer_size=120, batch_size=8, learning_starts=32,
                  target_update_interval=20)
keys = jax.random.split(jax.random.key(0), 4)


def params(cfg, shard):
    k = mesh.shard_seeds(keys, mesh.make_mesh(cfg.seed_devices, cfg.num_devices)) if shard else keys
    state = jax.jit(jax.vmap(make_train(cfg)))(k)[0]
    return state.learner.params


def close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


# seeds sharded over 4 devices = the same seeds vmapped on one device
sharded = params(CFG.replace(seed_devices=4), shard=True)
close(params(CFG, shard=False), sharded)
leaf = jax.tree.leaves(sharded)[0]
assert len(leaf.sharding.device_set) == 4, leaf.sharding
# both axes at once: 2 seed devices × 2 data devices = each seed's data-parallel run, unsharded seeds
dp = CFG.replace(num_devices=2)
close(params(dp, shard=False), params(dp.replace(seed_devices=2), shard=True))
try:
    mesh.shard_seeds(keys[:3], mesh.make_mesh(2, 1))
    raise AssertionError("3 seeds over 2 seed devices must be refused")
except ValueError as err:
    assert "multiple of 2" in str(err), err
print("ok")
