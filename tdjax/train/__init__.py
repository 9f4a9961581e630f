"""Training loops: `make_train(config) -> train(key)` factories, replay, probes and checkpoints.

  * `ValueConfig`, `make_train`, `make_agent`: one value-based loop for DQN, Double DQN, C51 and
    QR-DQN (`tdjax.train.value_based`).
  * `train_with_checkpoints`: the same run in jitted chunks driven from Python, checkpointed
    atomically and resumable bit-for-bit (`tdjax.train.checkpoint`).
  * `replay`, `probes`: the circular buffer and the in-loop representation probes.
  * `actor_critic`: one actor-critic loop for PPO, DAAC and REINFORCE (`actor_critic.make_train`,
    `ActorCriticConfig`), with policy / value update-rank probes and train/test-level returns.
"""

from tdjax.train import actor_critic as actor_critic
from tdjax.train import probes as probes
from tdjax.train import replay as replay
from tdjax.train.actor_critic import ActorCriticAgent as ActorCriticAgent
from tdjax.train.actor_critic import ActorCriticConfig as ActorCriticConfig
from tdjax.train.actor_critic import ActorCriticMetrics as ActorCriticMetrics
from tdjax.train.actor_critic import daac_procgen_paper_config as daac_procgen_paper_config
from tdjax.train.actor_critic import generalization_gap as generalization_gap
from tdjax.train.actor_critic import ppo_procgen_paper_config as ppo_procgen_paper_config
from tdjax.train.checkpoint import load_checkpoint as load_checkpoint
from tdjax.train.driver import run_host_driven as run_host_driven
from tdjax.train.checkpoint import save_checkpoint as save_checkpoint
from tdjax.train.checkpoint import train_with_checkpoints as train_with_checkpoints
from tdjax.train.value_based import ALGOS as ALGOS
from tdjax.train.value_based import RunnerState as RunnerState
from tdjax.train.value_based import ValueAgent as ValueAgent
from tdjax.train.value_based import ValueConfig as ValueConfig
from tdjax.train.value_based import ValueMetrics as ValueMetrics
from tdjax.train.core import make_agent as make_agent
from tdjax.train.core import make_train as make_train
from tdjax.train.value_based import mean_return as mean_return
from tdjax.train import core as core
from tdjax.train.core import family_of as family_of

__all__ = [
    "ALGOS",
    "RunnerState",
    "ValueAgent",
    "ValueConfig",
    "ValueMetrics",
    "make_agent",
    "make_train",
    "mean_return",
    "train_with_checkpoints",
    "run_host_driven",
    "save_checkpoint",
    "load_checkpoint",
    "probes",
    "core",
    "family_of",
    "replay",
    "actor_critic",
    "ActorCriticAgent",
    "ActorCriticConfig",
    "ActorCriticMetrics",
    "daac_procgen_paper_config",
    "generalization_gap",
    "ppo_procgen_paper_config",
]
