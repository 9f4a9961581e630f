"""Teacher datasets: transitions a trained agent collected, stored once and reused by offline runs.

Two ways to get one (Lyle et al. 2022 App. B.3; Bengio et al. 2020 §5):

  * `dataset_from_replay(replay, ...)`: the teacher's replay buffer at the end of its training
    (`state.actor.replay` of a value-based run), put in time order;
  * `collect_dataset(teacher, num_steps, key, epsilon=0.05)`: the trained teacher acting ε-greedily
    (value teachers) or sampling its policy (actor-critic teachers, then ε-random) for `num_steps`
    vector steps of its environments — Bengio's D* (ε = 5%).

An `OfflineDataset` is a `tdjax.train.replay.ReplayState` laid out [time, env] in time order (slot 0
the oldest, `pos = 0`, `count = capacity`), so a transition's temporal neighbours are the adjacent
slots of its environment and the replay functions (`sample`, `gather`, `recent`) read it, plus the
Monte-Carlo return of every transition:

  G_t = r_{t+1} + γ d_{t+1} G_{t+1} within an episode, G = r at its last transition,

`mc_complete` marks the transitions whose episode ends inside the data (G is the full return; a
truncated episode's G is its truncated return). `info` records where it came from.

On disk (`save_dataset(path, dataset)`): a folder with `dataset.npz` (one array per field of the
replay state, named by its path, e.g. `replay/data/obs`, plus `mc_return`, `mc_complete`) and
`dataset.json` (`DatasetInfo` plus the format tag "tdjax-dataset/1"), written atomically.
Observations are stored in the environment's storage dtype (uint8 for pixels and MinAtar); Atari
frames are stored once (docs/replay.md).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tdjax import envs as envs_lib
from tdjax.report import atomic_write_bytes
from tdjax.train import replay as replay_lib

__all__ = ["DatasetInfo", "OfflineDataset", "DatasetError", "mc_returns", "dataset_from_replay",
           "collect_dataset", "save_dataset", "load_dataset", "teacher_env_options"]

FORMAT = "tdjax-dataset/1"


class DatasetError(ValueError):
    """A dataset folder that is missing or does not fit the run."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset came from and what it holds (saved as dataset.json)."""

    env: str  # the environment's name
    env_options: Tuple[Tuple[str, Any], ...]  # envpool options it was collected with (ProcGen levels)
    obs_shape: Tuple[int, ...]  # one observation
    num_actions: int
    gamma: float  # discount of mc_return
    epsilon: Optional[float]  # ε of the collecting policy (None: the teacher's own training schedule)
    source: str  # "replay" (the teacher's final buffer) or "collected"
    teacher: Optional[str] = None  # the teacher's folder, if it was loaded from one


class OfflineDataset(NamedTuple):
    """Transitions in time order ([C, E] slots) with their Monte-Carlo returns."""

    replay: replay_lib.ReplayState  # pos = 0, count = capacity: slot 0 is the oldest
    mc_return: jax.Array  # [C, E] float32 discounted return from the transition to its episode's end
    mc_complete: jax.Array  # [C, E] bool: the episode ends inside the data (and the slot is valid)


def mc_returns(reward: jax.Array, discount: jax.Array, done: jax.Array, valid: jax.Array,
               gamma: float) -> Tuple[jax.Array, jax.Array]:
    """Monte-Carlo returns of time-major [T, E] transitions: (G, complete), by a backward scan.

    G_t = r_t + γ·d_t·G_{t+1}·(1 − done_t) (d_t = 0 at termination), complete_t = done_t or
    (complete_{t+1} and not done_t), both False/0 on invalid slots (envpool reset steps).
    """
    def step(carry, x):
        g_next, c_next = carry
        r, d, end, ok = x
        g = r + gamma * d * jnp.where(end, 0.0, g_next)
        c = end | c_next
        g, c = jnp.where(ok, g, 0.0), c & ok
        return (g, c), (g, c)

    e = reward.shape[1]
    init = (jnp.zeros((e,), jnp.float32), jnp.zeros((e,), bool))
    xs = (reward.astype(jnp.float32), discount.astype(jnp.float32), done.astype(bool), valid.astype(bool))
    _, (g, c) = jax.lax.scan(step, init, xs, reverse=True)
    return g, c


def _time_ordered(replay: replay_lib.ReplayState) -> replay_lib.ReplayState:
    """The written slots of `replay` in time order, slot 0 the oldest (capacity = slots written)."""
    capacity = replay.data.action.shape[0]
    count, pos = int(replay.count), int(replay.pos)
    if count == 0:
        raise DatasetError("dataset_from_replay: the replay buffer is empty; train the teacher first.")
    order = (pos - count + np.arange(count)) % capacity
    data = jax.tree.map(lambda x: None if x is None else jnp.asarray(x)[order], replay.data)
    return replay._replace(data=data, pos=jnp.zeros((), jnp.int32), count=jnp.asarray(count, jnp.int32))


def dataset_from_replay(replay: replay_lib.ReplayState, *, env: str, num_actions: int, gamma: float,
                        env_options: Tuple[Tuple[str, Any], ...] = (), epsilon: Optional[float] = None,
                        teacher: Optional[str] = None) -> Tuple[OfflineDataset, DatasetInfo]:
    """A teacher's final replay buffer (one seed's `state.actor.replay`) as a dataset."""
    if replay.data.action.ndim != 2:
        raise DatasetError(f"dataset_from_replay: expected ONE seed's buffer (action [C, E]), got action shape "
                           f"{replay.data.action.shape}. Fix: pick a seed, e.g. jax.tree.map(lambda x: x[0], replay).")
    r = _time_ordered(replay)
    d = r.data
    g, c = mc_returns(d.reward, d.discount, d.done, d.valid, gamma)
    obs_shape = tuple(r.last_obs.shape[1:]) if r.last_obs is not None else tuple(d.next_obs.shape[2:])  # type: ignore[union-attr]
    info = DatasetInfo(env=env, env_options=tuple(env_options), obs_shape=obs_shape, num_actions=int(num_actions),
                       gamma=float(gamma), epsilon=epsilon, source="replay", teacher=teacher)
    return OfflineDataset(r, g, c), info


def teacher_env_options(teacher: Any) -> dict:
    """The envpool options of the environments the teacher trained on (ProcGen: its train levels)."""
    spec = teacher.agent.spec
    return dict(getattr(spec, "train_env_options", None) or teacher.config.env_options)


def collect_dataset(teacher: Any, num_steps: int, key: jax.Array, *, epsilon: float = 0.05,
                    num_envs: Optional[int] = None, gamma: Optional[float] = None,
                    env_seed: int = 0) -> Tuple[OfflineDataset, DatasetInfo]:
    """D*: `num_steps` vector steps of `num_envs` environments (default: the teacher's) acted by the
    teacher — ε-greedy on its Q-values, or sampling its policy (actor-critic) and then ε-random — in
    the environments it trained on. Jitted (one `lax.scan`); returns (dataset, info)."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise DatasetError(f"collect_dataset: num_steps must be a positive integer, got {num_steps!r}.")
    if not 0.0 <= float(epsilon) <= 1.0:
        raise DatasetError(f"collect_dataset: epsilon={epsilon} must lie in [0, 1] (Bengio's D* uses 0.05).")
    c = teacher.config
    gamma = float(c.gamma if gamma is None else gamma)
    n = int(num_envs or c.num_envs // c.num_devices)
    options = teacher_env_options(teacher)
    env = envs_lib.make_vec(c.env, n, seed=env_seed, backend=c.env_backend, options=options)
    out = teacher.output_fn()
    sample_policy = teacher.kind == "actor_critic"
    dummy = jnp.zeros(env.obs_shape, jnp.float32)
    example = replay_lib.Transition(obs=dummy, action=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
                                    discount=jnp.zeros((), jnp.float32), next_obs=dummy, done=jnp.zeros((), bool),
                                    valid=jnp.zeros((), bool))

    def run(params, key):
        k_reset, k_run = jax.random.split(key)
        env_state, obs = env.reset(k_reset)
        buf = replay_lib.init(example, num_steps, n, env.obs_storage_dtype, frame_stack=env.frame_stack,
                              next_obs_follows=not env.always_valid)

        def step(carry, t):
            env_state, obs, buf = carry
            k_pol, k_eps, k_rand, k_env = jax.random.split(jax.random.fold_in(k_run, t), 4)
            logits = out(params, obs)
            action = (jax.random.categorical(k_pol, logits) if sample_policy else jnp.argmax(logits, -1))
            explore = jax.random.uniform(k_eps, (n,)) < epsilon
            action = jnp.where(explore, jax.random.randint(k_rand, (n,), 0, env.num_actions), action)
            action = action.astype(jnp.int32)
            env_state, s = env.step(env_state, k_env, action)
            tr = replay_lib.Transition(obs=obs, action=action, reward=s.reward,
                                       discount=1.0 - s.terminated.astype(jnp.float32), next_obs=s.next_obs,
                                       done=s.terminated | s.truncated, valid=s.valid)
            return (env_state, s.obs, replay_lib.add(buf, tr)), None

        (_, _, buf), _ = jax.lax.scan(step, (env_state, obs, buf), jnp.arange(num_steps))
        return buf

    buf = jax.jit(run)(teacher.params, key) if env.jittable else run(teacher.params, key)
    ds, info = dataset_from_replay(buf, env=c.env, num_actions=env.num_actions, gamma=gamma,
                                   env_options=tuple(sorted(options.items())), epsilon=float(epsilon),
                                   teacher=teacher.path)
    return ds, dataclasses.replace(info, source="collected")


def _flat(ds: OfflineDataset) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(ds)
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x) for p, x in flat}


def save_dataset(path: str | Path, dataset: OfflineDataset, info: DatasetInfo) -> Path:
    """Writes `dataset` and `info` to the folder `path` (format in the module docstring)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **_flat(dataset))
    atomic_write_bytes(folder / "dataset.npz", buf.getvalue())
    meta = dict(dataclasses.asdict(info), format=FORMAT,
                layout={"frame_stack": replay_lib._frame_stack(dataset.replay),
                        "next_obs_follows": dataset.replay.last_obs is not None})
    atomic_write_bytes(folder / "dataset.json", json.dumps(meta, indent=1).encode())
    return folder


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def load_dataset(path: str | Path) -> Tuple[OfflineDataset, DatasetInfo]:
    """The dataset saved in folder `path` by `save_dataset`: (dataset, info)."""
    folder = Path(path)
    meta_file, data_file = folder / "dataset.json", folder / "dataset.npz"
    if not meta_file.is_file() or not data_file.is_file():
        raise DatasetError(
            f"dataset: no saved dataset at {str(folder)!r} (expected dataset.json and dataset.npz). Fix: make one "
            "with tdjax.train.collect_dataset or dataset_from_replay and save it with tdjax.train.save_dataset, "
            "or correct the path.")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise DatasetError(f"dataset {str(folder)!r}: dataset.json is not a {FORMAT} file.")
    layout = meta.pop("layout")
    meta.pop("format")
    info = DatasetInfo(**{k: _tuples(v) for k, v in meta.items()})
    with np.load(data_file) as z:
        arrays = {k: z[k] for k in z.files}
    obs = arrays["replay/data/obs"]
    capacity, num_envs = arrays["replay/data/action"].shape
    action_dtype = arrays["replay/data/action"].dtype

    def example() -> replay_lib.Transition:  # shapes only (traced under eval_shape)
        x = jnp.zeros(info.obs_shape, obs.dtype)
        f = jnp.zeros((), jnp.float32)
        no = jnp.zeros((), bool)
        return replay_lib.Transition(obs=x, action=jnp.zeros((), action_dtype), reward=f, discount=f, next_obs=x,
                                     done=no, valid=no)

    template = jax.eval_shape(lambda: OfflineDataset(
        replay_lib.init(example(), capacity, num_envs, obs.dtype, frame_stack=layout["frame_stack"],
                        next_obs_follows=layout["next_obs_follows"]),
        jnp.zeros((capacity, num_envs), jnp.float32), jnp.zeros((capacity, num_envs), bool)))
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for p, want in flat:
        name = jax.tree_util.keystr(p, simple=True, separator="/")
        if name not in arrays or arrays[name].shape != want.shape:
            raise DatasetError(f"dataset {str(folder)!r}: field {name} is missing or has the wrong shape "
                               f"(expected {want.shape}); the file is damaged or from another format version.")
        leaves.append(jnp.asarray(arrays[name], want.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves), info
