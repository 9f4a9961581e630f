"""Training loops: one `make_train(config) -> train(key)` for every loop family.

  * `make_train`, `make_agent`: dispatch on the config's type to its family (`tdjax.train.core`):
    `ValueConfig` → the value-based loop for DQN, Double DQN, C51 and QR-DQN
    (`tdjax.train.value_based`); `ActorCriticConfig` → the actor-critic loop for PPO, DAAC and
    REINFORCE (`tdjax.train.actor_critic`); `SupervisedConfig` → classification and regression
    (`tdjax.train.supervised`, Bengio et al. 2020 §4).
  * `sweep.run_grid`: grids of runs n_h × n_L × n_T × seeds, one vmapped program per capacity,
    resumable rows in one CSV (docs/sweeps.md).
  * `core`: what every family shares (agent interface, episode bookkeeping, optimizer, networks,
    config checks); `mesh`: the ("seeds", "data") device mesh; `host_loop`: the CPU loop structure
    (`config.loop="host"`), `run_iterations` picks it.
  * `OfflineConfig` → the offline loop: a fresh student trained on a teacher's data by distillation,
    behaviour cloning, offline Q-learning/QR/double-Q, or Bengio et al.'s regression, TD* and TD(λ)
    policy evaluation (`tdjax.train.offline`); teachers are saved and loaded by path
    (`tdjax.train.teacher`), datasets too (`tdjax.train.offline_data`).
  * `train_seeds`: S seeds of a config, vmapped and sharded over the "seeds" mesh axis (or looped for
    envpool games).
  * `train_with_checkpoints`: a run in checkpointed chunks, resumable bit-for-bit
    (`tdjax.train.checkpoint`).
  * `replay`, `probes`: the circular buffer and the in-loop representation probes.
"""

from tdjax.train import actor_critic as actor_critic
from tdjax.train import core as core
from tdjax.train import host_loop as host_loop
from tdjax.train import mesh as mesh
from tdjax.train import offline as offline
from tdjax.train import offline_data as offline_data
from tdjax.train import probes as probes
from tdjax.train import replay as replay
from tdjax.train import supervised as supervised
from tdjax.train import sweep as sweep
from tdjax.train import teacher as teacher
from tdjax.train import value_based as value_based
from tdjax.train.actor_critic import ActorCriticAgent as ActorCriticAgent
from tdjax.train.actor_critic import ActorCriticConfig as ActorCriticConfig
from tdjax.train.actor_critic import ActorCriticMetrics as ActorCriticMetrics
from tdjax.train.actor_critic import daac_procgen_paper_config as daac_procgen_paper_config
from tdjax.train.actor_critic import generalization_gap as generalization_gap
from tdjax.train.actor_critic import ppo_procgen_paper_config as ppo_procgen_paper_config
from tdjax.train.checkpoint import load_checkpoint as load_checkpoint
from tdjax.train.checkpoint import save_checkpoint as save_checkpoint
from tdjax.train.checkpoint import train_with_checkpoints as train_with_checkpoints
from tdjax.train.core import family_of as family_of
from tdjax.train.core import make_agent as make_agent
from tdjax.train.core import make_train as make_train
from tdjax.train.core import mean_return as mean_return
from tdjax.train.core import run_iterations as run_iterations
from tdjax.train.host_loop import run_host_driven as run_host_driven
from tdjax.train.offline import OfflineConfig as OfflineConfig
from tdjax.train.offline import evaluate_policy as evaluate_policy
from tdjax.train.offline_data import DatasetInfo as DatasetInfo
from tdjax.train.offline_data import OfflineDataset as OfflineDataset
from tdjax.train.offline_data import collect_dataset as collect_dataset
from tdjax.train.offline_data import dataset_from_replay as dataset_from_replay
from tdjax.train.offline_data import load_dataset as load_dataset
from tdjax.train.offline_data import save_dataset as save_dataset
from tdjax.train.seeds import make_seed_runner as make_seed_runner
from tdjax.train.seeds import train_seeds as train_seeds
from tdjax.train.supervised import SupervisedConfig as SupervisedConfig
from tdjax.train.supervised import SupervisedMetrics as SupervisedMetrics
from tdjax.train.teacher import Teacher as Teacher
from tdjax.train.teacher import load_teacher as load_teacher
from tdjax.train.teacher import save_teacher as save_teacher
from tdjax.train.teacher import teacher_from_params as teacher_from_params
from tdjax.train.value_based import ALGOS as ALGOS
from tdjax.train.value_based import RunnerState as RunnerState
from tdjax.train.value_based import ValueAgent as ValueAgent
from tdjax.train.value_based import ValueConfig as ValueConfig
from tdjax.train.value_based import ValueMetrics as ValueMetrics

__all__ = [
    "ALGOS",
    "RunnerState",
    "ValueAgent",
    "ValueConfig",
    "ValueMetrics",
    "make_agent",
    "make_train",
    "mean_return",
    "run_iterations",
    "train_seeds",
    "make_seed_runner",
    "family_of",
    "train_with_checkpoints",
    "run_host_driven",
    "save_checkpoint",
    "load_checkpoint",
    "core",
    "mesh",
    "host_loop",
    "probes",
    "replay",
    "value_based",
    "actor_critic",
    "ActorCriticAgent",
    "ActorCriticConfig",
    "ActorCriticMetrics",
    "daac_procgen_paper_config",
    "generalization_gap",
    "ppo_procgen_paper_config",
    "offline",
    "offline_data",
    "teacher",
    "OfflineConfig",
    "evaluate_policy",
    "DatasetInfo",
    "OfflineDataset",
    "collect_dataset",
    "dataset_from_replay",
    "load_dataset",
    "save_dataset",
    "Teacher",
    "load_teacher",
    "save_teacher",
    "teacher_from_params",
    "supervised",
    "sweep",
    "SupervisedConfig",
    "SupervisedMetrics",
]
