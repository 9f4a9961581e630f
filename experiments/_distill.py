"""What the distillation figures (Lyle et al. 2022 Fig. 5, 6 and 11) share: a DQN teacher per game,
trained once, saved by path and reused, with its final replay buffer saved as the distillation data.

`teacher_and_data(agent_config, folder, key)` returns the folders of the teacher and of its dataset,
training and saving them only when `folder` does not already hold a teacher trained with exactly
`agent_config` (so Fig. 11 reuses Fig. 5's teachers when both point at the same `teacher_dir`). It
also returns the teacher run's metrics (or None when reused), for the teacher's own update rank.

`policy_teacher_and_data(ppo_config, folder, key, data_steps=...)` does the same for Fig. 6's PPO
teachers, whose data is collected after training by sampling the teacher's policy.

`dstar(teacher_folder, folder, key, data_steps=..., epsilon=0.05)` is Bengio et al. 2020's D* (§5): a
saved teacher acting ε-greedily, collected once into `folder/dstar_<steps>_eps<ε>` and reused until the
teacher is retrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import jax
import numpy as np

from tdjax.report import save_npz
from tdjax.train import (
    ValueConfig,
    dataset_from_replay,
    load_teacher,
    make_train,
    save_dataset,
    save_teacher,
)
from tdjax.train.teacher import TeacherError

__all__ = ["teacher_and_data", "policy_teacher_and_data", "dstar", "student_returns"]


def _reusable(folder: Path, config: ValueConfig) -> bool:
    try:
        return load_teacher(folder / "teacher").config == config and (folder / "data" / "dataset.json").is_file()
    except TeacherError:
        return False


def teacher_and_data(config: ValueConfig, folder: str | Path, key: jax.Array) -> Tuple[str, str, Optional[Any]]:
    """(teacher folder, dataset folder, the teacher run's metrics or None when reused)."""
    folder = Path(folder)
    metrics_file = folder / "teacher_metrics.npz"
    if _reusable(folder, config):
        return str(folder / "teacher"), str(folder / "data"), _load_metrics(metrics_file)
    state, metrics = jax.jit(make_train(config))(key)
    save_teacher(folder / "teacher", config, state.learner.params)
    ds, info = dataset_from_replay(state.actor.replay, env=config.env, num_actions=_num_actions(config),
                                   gamma=config.gamma, env_options=config.env_options, teacher=str(folder / "teacher"))
    save_dataset(folder / "data", ds, info)
    save_npz(metrics_file, update_rank=np.asarray(metrics.probes.update_rank),
             probed=np.asarray(metrics.probes.probed), env_steps=np.asarray(metrics.env_steps),
             return_sum=np.asarray(metrics.return_sum), return_count=np.asarray(metrics.return_count))
    return str(folder / "teacher"), str(folder / "data"), _load_metrics(metrics_file)


def _num_actions(config: ValueConfig) -> int:
    from tdjax.envs import vec_spec

    return int(vec_spec(config.env).num_actions)


def _load_metrics(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def student_returns(policy_fn: Any, params: Any, env_name: str, key: jax.Array, *, num_envs: int, num_steps: int,
                    epsilon: float = 0.01, sample: bool = False) -> Tuple[float, int]:
    """Mean return under the ε-greedy (ε = 0.01, Lyle §6.1) evaluation policy in the training environment."""
    from tdjax.envs import make_vec
    from tdjax.train import evaluate_policy

    env = make_vec(env_name, num_envs)
    fn = jax.jit(lambda p, k: evaluate_policy(policy_fn, p, env, k, num_steps=num_steps, epsilon=epsilon,
                                              sample=sample))
    mean, count = fn(params, key)
    return float(mean), int(count)


def policy_teacher_and_data(config: Any, folder: str | Path, key: jax.Array, *, data_steps: int,
                            data_epsilon: float = 0.0) -> Tuple[str, str, dict]:
    """An actor-critic teacher (`ActorCriticConfig`, e.g. PPO; Lyle et al. 2022 §6.2) and a dataset of
    `data_steps` vector steps it collected on its training levels, sampling its own policy (then
    ε-random with `data_epsilon`): (teacher folder, dataset folder, the teacher run's returns).

    Trained, collected and saved only when `folder` does not already hold a teacher trained with
    exactly `config` and data collected with these settings (the data folder's name records them).
    The returns dict holds the teacher run's mean train-level and test-level return over the last
    quarter of training (`family.mean_return`; NaN without evaluation)."""
    from tdjax.train import collect_dataset, family_of
    from tdjax.train.seeds import train_seeds

    folder = Path(folder)
    data = folder / f"data_{int(data_steps)}_eps{float(data_epsilon):g}"
    metrics_file = folder / "teacher_metrics.npz"
    try:
        reusable = load_teacher(folder / "teacher").config == config and metrics_file.is_file()
    except TeacherError:
        reusable = False
    k_train, k_data = jax.random.split(key)
    if not reusable:
        state, m = train_seeds(config, k_train, 1, keep_state=True)
        params = jax.tree.map(lambda x: np.asarray(x[0]), state.learner.params)
        save_teacher(folder / "teacher", config, params)
        family = family_of(config)
        last = max(1, m.env_steps.shape[1] // 4)
        save_npz(metrics_file, train_return=np.asarray(family.mean_return(m, last)).reshape(-1)[0],
                 test_return=np.asarray(family.mean_return(m, last, test=True)).reshape(-1)[0])
    if not reusable or not (data / "dataset.json").is_file():
        teacher = load_teacher(folder / "teacher")
        ds, info = collect_dataset(teacher, int(data_steps), k_data, epsilon=float(data_epsilon))
        save_dataset(data, ds, info)
    return str(folder / "teacher"), str(data), _load_metrics(metrics_file) or {}


def dstar(teacher_folder: str | Path, folder: str | Path, key: jax.Array, *, data_steps: int,
          epsilon: float = 0.05) -> str:
    """Bengio et al. 2020's D*: `data_steps` vector steps of the saved teacher acting ε-greedily
    (`tdjax.train.collect_dataset`, App. B.2: ε = 5%), saved as `folder/dstar_<data_steps>_eps<ε>`.

    Collected only when that folder holds no dataset, or one older than the teacher's parameters (the
    teacher was retrained since). Returns the dataset's folder."""
    from tdjax.train import collect_dataset

    data = Path(folder) / f"dstar_{int(data_steps)}_eps{float(epsilon):g}"
    params = Path(teacher_folder) / "params.npz"
    saved = data / "dataset.npz"
    if (data / "dataset.json").is_file() and saved.is_file() and saved.stat().st_mtime_ns >= params.stat().st_mtime_ns:
        return str(data)
    ds, info = collect_dataset(load_teacher(teacher_folder), int(data_steps), key, epsilon=float(epsilon))
    save_dataset(data, ds, info)
    return str(data)
