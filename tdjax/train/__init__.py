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
  * `train_seeds`: S seeds of a config, vmapped and sharded over the "seeds" mesh axis (or looped for
    envpool games).
  * `train_with_checkpoints`: a run in checkpointed chunks, resumable bit-for-bit
    (`tdjax.train.checkpoint`).
  * `replay`, `probes`: the circular buffer and the in-loop representation probes.
"""

from tdjax.train import core as core
from tdjax.train import host_loop as host_loop
from tdjax.train import mesh as mesh
from tdjax.train import probes as probes
from tdjax.train import replay as replay
from tdjax.train import value_based as value_based
from tdjax.train import actor_critic as actor_critic
from tdjax.train import supervised as supervised
from tdjax.train import sweep as sweep
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
from tdjax.train.seeds import make_seed_runner as make_seed_runner
from tdjax.train.seeds import train_seeds as train_seeds
from tdjax.train.supervised import SupervisedConfig as SupervisedConfig
from tdjax.train.supervised import SupervisedMetrics as SupervisedMetrics
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
    "supervised",
    "sweep",
    "SupervisedConfig",
    "SupervisedMetrics",
]
