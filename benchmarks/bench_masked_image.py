"""Environment steps per second of one masked-image Double DQN run against the same agent on MinAtar.

The masked-image task (`tdjax.envs.MaskedImageEnv`, Bengio et al. 2020 §3; here the stand-in
"MaskedImage-digits", observations [32, 32, 2]) is compared with a gymnax task of similar observation
size, MinAtar Breakout ([10, 10, 4]), with the same Double DQN settings (replay, batch, one update per
vector step), each with its natural network: Bengio's conv net (`network="bengio_cnn"`, n_h, n_L from
the flags) on masked images, MinAtar's reference CNN on Breakout. Two rows:

  run:  the whole training run, `jax.jit(make_train(cfg))(key)`, compilation excluded;
  env:  the environments alone, random actions, `num_envs` × `--env-steps` steps in one jitted scan.

The variants are interleaved in one process, `--repeats` times, keeping the fastest; the ratio is
masked-image ÷ MinAtar (≥ 1: the masked-image task is at least as fast). Timings are wall-clock and
noisy on a shared machine.

Usage:
  python benchmarks/bench_masked_image.py                 # ~2-4 min on 2 CPU cores, mostly compiling
  python benchmarks/bench_masked_image.py --total-steps 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Callable, Dict, Sequence

import jax
import jax.numpy as jnp

from tdjax import envs as envs_lib
from tdjax.train import ValueConfig, make_train


def _configs(a: argparse.Namespace) -> Dict[str, ValueConfig]:
    common = dict(algo="double_dqn", num_envs=a.num_envs, total_steps=a.total_steps, buffer_size=a.buffer_size,
                  batch_size=a.batch_size, learning_starts=a.learning_starts, target_update_interval=100,
                  eps_decay_steps=a.total_steps // 2)
    return {
        "masked-image (digits)": ValueConfig(env="MaskedImage-digits", env_options=(("num_images", a.n_t),),
                                             network="bengio_cnn", cnn_width=a.n_h, cnn_extra_layers=a.n_l, **common),
        "Breakout-MinAtar": ValueConfig(env="Breakout-MinAtar", network="minatar_cnn", **common),
    }


def _env_only(cfg: ValueConfig, steps: int) -> Callable[[jax.Array], jax.Array]:
    venv = envs_lib.make_vec(cfg.env, cfg.num_envs, options=dict(cfg.env_options))

    def run(key):
        state, _ = venv.reset(key)

        def body(carry, t):
            state, acc = carry
            k = jax.random.fold_in(key, t)
            a = jax.random.randint(k, (cfg.num_envs,), 0, venv.num_actions)
            state, s = venv.step(state, jax.random.fold_in(k, 1), a)
            return (state, acc + s.reward.sum() + s.obs.sum() * 0.0), None

        (_, acc), _ = jax.lax.scan(body, (state, jnp.zeros(())), jnp.arange(steps))
        return acc

    return run


def _time(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved, so a load spike hits every variant alike
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--total-steps", type=int, default=8_000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--buffer-size", type=int, default=4_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-starts", type=int, default=1_000)
    p.add_argument("--n-t", type=int, default=500, help="training images n_T of the masked-image task")
    p.add_argument("--n-h", type=int, default=8, help="n_h of Bengio's conv net")
    p.add_argument("--n-l", type=int, default=0, help="n_L of Bengio's conv net")
    p.add_argument("--env-steps", type=int, default=2_000, help="vector steps of the environment-only row")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)

    cfgs = _configs(a)
    key = jax.random.key(0)
    runs, envs = {}, {}
    for name, cfg in cfgs.items():
        t = time.perf_counter()
        runs[name] = jax.jit(make_train(cfg)).lower(key).compile()
        envs[name] = jax.jit(_env_only(cfg, a.env_steps)).lower(key).compile()
        print(f"# compiled {name} in {time.perf_counter() - t:.1f} s", flush=True)
    t_run = _time({k: (lambda f=f: f(key)) for k, f in runs.items()}, a.repeats)
    t_env = _time({k: (lambda f=f: f(key)) for k, f in envs.items()}, a.repeats)

    names = list(cfgs)
    print(f"\n{platform.processor() or platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s); "
          f"DDQN, {a.num_envs} envs, {a.total_steps} env steps, batch {a.batch_size}; masked images: n_T = {a.n_t}, "
          f"n_h = {a.n_h}, n_L = {a.n_l} (digits STAND-IN)\n")
    print("| what | " + " | ".join(f"{n} (env steps/s)" for n in names) + " | ratio masked ÷ MinAtar |")
    print("|---|" + "---|" * (len(names) + 1))
    for row, times, steps in (("whole DDQN run", t_run, a.total_steps), ("environment only", t_env,
                                                                           a.env_steps * a.num_envs)):
        rates = [steps / times[n] for n in names]
        print(f"| {row} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {rates[0] / rates[1]:.2f} |")


if __name__ == "__main__":
    main()
