"""Flax networks used by tdjax's training loops, tests and benchmarks.

The analysis library never imports this package: it works on any `apply_fn(params, x)`.
"""

from tdjax.networks._nets import MLP as MLP
from tdjax.networks._nets import NatureCNN as NatureCNN
from tdjax.networks.actor_critic import Actor as Actor
from tdjax.networks.bengio import BengioCNN as BengioCNN
from tdjax.networks.bengio import BengioCNNTorso as BengioCNNTorso
from tdjax.networks.bengio import BengioMLP as BengioMLP
from tdjax.networks.bengio import bengio_cnn_param_count as bengio_cnn_param_count
from tdjax.networks.bengio import bengio_mlp_param_count as bengio_mlp_param_count
from tdjax.networks.actor_critic import AdvantageHead as AdvantageHead
from tdjax.networks.actor_critic import Critic as Critic
from tdjax.networks.actor_critic import SharedActorCritic as SharedActorCritic
from tdjax.networks.heads import TORSOS as TORSOS
from tdjax.networks.heads import C51Head as C51Head
from tdjax.networks.heads import ImpalaTorso as ImpalaTorso
from tdjax.networks.heads import MinAtarTorso as MinAtarTorso
from tdjax.networks.heads import MLPTorso as MLPTorso
from tdjax.networks.heads import NatureTorso as NatureTorso
from tdjax.networks.heads import PatchConv as PatchConv
from tdjax.networks.heads import QHead as QHead
from tdjax.networks.heads import QRHead as QRHead
from tdjax.networks.heads import ValueNetwork as ValueNetwork

__all__ = [
    "MLP",
    "NatureCNN",
    "TORSOS",
    "C51Head",
    "ImpalaTorso",
    "MinAtarTorso",
    "MLPTorso",
    "NatureTorso",
    "PatchConv",
    "QHead",
    "QRHead",
    "ValueNetwork",
    "Actor",
    "AdvantageHead",
    "Critic",
    "SharedActorCritic",
    "BengioCNN",
    "BengioCNNTorso",
    "BengioMLP",
    "bengio_cnn_param_count",
    "bengio_mlp_param_count",
]
