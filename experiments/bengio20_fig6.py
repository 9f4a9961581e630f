"""Bengio et al. 2020, Fig. 6 (§5.2): DQN return and interference ρ̄ against the TD-error sign variance.

The paper: for an approximator whose bootstrap targets alternate between over- and under-estimates,
ρₓᵧ = δₓ δᵧ ∇V(x)ᵀ∇V(y) is negative for nearby states x, y whose TD errors differ in sign, so "we
measure the variance of the sign of the TD error along small windows (of length 5 here) in
trajectories as a proxy of this local target incoherence". Fig. 6, "for a DQN agent trained on
MsPacman", plots (top) the "average reward after training as a function of the sign variance for
different learning rates (α) and number of hidden units (size of markers)" and (bottom) the "average
function interference ρ̄ after training", with the x axes aligned. The text claims: "parameterizations
with a large ρ̄ and a large sign variance perform much worse"; "this effect can be lessened by using a
much smaller learning rate than is normal, but this comes at the cost of having to perform more
updates for a similar performance"; and "parameterizations with large ρ̄ generally do have a large
sign variance (r = 0.71)".

What this module does: DQN CONTROL (`tdjax.train.ValueConfig(algo="dqn")`, the value loop) on one game
over a grid of hidden sizes × learning rates × seeds. Per hidden size (it changes the parameter
shapes: one program each) every learning rate × seed is ONE vmapped program, the rates as data in
the optimizer state (`tdjax.train.seeds.make_seed_runner(agent, L·R)`, `runner.init(key,
seeds_per_value=R, lr=sweep_values(lrs, R))`; runs are setting-major, and every rate starts from the
same R seeds). The loop's own probes (`tdjax.train.probes`, every `agent.probe_interval` updates,
`probe_set="interference"`: only these two, the update-rank probes are not compiled) give both axes:
  * sign variance: `td_sign_variance` (window `probe_sign_window` = 5) over the most recent
    `probe_sign_steps` steps of every environment, windows across an episode end left out;
  * ρ̄: the mean off-diagonal entry of the Gram matrix of ∇θ maxₐ Q(x, a) over `probe_k` states drawn
    from replay (`tdjax.gram_matrix`, eq. 8).
"After training" is the last `final_fraction` (a quarter) of the run: the mean of the probes taken in
the last quarter of the updates, and the mean undiscounted return of the episodes that ended in the
last quarter of the iterations (`tdjax.train.core.mean_return`). The correlation is Pearson's r
between log ρ̄ and the sign variance over all runs, with a 90% bootstrap interval
(`tdjax.interference_gap_correlation`); ρ̄ spans orders of magnitude across learning rates, so its
log is correlated (r on ρ̄ itself is reported too). The per-run table is the CSV.

Hidden units: Bengio's released Atari code (`atari_control.py`) scales the whole DQN with `nhid`
(conv nhid → 2nhid → 2nhid, dense 16 nhid; 32 is the Nature network). Here the width is
`ValueConfig.torso_width` n_h: the MinAtar CNN's conv n_h → dense 8 n_h (16 is MinAtar's reference
network), the Nature CNN's n_h, 2n_h, 2n_h → 16 n_h; for an MLP (`tiny`) every hidden layer has n_h units.

Where this differs from the paper, on purpose or by necessity:
  * App. B.4 says Fig. 6 "reuses the results of Figure 4's policy evaluation experiments run with
    Adam", while §5.2 says "a DQN agent trained on MsPacman"; the issue asks for DQN control, which is
    what runs here (Fig. 4's control runs are DQN with Adam too; policy evaluation on D* has no
    return of its own to plot);
  * smoke/cpu: MinAtar SpaceInvaders stands in for MsPacman, with the MinAtar CNN: MsPacman is not in
    MinAtar and Atari is not jittable. Like MsPacman's pellets, its rewards are dense (one per alien
    shot), so TD errors carry reward signal rather than only bootstrap noise, and a DQN's return
    separates the settings within a few thousand updates on 2 CPU cores (Breakout-MinAtar, whose
    rewards are sparse, reached returns of only 1–2 at the smoke budget; docs/experiments/bengio20_fig6.md);
  * the paper gives neither its learning rates nor its sizes: smoke uses α ∈ {1e-4, 1e-3, 1e-2}
    around this repo's usual MinAtar Adam rate 1e-3 (the claims' "normal" α) and n_h ∈ {4, 8, 16};
  * squared TD loss (the released code: smooth L1), no L2 weight decay (the paper: 1e-4), ReLU (the
    paper: leaky ReLU), no gradient clipping (as the paper);
  * the sign variance is taken over the loop's most recent steps (the agent's current trajectories),
    not over trajectories from the whole buffer.

Scales (`--scale`): `smoke` (`make reproduce`: SpaceInvaders-MinAtar, 3 α × 3 n_h × 2 seeds, 16k steps
each; 2–6 minutes on 2 cores), `cpu` (6 α × 4 n_h × 3 seeds, 100k steps), `paper` (MsPacman-v5 through envpool
with sticky actions, Nature CNN, the released code's DQN: 10M agent steps, batch 32, 500k buffer,
target every 10k updates, ε 1 → 0.05 over 500k steps; α ∈ {1e-5, 3e-5, 1e-4, 3e-4} with 1e-4 (App.
B.2) as "normal", n_h ∈ {16, 32, 64}: a GPU job; envpool runs are not vmapped, the runner loops them
and sets each one's rate with `set_hyperparams`).

Run: `python -m experiments.bengio20_fig6 --out outputs/bengio20_fig6 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import numpy as np

import tdjax
from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import ValueConfig, make_agent
from tdjax.train.core import mean_return
from tdjax.train.seeds import SeedRunner, make_seed_runner, sweep_values
from tdjax.train.validation import require

NAME = "bengio20_fig6"
SCALES = ("smoke", "cpu", "paper")
CURVE_BINS = 8  # the return over training, in this many stretches of iterations (npz: return_curve)


@dataclasses.dataclass(frozen=True)
class Config:
    game: str = "SpaceInvaders-MinAtar"  # MinAtar stand-in for MsPacman (module docstring)
    seed: int = 0  # root key; width w's runs start from fold_in(key, w), every α from the same seeds
    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)  # learning rates α: data, one vmapped program per width
    normal_lr: float = 1e-3  # the "normal" α of the claims (one of lrs)
    widths: tuple[int, ...] = (4, 8, 16)  # hidden units n_h: agent.torso_width (CNN) or every MLP layer
    seeds: int = 2  # runs per (width, α)
    final_fraction: float = 0.25  # "after training": probes of the last quarter of updates, returns likewise
    correlation_resamples: int = 1000  # bootstrap resamples of r's 90% interval
    # the DQN; env, lr and width are set per run
    agent: ValueConfig = ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=16_000, buffer_size=10_000, batch_size=32,
        learning_starts=1_000, target_update_interval=500, gamma=0.99, optimizer="adam", lr=1e-3,
        max_grad_norm=None, eps_start=1.0, eps_end=0.05, eps_decay_steps=8_000, probe_interval=125, probe_k=32,
        probe_sign_window=5, probe_sign_steps=32, probe_set="interference", checkpoint_interval=1_000)


def config(scale: str = "smoke") -> Config:
    """`smoke`: SpaceInvaders-MinAtar, 3 α × 3 n_h × 2 seeds (minutes); `cpu`: 6 α × 4 n_h × 3 seeds, 100k
    steps; `paper`: MsPacman-v5, Nature CNN, 10M steps per run (GPU)."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, lrs=(3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2), widths=(4, 8, 16, 32), seeds=3,
            agent=cfg.agent.replace(total_steps=100_000, buffer_size=50_000, eps_decay_steps=50_000,
                                    target_update_interval=1_000, probe_interval=1_000, checkpoint_interval=5_000))
    if scale == "paper":
        cfg = dataclasses.replace(
            cfg, game="MsPacman-v5", lrs=(1e-5, 3e-5, 1e-4, 3e-4), normal_lr=1e-4, widths=(16, 32, 64), seeds=3,
            agent=ValueConfig(
                algo="dqn", network="nature_cnn", num_envs=1, total_steps=10_000_000, buffer_size=500_000,
                batch_size=32, learning_starts=200_000, target_update_interval=10_000, gamma=0.99,
                optimizer="adam", lr=1e-4, max_grad_norm=None, eps_start=1.0, eps_end=0.05,
                eps_decay_steps=500_000, probe_interval=10_000, probe_k=32, probe_sign_window=5,
                probe_sign_steps=32, probe_set="interference", checkpoint_interval=50_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: CartPole, MLPs of 8 and 16 units, 3 α × 2 seeds, 250 updates, a probe every 25."""
    return dataclasses.replace(
        Config(), game="CartPole-v1", widths=(8, 16), correlation_resamples=200,
        agent=ValueConfig(algo="dqn", network="mlp", hidden=(16, 16), num_envs=4, total_steps=1_200,
                          buffer_size=1_000, batch_size=32, learning_starts=200, target_update_interval=50,
                          max_grad_norm=None, eps_decay_steps=600, probe_interval=25, probe_k=8,
                          probe_sign_window=5, probe_sign_steps=16, probe_set="interference"))


def _validate(cfg: Config) -> None:
    require(bool(cfg.lrs) and all(a > 0 and np.isfinite(a) for a in cfg.lrs), cfg, "lrs",
            "needs at least one learning rate, each a positive number", "e.g. lrs=(1e-4, 1e-3, 1e-2)")
    require(cfg.normal_lr in cfg.lrs, cfg, "normal_lr", f"is not one of lrs={cfg.lrs}",
            "set normal_lr to the grid's usual rate, e.g. 1e-3")
    require(bool(cfg.widths) and all(w >= 1 for w in cfg.widths), cfg, "widths",
            "needs at least one width, each >= 1", "e.g. widths=(4, 8, 16)")
    require(cfg.seeds >= 1, cfg, "seeds", "must be >= 1", "e.g. seeds=2")
    require(0.0 < cfg.final_fraction <= 1.0, cfg, "final_fraction", "must lie in (0, 1]",
            "e.g. final_fraction=0.25 (the last quarter of training)")
    require(cfg.correlation_resamples >= 1, cfg, "correlation_resamples", "must be >= 1", "e.g. 1000")
    a = cfg.agent
    require(a.algo == "dqn", cfg, "agent", f"Fig. 6 trains DQN, not algo={a.algo!r}", "--agent.algo dqn")
    require(a.probe_interval > 0, cfg, "agent", "probe_interval=0: no probe would measure ρ̄ or the sign variance",
            "set --agent.probe-interval, e.g. 125")
    for w in cfg.widths:  # every field of every run, before anything compiles
        make_agent(_agent_config(cfg, w))
    updates = _num_updates(cfg.agent)
    final = int(np.floor(cfg.final_fraction * updates))
    require(final >= a.probe_interval, cfg, "final_fraction",
            f"the last {final} of {updates} updates hold no probe (probe_interval={a.probe_interval})",
            "raise final_fraction or --agent.total-steps, or lower --agent.probe-interval")


def _num_updates(a: ValueConfig) -> int:
    per_iter = a.num_envs * a.train_frequency
    return a.total_steps // per_iter - -(-a.learning_starts // per_iter)


def _agent_config(cfg: Config, width: int) -> ValueConfig:
    """The DQN of width n_h on `cfg.game`: every MLP layer n_h wide, or the CNN's `torso_width` n_h."""
    a = cfg.agent.replace(env=cfg.game)
    if a.network == "mlp":
        return a.replace(hidden=(int(width),) * len(a.hidden))
    return a.replace(torso_width=int(width))


@functools.lru_cache(maxsize=16)
def _runner(agent: ValueConfig, num_runs: int) -> SeedRunner:
    # one runner per (width, grid size), so a rerun of the same width reuses its compiled program
    return make_seed_runner(agent, num_runs)


def train_width(cfg: Config, w: int, show_progress: bool = False) -> tuple[SeedRunner, Any, Any]:
    """All α × seeds of width `cfg.widths[w]` as one vmapped program (looped for envpool games):
    (runner, final state, metrics), runs setting-major: run l·R + s has α = lrs[l] and seed s."""
    L, R = len(cfg.lrs), cfg.seeds
    runner = _runner(_agent_config(cfg, cfg.widths[w]), L * R)
    key = jax.random.fold_in(jax.random.key(cfg.seed), w)
    state = runner.init(key, seeds_per_value=R, lr=sweep_values(cfg.lrs, R))
    state, metrics = runner.run(state, 0, runner.num_iterations, progress=show_progress)
    return runner, state, metrics


def summarise_runs(cfg: Config, metrics: Any, warmup: int) -> dict:
    """Per run [S] (stacked metrics [S, T]): after training (the last `final_fraction`), the mean return,
    sign variance, ρ̄ (raw and normalised), loss; the probes over training [S, P] and their updates [P];
    the return in `CURVE_BINS` stretches of iterations [S, B]."""
    m = jax.tree.map(np.asarray, metrics)
    T = m.loss.shape[-1]
    last = max(1, int(np.ceil(cfg.final_fraction * T)))
    probed = m.probes.probed[0].astype(bool)  # the same iterations for every run (static phases)
    it = np.flatnonzero(probed)
    updates = it - warmup + 1
    final = updates > (1.0 - cfg.final_fraction) * (T - warmup)
    sv, rho, cos = (getattr(m.probes, f)[:, it] for f in ("td_sign_variance", "interference", "interference_cos"))
    with np.errstate(invalid="ignore"):
        curve = np.stack([mean_return(jax.tree.map(lambda x, b=b: x[:, b], m)) for b in
                          np.array_split(np.arange(T), CURVE_BINS)], -1)
        loss = np.nanmean(m.loss[:, -last:], -1)
    return dict(final_return=mean_return(m, last=last), sign_variance=_nanmean(sv[:, final]),
                interference=_nanmean(rho[:, final]), interference_cos=_nanmean(cos[:, final]), final_loss=loss,
                probe_sign_variance=sv, probe_interference=rho, probe_updates=updates, return_curve=curve)


def _nanmean(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    return np.where(ok.any(-1), np.where(ok, x, 0.0).sum(-1) / np.maximum(ok.sum(-1), 1), np.nan)


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Every width's grid of α × seeds; arrays [W widths, L α, R seeds, ...]."""
    _validate(cfg)
    W, L, R = len(cfg.widths), len(cfg.lrs), cfg.seeds
    per_width: list[dict] = []
    seconds = np.zeros(W)
    for w in progress_bar(iterable=range(W), desc=NAME, enabled=show_progress):
        t0 = time.time()
        runner, _, metrics = train_width(cfg, w)
        per_width.append(summarise_runs(cfg, metrics, runner.agent.warmup_iterations))
        seconds[w] = time.time() - t0
    out = {k: np.stack([p[k] for p in per_width]).reshape((W, L, R) + per_width[0][k].shape[1:])
           for k in per_width[0] if k != "probe_updates"}
    return dict(out, game=np.array(cfg.game), widths=np.array(cfg.widths), lrs=np.array(cfg.lrs),
                probe_updates=per_width[0]["probe_updates"], seconds=seconds)


def _flat(res: dict, key: str) -> np.ndarray:
    return np.asarray(res[key], np.float64).reshape(-1)


def correlation(res: dict, key: jax.Array, num_resamples: int = 1000, log: bool = True):
    """r between (log) ρ̄ and the sign variance over the runs with finite values (and ρ̄ > 0 for the log),
    with its 90% bootstrap interval: (`tdjax.CorrelationInterval`, runs used)."""
    rho, sv = _flat(res, "interference"), _flat(res, "sign_variance")
    ok = np.isfinite(rho) & np.isfinite(sv) & ((rho > 0) if log else True)
    if ok.sum() < 3:
        return None, int(ok.sum())
    return tdjax.interference_gap_correlation(rho[ok], sv[ok], key, num_resamples=num_resamples, log=log), int(
        ok.sum())


def check_claims(cfg: Config, res: dict) -> Claims:
    """§5.2 on Fig. 6, over all runs of the grid."""
    a = cfg.agent
    claims = Claims(NAME, settings=dict(
        game=cfg.game, lrs=list(cfg.lrs), normal_lr=cfg.normal_lr, widths=list(cfg.widths), seeds=cfg.seeds,
        network=a.network, total_steps=a.total_steps, updates=_num_updates(a), batch_size=a.batch_size,
        probe_interval=a.probe_interval, probe_k=a.probe_k, sign_window=a.probe_sign_window,
        sign_steps=a.probe_sign_steps, final_fraction=cfg.final_fraction,
        seconds_per_width=[round(float(s), 1) for s in res["seconds"]]))
    ret, sv, rho = _flat(res, "final_return"), _flat(res, "sign_variance"), _flat(res, "interference")
    key = jax.random.key(cfg.seed)
    ci, n = correlation(res, key, cfg.correlation_resamples, log=True)
    if ci is None:
        claims.note(f"Fewer than 3 runs have a finite ρ̄ > 0 and sign variance ({n}): no correlation.")
    else:
        raw, _ = correlation(res, key, cfg.correlation_resamples, log=False)
        ev = (f"r(log ρ̄, sign variance) = {float(ci.r):.2f}, 90% interval [{float(ci.low):.2f}, "
              f"{float(ci.high):.2f}] over {n} runs; r(ρ̄, sign variance) = {float(raw.r):.2f} (the paper: 0.71)")
        claims.check("ρ̄ and the sign variance correlate positively (the paper: r = 0.71)", bool(ci.r > 0), ev)
    ok = np.isfinite(ret) & np.isfinite(sv) & np.isfinite(rho)
    if ok.sum() >= 3:
        r_ret = float(tdjax.pearson_r(sv[ok], ret[ok]))
        claims.check("the return after training falls with the sign variance (r < 0)", bool(r_ret < 0),
                     f"r(sign variance, return) = {r_ret:.2f} over {int(ok.sum())} runs")
        high = ok & (sv > np.median(sv[ok])) & (rho > np.median(rho[ok]))
        rest = ok & ~high
        if high.any() and rest.any():
            ev = (f"mean return {ret[high].mean():.2f} over the {int(high.sum())} runs above the median in both "
                  f"(sign variance > {np.median(sv[ok]):.3f}, ρ̄ > {np.median(rho[ok]):.3g}) against "
                  f"{ret[rest].mean():.2f} over the other {int(rest.sum())}")
            claims.check("runs with a large ρ̄ and a large sign variance (both above the median) perform worse",
                         bool(ret[high].mean() < ret[rest].mean()), ev)
    by_lr = {k: np.nanmean(res[k], axis=(0, 2)) for k in ("final_return", "sign_variance", "interference")}
    table = "; ".join(f"α {lr:g}: return {by_lr['final_return'][i]:.2f}, sign variance "
                      f"{by_lr['sign_variance'][i]:.3f}, ρ̄ {by_lr['interference'][i]:.3g}"
                      for i, lr in enumerate(cfg.lrs))
    small, normal = int(np.argmin(cfg.lrs)), cfg.lrs.index(cfg.normal_lr)
    if cfg.lrs[small] < cfg.normal_lr:
        s, n_ = f"α {cfg.lrs[small]:g}", f"the normal α {cfg.normal_lr:g}"
        claims.check(f"a much smaller learning rate lessens the effect: lower sign variance at {s} than at {n_}",
                     bool(by_lr["sign_variance"][small] < by_lr["sign_variance"][normal]), table)
        claims.check(f"... and lower ρ̄ at {s} than at {n_}",
                     bool(by_lr["interference"][small] < by_lr["interference"][normal]), table)
        claims.check(f"... at the cost of more updates: at this budget the return at {s} is below that at {n_}",
                     bool(by_lr["final_return"][small] < by_lr["final_return"][normal]), table)
    else:
        claims.note(f"No α below normal_lr={cfg.normal_lr:g} in lrs: the learning-rate claims were not checked. "
                    + table)
    curve = np.nanmean(res["return_curve"], axis=(0, 2))  # [L, B]
    half = CURVE_BINS // 2
    claims.note("Return over training per α (mean over widths and seeds; first half → second half of the "
                "iterations, 'runs with a normal α plateau halfway through training'): " + "; ".join(
                    f"α {lr:g}: {np.nanmean(curve[i, :half]):.2f} → {np.nanmean(curve[i, half:]):.2f}"
                    for i, lr in enumerate(cfg.lrs)))
    by_w = np.nanmean(res["sign_variance"], axis=(1, 2))
    claims.note("Sign variance after training per width n_h (mean over α and seeds): " + "; ".join(
        f"{w}: {by_w[i]:.3f}" for i, w in enumerate(cfg.widths)))
    if a.network != "nature_cnn":
        claims.note(f"Not the paper's scale: {cfg.game} instead of MsPacman, {a.total_steps:,} steps instead of 10M, "
                    f"{len(cfg.lrs)} α × {len(cfg.widths)} widths × {cfg.seeds} seeds; squared loss, no L2.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    W, L, _ = res["final_return"].shape
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, L))
    sizes = np.linspace(25, 160, W) if W > 1 else np.array([80.0])
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(5.6, 6.4))
    for w in range(W):
        for i in range(L):
            x = res["sign_variance"][w, i]
            kw = dict(color=colours[i], s=sizes[w], alpha=0.8, edgecolors="k", linewidths=0.4)
            top.scatter(x, res["final_return"][w, i], **kw)
            bottom.scatter(x, res["interference"][w, i], **kw)
    rho = _flat(res, "interference")
    if np.all(rho[np.isfinite(rho)] > 0):
        bottom.set_yscale("log")
    top.set_ylabel("average return after training")
    bottom.set_ylabel("ρ̄ after training")
    bottom.set_xlabel(f"TD-error sign variance (window {cfg.agent.probe_sign_window})")
    handles = [Line2D([], [], ls="none", marker="o", color=colours[i], label=f"α = {lr:g}")
               for i, lr in enumerate(cfg.lrs)]
    handles += [Line2D([], [], ls="none", marker="o", color="grey", markersize=np.sqrt(sizes[w]),
                       label=f"n_h = {n}") for w, n in enumerate(cfg.widths)]
    top.legend(handles=handles, fontsize=7, ncol=2)
    ci, n = correlation(res, jax.random.key(cfg.seed), cfg.correlation_resamples)
    r = f"r(log ρ̄, sign variance) = {float(ci.r):.2f} over {n} runs" if ci is not None else "r undefined"
    bottom.set_title(r, fontsize=9)
    fig.suptitle(f"Bengio et al. 2020 Fig. 6: DQN on {cfg.game}\n({cfg.seeds} seeds per α and n_h; after training: "
                 f"the last {cfg.final_fraction:.0%})", fontsize=10)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for w, width in enumerate(cfg.widths):
        for i, lr in enumerate(cfg.lrs):
            for s in range(cfg.seeds):
                rows.append(dict(game=cfg.game, width=int(width), lr=float(lr), seed=s,
                                 **{k: float(res[k][w, i, s]) for k in ("final_return", "sign_variance",
                                                                        "interference", "interference_cos",
                                                                        "final_loss")}))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.bengio20_fig6 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<field> VALUE ...]`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
