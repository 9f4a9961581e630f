"""Student updates per second of tdjax's offline loop, against a plain jitted supervised loop (the floor).

Claim measured (issue 11, "Speed"): the offline loop (`tdjax/train/offline.py`) makes at least 0.9× the
updates per second of a hand-written jitted supervised training loop of the same network, batch and
optimizer on this CPU, with probes off.

Setup (not timed): a tiny DQN teacher is trained per setting and saved, with its final replay buffer
as the dataset (`tdjax.train.save_teacher`, `dataset_from_replay`, `save_dataset`, as
`experiments/_distill.py` does), to a temporary folder. Settings:

  minatar:  Breakout-MinAtar data, MinAtar CNN student (the Lyle et al. 2022 Fig. 5 setting), batch 32;
  cartpole: CartPole-v1 data, MLP (64, 64) student, batch 64.

Timed, each as ONE jitted call of the whole run (network and optimizer initialisation included),
compilation excluded (`jax.jit(fn).lower(...).compile()` first), `--repeats` calls per variant
interleaved across the variants of a setting (so that load drifting on a shared machine hits them
alike), the fastest call counting (wall time; the fastest in process CPU time gives a second ratio,
less sensitive to other jobs on the machine):

  * tdjax: `jax.jit(tdjax.train.make_train(OfflineConfig(...)))(key)`, probes off (`probe_interval=0`),
    `collect=False`: per iteration it samples `batch_size` slots of the time-ordered dataset, builds the
    examples (teacher forward pass on the batch where the objective needs one), makes one Adam step
    (after clipping the global gradient norm at 10, OfflineConfig's defaults) and records its metrics;
  * the floor: a `lax.scan` over `num_updates` of {`batch_size` uniform indices into the same data as
    flat device arrays (passed as arguments), the same loss (the same teacher forward pass for
    value distillation and behaviour cloning), `jax.value_and_grad`, the same optax chain}, on the
    same flax network (the student's `ValueNetwork`, applied directly). Nothing else.
  * tdjax with the probes on (`--probe-interval`, `probe_k=--probe-k`): what the probes cost
    (informational; the target is with probes off).

Checks (raise on failure): one update of tdjax's `learner_update` and one step of the floor on the same
batch give the same loss and parameters; both runs make `num_updates` updates; both losses decrease
(mean of the first tenth of the run > mean of the last tenth).

Usage:
  python benchmarks/bench_offline.py                   # default sizes (~10 min on 2 loaded cores)
  python benchmarks/bench_offline.py --quick           # small sizes (~2-3 min, mostly compiling)
  python benchmarks/bench_offline.py --settings cartpole --objectives mc_regression --updates 2000
Run under the Makefile's allocator settings (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ /
MALLOC_ARENA_MAX), which the header prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tdjax.train import (
    OfflineConfig,
    ValueConfig,
    dataset_from_replay,
    make_agent,
    make_train,
    save_dataset,
    save_teacher,
)
from tdjax.train import offline as off
from tdjax.train import replay as replay_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_value_based_steps import fmt, md_table  # noqa: E402  (the benchmarks' table helpers)

OBJECTIVES = ("value_distillation", "mc_regression", "behaviour_cloning")
SETTINGS = ("minatar", "cartpole")


# ----------------------------------------------------------------------------------------------------
# Helpers.


def say(*a):
    print(*a, flush=True)


class Variant:
    """One compiled run (compilation timed separately), called `repeats` times interleaved with the
    other variants of the same setting; the fastest call counts, in wall time and separately in the
    process's CPU time (less sensitive to another job on the machine). `finish(output)` checks the
    first output and returns facts about it."""

    def __init__(self, fn: Callable, args: tuple, updates: int, finish: Callable[[Any], Dict[str, Any]]):
        t0 = time.perf_counter()
        self.compiled = jax.jit(fn).lower(*args).compile()
        self.compile_s = time.perf_counter() - t0
        self.args, self.updates, self.finish = args, updates, finish
        self.best, self.best_cpu, self.facts = float("inf"), float("inf"), None

    def call(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(self.compiled(*self.args))
        self.best = min(self.best, time.perf_counter() - t0)
        self.best_cpu = min(self.best_cpu, time.process_time() - c0)
        if self.facts is None:
            self.facts = self.finish(out)

    def result(self) -> Dict[str, Any]:
        return {"ups": self.updates / self.best, "run_s": self.best, "cpu_s": self.best_cpu,
                "compile_s": self.compile_s, **self.facts}


def loss_first_last(loss: np.ndarray) -> tuple:
    """Mean loss over the first and the last tenth of the run."""
    n = max(len(loss) // 10, 1)
    return float(np.mean(loss[:n])), float(np.mean(loss[-n:]))


# ----------------------------------------------------------------------------------------------------
# Teacher and dataset (setup, not timed).


def teacher_config(setting: str, a) -> ValueConfig:
    common = dict(algo="dqn", num_envs=4, total_steps=a.teacher_steps, buffer_size=a.dataset_size,
                  learning_starts=min(1_000, a.teacher_steps // 4), target_update_interval=250, lr=1e-3,
                  eps_decay_steps=max(a.teacher_steps // 2, 1), eps_end=0.05, probe_interval=0)
    if setting == "minatar":
        return ValueConfig(env="Breakout-MinAtar", network="minatar_cnn", batch_size=32, **common)
    return ValueConfig(env="CartPole-v1", network="mlp", hidden=(64, 64), batch_size=64, **common)


def teacher_and_data(setting: str, a, folder: Path) -> tuple:
    """Trains the tiny DQN teacher and saves it and its final replay buffer: (teacher, dataset) folders."""
    cfg = teacher_config(setting, a)
    if cfg.total_steps < cfg.buffer_size:
        raise ValueError(f"--teacher-steps {a.teacher_steps} must be >= --dataset-size {a.dataset_size} "
                         "(the dataset is the teacher's FULL final buffer)")
    state, _ = jax.jit(make_train(cfg))(jax.random.key(0))
    save_teacher(folder / "teacher", cfg, state.learner.params)
    from tdjax.envs import vec_spec

    ds, info = dataset_from_replay(state.actor.replay, env=cfg.env, num_actions=int(vec_spec(cfg.env).num_actions),
                                   gamma=cfg.gamma, teacher=str(folder / "teacher"))
    save_dataset(folder / "data", ds, info)
    return str(folder / "teacher"), str(folder / "data")


def student_config(setting: str, a, teacher: str, data: str, objective: str) -> OfflineConfig:
    net = dict(network="minatar_cnn", batch_size=32) if setting == "minatar" else \
        dict(network="mlp", hidden=(64, 64), batch_size=64)
    return OfflineConfig(teacher=teacher, dataset=data, objective=objective, num_updates=a.updates[setting],
                         lr=a.lr, probe_interval=0, probe_k=a.probe_k, collect=False, **net)


# ----------------------------------------------------------------------------------------------------
# The floor: a plain jitted supervised loop.


def floor_arrays(agent) -> Dict[str, jax.Array]:
    """The dataset as flat device arrays [N, ...] (N = stored transitions), what a plain supervised loop
    would index: observations (float32), actions, Monte-Carlo returns, and the weight of each example
    (usable transition; for mc_regression also a complete return), exactly as tdjax weighs them."""
    ds = agent.dataset
    cap, num_envs = ds.replay.data.action.shape
    count = int(ds.replay.count)
    assert count == cap, f"the dataset is not full ({count} of {cap} slots)"
    t, e = np.divmod(np.arange(cap * num_envs), num_envs)
    tr = jax.jit(replay_lib.gather)(jax.tree.map(jnp.asarray, ds.replay), jnp.asarray(t), jnp.asarray(e))
    valid = np.asarray(tr.valid)
    complete = np.asarray(ds.mc_complete)[t, e]
    out = {"obs": tr.obs, "action": tr.action.astype(jnp.int32),
           "mc_return": jnp.asarray(np.asarray(ds.mc_return)[t, e]), "weight": jnp.asarray(valid.astype(np.float32)),
           "weight_mc": jnp.asarray((valid & complete).astype(np.float32))}
    return jax.device_put(out)


def floor_step_fn(agent, objective: str) -> Callable:
    """`step(params, opt_state, idx, arrays, teacher_params) -> (params, opt_state, loss)`: one Adam step
    on the examples at `idx`, written out by hand (same network, loss and optax chain as tdjax)."""
    net, tx = agent.network, agent.optimizer
    scale = agent.spec.obs_scale
    teacher_fn = agent.teacher.output_fn() if agent.teacher is not None else None
    entropy_coef = agent.config.bc_entropy_coef

    def step(params, opt_state, idx, arrays, teacher_params):
        x = arrays["obs"][idx]
        w = arrays["weight_mc" if objective == "mc_regression" else "weight"][idx]
        if teacher_fn is not None:
            q_teacher = jax.lax.stop_gradient(teacher_fn(teacher_params, x))

        def loss_fn(p):
            out = net.apply(p, x if scale == 1.0 else x * scale)
            if objective == "value_distillation":
                per = jnp.sum(jnp.square(out - q_teacher), axis=-1)
            elif objective == "mc_regression":
                taken = jnp.take_along_axis(out, arrays["action"][idx][:, None], axis=-1)[:, 0]
                per = jnp.square(taken - arrays["mc_return"][idx])
            elif objective == "behaviour_cloning":
                logp = jax.nn.log_softmax(out)
                a_t = jnp.argmax(q_teacher, axis=-1)
                entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
                per = -jnp.take_along_axis(logp, a_t[:, None], axis=-1)[:, 0] - entropy_coef * entropy
            else:
                raise ValueError(objective)
            return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def floor_train_fn(agent, objective: str) -> Callable:
    """`train(key, arrays, teacher_params) -> (params, losses [num_updates])`: init + `lax.scan`."""
    step = floor_step_fn(agent, objective)
    c = agent.config
    n_updates, batch = c.num_updates, c.batch_size
    dummy = jnp.zeros(agent.info.obs_shape, jnp.float32)

    def train(key, arrays, teacher_params):
        k_init, k_data = jax.random.split(key)
        params = agent.network.init(k_init, dummy)
        n = arrays["action"].shape[0]

        def body(carry, i):
            params, opt_state = carry
            idx = jax.random.randint(jax.random.fold_in(k_data, i), (batch,), 0, n)
            params, opt_state, loss = step(params, opt_state, idx, arrays, teacher_params)
            return (params, opt_state), loss

        (params, _), losses = jax.lax.scan(body, (params, agent.optimizer.init(params)), jnp.arange(n_updates))
        return params, losses

    return train


def check_same_maths(agent, objective: str, arrays, teacher_params) -> float:
    """One update on the same batch: tdjax's `learner_update` (examples from `make_examples`) and the
    floor's step give the same loss and parameters. Returns the largest parameter difference."""
    c = agent.config
    state = jax.jit(agent.init)(jax.random.key(5))
    learner, data = state
    num_envs = agent.dataset.replay.data.action.shape[1]
    idx = jax.random.randint(jax.random.key(6), (c.batch_size,), 0, arrays["action"].shape[0])
    step = floor_step_fn(agent, objective)

    @jax.jit
    def both(learner, data, idx, arrays):
        batch = agent.make_examples(learner, data, idx // num_envs, idx % num_envs)
        new, loss_t = agent.learner_update(learner, batch)
        params_f, _, loss_f = step(learner.params, learner.opt_state, idx, arrays, data.teacher_params)
        diff = jax.tree.map(lambda x, y: jnp.max(jnp.abs(x - y)), new.params, params_f)
        return loss_t, loss_f, jnp.max(jnp.stack(jax.tree.leaves(diff)))

    loss_t, loss_f, diff = (float(x) for x in both(learner, data, idx, arrays))
    assert abs(loss_t - loss_f) <= 1e-5 * max(1.0, abs(loss_f)), (objective, loss_t, loss_f)
    assert diff < 1e-5, (objective, diff)
    return diff


# ----------------------------------------------------------------------------------------------------
# Variants.


def tdjax_variant(cfg: OfflineConfig) -> Variant:
    def finish(out):
        m = out[1]
        loss = np.asarray(m.loss)
        assert int(np.asarray(m.updates)[-1]) == cfg.num_updates == len(loss), "tdjax: wrong number of updates"
        assert np.isfinite(loss).all(), "tdjax: non-finite loss"
        first, last = loss_first_last(loss)
        return {"updates": int(np.asarray(m.updates)[-1]), "loss_first": first, "loss_last": last,
                "probes": int(np.asarray(m.probes.probed).sum())}

    return Variant(make_train(cfg), (jax.random.key(0),), cfg.num_updates, finish)


def floor_variant(agent, objective: str, arrays, teacher_params) -> Variant:
    n = agent.config.num_updates

    def finish(out):
        loss = np.asarray(out[1])
        assert len(loss) == n and np.isfinite(loss).all(), "floor: wrong number of updates or non-finite loss"
        first, last = loss_first_last(loss)
        assert last < first, f"floor ({objective}): the loss did not decrease ({first:.4g} → {last:.4g})"
        return {"updates": len(loss), "loss_first": first, "loss_last": last, "probes": 0}

    return Variant(floor_train_fn(agent, objective), (jax.random.key(0), arrays, teacher_params), n, finish)


def bench_setting(setting: str, a, folder: Path) -> Dict[str, Any]:
    t0 = time.perf_counter()
    teacher, data = teacher_and_data(setting, a, folder / setting)
    base = student_config(setting, a, teacher, data, a.objectives[0])
    say(f"\n## {setting}: {'Breakout-MinAtar, MinAtar CNN' if setting == 'minatar' else 'CartPole-v1, MLP (64, 64)'} "
        f"student, batch {base.batch_size}, Adam lr {base.lr} after clip_by_global_norm({base.max_grad_norm}), "
        f"{base.num_updates} updates per run; dataset: the final buffer of a {a.teacher_steps}-step DQN teacher "
        f"({a.dataset_size} transitions; setup {time.perf_counter() - t0:.0f} s)")
    variants: Dict[tuple, Variant] = {}
    facts: Dict[str, Any] = {}
    for obj in a.objectives:
        cfg = base.replace(objective=obj, teacher=teacher if off.OBJECTIVES[obj].teacher else "")  # none if unused
        agent = make_agent(cfg)
        arrays = floor_arrays(agent)
        teacher_params = None if agent.teacher is None else jax.device_put(agent.teacher.params)
        diff = check_same_maths(agent, obj, arrays, teacher_params)
        facts[obj] = {"check_max_param_diff": diff}
        say(f"  check ({obj}): one update of tdjax's learner_update == the floor's step on the same batch "
            f"(max parameter difference {diff:.1e})")
        variants[("tdjax", obj)] = tdjax_variant(cfg)
        variants[("floor", obj)] = floor_variant(agent, obj, arrays, teacher_params)
        if a.probe_interval and obj == a.objectives[0]:
            variants[("probes", obj)] = tdjax_variant(cfg.replace(probe_interval=a.probe_interval))
    for _ in range(a.repeats):  # interleaved
        for v in variants.values():
            v.call()
    res: Dict[str, Any] = {"tdjax": {}, "floor": {}, "probes": {}, "checks": facts}
    for (kind, obj), v in variants.items():
        r = v.result()
        res[kind][obj] = r
        say(f"  {kind:6s} {obj:20s}: {r['ups']:9.0f} updates/s (run {r['run_s']:.2f} s, CPU {r['cpu_s']:.2f} s, "
            f"compile {r['compile_s']:.1f} s; {r['updates']} updates, loss {r['loss_first']:.4g} → {r['loss_last']:.4g}"
            + (f", {r['probes']} probes)" if kind == "probes" else ")"))
    return res


def report(out: Dict[str, Any], a) -> None:
    rows, probe_rows, ratios = [], [], []
    for setting, res in out.items():
        res["ratio"], res["ratio_cpu"] = {}, {}
        for obj in a.objectives:
            t, f = res["tdjax"][obj], res["floor"][obj]
            res["ratio"][obj] = t["ups"] / f["ups"]
            res["ratio_cpu"][obj] = f["cpu_s"] / t["cpu_s"]
            ratios.append(res["ratio"][obj])
            rows.append([setting, obj, fmt(t["ups"]), fmt(f["ups"]), f"**{res['ratio'][obj]:.2f}**",
                         f"{res['ratio_cpu'][obj]:.2f}", f"{t['loss_first']:.3g} → {t['loss_last']:.3g}",
                         f"{f['loss_first']:.3g} → {f['loss_last']:.3g}"])
        for obj, p in res["probes"].items():
            t = res["tdjax"][obj]
            on_off, on_floor = p["ups"] / t["ups"], p["ups"] / res["floor"][obj]["ups"]
            probe_rows.append([setting, obj, f"every {a.probe_interval} updates, k={a.probe_k} ({p['probes']} probes)",
                               fmt(t["ups"]), fmt(p["ups"]), f"{on_off:.2f}", f"{100 * (1 - on_off):.0f} %",
                               f"{on_floor:.2f}"])
    say("\n### A. Student updates/s, probes off: tdjax's offline loop vs a plain jitted supervised loop (the floor)\n")
    say(md_table(["setting", "objective", "tdjax, updates/s", "floor, updates/s", "tdjax ÷ floor",
                  "tdjax ÷ floor (CPU time)", "tdjax loss (first → last tenth)", "floor loss (first → last tenth)"],
                 rows))
    say("(updates/s from the fastest of the interleaved calls in wall time; the CPU-time column is the ratio of "
        "the fastest calls in process CPU time, less sensitive to other jobs on the machine.)")
    if ratios:
        say(f"\nprobes off: tdjax ÷ floor from {min(ratios):.2f} to {max(ratios):.2f} "
            f"(target ≥ 0.9: {'met' if min(ratios) >= 0.9 else 'NOT met'} in every row)")
    if probe_rows:
        say("\n### B. Probe cost (informational)\n")
        say(md_table(["setting", "objective", "probes", "probes off, updates/s", "probes on, updates/s", "on ÷ off",
                      "probe cost", "on ÷ floor"], probe_rows))


# ----------------------------------------------------------------------------------------------------


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (~1-2 min, mostly compiling); overrides the sizes")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES,
                   help="the first one also gets the probes-on row")
    p.add_argument("--updates", type=int, default=None,
                   help="updates per run (default: 2000 for minatar, 5000 for cartpole: ~1-2 s per call)")
    p.add_argument("--repeats", type=int, default=11,
                   help="timed calls per variant, interleaved (the fastest counts): short runs, many repeats, so "
                        "that some fall in quiet moments of a shared machine")
    p.add_argument("--lr", type=float, default=1e-3, help="student learning rate (Fig. 5: 1e-3)")
    p.add_argument("--teacher-steps", type=int, default=12_000, help="env steps of the DQN teacher (4 envs)")
    p.add_argument("--dataset-size", type=int, default=10_000, help="transitions in the dataset (teacher's buffer)")
    p.add_argument("--probe-interval", type=int, default=250,
                   help="updates between probes of the probes-on row (0: skip)")
    p.add_argument("--probe-k", type=int, default=32)
    a = p.parse_args(argv)
    if a.quick:
        a.teacher_steps, a.dataset_size, a.repeats = 2_000, 1_000, 3
        a.updates = a.updates or 500
    a.updates = {"minatar": a.updates or 2_000, "cartpole": a.updates or 5_000}
    return a


def main(argv=None) -> Dict[str, Any]:
    a = parse(argv)
    malloc = ", ".join(f"{k}={os.environ.get(k)}" for k in
                       ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"))
    say(f"# {os.path.basename(__file__)}: jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s)), {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at start; {malloc}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}; repeats={a.repeats}; compile time excluded")
    t0 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="tdjax_bench_offline_"))
    out: Dict[str, Any] = {}
    try:
        for setting in a.settings:
            out[setting] = bench_setting(setting, a, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(out, a)
    say(f"\nload average {os.getloadavg()[0]:.1f} at the end; total wall time {time.perf_counter() - t0:.0f} s")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
