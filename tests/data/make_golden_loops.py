"""Writes golden_loops.npz: final parameters and per-iteration losses of tiny runs of every loop family.

Generated with the loops as they were BEFORE the training-core rewrite (commit 8464ca5), so that
tests/test_train_golden.py can show the rewrite left each family's results unchanged:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/data/make_golden_loops.py OUT.npz

Keep the configs here in sync with tests/test_train_golden.py (it imports CONFIGS from this file).
"""

import sys

import jax
import numpy as np

from tdjax.train import ActorCriticConfig, ValueConfig

_V = dict(env="CartPole-v1", hidden=(16,), total_steps=600, num_envs=2, buffer_size=200, batch_size=8,
          learning_starts=32, target_update_interval=20, probe_interval=50, probe_k=8, probe_sign_steps=8)
_A = dict(env="CartPole-v1", hidden=(16,), num_envs=4, num_steps=16, num_minibatches=2, total_steps=384)

CONFIGS = {
    "dqn": ValueConfig(**_V),
    "double_dqn": ValueConfig(**_V, algo="double_dqn"),
    "c51": ValueConfig(**_V, algo="c51", n_atoms=11),
    "qr_dqn": ValueConfig(**_V, algo="qr_dqn", n_quantiles=8),
    "dqn_rmsprop": ValueConfig(**_V, optimizer="rmsprop", max_grad_norm=None),
    "dqn_minatar": ValueConfig(**dict(_V, env="Breakout-MinAtar", total_steps=300)),
    "dqn_2dev": ValueConfig(**_V, num_devices=2),
    "ppo": ActorCriticConfig(**_A, normalize_rewards=True, eval_interval=2, eval_num_envs=2, eval_steps=8,
                             probe_interval=2, probe_k=8),
    "daac": ActorCriticConfig(**_A, algo="daac", daac_value_freq=2, daac_value_epochs=2, probe_interval=3,
                              probe_k=8),
    "reinforce": ActorCriticConfig(**_A, algo="reinforce", normalize_advantages=False),
    "ppo_2dev": ActorCriticConfig(**_A, num_devices=2, eval_interval=2, eval_num_envs=2, eval_steps=8),
}
METRIC_FIELDS = ("loss", "return_sum", "return_count")


def flat(tree, prefix):
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def run(name, cfg):
    from tdjax.train import actor_critic, value_based

    make_train = (actor_critic if isinstance(cfg, ActorCriticConfig) else value_based).make_train
    state, metrics = jax.jit(make_train(cfg))(jax.random.key(7))
    out = flat(state.learner.params, f"{name}/params")
    for f in METRIC_FIELDS:
        out[f"{name}/metrics/{f}"] = np.asarray(getattr(metrics, f))
    return out


if __name__ == "__main__":
    arrays = {}
    for name, cfg in CONFIGS.items():
        arrays.update(run(name, cfg))
        print(name, "done", flush=True)
    np.savez_compressed(sys.argv[1], **arrays)
