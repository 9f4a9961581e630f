"""Lyle et al. 2022, Fig. 8 (App. C.1): Fourier spectrum of the learned value viewed as a function of time.

The paper (App. C.1) studies "the Fourier decomposition of value and reward functions in popular Atari
domains by treating the value function as a function of *time* rather than as a function of
*observations*. In this sense, the Fourier decomposition is measuring the continuity of the value
function with respect to time". Fig. 8's caption: "We sample k consecutive states from the replay buffer
and compute the predicted value on each state (fixing an arbitrary action) to get a function
V: {1, ..., k} → ℝ. We then compute the Fourier decomposition of this function. The top row shows indices
k = 0 ... 50, while the bottom row omits the k = 0 index (the constant function) to better illustrate the
rate of decay of the spectrum of each function."

What this module does (all scales): train a DQN agent per game (`tdjax.train.seeds.train_seeds`, seeds vmapped);
from its final replay buffer take `windows` windows of `window` consecutive states of one environment
(window = 100 gives rfft indices 0..50, the paper's range); compute on each state
  * the trained agent's Q(x, a) for the fixed action `action` (0 by default: the caption's "arbitrary
    action"; `action=None` uses maxₐ Q instead). maxₐ Q (the reduction of the paper's App. B.1) is always
    computed as well (`*_max` arrays) and reported beside the fixed-action numbers,
  * the same for a freshly initialised network (same architecture, new key): the random-init baseline,
  * the reward r_{t+1} of the same transitions,
and take |rfft| of each length-`window` signal. Spectra are averaged (magnitudes) over windows and seeds.

Episode ends: a window should be one trajectory. Windows are chosen among all (environment, start) pairs
of the time-ordered buffer, preferring those with no episode end inside (a `done` on any transition but
the last, or a non-transition: envpool's reset steps), most recent first, never overlapping. When fewer
clean windows exist than asked for (short episodes, e.g. Breakout early in training), the rest are the
windows with the fewest episode ends; their count is recorded per window (`crossings`) and in the claims.

Low-frequency energy: for a spectrum F₀..F_{k/2} the "low-frequency fraction" is
Σ_{f=1}^{m} |F_f|² / Σ_{f≥1} |F_f|² with m = ⌈`low_fraction` · k/2⌉ (lowest 10% of the non-DC
frequencies: f = 1..5 for k = 100), computed per window and averaged.

What differs from the paper at CPU scale: MinAtar (Young & Tian 2019) instead of Atari; Breakout and
SpaceInvaders (dense reward) and Freeway (sparse) instead of the paper's (unnamed in the text) Atari games;
~10⁴–10⁵ agent steps instead of millions of frames; a random-init baseline the paper does not show.

Scales (`--scale`): `smoke` (three games, one seed, 40k steps, ~2–3 min on 2 CPU cores), `cpu` (200k steps,
2 seeds, an estimated ~10–15 min), `paper` (Atari Pong, Boxing, Seaquest, MontezumaRevenge through envpool with the
Nature CNN, 7M frames each: meant for a GPU).

Run: `python -m experiments.lyle22_fig8 --out outputs/lyle22_fig8 [--scale smoke|cpu|paper]`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments._harness import Experiment, progress_bar
from tdjax.report import Claims
from tdjax.train import ValueConfig, family_of, make_agent
from tdjax.train import replay as replay_lib
from tdjax.train.seeds import train_seeds

NAME = "lyle22_fig8"
SCALES = ("smoke", "cpu", "paper")
PAPER_GAMES = ("Pong-v5", "Boxing-v5", "Seaquest-v5")
PAPER_SPARSE_GAMES = ("MontezumaRevenge-v5",)
FRAME_SKIP = 4  # envpool Atari: one agent step = 4 frames


@dataclasses.dataclass(frozen=True)
class Config:
    dense_games: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    sparse_games: tuple[str, ...] = ("Freeway-MinAtar",)
    seeds: int = 1
    seed: int = 0
    # DQN with the MinAtar torso (as lyle22_fig3's Config.agent); no in-loop probes.
    agent: ValueConfig = ValueConfig(
        algo="dqn", network="minatar_cnn", num_envs=4, total_steps=40_000, buffer_size=20_000, batch_size=32,
        learning_starts=1_000, train_frequency=1, target_update_interval=500, lr=1e-3, eps_decay_steps=20_000,
        eps_end=0.05, probe_interval=0)
    window: int = 100  # k consecutive states per window; rfft indices 0..k//2 (0..50 for k = 100)
    windows: int = 16  # windows per game and seed
    action: Optional[int] = 0  # the fixed action whose Q is the signal; None: maxₐ Q
    low_fraction: float = 0.1  # "low frequencies" = the lowest this fraction of the non-DC indices
    concentrated: float = 0.5  # the value is "concentrated at low frequencies" above this energy fraction
    plot_max_index: int = 50  # the paper plots indices 0..50

    @property
    def games(self) -> tuple[str, ...]:
        return self.dense_games + self.sparse_games


def config(scale: str = "smoke") -> Config:
    """`smoke`: 3 MinAtar games, 1 seed, 40k steps; `cpu`: 200k steps, 2 seeds; `paper`: Atari, 7M frames."""
    if scale not in SCALES:
        raise ValueError(f"{NAME}: scale must be one of {SCALES}, got {scale!r}.")
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(cfg, seeds=2, agent=cfg.agent.replace(
            total_steps=200_000, buffer_size=50_000, eps_decay_steps=50_000))
    elif scale == "paper":
        # Dopamine-style DQN on Atari through envpool (sticky actions, frame skip 4, 84×84×4, reward
        # clipping, episodic life); 7M frames = 1.75M agent steps (the budget of the paper's Fig. 12).
        # The replay holds 250k transitions (not 1M) so that obs and next_obs fit in GPU memory (~14 GB).
        # envpool environments cannot be vmapped: one seed.
        cfg = dataclasses.replace(cfg, dense_games=PAPER_GAMES, sparse_games=PAPER_SPARSE_GAMES, seeds=1,
                                  agent=ValueConfig(
                                      env=PAPER_GAMES[0], algo="dqn", network="nature_cnn", num_envs=4,
                                      total_steps=7_000_000 // FRAME_SKIP, buffer_size=250_000, batch_size=32,
                                      learning_starts=20_000, train_frequency=1, target_update_interval=2_000,
                                      optimizer="adam", lr=6.25e-5, adam_eps=1.5e-4, gamma=0.99,
                                      eps_decay_steps=250_000, eps_end=0.01, probe_interval=0,
                                      checkpoint_interval=10_000))
    return cfg


def tiny() -> Config:
    """Seconds, for tests: Breakout only, 1 seed, 1,600 steps, three windows of 16 states."""
    return dataclasses.replace(
        Config(), dense_games=("Breakout-MinAtar",), sparse_games=(), window=16, windows=3,
        plot_max_index=8, agent=Config().agent.replace(total_steps=1_600, buffer_size=800, learning_starts=400,
                                                       eps_decay_steps=800, target_update_interval=100))


def _validate(cfg: Config) -> None:
    def bad(field, msg):
        raise ValueError(f"{NAME}: Config.{field} {msg}")

    if not cfg.games:
        bad("dense_games", "and sparse_games are both empty: needs at least one game.")
    if len(set(cfg.games)) != len(cfg.games):
        bad("dense_games", f"and sparse_games repeat a game: {cfg.games}.")
    if cfg.seeds < 1:
        bad("seeds", f"must be >= 1, got {cfg.seeds}.")
    if cfg.window < 2:
        bad("window", f"must be >= 2 (a spectrum needs at least 2 consecutive states), got {cfg.window}.")
    if cfg.windows < 1:
        bad("windows", f"must be >= 1, got {cfg.windows}.")
    if not 0 < cfg.low_fraction <= 1:
        bad("low_fraction", f"must lie in (0, 1], got {cfg.low_fraction}.")
    if not 0 < cfg.concentrated < 1:
        bad("concentrated", f"must lie in (0, 1), got {cfg.concentrated}.")
    if cfg.plot_max_index < 1:
        bad("plot_max_index", f"must be >= 1, got {cfg.plot_max_index}.")
    a = cfg.agent
    slots = a.buffer_size // a.num_envs
    if cfg.window > slots:
        bad("window", f"= {cfg.window} is longer than the replay buffer holds per environment "
                      f"(agent.buffer_size / agent.num_envs = {slots} steps).")
    steps_per_env = (a.total_steps // (a.num_envs * a.train_frequency)) * a.train_frequency
    if cfg.window > steps_per_env:
        bad("window", f"= {cfg.window} is longer than each environment runs ({steps_per_env} steps).")


def low_frequency_fraction(spectrum: np.ndarray, fraction: float) -> np.ndarray:
    """Σ_{f=1}^{m} |F_f|² / Σ_{f≥1} |F_f|² over the last axis, m = ⌈fraction · (n_freq − 1)⌉; NaN if no
    non-DC energy (e.g. a window without reward)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    m = max(1, math.ceil(fraction * (spectrum.shape[-1] - 1)))
    power = spectrum[..., 1:] ** 2
    total = power.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, power[..., :m].sum(-1) / np.where(total > 0, total, 1.0), np.nan)


def select_windows(done: np.ndarray, valid: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chooses n non-overlapping windows of k consecutive time slots in a time-ordered buffer.

    Args:
      done, valid: [T, E] bool, oldest slot first (transition t of environment e ended an episode / is a
        transition of the MDP).
      k, n: window length and number of windows.

    A window (t₀, e) holds the states x_{t₀}..x_{t₀+k−1}. Its `crossings` are the episode ends inside it:
    done on transitions t₀..t₀+k−2 (a done on the last transition only ends the window) plus non-valid
    transitions t₀..t₀+k−1. Windows are taken greedily by (crossings, most recent first, environment),
    skipping any that overlaps one already taken in the same environment, so clean windows come first.

    Returns:
      starts [n'], envs [n'], crossings [n'] with n' = min(n, what fits).
    """
    done, valid = np.asarray(done, bool), np.asarray(valid, bool)
    T, E = done.shape
    if k < 2 or k > T:
        raise ValueError(f"select_windows: k must lie in [2, T = {T}], got {k}.")
    zero = np.zeros((1, E), np.int64)
    c_done = np.concatenate([zero, np.cumsum(done, 0)])
    c_invalid = np.concatenate([zero, np.cumsum(~valid, 0)])
    t0 = np.arange(T - k + 1)
    crossings = (c_done[t0 + k - 1] - c_done[t0]) + (c_invalid[t0 + k] - c_invalid[t0])  # [T-k+1, E]
    cand_t, cand_e = np.meshgrid(t0, np.arange(E), indexing="ij")
    order = np.lexsort((cand_e.ravel(), -cand_t.ravel(), crossings.ravel()))
    taken = np.zeros((T, E), bool)
    starts, envs, cross = [], [], []
    for idx in order:
        t, e = int(cand_t.ravel()[idx]), int(cand_e.ravel()[idx])
        if taken[t:t + k, e].any():
            continue
        taken[t:t + k, e] = True
        starts.append(t)
        envs.append(e)
        cross.append(int(crossings.ravel()[idx]))
        if len(starts) == n:
            break
    return np.array(starts, np.int64), np.array(envs, np.int64), np.array(cross, np.int64)


def buffer_order(replay) -> np.ndarray:
    """Absolute slot of each stored time step, oldest first: (pos − count + t) mod capacity, t < count."""
    capacity = replay.data.action.shape[0]
    count, pos = int(replay.count), int(replay.pos)
    return (pos - count + np.arange(count)) % capacity


def window_signals(agent, params, replay, starts, envs, k: int, action: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """Values [n, k] (Q(x, action) or maxₐ Q(x, a)) and rewards [n, k] of the chosen windows.

    `starts` index the time-ordered buffer (`buffer_order`); window w holds slots starts[w]..starts[w]+k−1 of
    environment envs[w]. The reward at position j is r_{t+1} of the transition leaving state j.
    """
    slots = buffer_order(replay)
    t_abs = slots[np.asarray(starts)[:, None] + np.arange(k)[None, :]]  # [n, k]
    e = np.broadcast_to(np.asarray(envs)[:, None], t_abs.shape)
    obs = replay_lib.gather(replay, t_abs, e).obs  # [n, k, *obs_shape], frame stacks rebuilt (Atari)
    q = np.asarray(jax.jit(agent.q_values)(params, obs))  # [n, k, A]
    values = q.max(-1) if action is None else q[..., action]
    rewards = np.asarray(replay.data.reward)[t_abs, e]
    return values.astype(np.float64), rewards.astype(np.float64)


def spectrum(signal: np.ndarray) -> np.ndarray:
    """|rfft| along the last axis: the magnitudes of the Fourier coefficients 0..k//2."""
    return np.abs(np.fft.rfft(np.asarray(signal, dtype=np.float64), axis=-1))


def run(cfg: Config, show_progress: bool = True) -> dict:
    """Trains every game and measures the spectra; arrays [G, S, windows, ...] (see the module docstring)."""
    _validate(cfg)
    G, S, n, k = len(cfg.games), cfg.seeds, cfg.windows, cfg.window
    F = k // 2 + 1
    signals = ("agent", "random", "agent_max", "random_max", "reward")
    shapes = {**{("reward" if x == "reward" else "value_" + x): (G, S, n, k) for x in signals},
              **{"spectrum_" + x: (G, S, n, F) for x in signals},
              **dict(starts=(G, S, n), envs=(G, S, n), crossings=(G, S, n))}
    out = {name: np.full(s, np.nan) for name, s in shapes.items()}
    out.update(final_return=np.full((G, S), np.nan), seconds=np.zeros(G), windows_found=np.zeros((G, S), int))
    root = jax.random.key(cfg.seed)
    for g, game in enumerate(progress_bar(iterable=cfg.games, desc=NAME, enabled=show_progress)):
        t0 = time.time()
        agent_cfg = cfg.agent.replace(env=game)
        agent = make_agent(agent_cfg)  # its network and Q-values read the trained parameters
        k_train, k_fresh = jax.random.split(jax.random.fold_in(root, g))
        state, m = train_seeds(agent_cfg, k_train, S)
        # the mean return of the episodes ending in the last 10% of training
        out["final_return"][g] = family_of(agent_cfg).mean_return(m, max(1, m.return_sum.shape[-1] // 10))
        for s in range(S):
            params, replay = jax.tree.map(lambda x, s=s: x[s], (state.learner.params, state.actor.replay))
            order = buffer_order(replay)
            done = np.asarray(replay.data.done)[order]
            valid = np.asarray(replay.data.valid)[order]
            starts, envs, cross = select_windows(done, valid, k, n)
            m = len(starts)
            out["windows_found"][g, s] = m
            fresh = agent.network.init(jax.random.fold_in(k_fresh, s), jnp.zeros(agent.env.obs_shape, jnp.float32))
            v_agent, rew = window_signals(agent, params, replay, starts, envs, k, cfg.action)
            v_random, _ = window_signals(agent, fresh, replay, starts, envs, k, cfg.action)
            v_agent_max, _ = window_signals(agent, params, replay, starts, envs, k, None)
            v_random_max, _ = window_signals(agent, fresh, replay, starts, envs, k, None)
            for name, sig in (("agent", v_agent), ("random", v_random), ("agent_max", v_agent_max),
                              ("random_max", v_random_max), ("reward", rew)):
                out["reward" if name == "reward" else "value_" + name][g, s, :m] = sig
                out["spectrum_" + name][g, s, :m] = spectrum(sig)
            out["starts"][g, s, :m], out["envs"][g, s, :m], out["crossings"][g, s, :m] = starts, envs, cross
        out["seconds"][g] = time.time() - t0
    out.update(games=np.array(cfg.games), dense=np.array([g in cfg.dense_games for g in cfg.games]),
               frequencies=np.arange(F))
    for name in signals:
        out["low_fraction_" + name] = low_frequency_fraction(out["spectrum_" + name], cfg.low_fraction)
    return out


def _nanmean(x, axis=None):
    with warnings.catch_warnings():  # a game may have no rewarded window
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def check_claims(cfg: Config, res: dict) -> Claims:
    """Which of the paper's Fig. 8 / App. C.1 (and §4.1) claims held, with the numbers."""
    a = cfg.agent
    F = cfg.window // 2 + 1
    m = max(1, math.ceil(cfg.low_fraction * (F - 1)))
    claims = Claims(NAME, settings=dict(
        games=list(cfg.games), sparse=list(cfg.sparse_games), seeds=cfg.seeds, algo=a.algo, network=a.network,
        total_steps=a.total_steps, num_envs=a.num_envs, window=cfg.window, windows=cfg.windows,
        value=("max_a Q" if cfg.action is None else f"Q(x, a={cfg.action})"),
        low_frequencies=f"f = 1..{m} of 1..{F - 1}", seconds_per_game=[round(float(x), 1) for x in res["seconds"]]))
    low = {x: _nanmean(res["low_fraction_" + x], axis=(1, 2)) for x in
           ("agent", "random", "agent_max", "random_max", "reward")}
    rewarded = np.isfinite(res["low_fraction_reward"]).sum(axis=(1, 2))
    found = res["windows_found"].sum(-1)
    other = "" if cfg.action is None else "; with maxₐ Q instead: "
    for i, game in enumerate(cfg.games):
        cross = res["crossings"][i][np.isfinite(res["crossings"][i])]
        ctx = (f"{int(found[i])} windows, {int((cross > 0).sum())} crossing an episode end, "
               f"{int(rewarded[i])} with reward")
        la, lr, lw = low["agent"][i], low["random"][i], low["reward"][i]
        la_m, lr_m = low["agent_max"][i], low["random_max"][i]
        if rewarded[i] == 0:
            claims.note(f"{game}: no window holds a reward, so the value-vs-reward comparison cannot be made "
                        f"({ctx}).")
        else:
            claims.check(
                f"{game}: the learned value is smoother in time than the reward (a larger share of its non-DC "
                f"energy in the lowest {cfg.low_fraction:.0%} of frequencies)",
                bool(la > lw),
                f"low-frequency fraction {la:.3f} (value) vs {lw:.3f} (reward)"
                + (f"{other}{la_m:.3f} vs {lw:.3f}" if other else "") + f"; {ctx}")
        claims.check(
            f"{game}: the learned value's spectrum is concentrated at low frequencies (more than "
            f"{cfg.concentrated:.0%} of its non-DC energy at f = 1..{m})",
            bool(la > cfg.concentrated),
            f"low-frequency fraction {la:.3f}" + (f"{other}{la_m:.3f}" if other else "")
            + f" (a white-noise signal would give {m / (F - 1):.2f})")
        claims.check(
            f"{game}: training moves the value towards higher frequencies than at initialisation (§4.1: TD "
            "fits high-frequency components early; §5: trained agents' updates become tabular-like), i.e. a "
            "smaller low-frequency fraction than a freshly initialised network on the same states",
            bool(la < lr),
            f"low-frequency fraction {la:.3f} (trained) vs {lr:.3f} (random init)"
            + (f"{other}{la_m:.3f} vs {lr_m:.3f}" if other else ""))
    claims.note("Final returns (mean of the episodes ending in the last 10% of training, mean over seeds): "
                + ", ".join(f"{g} {_nanmean(res['final_return'][i]):.2f}" for i, g in enumerate(cfg.games))
                + ". The paper does not state the training length of the agents in Fig. 8.")
    claims.note("Fig. 8 itself states no numeric claim; the checks above are the smoothness statements of App. "
                "C.1 and §4.1 made measurable. MinAtar stands in for Atari, and the budgets are far shorter.")
    return claims


def plot(cfg: Config, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = len(cfg.games)
    F = cfg.window // 2 + 1
    top = min(cfg.plot_max_index, F - 1)
    m = max(1, math.ceil(cfg.low_fraction * (F - 1)))
    fig, axes = plt.subplots(3, G, figsize=(4.4 * G, 9.6), squeeze=False)
    what = "max_a Q" if cfg.action is None else f"Q(a={cfg.action})"
    series = [("spectrum_agent", f"trained DQN {what}", "C0"), ("spectrum_random", f"random-init {what}", "0.45"),
              ("spectrum_reward", "reward", "C3")]
    if cfg.action is not None:
        series.insert(1, ("spectrum_agent_max", "trained DQN max_a Q", "C9"))
    f = np.arange(top + 1)
    for i, game in enumerate(cfg.games):
        floor = np.inf  # lowest mean curve in the bottom panel: the shading is clipped a decade below it
        for key, label, color in series:
            spec = res[key][i].reshape(-1, F)
            spec = spec[np.isfinite(spec).all(-1)]
            if key == "spectrum_reward":
                spec = spec[spec[:, 1:].sum(-1) > 0] if spec.size else spec
            if not len(spec):
                continue
            axes[0, i].semilogy(f, np.maximum(spec[:, :top + 1].mean(0), 1e-12), color=color, lw=1.4, label=label)
            # bottom: f ≥ 1, each window normalised to unit non-DC energy so the shapes are comparable
            norm = spec[:, 1:] / np.sqrt((spec[:, 1:] ** 2).sum(-1, keepdims=True))
            mean, lo, hi = norm.mean(0), np.percentile(norm, 25, 0), np.percentile(norm, 75, 0)
            axes[1, i].semilogy(f[1:], np.maximum(mean[:top], 1e-12), color=color, lw=1.4,
                                label=f"{label} (low-freq. fraction {_nanmean(res['low_fraction_' + key[9:]][i]):.2f})")
            floor = min(floor, 0.1 * np.min(mean[:top][mean[:top] > 0], initial=np.inf))
            axes[1, i].fill_between(f[1:], np.maximum(lo[:top], 1e-12), np.maximum(hi[:top], 1e-12), color=color,
                                    alpha=0.15, lw=0)
        if np.isfinite(floor):
            axes[1, i].set_ylim(bottom=floor)
        axes[1, i].axvspan(0.5, m + 0.5, color="C2", alpha=0.08, lw=0)
        kind = "dense" if res["dense"][i] else "sparse"
        axes[0, i].set_title(f"{game} ({kind} reward)", fontsize=10)
        axes[0, i].set_xlabel("Fourier index (0..%d)" % top)
        axes[1, i].set_xlabel(f"Fourier index (1..{top}; shaded: lowest {cfg.low_fraction:.0%})")
        axes[0, i].legend(fontsize=7)
        axes[1, i].legend(fontsize=7)
        # an example window: the first (most recent, fewest crossings) window of seed 0
        ax = axes[2, i]
        t = np.arange(cfg.window)
        v = res["value_agent"][i, 0, 0]
        if np.isfinite(v).all():
            ax.plot(t, v, color="C0", lw=1.3, label=f"trained {what}")
            if cfg.action is not None:
                ax.plot(t, res["value_agent_max"][i, 0, 0], color="C9", lw=1.0, label="trained max_a Q")
                v = np.minimum(v, res["value_agent_max"][i, 0, 0])
            ax2 = ax.twinx()
            ax2.plot(t, res["value_random"][i, 0, 0], color="0.45", lw=1.0, label=f"random-init {what} (own scale)")
            ax2.set_yticks([])
            r = res["reward"][i, 0, 0]
            hit = r != 0
            ax.plot(t[hit], np.full(hit.sum(), v.min()), "v", color="C3", ms=5, label="reward ≠ 0")
            ax.set_title(f"example window ({int(res['crossings'][i, 0, 0])} episode ends inside)", fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
            ax2.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("time step in window")
    axes[0, 0].set_ylabel("|rfft| (mean over windows)")
    axes[1, 0].set_ylabel("|rfft| / non-DC norm (mean, IQR)")
    axes[2, 0].set_ylabel("value")
    fig.suptitle(f"Lyle et al. 2022 Fig. 8 at CPU scale: spectra of {what} along {cfg.window} consecutive "
                 f"replay states ({cfg.seeds} seed(s) × {cfg.windows} windows per game)", fontsize=11)
    fig.tight_layout()
    return fig


def _rows(cfg: Config, res: dict) -> list[dict]:
    rows = []
    for i, game in enumerate(cfg.games):
        for s in range(cfg.seeds):
            for w in range(int(res["windows_found"][i, s])):
                rows.append(dict(game=game, seed=s, window=w, env=int(res["envs"][i, s, w]),
                                 start=int(res["starts"][i, s, w]), crossings=int(res["crossings"][i, s, w]),
                                 low_fraction_agent=float(res["low_fraction_agent"][i, s, w]),
                                 low_fraction_random=float(res["low_fraction_random"][i, s, w]),
                                 low_fraction_agent_max=float(res["low_fraction_agent_max"][i, s, w]),
                                 low_fraction_random_max=float(res["low_fraction_random_max"][i, s, w]),
                                 low_fraction_reward=float(res["low_fraction_reward"][i, s, w]),
                                 reward_sum=float(res["reward"][i, s, w].sum())))
    return rows


EXPERIMENT = Experiment(NAME, __doc__, config=config, tiny=tiny, scales=SCALES, run=run, plot=plot,
                        claims=check_claims, rows=_rows)


def main(argv: Sequence[str] | None = None) -> Claims:
    """`python -m experiments.lyle22_fig8 [--scale smoke|cpu|paper|tiny] [--out DIR] [--<any Config field> VALUE ...]`
    (nested fields too: `--agent.total-steps 5000`); see `--help`."""
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    EXPERIMENT.cli()
