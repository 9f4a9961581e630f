"""What the Bengio et al. 2020 §5 modules (Figs 3, 4) share: D* per game, update samples drawn from it,
the gain by offset of an offline student, and the summaries of gain-by-offset curves.

The gain is `tdjax.loss_change_by_offset`: after ONE step of the student's real optimizer on an update
sample s_t, J_θ(s_{t+x}) − J_θ′(s_{t+x}) at its neighbours x = −X..X in the stored trajectories
(`tdjax.train.replay.neighbours`, masked outside s_t's episode).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import tdjax
from experiments._distill import dstar, teacher_and_data
from tdjax.train import ValueConfig
from tdjax.train import replay as replay_lib

__all__ = ["teacher_and_dstar", "dstar_positions", "offline_measurer", "weighted_profile", "band", "relative_l1",
           "temporary_folder"]


def temporary_folder(prefix: str) -> Path:
    """A fresh folder for teachers and D* when no `teacher_dir` is given (tests)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def teacher_and_dstar(teacher: ValueConfig, game: str, teacher_dir: str, tmp: Path, key: jax.Array, *,
                      data_steps: int, epsilon: float) -> tuple[str, str]:
    """(teacher folder, D* folder) of `game`: the DQN teacher of Lyle Fig. 5 (`teacher_and_data`,
    trained only if `teacher_dir/game` holds none trained with `teacher`) and D*, its ε-greedy rollouts
    (`dstar`, collected once). `key` is the game's key; the folder is `tmp/game` when `teacher_dir` is ""."""
    folder = (Path(teacher_dir) if teacher_dir else tmp) / game
    t_path, _, _ = teacher_and_data(teacher.replace(env=game), folder, key)
    d_path = dstar(t_path, folder, jax.random.fold_in(key, 1), data_steps=data_steps, epsilon=epsilon)
    return t_path, d_path


def dstar_positions(ok: np.ndarray, n: int, seeds: int, points: int, seed: int, game: int,
                    what: str) -> np.ndarray:
    """[points, seeds, n, 2] (slot, environment) update samples drawn without replacement from the
    slots where `ok` [C, E] is True, one draw per measuring point and seed (numpy, seeded by
    (seed, game, point)); ValueError naming `what` when fewer than n slots are usable."""
    num_envs = ok.shape[1]
    pool = np.flatnonzero(ok.reshape(-1))
    if pool.size < n:
        raise ValueError(f"D* of {what} has only {pool.size} usable transitions, fewer than num_samples={n}. "
                         "Fix: raise --data-steps or lower --num-samples.")
    out = np.zeros((points, seeds, n, 2), np.int32)
    for m in range(points):
        rng = np.random.default_rng([seed, game, m])
        pick = np.stack([rng.choice(pool, n, replace=False) for _ in range(seeds)])
        out[m] = np.stack([pick // num_envs, pick % num_envs], -1)
    return out


def offline_measurer(agent: Any, max_offset: int, update: str = "per_sample", chunk_size: Optional[int] = None):
    """One jitted function of (learner [S], data, t [S, N], e [S, N]) -> (gain, gain_td, mask) for an
    offline student (`tdjax.train.OfflineConfig` with a value teacher): two `tdjax.OffsetProfile`s with a
    leading seed axis, the gain of the student's own objective and of the TD loss to the teacher's
    bootstrap, L_TD* = (Q_θ(s, a) − (r + γ d maxₐ′ Q_θ*(s′, a′)))², after one step of its optimizer on
    each update sample (`update`: "per_sample" or "batch"), and the neighbour mask [S, N, W] they used.

    `data` is one seed's `DataState` (D* and the teacher are the same for every seed); (t, e) are slots
    of D*, whose neighbours are masked outside the update sample's episode."""
    gamma = agent.config.gamma
    x = jnp.arange(-max_offset, max_offset + 1)
    teacher = agent.teacher.output_fn()

    def td_star_loss(params, ex):  # ex.teacher_next holds the teacher's Q at s′ (filled below)
        target = ex.tr.reward + gamma * ex.tr.discount * jnp.max(ex.teacher_next)
        return jnp.square(agent.q_values(params, ex.tr.obs)[ex.tr.action] - target)

    def with_teacher_next(data, ex):  # make_examples fills it for the td_star objective only
        return ex._replace(teacher_next=teacher(data.teacher_params, ex.tr.next_obs.astype(jnp.float32)))

    def one(learner, data, t, e):
        capacity = data.dataset.replay.data.action.shape[0]
        _, mask = replay_lib.neighbours(data.dataset.replay, t, e, max_offset)
        nb = with_teacher_next(data, agent.make_examples(learner, data, (t[:, None] + x[None, :]) % capacity,
                                                         jnp.broadcast_to(e[:, None], mask.shape)))
        mask = mask & (nb.weight > 0)
        update_batch = with_teacher_next(data, agent.make_examples(learner, data, t, e))
        own = lambda p, ex: agent.example_loss(p, learner.target_params, ex)  # noqa: E731
        args = (own, learner.params, agent.optimizer, learner.opt_state, update_batch, nb, mask)
        kw = dict(update=update, chunk_size=chunk_size)
        return (tdjax.loss_change_by_offset(*args, **kw),
                tdjax.loss_change_by_offset(*args, eval_loss_fn=td_star_loss, **kw), mask)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0)))


def weighted_profile(values: np.ndarray, count: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The mean gain per offset over `axes` (e.g. measuring points and seeds), each entry weighted by its
    count of unmasked update samples; NaN where no sample has that neighbour."""
    c = count.astype(np.float64)
    total = np.nansum(np.nan_to_num(values) * c, axis=axes)
    n = c.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def band(offsets: np.ndarray, prof: np.ndarray, lo: int, hi: int) -> float:
    """The mean of a profile over lo ≤ |x| ≤ hi (NaN if nothing finite there)."""
    sel = (np.abs(offsets) >= lo) & (np.abs(offsets) <= hi)
    return float(np.nanmean(prof[..., sel])) if np.isfinite(prof[..., sel]).any() else float("nan")


def relative_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Σ|a − b| / Σ(|a| + |b|)/2 over the finite offsets: 0 for identical curves, 2 for opposite ones."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sum(np.abs(a - b)[ok]) / max(np.sum((np.abs(a) + np.abs(b))[ok]) / 2, 1e-30))
