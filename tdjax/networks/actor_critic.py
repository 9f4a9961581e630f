"""Actor-critic networks (flax linen) for `tdjax.train.actor_critic`: one trunk or two.

  * `SharedActorCritic(torso, num_actions)`: x → φ(x) → (policy logits [A], value []), one trunk for
    both heads, so the critic's TD gradients shape the actor's representation (PPO; Lyle et al. 2022,
    §5.2).
  * `Actor(torso, num_actions, advantage_head)`: x → φ(x) → logits [A], and with `advantage_head`
    also DAAC's advantage estimates A(x, ·) [A] (Raileanu & Fergus 2021, §3.2).
  * `Critic(torso)`: x → φ(x) → value [], a network of its own (DAAC, REINFORCE's baseline).

Each has `features(x)`, the torso's output φ(x) (the penultimate activations, as in
`tdjax.networks.ValueNetwork`). Output layers use orthogonal initialisation with gain 0.01 for the
policy logits (a near-uniform initial policy) and 1 for values and advantages, the initialisation of
the PPO/DAAC reference implementations (Raileanu & Fergus's `init_`, OpenAI baselines). Every module
takes one observation or any number of leading batch axes.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["SharedActorCritic", "Actor", "Critic", "AdvantageHead"]

_POLICY_INIT = nn.initializers.orthogonal(0.01)
_VALUE_INIT = nn.initializers.orthogonal(1.0)


class AdvantageHead(nn.Module):
    """DAAC's advantage head: A(x, a) = w·[φ(x), onehot(a)] + b for every action a → [..., A].

    One linear layer on the features concatenated with the one-hot action, as in Raileanu & Fergus's
    implementation (`nn.Linear(hidden_size + num_actions, 1)`), evaluated for all actions at once.
    """

    num_actions: int

    @nn.compact
    def __call__(self, features):
        a = self.num_actions
        lead = features.shape[:-1]
        phi = jnp.broadcast_to(features[..., None, :], lead + (a, features.shape[-1]))
        onehot = jnp.broadcast_to(jnp.eye(a, dtype=features.dtype), lead + (a, a))
        return nn.Dense(1, kernel_init=_VALUE_INIT)(jnp.concatenate([phi, onehot], axis=-1))[..., 0]


class SharedActorCritic(nn.Module):
    """One torso, two linear heads: `(logits [..., A], value [...])`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tdjax.networks import MLPTorso
      >>> net = SharedActorCritic(MLPTorso((32,)), num_actions=3)
      >>> params = net.init(jax.random.key(0), jnp.zeros((4,)))
      >>> logits, value = net.apply(params, jnp.zeros((5, 4)))
      >>> logits.shape, value.shape
      ((5, 3), (5,))
      >>> net.apply(params, jnp.zeros((5, 4)), method=SharedActorCritic.features).shape
      (5, 32)
    """

    torso: nn.Module
    num_actions: int

    def setup(self):
        self.policy_head = nn.Dense(self.num_actions, kernel_init=_POLICY_INIT)
        self.value_head = nn.Dense(1, kernel_init=_VALUE_INIT)

    def __call__(self, x):
        phi = self.torso(x)
        return self.policy_head(phi), self.value_head(phi)[..., 0]

    def features(self, x):
        """φ(x): the torso's output, shared by both heads."""
        return self.torso(x)


class Actor(nn.Module):
    """A policy network: logits [..., A]; with `advantage_head`, `(logits, advantages [..., A])`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tdjax.networks import MLPTorso
      >>> actor = Actor(MLPTorso((32,)), num_actions=3, advantage_head=True)
      >>> params = actor.init(jax.random.key(0), jnp.zeros((4,)))
      >>> logits, adv = actor.apply(params, jnp.zeros((5, 4)))
      >>> logits.shape, adv.shape
      ((5, 3), (5, 3))
    """

    torso: nn.Module
    num_actions: int
    advantage_head: bool = False

    def setup(self):
        self.policy_head = nn.Dense(self.num_actions, kernel_init=_POLICY_INIT)
        if self.advantage_head:
            self.advantage = AdvantageHead(self.num_actions)

    def __call__(self, x):
        phi = self.torso(x)
        logits = self.policy_head(phi)
        if not self.advantage_head:
            return logits
        return logits, self.advantage(phi)

    def features(self, x):
        """φ(x): the torso's output, the input of the policy (and advantage) head."""
        return self.torso(x)


class Critic(nn.Module):
    """A state-value network: value [...].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tdjax.networks import MLPTorso
      >>> critic = Critic(MLPTorso((32,)))
      >>> critic.apply(critic.init(jax.random.key(0), jnp.zeros((4,))), jnp.zeros((5, 4))).shape
      (5,)
    """

    torso: nn.Module

    def setup(self):
        self.value_head = nn.Dense(1, kernel_init=_VALUE_INIT)

    def __call__(self, x):
        return self.value_head(self.torso(x))[..., 0]

    def features(self, x):
        """φ(x): the torso's output, the input of the value head."""
        return self.torso(x)
