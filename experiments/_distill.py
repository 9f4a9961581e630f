"""What the distillation figures (Lyle et al. 2022 Fig. 5 and Fig. 11) share: a DQN teacher per game,
trained once, saved by path and reused, with its final replay buffer saved as the distillation data.

`teacher_and_data(agent_config, folder, key)` returns the folders of the teacher and of its dataset,
training and saving them only when `folder` does not already hold a teacher trained with exactly
`agent_config` (so Fig. 11 reuses Fig. 5's teachers when both point at the same `teacher_dir`). It
also returns the teacher run's metrics (or None when reused), for the teacher's own update rank.
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

__all__ = ["teacher_and_data", "student_returns"]


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
