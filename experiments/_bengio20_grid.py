"""The grid behind Bengio et al. 2020 Figs 1, 2, 8 and 9 (App. B.1), shared by the four figure modules.

One grid, four figures: `bengio20_fig1`, `bengio20_fig2`, `bengio20_fig8` and `bengio20_fig9` all read
the same runs (n_h × n_L × n_T × seeds, for every task). The runs are trained by
`tdjax.train.sweep.run_grid` into one CSV per task under `grid_dir` (default outputs/bengio20_grid),
resumable: the first figure module run trains the grid, the others find its rows there and train
nothing (and a grid cut by a killed run is resumed where it stopped).

Tasks (each its own family and CSV):
  * classification: `SupervisedConfig` on `image_data` (Bengio's conv net, cross-entropy, Adam 1e-3,
    minibatch 32, as the authors' dataset_experiments/svhn_supervised.py);
  * regression: `SupervisedConfig` on `regression_data` (Bengio's MLPs, squared error);
  * ddqn: `ValueConfig(algo="double_dqn")` on the masked-image task of the same images;
  * reinforce: `ActorCriticConfig(algo="reinforce")` on it.

Scales: `tiny` (tests: synthetic classification/regression on a 2×1×2×2 grid, seconds), `smoke` (the
stand-ins, a small grid, all four tasks, minutes), `cpu` (the stand-ins with a larger reduced grid,
~10-20 min on 2 cores), `paper` (App. B.1's grids on SVHN and SARCOS from local files, for a GPU).
Every output names its data: the stand-ins (sklearn digits for SVHN/CIFAR-10, sklearn diabetes for
SARCOS/California) are labelled as such in the CSV's `label` column and the claims' settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List

import jax
import numpy as np

from tdjax.train import ActorCriticConfig, SupervisedConfig, ValueConfig
from tdjax.train.sweep import GridConfig, paper_grid, run_grid

SCALES = ("smoke", "cpu", "paper")
TASKS = ("classification", "regression", "ddqn", "reinforce")
PAPER_SIGN = {"classification": +1, "regression": 0, "ddqn": -1, "reinforce": 0}
"""Sign of corr(log ρ̄, gap) the paper reports once there is enough data (Fig. 1): positive for
classifiers, negative for value-based (DDQN); regression and PG are mixed/weak (0: no claim)."""


@dataclasses.dataclass(frozen=True)
class Config:
    tasks: tuple[str, ...] = TASKS  # which of classification, regression, ddqn, reinforce to run
    image_data: str = "digits"  # classification data and masked-image task: digits (stand-in), svhn, cifar10
    regression_data: str = "diabetes"  # regression data: diabetes (stand-in), sarcos, california
    image_grid: GridConfig = GridConfig(n_hidden=(4, 8), n_layers=(0, 1), n_train=(20, 100, 500), seeds=2)
    regression_grid: GridConfig = GridConfig(n_hidden=(16, 64), n_layers=(0, 1), n_train=(20, 100, 300), seeds=2)
    rl_grid: GridConfig = GridConfig(n_hidden=(4, 8), n_layers=(0,), n_train=(20, 500), seeds=2)
    classifier: SupervisedConfig = SupervisedConfig(num_updates=300, eval_interval=100, batch_size=32, lr=1e-3,
                                                    probe_k=48)
    regressor: SupervisedConfig = SupervisedConfig(num_updates=300, eval_interval=50, batch_size=32, lr=1e-3,
                                                   probe_k=48)
    ddqn: ValueConfig = ValueConfig(algo="double_dqn", network="bengio_cnn", num_envs=8, total_steps=6_000,
                                    buffer_size=4_000, batch_size=32, learning_starts=500, train_frequency=1,
                                    target_update_interval=100, lr=1e-3, gamma=0.9, eps_decay_steps=3_000,
                                    eps_end=0.05, max_grad_norm=None, probe_interval=0)
    reinforce: ActorCriticConfig = ActorCriticConfig(algo="reinforce", network="bengio_cnn", num_envs=8,
                                                     num_steps=20, total_steps=6_000, lr=1e-3, gamma=0.9)
    eval_images: int = 200  # agents: images (episodes) of the train and test returns
    seed: int = 0  # root seed of every run (cell seed s uses fold_in(key(seed), s))
    num_resamples: int = 1000  # bootstrap resamples of the 90% intervals
    grid_dir: str = "outputs/bengio20_grid"  # where the grid's CSVs are kept (and resumed from)


def config(scale: str = "smoke") -> Config:
    """`smoke`: the stand-ins, 2 capacities × 2 depths × 3 n_T × 2 seeds (RL: 2 × 1 × 2 × 2), minutes;
    `cpu`: more n_T, 3 seeds and longer runs (~10-20 min on 2 cores); `paper`: `paper_config()`."""
    if scale not in SCALES:
        raise ValueError(f"bengio20: scale must be one of {SCALES}, got {scale!r}.")
    if scale == "paper":
        return paper_config()
    cfg = Config()
    if scale == "cpu":
        cfg = dataclasses.replace(
            cfg, image_grid=GridConfig((4, 8, 16), (0, 1), (20, 100, 500, 1500), 3),
            regression_grid=GridConfig((16, 64, 128), (0, 1), (20, 50, 100, 300), 3),
            rl_grid=GridConfig((4, 8), (0,), (20, 100, 500), 3),
            classifier=cfg.classifier.replace(num_updates=1000), regressor=cfg.regressor.replace(num_updates=1000),
            ddqn=cfg.ddqn.replace(total_steps=16_000, eps_decay_steps=8_000),
            reinforce=cfg.reinforce.replace(total_steps=16_000), num_resamples=2000)
    return cfg


def paper_config() -> Config:
    """App. B.1 on the real data (local files, `tdjax.datasets`), for a GPU: SVHN (classification and
    the masked-image agents: n_h ∈ {8, 16, 32}, n_L ∈ {0…3}, n_T ∈ {20 … 50000}) and SARCOS
    (regression: n_h ∈ {16 … 256}); 3 seeds; 1000 updates of 32 examples with Adam 1e-3 as the
    authors' scripts. The agents' run lengths are not given in the paper: 250k steps here."""
    svhn = paper_grid("svhn")
    return Config(
        image_data="svhn", regression_data="sarcos", image_grid=svhn, regression_grid=paper_grid("sarcos"),
        rl_grid=svhn, classifier=Config.classifier.replace(num_updates=1000, eval_interval=50, probe_k=96),
        regressor=Config.regressor.replace(num_updates=1000, eval_interval=5, probe_k=200),
        ddqn=Config.ddqn.replace(total_steps=250_000, buffer_size=100_000, learning_starts=5_000,
                                 eps_decay_steps=100_000, target_update_interval=1_000),
        reinforce=Config.reinforce.replace(total_steps=250_000), eval_images=2_000, num_resamples=2_000)


def tiny() -> Config:
    """Seconds, for tests: synthetic classification and regression data, a 2×1×2×2 grid."""
    g = GridConfig(n_hidden=(4, 8), n_layers=(0,), n_train=(8, 32), seeds=2)
    small = SupervisedConfig(num_updates=40, eval_interval=20, batch_size=8, probe_k=8)
    return dataclasses.replace(Config(), tasks=("classification", "regression"), image_data="synthetic_classification",
                               regression_data="synthetic_regression", image_grid=g, regression_grid=g,
                               classifier=small, regressor=small, num_resamples=200)


def validate(cfg: Config) -> None:
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown or not cfg.tasks:
        raise ValueError(f"bengio20: tasks={cfg.tasks!r}: each must be one of {TASKS} (at least one). "
                         "Fix: e.g. --tasks classification ddqn.")


def task_base(cfg: Config, task: str):
    """(base config, grid) of a task."""
    env = f"MaskedImage-{cfg.image_data}"
    if task == "classification":
        return cfg.classifier.replace(data=cfg.image_data), cfg.image_grid
    if task == "regression":
        return cfg.regressor.replace(data=cfg.regression_data), cfg.regression_grid
    if task == "ddqn":
        return cfg.ddqn.replace(env=env), cfg.rl_grid
    return cfg.reinforce.replace(env=env), cfg.rl_grid


def compute(cfg: Config, show_progress: bool = True) -> Dict[str, List[dict]]:
    """The rows of every task's grid: trained into `grid_dir`/<task>.csv, or read back from there."""
    from experiments._harness import progress_bar

    validate(cfg)
    out = Path(cfg.grid_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for task in cfg.tasks:
        base, grid = task_base(cfg, task)
        bar = progress_bar(desc=f"bengio20 grid: {task} (programs)", enabled=show_progress)

        def tick(i, n, bar=bar):
            bar.total = n
            bar.update(1)

        rows[task] = run_grid(base, grid, jax.random.key(cfg.seed), str(out / f"{task}.csv"),
                              eval_images=cfg.eval_images, progress=tick)
        bar.close()
    return rows


def column(rows: List[dict], name: str) -> np.ndarray:
    return np.asarray([r[name] for r in rows], np.float64)


def labels(rows: Dict[str, List[dict]]) -> Dict[str, str]:
    """task → the data's label (says 'stand-in' where it is one)."""
    return {t: (r[0]["label"] if r else "") for t, r in rows.items()}
