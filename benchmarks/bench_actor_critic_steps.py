"""Environment steps per second of tdjax's PPO loop against a CleanRL-style baseline (envpool, CNNs).

The WHOLE loop is timed (rollout with envpool stepped inside jit through its XLA interface, GAE, all
epochs × minibatches of updates), compilation excluded and reported separately. The baseline is
`benchmarks/cleanrl_style_ppo_envpool.py`, a single-file PPO in the style of CleanRL's
`ppo_atari_envpool_xla_jax.py` (rollout jitted as one `lax.scan`, update jitted, a Python loop over
iterations with a host read of the logs each iteration). Four rows per game, measured in the same
run, interleaved:

  ============================== ============================================================== =====================
  row                            what is called                                                 timed
  ============================== ============================================================== =====================
  tdjax, scanned                 `jax.jit(make_train(cfg))(key)`: ONE XLA program, a lax.scan    the whole call
                                 over iterations around the rollout scan and the epoch ×         (init included:
                                 minibatch scans (tdjax's GPU structure)                         an env reset and
                                                                                                 the param init)
  tdjax, host-driven + unroll    `run_host_driven(make_agent(cfg.replace(loop="host")), ...)`:  iterations 2..N
                                 one jitted iteration per Python call, epoch × minibatch
                                 steps as straight-line code (tdjax's CPU structure)
  CleanRL-style, faithful        rollout scan + update with epoch and minibatch `lax.scan`s     iterations 1..N, as
                                                                                                 the scanned row
  CleanRL-style, --update-unroll the same with those two scans unrolled (not what CleanRL does)  iterations 2..N
  ============================== ============================================================== =====================

The ratio column is tdjax ÷ CleanRL-style for the matching structure (scanned ↔ faithful,
host-driven + unroll ↔ --update-unroll; > 1: tdjax faster); "best vs best" divides the fastest tdjax
row by the fastest CleanRL-style row among the rows measured at the same settings.

Settings (both implementations get the same ones; `tdjax_config` / `baseline_kwargs`):

  Pong-v5 — CleanRL's Atari settings: 8 envs × 128 steps, 4 minibatches × 4 epochs, Nature CNN,
    clip 0.1, lr 2.5e-4, γ 0.99, λ 0.95, entropy 0.01, value 0.5, grad norm 0.5, Adam ε 1e-5,
    advantage normalisation; tdjax switched to CleanRL's choices: NO value clipping
    (`clip_value_loss=False`), NO reward normalisation; envpool episodic_life + reward_clip in both.
  BigfishEasy-v0 — CleanRL's `ppo_procgen.py` settings scaled down to 16 envs × 32 steps,
    4 minibatches × 3 epochs (CleanRL: 64 × 256, 8 × 3), IMPALA CNN (16, 32, 32; dense 256),
    lr 5e-4 constant, γ 0.999, λ 0.95, clip 0.2 WITH value clipping, entropy 0.01, value 0.5,
    grad norm 0.5, reward normalisation (running std of the discounted return) in both;
    levels: CleanRL uses all levels (num_levels 0); tdjax needs a finite, held-out-disjoint range, so
    it trains on [0, 2**31 − 2) (evaluation off).

Remaining differences (maths, not settings; none changes the amount of work noticeably): CleanRL
anneals the Atari learning rate linearly (tdjax has a constant rate); CleanRL normalises advantages
per minibatch, tdjax per rollout; CleanRL's minibatches are random flat samples, tdjax's are random
time steps × all environments (same size); tdjax differentiates a vmapped per-example loss, CleanRL a
batch loss; CleanRL's Nature trunk is orthogonally initialised, tdjax's uses flax's default; tdjax
adds γ·V(final obs) to truncated steps' rewards (CleanRL treats truncation as termination); tdjax's
reward normalisation updates its statistics once per rollout and clips to ±10, the baseline's once
per step without clipping; IMPALA max-pool padding is SAME in tdjax, (1, 1) in the baseline; tdjax
also logs clip fractions and discounted returns. Both give envpool's reset steps weight 0.

XLA:CPU and the scanned rows: convolution gradients inside `lax.scan` run far slower on XLA:CPU than
outside one (jax-ml/jax#12868; measured here ≈ 15× for the Nature CNN, ≈ 40× for the IMPALA CNN), so
one scanned iteration at full settings costs minutes on CPU (Pong ≈ 3-4 min, Bigfish ≈ 6 min on 2
loaded cores). By default they therefore run ONE epoch (4 minibatch updates instead of 16 / 12;
`--scan-epochs`), 2 iterations for Pong and 1 for Bigfish (`--scan-iters`; with one iteration
`make_train`'s loop over iterations has length 1 and tdjax runs that iteration without the outer
scan, the rollout and update scans remain). Their steps/s are then comparable only with each other
(the ratio column), not with the host-driven rows, and they are left out of "best vs best". Both
scanned rows are timed over all their iterations (the tdjax row is one call). `--skip-scan` drops
them; `--rows` picks rows. On a GPU the scanned structure is the right one and none of this applies.

The baseline's unrolling needs at least 2 epochs and 2 minibatches: see UNROLL_NOTE (a JAX corner
case that makes `--update-unroll` a no-op, ~17× slower IMPALA updates, with one of either; tdjax's
`loop="host"` writes the steps as straight-line Python and is not affected); the script warns when a
game's settings hit it.

Usage (run under `nice`, with OPENBLAS_NUM_THREADS=1 — flax's orthogonal init runs LAPACK QR, which
a multi-threaded OpenBLAS stalls on a loaded machine; set here if the caller has not):
  python benchmarks/bench_actor_critic_steps.py             # default: ≈ 8-10 min on 2 idle cores
  python benchmarks/bench_actor_critic_steps.py --quick     # tiny sizes: ≈ 2 min of CPU (8 compilations)
  python benchmarks/bench_actor_critic_steps.py --quick --games pong    # < 1 minute
  python benchmarks/bench_actor_critic_steps.py --skip-scan --games pong
  python benchmarks/bench_actor_critic_steps.py --skip-scan --repeats 3    # host-driven rows 3× interleaved, best kept
  python benchmarks/bench_actor_critic_steps.py --skip-scan --repeats 3 --isolate   # each row in its own process
  python benchmarks/bench_actor_critic_steps.py --games bigfish --rows tdjax-scan cleanrl-scan
`make bench` runs it in the default mode with the allocator settings of the Makefile.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see the docstring)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ is not a package

import cleanrl_style_ppo_envpool as baseline  # noqa: E402

from tdjax.report import atomic_write_bytes  # noqa: E402
from tdjax.train import actor_critic as ac  # noqa: E402
from tdjax.train import make_train, run_host_driven  # noqa: E402

GAMES = ("pong", "bigfish")
ROWS = ("tdjax, scanned", "tdjax, host-driven + unroll", "CleanRL-style, faithful", "CleanRL-style, --update-unroll")
MATCH = {ROWS[0]: ROWS[2], ROWS[1]: ROWS[3]}  # tdjax row → CleanRL-style row of the same structure
SCANNED = (ROWS[0], ROWS[2])
ROW_KEYS = ("tdjax-scan", "tdjax-host", "cleanrl-scan", "cleanrl-unroll")  # --rows names, in ROWS' order
UNROLL_NOTE = (
    "lax.scan(..., unroll=True) over ONE element is not unrolled: jax turns unroll=True into unroll=length=1, "
    "the rolled lowering, and XLA:CPU then runs the convolution gradient in it as slowly as inside a loop "
    "(~17x for one IMPALA gradient step at batch 16 on the project's 2-core machine) although the optimised "
    "HLO has no while loop left. So the baseline's --update-unroll does not help when epochs == 1 or "
    "minibatches == 1 (unroll=length+1 would). tdjax's loop='host' writes the steps as a Python loop "
    "and is not affected; the sizes keep >= 2 of each so that both rows compare like with like.")


@dataclasses.dataclass(frozen=True)
class Game:
    """One game's settings. `iters`: iterations of the host-driven rows (iterations 2..N timed);
    `scan_iters`, `scan_epochs`: iterations and epochs of the scanned rows."""

    name: str
    task: str
    num_envs: int
    num_steps: int
    num_minibatches: int
    num_epochs: int
    iters: int
    scan_iters: int
    scan_epochs: int

    @property
    def batch(self) -> int:
        return self.num_envs * self.num_steps


def games(a) -> Dict[str, Game]:
    if a.quick:  # tiny: 2 envs × 16 (Pong) / 8 (Bigfish) steps, 2 minibatches × 2 epochs (not 1: UNROLL_NOTE)
        pong = Game("pong", "Pong-v5", 2, 16, 2, 2, 3, 2, 1)
        fish = Game("bigfish", "BigfishEasy-v0", 2, 8, 2, 2, 3, 2, 1)
    else:
        pong = Game("pong", "Pong-v5", 8, 128, 4, 4, 4, 2, 1)
        # Bigfish's scanned rows: ONE iteration (≈ 2 minutes each on 2 loaded cores even so)
        fish = Game("bigfish", "BigfishEasy-v0", 16, 32, 4, 3, 4, 1, 1)
    out = {}
    for g in (pong, fish):
        ch = {}
        if a.iters is not None:
            ch["iters"] = a.iters
        if a.scan_iters is not None:
            ch["scan_iters"] = a.scan_iters
        ch["scan_epochs"] = min(a.scan_epochs if a.scan_epochs is not None else g.scan_epochs, g.num_epochs)
        out[g.name] = dataclasses.replace(g, **ch)
    return out


# ----------------------------------------------------------------------------------------------------
# The same settings for both implementations.


def tdjax_config(g: Game, epochs: int, iters: int, seed: int) -> ac.ActorCriticConfig:
    common = dict(env=g.task, env_seed=seed, num_envs=g.num_envs, num_steps=g.num_steps,
                  total_steps=iters * g.batch, num_minibatches=g.num_minibatches, num_epochs=epochs,
                  gae_lambda=0.95, normalize_advantages=True, entropy_coef=0.01, value_coef=0.5, adam_eps=1e-5,
                  max_grad_norm=0.5, probe_interval=0, eval_interval=0, algo="ppo")
    if g.task.endswith("-v0"):  # ProcGen: CleanRL's ppo_procgen.py
        return ac.ActorCriticConfig(network="impala_cnn", gamma=0.999, lr=5e-4, clip_eps=0.2, clip_value_loss=True,
                                    normalize_rewards=True, num_levels=2**31 - 2, start_level=0, test_num_levels=1,
                                    **common)
    # Atari: CleanRL's ppo_atari_envpool_xla_jax.py (no value clipping, no reward normalisation)
    return ac.ActorCriticConfig(network="nature_cnn", gamma=0.99, lr=2.5e-4, clip_eps=0.1, clip_value_loss=False,
                                normalize_rewards=False, **common)


def baseline_kwargs(g: Game, epochs: int) -> Dict[str, Any]:
    """`baseline.measure` arguments: CleanRL's defaults for the task (`default_args`) at the game's sizes."""
    return dict(num_envs=g.num_envs, num_steps=g.num_steps, num_minibatches=g.num_minibatches, update_epochs=epochs)


def check_settings(g: Game, cfg: ac.ActorCriticConfig, epochs: int) -> None:
    """The two implementations get the same hyperparameters (the differences the docstring lists aside)."""
    b = baseline.default_args(g.task, **baseline_kwargs(g, epochs))
    pairs = [("num_envs", cfg.num_envs, b.num_envs), ("num_steps", cfg.num_steps, b.num_steps),
             ("minibatches", cfg.num_minibatches, b.num_minibatches), ("epochs", cfg.num_epochs, b.update_epochs),
             ("lr", cfg.lr, b.learning_rate), ("gamma", cfg.gamma, b.gamma), ("lambda", cfg.gae_lambda, b.gae_lambda),
             ("clip", cfg.clip_eps, b.clip_coef), ("value clipping", cfg.clip_value_loss, b.clip_vloss),
             ("entropy", cfg.entropy_coef, b.ent_coef), ("value coef", cfg.value_coef, b.vf_coef),
             ("grad norm", cfg.max_grad_norm, b.max_grad_norm), ("adam eps", cfg.adam_eps, b.adam_eps),
             ("adv. norm", cfg.normalize_advantages, b.norm_adv), ("reward norm", cfg.normalize_rewards, b.norm_reward),
             ("network", cfg.network, {"nature": "nature_cnn", "impala": "impala_cnn"}[b.network])]
    bad = [f"{n}: tdjax {x!r} vs baseline {y!r}" for n, x, y in pairs if x != y]
    if bad:
        raise AssertionError("settings differ: " + "; ".join(bad))


# ----------------------------------------------------------------------------------------------------
# Rows.


def _finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


def row_tdjax_scanned(g: Game, seed: int) -> Dict[str, Any]:
    epochs, iters = g.scan_epochs, g.scan_iters
    cfg = tdjax_config(g, epochs, iters, seed)
    check_settings(g, cfg, epochs)
    train = make_train(cfg)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(key).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(key))
    wall = time.perf_counter() - t0
    loss = np.asarray(metrics.loss)
    return dict(row=ROWS[0], epochs=epochs, iterations=iters, timed_iterations=iters, timed_s=wall,
                steps_per_s=iters * g.batch / wall, compile_s=compile_s, loss=float(loss[-1]), finite=_finite(loss))


def row_tdjax_host(g: Game, seed: int) -> Dict[str, Any]:
    epochs, iters = g.num_epochs, g.iters
    cfg = tdjax_config(g, epochs, iters, seed).replace(loop="host")
    check_settings(g, cfg, epochs)
    agent = ac.make_agent(cfg)
    state = jax.block_until_ready(jax.jit(agent.init)(jax.random.key(seed)))
    t0 = time.perf_counter()
    state, m0 = jax.block_until_ready(run_host_driven(agent, state, 0, 1))  # compiles, then iteration 0
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, m = jax.block_until_ready(run_host_driven(agent, state, 1, iters - 1))
    wall = time.perf_counter() - t0
    loss = np.concatenate([np.asarray(m0.loss), np.asarray(m.loss)])
    per_iter = wall / (iters - 1)
    return dict(row=ROWS[1], epochs=epochs, iterations=iters, timed_iterations=iters - 1, timed_s=wall,
                steps_per_s=(iters - 1) * g.batch / wall, compile_s=max(first_s - per_iter, 0.0),
                compile_note="≈", loss=float(loss[-1]), finite=_finite(loss))


def row_baseline(g: Game, seed: int, unroll: bool) -> Dict[str, Any]:
    epochs, iters = (g.num_epochs, g.iters) if unroll else (g.scan_epochs, g.scan_iters)
    res = baseline.measure(g.task, iters * g.batch, seed=seed, update_unroll=unroll, **baseline_kwargs(g, epochs))
    if unroll or iters == 1:  # iterations 2..N (the only one if N == 1), as measure() reports
        timed, wall, sps = (iters - 1 if iters > 1 else 1), res["timed_s"], res["steps_per_s"]
    else:  # like the tdjax scanned row, whose one call holds every iteration: iterations 1..N
        timed, wall = iters, res["first_iter_s"] + res["timed_s"]
        sps = iters * g.batch / wall
    return dict(row=ROWS[3] if unroll else ROWS[2], epochs=epochs, iterations=iters, timed_iterations=timed,
                timed_s=wall, steps_per_s=sps, compile_s=res["compile_s"], loss=float(res["loss"]),
                finite=_finite(res["losses"]), steps_per_s_2_to_n=res["steps_per_s"])


# ----------------------------------------------------------------------------------------------------
# Output.


def fmt(x: float, digits: int = 3) -> str:
    if x is None or x != x:
        return "–"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{max(digits - 1 - int(np.floor(np.log10(abs(x)))), 0)}f}" if x else "0"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summarise(g: Game, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Ratios: tdjax ÷ CleanRL-style per structure, and best vs best among rows at the full settings."""
    by = {r["row"]: r for r in rows}
    for r in rows:
        other = by.get(MATCH.get(r["row"]))
        same = other and other["epochs"] == r["epochs"]
        r["ratio"] = r["steps_per_s"] / other["steps_per_s"] if same else float("nan")
    full = [r for r in rows if r["epochs"] == g.num_epochs]
    t = [r for r in full if r["row"].startswith("tdjax")]
    c = [r for r in full if r["row"].startswith("CleanRL")]
    best = {}
    if t and c:
        bt, bc = max(t, key=lambda r: r["steps_per_s"]), max(c, key=lambda r: r["steps_per_s"])
        best = dict(tdjax=bt["row"], cleanrl=bc["row"], ratio=bt["steps_per_s"] / bc["steps_per_s"])
    return best


def print_game(g: Game, rows: List[Dict[str, Any]], best: Dict[str, Any]) -> None:
    headers = ["row", "epochs", "iterations (timed)", "compile s", "timed s", "env steps/s", "tdjax ÷ CleanRL-style",
               "last loss", "runs (env steps/s)"]
    body = []
    for name in ROWS:
        for r in rows:
            if r["row"] != name:
                continue
            body.append([name, r["epochs"], f"{r['iterations']} ({r['timed_iterations']})",
                         r.get("compile_note", "") + fmt(r["compile_s"]), fmt(r["timed_s"]), fmt(r["steps_per_s"]),
                         fmt(r["ratio"], 2) if r["row"].startswith("tdjax") else "",
                         f"{r['loss']:.4g}", " / ".join(fmt(x) for x in r.get("all_steps_per_s", [r["steps_per_s"]]))])
    print(md_table(headers, body))
    if best:
        print(f"\nbest vs best at {g.num_epochs} epochs: {best['tdjax']} ÷ {best['cleanrl']} = {best['ratio']:.2f}")
    if any(r["row"] in SCANNED and r["epochs"] != g.num_epochs for r in rows):
        print(f"(scanned rows ran {g.scan_epochs} epoch(s) instead of {g.num_epochs}, so they are compared only "
              "with each other; see --scan-epochs)")
    print(flush=True)


def _isolated_row(a, argv: Optional[Sequence[str]], game: str, key: str) -> Dict[str, Any]:
    """One row measured in a child process (this script with --games GAME --rows KEY)."""
    base = list(sys.argv[1:] if argv is None else argv)
    drop = {"--games", "--rows", "--repeats", "--isolate"}
    kept, skip = [], False
    for tok in base:  # strip the options the child gets anew
        if tok.startswith("--"):
            skip = tok in drop
            if skip:
                continue
        elif skip:
            continue
        kept.append(tok)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "row.json")
        cmd = [sys.executable, os.path.abspath(__file__), *kept, "--games", game, "--rows", key, "--row-json", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (2 envs × 16 or 8 steps, 2 minibatches × 2 epochs), < 1 minute on 2 idle cores")
    p.add_argument("--skip-scan", action="store_true",
                   help="leave out the two scanned rows (minutes per iteration on XLA:CPU, jax-ml/jax#12868)")
    p.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES))
    p.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=list(ROW_KEYS),
                   help="which rows to run (run in this order: tdjax-host, cleanrl-unroll, tdjax-scan, cleanrl-scan)")
    p.add_argument("--iters", type=int, default=None, help="iterations of the host-driven rows (>= 2; 2..N timed)")
    p.add_argument("--scan-iters", type=int, default=None, help="iterations of the scanned rows (default 2)")
    p.add_argument("--scan-epochs", type=int, default=None,
                   help="epochs of the scanned rows (default 1; the game's epochs make them comparable with the rest)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each host-driven / unrolled row, interleaved across rows; the fastest is kept "
                        "(the table's 'runs' column lists all)")
    p.add_argument("--isolate", action="store_true",
                   help="run every row in a fresh Python process (rows run one after another in one process "
                        "slow each other down: envpool instances and XLA state left by earlier rows)")
    # internal: --isolate's child writes its row here
    p.add_argument("--row-json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.iters is not None and a.iters < 2:
        p.error("--iters must be >= 2 (the first iteration is not timed)")
    if a.scan_iters is not None and a.scan_iters < 1:
        p.error("--scan-iters must be >= 1")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    if a.scan_epochs is not None and a.scan_epochs < 1:
        p.error("--scan-epochs must be >= 1")
    gs = games(a)
    t_start = time.perf_counter()
    print(f"## PPO env steps/s: tdjax vs CleanRL-style ({'quick' if a.quick else 'default'} mode)\n")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average at start {os.getloadavg()[0]:.1f}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if a.skip_scan:
        print("Scanned rows skipped (--skip-scan).")
    elif jax.devices()[0].platform == "cpu":
        print("Scanned rows: XLA:CPU runs convolution gradients inside lax.scan ~8-20× slower than outside "
              "(jax-ml/jax#12868), so they get few iterations and by default 1 epoch; --skip-scan leaves them out.")
    print(flush=True)
    out: Dict[str, Any] = {"games": {}}
    for name in a.games:
        g = gs[name]
        print(f"### {g.task}: {g.num_envs} envs × {g.num_steps} steps (batch {g.batch}), {g.num_minibatches} "
              f"minibatches × {g.num_epochs} epochs; host-driven / unrolled rows {g.iters} iterations, scanned rows "
              f"{g.scan_iters} iterations × {g.scan_epochs} epoch(s)\n", flush=True)
        if g.num_epochs == 1 or g.num_minibatches == 1:
            print(f"WARNING: {g.num_epochs} epoch(s) × {g.num_minibatches} minibatch(es): {UNROLL_NOTE}\n", flush=True)
        plan = [("tdjax-host", lambda: row_tdjax_host(g, a.seed)),
                ("cleanrl-unroll", lambda: row_baseline(g, a.seed, True)),
                ("tdjax-scan", lambda: row_tdjax_scanned(g, a.seed)),
                ("cleanrl-scan", lambda: row_baseline(g, a.seed, False))]
        best_of: Dict[str, Dict[str, Any]] = {}
        for rep in range(a.repeats):
            for key, fn in plan:
                if key not in a.rows or (a.skip_scan and key.endswith("-scan")):
                    continue
                if rep > 0 and key.endswith("-scan"):  # minutes each on CPU: measured once
                    continue
                t0 = time.perf_counter()
                r = _isolated_row(a, argv, name, key) if a.isolate else fn()
                r["row_s"] = time.perf_counter() - t0
                if a.row_json:
                    atomic_write_bytes(a.row_json, json.dumps(r, default=float).encode())
                    return {}
                print(f"  {r['row']}: {fmt(r['steps_per_s'])} env steps/s (compile {fmt(r['compile_s'])} s, "
                      f"row {r['row_s']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
                prev = best_of.get(r["row"])
                r["all_steps_per_s"] = (prev["all_steps_per_s"] if prev else []) + [r["steps_per_s"]]
                if prev is not None and prev["steps_per_s"] >= r["steps_per_s"]:
                    prev["all_steps_per_s"] = r["all_steps_per_s"]
                else:
                    best_of[r["row"]] = r
                jax.clear_caches()
                gc.collect()
        rows = list(best_of.values())
        print()
        best = summarise(g, rows)
        print_game(g, rows, best)
        out["games"][name] = dict(game=dataclasses.asdict(g), rows=rows, best=best)
    out["total_s"] = time.perf_counter() - t_start
    print(f"total {out['total_s']:.0f} s; load average at end {os.getloadavg()[0]:.1f}")
    return out


if __name__ == "__main__":
    main()
