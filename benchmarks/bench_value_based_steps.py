"""Environment steps per second of tdjax's value-based loop (DQN), 1 and 8 seeds vmapped.

Measures the whole jitted run (acting, replay, one update per iteration), compilation excluded:
the function is compiled first with `.lower().compile()`, then timed. Prints one line per setting.

Usage: python benchmarks/bench_value_based_steps.py [--steps N] [--seeds 1 8] [--envs CartPole-v1 ...]
"""

from __future__ import annotations

import argparse
import time

import jax

from tdjax.train import ValueConfig, make_train


def measure(env: str, seeds: int, steps: int, num_envs: int, probe_interval: int = 0) -> tuple[float, float]:
    cfg = ValueConfig(env=env, algo="dqn", total_steps=steps, num_envs=num_envs, buffer_size=10_000,
                      batch_size=64, learning_starts=1_000, train_frequency=1, probe_interval=probe_interval)
    train = make_train(cfg)
    fn = jax.vmap(train) if seeds > 1 else train
    keys = jax.random.split(jax.random.key(0), seeds) if seeds > 1 else jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - t0
    return seeds * steps / run_s, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=40_000, help="env steps per seed")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "Breakout-MinAtar"])
    p.add_argument("--probe-interval", type=int, default=0)
    a = p.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); "
          f"num_envs={a.num_envs}, 1 update per {a.num_envs} env steps, batch 64")
    for env in a.envs:
        for s in a.seeds:
            sps, c = measure(env, s, a.steps, a.num_envs, a.probe_interval)
            print(f"{env:18s} seeds={s:2d}  {sps:10.0f} env steps/s (all seeds)  "
                  f"{sps / s * 1.0 / a.num_envs:8.0f} updates/s per seed  compile {c:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
