"""A single-file PPO on envpool (Atari, ProcGen) stepped inside XLA: the speed baseline for tdjax's PPO loop.

Written for tdjax's benchmarks from a description of the design of CleanRL's
`ppo_atari_envpool_xla_jax.py` (Atari) and `ppo_procgen.py` (ProcGen settings). No CleanRL code or
text is used; it cannot be downloaded here. What it shares with that design:

  * envpool's vectorised environment, created once on the host
    (`envpool.make(task, env_type=..., num_envs=..., seed=..., episodic_life=True, reward_clip=True)`
    for Atari), reset once on the host, then stepped only through its XLA interface
    (`handle, recv, send, step_env = envs.xla()`), the handle threaded through every call;
  * ONE jitted `rollout`: a `jax.lax.scan` over NUM_STEPS steps; each step samples actions from the
    current policy, calls envpool's XLA `step_env`, and keeps episode statistics in JAX arrays;
  * ONE jitted `update`: bootstrap value, GAE by a reverse `lax.scan`, then a `lax.scan` over
    UPDATE_EPOCHS, each shuffling the flattened batch and `lax.scan`-ning over NUM_MINIBATCHES
    gradient steps (clipped-ratio policy loss, value loss, entropy bonus, per-minibatch advantage
    normalisation, global-norm clipping, Adam);
  * a plain Python loop over iterations calling the two, with a small host read of the statistics
    each iteration (as CleanRL does to log them).

Default settings (CleanRL's defaults; `Args()`):

  Atari (`Pong-v5`, ...)                     ProcGen (`BigfishEasy-v0`, ...; `procgen_args()`)
  num_envs 8, num_steps 128 (batch 1024)     num_envs 64, num_steps 256 (batch 16384)
  num_minibatches 4, update_epochs 4         num_minibatches 8, update_epochs 3
  learning_rate 2.5e-4, linear annealing     learning_rate 5e-4, constant (anneal_lr False)
  gamma 0.99, gae_lambda 0.95                gamma 0.999, gae_lambda 0.95
  clip_coef 0.1, no value clipping           clip_coef 0.2, value clipping with clip_coef
  ent_coef 0.01, vf_coef 0.5                 ent_coef 0.01, vf_coef 0.5
  max_grad_norm 0.5, Adam eps 1e-5           max_grad_norm 0.5, Adam eps 1e-5
  norm_adv True, target_kl None              norm_adv True, target_kl None
  no reward normalisation                    reward normalisation (running std of the
                                             discounted return, as gym's NormalizeReward)
  envpool: episodic_life, reward_clip        envpool: num_levels 0, start_level 0
  (+ envpool's defaults: no-op starts,       (the task name sets the distribution mode,
  frame skip 4, grey 84×84, 4 stacked        e.g. "Easy")
  frames, sticky actions 0.25 for -v5)
  total_timesteps 10M, seed 1                total_timesteps 25M, seed 1

Networks (inputs are envpool's channels-first uint8 observations, transposed to NHWC and divided by
255 inside the network):

  * Atari: the Nature-DQN trunk (Conv 32 8×8/4 → Conv 64 4×4/2 → Conv 64 3×3/1, VALID, ReLU →
    Dense 512, ReLU) shared by an actor head (Dense A) and a critic head (Dense 1); orthogonal
    initialisation with gain √2 (trunk), 0.01 (actor), 1 (critic), zero biases.
  * ProcGen: the IMPALA CNN — three stacks of (Conv 3×3 SAME → max-pool 3×3 stride 2, padding 1 →
    two residual blocks x + Conv(ReLU(Conv(ReLU(x))))) with 16, 32, 32 channels → ReLU → Dense 256,
    ReLU; convolutions and the Dense 256 use flax's default initialisers (CleanRL leaves PyTorch's
    defaults there); actor (gain 0.01) and critic (gain 1) heads orthogonal.

envpool's semantics, and how they are handled: observations are [N, C, H, W] uint8 (Atari C = 4
stacked 84×84 frames; ProcGen C = 3, 64×64 RGB). When an environment reports done (terminated or
truncated), the observation returned with it is the LAST observation of the episode; the NEXT call
of `step_env` for that environment ignores its action, resets it and returns the first observation
of the new episode with reward 0 and done False ("reset step"). The rollout stores, for each step t,
`dones[t]` = "obs[t] came with done", so GAE cuts the bootstrap with (1 − dones[t+1]) (the terminal
observation's value is never used), and the sample taken at a reset step (obs[t] terminal, action
ignored, target γV(first obs) − V(terminal)) is not a real transition. CleanRL trains on it anyway;
here it gets weight 0 in every loss term and in the advantage normalisation
(`mask_reset_steps=True`, the default). `mask_reset_steps=False` reproduces CleanRL's maths exactly;
the cost is the same either way. Atari episode statistics use envpool's `info["terminated"]` (game
over, not a lost life) and `info["reward"]` (unclipped reward).

Other differences from CleanRL that are not settings: one flax module holds trunk and heads (same
parameters, one optimiser, as CleanRL's three parameter groups under one optimiser); action sampling
uses `jax.random.categorical`; the update returns the mean of its minibatch losses; no TensorBoard /
W&B / checkpointing / video.

XLA:CPU note: convolutions (and their gradients) inside `lax.scan` run markedly slower on XLA:CPU
than the same convolutions outside a loop (about 3× per Nature-CNN gradient step at batch 8 on the
project's 2-core machine). (jax-ml/jax issue #12868: in the loop the
gradient convolutions keep non-canonical dimension orders and miss the fast runtime path; their
compilation is slow too). CleanRL's structure scans over epochs and minibatches, so this baseline
does too by default; `update_unroll=True` (`--update-unroll`) unrolls those two scans — not what
CleanRL does, offered only to show how much of the update time that loop costs on CPU.

Usage:
  python benchmarks/cleanrl_style_ppo_envpool.py --env-id Pong-v5 --total-timesteps 20480
  python benchmarks/cleanrl_style_ppo_envpool.py --env-id BigfishEasy-v0 --total-timesteps 49152
  sys.path.insert(0, "benchmarks"); from cleanrl_style_ppo_envpool import measure  # not a package
  measure("Pong-v5", 20480)  # -> {"steps_per_s": ..., "compile_s": ..., ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Dict, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["Args", "atari_args", "procgen_args", "default_args", "is_procgen", "measure", "main"]


# ----------------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class Args:
    """PPO settings; the defaults are CleanRL's `ppo_atari_envpool_xla_jax.py` defaults (Atari)."""

    env_id: str = "Pong-v5"  # CleanRL's own default game is Breakout-v5; the benchmark uses Pong
    seed: int = 1
    total_timesteps: int = 10_000_000
    learning_rate: float = 2.5e-4
    num_envs: int = 8
    num_steps: int = 128
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.1
    clip_vloss: bool = False
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    norm_reward: bool = False  # ProcGen: gym's NormalizeReward(gamma) in CleanRL's ppo_procgen.py
    network: str = "nature"  # "nature" (Atari) | "impala" (ProcGen)
    env_type: str = "gymnasium"  # envpool's API flavour: "gymnasium" | "gym"
    mask_reset_steps: bool = True  # False: train on envpool's reset steps as CleanRL does
    update_unroll: bool = False  # True: unroll the epoch and minibatch scans (not CleanRL; see below)
    log_every: int = 10  # print every this many iterations (main only)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size

    def validate(self) -> "Args":
        if self.batch_size % self.num_minibatches:
            raise ValueError(f"num_envs*num_steps={self.batch_size} is not divisible by "
                             f"num_minibatches={self.num_minibatches}.")
        if self.num_iterations < 1:
            raise ValueError(f"total_timesteps={self.total_timesteps} is less than one batch "
                             f"(num_envs*num_steps={self.batch_size}).")
        if self.network not in ("nature", "impala"):
            raise ValueError(f"network must be 'nature' or 'impala', got {self.network!r}.")
        return self


def atari_args(**overrides: Any) -> Args:
    """CleanRL's `ppo_atari_envpool_xla_jax.py` defaults."""
    return dataclasses.replace(Args(), **overrides)


def procgen_args(**overrides: Any) -> Args:
    """CleanRL's `ppo_procgen.py` defaults."""
    base = Args(env_id="BigfishEasy-v0", total_timesteps=25_000_000, learning_rate=5e-4, num_envs=64,
                num_steps=256, anneal_lr=False, gamma=0.999, gae_lambda=0.95, num_minibatches=8,
                update_epochs=3, clip_coef=0.2, clip_vloss=True, ent_coef=0.01, vf_coef=0.5,
                max_grad_norm=0.5, norm_reward=True, network="impala")
    return dataclasses.replace(base, **overrides)


def is_procgen(task: str) -> bool:
    """envpool's ProcGen tasks end in -v0 (Atari in -v5)."""
    return task.endswith("-v0")


def default_args(task: str, procgen_defaults: Optional[bool] = None, **overrides: Any) -> Args:
    """The ProcGen or the Atari defaults for `task` (chosen by its name unless `procgen_defaults`)."""
    use_procgen = is_procgen(task) if procgen_defaults is None else bool(procgen_defaults)
    return (procgen_args if use_procgen else atari_args)(env_id=task, **overrides)


# ----------------------------------------------------------------------------------------------------
# Networks.


def _ortho(gain: float) -> Any:
    return nn.initializers.orthogonal(gain)


class NatureTrunk(nn.Module):
    @nn.compact
    def __call__(self, x):
        g = np.sqrt(2.0)
        for feat, k, s in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = nn.Conv(feat, (k, k), (s, s), padding="VALID", kernel_init=_ortho(g),
                        bias_init=nn.initializers.zeros)(x)
            x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(512, kernel_init=_ortho(g), bias_init=nn.initializers.zeros)(x))


class _Residual(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(x))
        y = nn.Conv(self.channels, (3, 3), padding="SAME")(nn.relu(y))
        return x + y


class ImpalaTrunk(nn.Module):
    channels: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, x):
        for c in self.channels:
            x = nn.Conv(c, (3, 3), padding="SAME")(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            x = _Residual(c)(x)
            x = _Residual(c)(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(256)(x))


class ActorCritic(nn.Module):
    num_actions: int
    network: str = "nature"

    @nn.compact
    def __call__(self, obs):
        x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0  # [N,C,H,W] uint8 → NHWC
        h = (NatureTrunk() if self.network == "nature" else ImpalaTrunk())(x)
        logits = nn.Dense(self.num_actions, kernel_init=_ortho(0.01), bias_init=nn.initializers.zeros)(h)
        value = nn.Dense(1, kernel_init=_ortho(1.0), bias_init=nn.initializers.zeros)(h)
        return logits, value[:, 0]


# ----------------------------------------------------------------------------------------------------
# State carried between iterations.


class EpisodeStats(NamedTuple):
    ret: jax.Array  # [E] running raw return of the current episode
    length: jax.Array  # [E]
    last_ret: jax.Array  # [E] return of the last finished episode
    last_length: jax.Array  # [E]
    finished: jax.Array  # [] episodes finished so far (all envs)


class RewardNorm(NamedTuple):
    """gym's NormalizeReward: r / sqrt(Var[discounted return] + 1e-8), statistics updated each step."""

    disc_ret: jax.Array  # [E]
    mean: jax.Array
    var: jax.Array
    count: jax.Array


class Batch(NamedTuple):
    obs: jax.Array  # [T, E, C, H, W] uint8
    dones: jax.Array  # [T, E] obs[t] came with done (the step taken from it is a reset step)
    actions: jax.Array
    logprobs: jax.Array
    values: jax.Array
    rewards: jax.Array


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    obs: jax.Array
    done: jax.Array
    handle: jax.Array
    key: jax.Array
    stats: EpisodeStats
    rnorm: RewardNorm


# ----------------------------------------------------------------------------------------------------
# Builder.


def make_envs(args: Args) -> Any:
    import envpool

    kw: Dict[str, Any] = dict(env_type=args.env_type, num_envs=args.num_envs, seed=args.seed)
    if is_procgen(args.env_id):
        kw.update(num_levels=0, start_level=0)
    else:
        kw.update(episodic_life=True, reward_clip=True)
    return envpool.make(args.env_id, **kw)


def build(args: Args, envs: Any):
    """Returns (init(key, obs0) -> Carry, rollout(carry) -> (carry, batch), update(carry, batch) -> (carry, logs))."""
    args.validate()
    num_actions = int(envs.action_space.n)
    net = ActorCritic(num_actions, args.network)
    atari = not is_procgen(args.env_id)
    steps_per_iter = args.num_minibatches * args.update_epochs

    def lr_schedule(count):
        if not args.anneal_lr:
            return args.learning_rate
        frac = 1.0 - (count // steps_per_iter) / args.num_iterations
        return args.learning_rate * frac

    tx = optax.chain(optax.clip_by_global_norm(args.max_grad_norm),
                     optax.inject_hyperparams(optax.adam)(learning_rate=lr_schedule, eps=args.adam_eps))
    handle0, _recv, _send, step_env = envs.xla()

    def init(key, obs0):
        key, pkey = jax.random.split(key)
        params = net.init(pkey, jnp.asarray(obs0))
        e = args.num_envs
        zf = jnp.zeros((e,), jnp.float32)
        zi = jnp.zeros((e,), jnp.int32)
        stats = EpisodeStats(zf, zi, zf, zi, jnp.zeros((), jnp.int32))
        rnorm = RewardNorm(zf, jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32), jnp.asarray(1e-4, jnp.float32))
        return Carry(params, tx.init(params), jnp.asarray(obs0), jnp.zeros((e,), bool), jnp.asarray(handle0), key,
                     stats, rnorm)

    def normalise_reward(rn: RewardNorm, reward, done):
        disc = rn.disc_ret * args.gamma + reward
        b_mean, b_var, b_count = disc.mean(), disc.var(), disc.shape[0]
        delta = b_mean - rn.mean
        tot = rn.count + b_count
        mean = rn.mean + delta * b_count / tot
        m2 = rn.var * rn.count + b_var * b_count + delta ** 2 * rn.count * b_count / tot
        rn = RewardNorm(jnp.where(done, 0.0, disc), mean, m2 / tot, tot)
        return rn, reward / jnp.sqrt(rn.var + 1e-8)

    def env_step(carry: Carry, _):
        key, akey = jax.random.split(carry.key)
        logits, value = net.apply(carry.params, carry.obs)
        action = jax.random.categorical(akey, logits)
        logprob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
        handle, out = step_env(carry.handle, action)
        if len(out) == 5:  # gymnasium: (obs, reward, terminated, truncated, info)
            next_obs, reward, term, trunc, info = out
            term, trunc = jnp.asarray(term).astype(bool), jnp.asarray(trunc).astype(bool)
        else:  # gym: (obs, reward, done, info)
            next_obs, reward, done, info = out
            trunc = jnp.asarray(info["TimeLimit.truncated"]).astype(bool) if "TimeLimit.truncated" in info \
                else jnp.zeros_like(jnp.asarray(done), bool)
            term = jnp.asarray(done).astype(bool) & ~trunc
        next_done = term | trunc
        reward = jnp.asarray(reward, jnp.float32)
        # Episode statistics on unclipped rewards; an Atari episode ends at game over, not a lost life.
        raw = jnp.asarray(info["reward"], jnp.float32) if "reward" in info else reward
        has_terminated = atari and "terminated" in info
        ended = (jnp.asarray(info["terminated"]).astype(bool) | trunc) if has_terminated else next_done
        st = carry.stats
        ret, length = st.ret + raw, st.length + 1
        stats = EpisodeStats(jnp.where(ended, 0.0, ret), jnp.where(ended, 0, length),
                             jnp.where(ended, ret, st.last_ret), jnp.where(ended, length, st.last_length),
                             st.finished + ended.sum())
        rnorm = carry.rnorm
        if args.norm_reward:
            rnorm, reward = normalise_reward(rnorm, reward, next_done)
        out = Batch(carry.obs, carry.done, action, logprob, value, reward)
        carry = carry._replace(obs=next_obs, done=next_done, handle=handle, key=key, stats=stats, rnorm=rnorm)
        return carry, out

    def rollout(carry: Carry):
        return jax.lax.scan(env_step, carry, None, length=args.num_steps)

    def gae(batch: Batch, next_value, next_done):
        next_values = jnp.concatenate([batch.values[1:], next_value[None]], 0)
        next_dones = jnp.concatenate([batch.dones[1:], next_done[None]], 0)
        nonterminal = 1.0 - next_dones.astype(jnp.float32)
        deltas = batch.rewards + args.gamma * next_values * nonterminal - batch.values

        def back(adv, x):
            delta, nt = x
            adv = delta + args.gamma * args.gae_lambda * nt * adv
            return adv, adv

        _, adv = jax.lax.scan(back, jnp.zeros_like(next_value), (deltas, nonterminal), reverse=True)
        return adv, adv + batch.values

    def loss_fn(params, mb):
        obs, actions, old_logp, old_v, adv, ret, w = mb
        logits, v = net.apply(params, obs)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, actions[:, None], 1)[:, 0]
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
        n = jnp.maximum(w.sum(), 1.0)

        def wmean(x):
            return (w * x).sum() / n

        log_ratio = logp - old_logp
        ratio = jnp.exp(log_ratio)
        approx_kl = wmean((ratio - 1.0) - log_ratio)
        if args.norm_adv:
            mu = wmean(adv)
            adv = (adv - mu) / (jnp.sqrt(wmean((adv - mu) ** 2)) + 1e-8)
        pg = wmean(jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - args.clip_coef, 1 + args.clip_coef)))
        if args.clip_vloss:
            v_clip = old_v + jnp.clip(v - old_v, -args.clip_coef, args.clip_coef)
            v_loss = 0.5 * wmean(jnp.maximum((v - ret) ** 2, (v_clip - ret) ** 2))
        else:
            v_loss = 0.5 * wmean((v - ret) ** 2)
        ent = wmean(entropy)
        loss = pg - args.ent_coef * ent + args.vf_coef * v_loss
        return loss, jnp.stack([loss, pg, v_loss, ent, approx_kl])

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(carry: Carry, batch: Batch):
        _, next_value = net.apply(carry.params, carry.obs)
        adv, ret = gae(batch, next_value, carry.done)
        if args.mask_reset_steps:
            w = 1.0 - batch.dones.astype(jnp.float32)
        else:
            w = jnp.ones_like(batch.rewards)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]),
                            (batch.obs, batch.actions, batch.logprobs, batch.values, adv, ret, w))

        def epoch(state, key):
            params, opt_state = state
            perm = jax.random.permutation(key, args.batch_size)
            mbs = jax.tree.map(lambda x: x[perm].reshape((args.num_minibatches, -1) + x.shape[1:]), flat)

            def minibatch(state, mb):
                params, opt_state = state
                (_, info), grads = grad_fn(params, mb)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), info

            return jax.lax.scan(minibatch, (params, opt_state), mbs, unroll=bool(args.update_unroll))

        key, ekey = jax.random.split(carry.key)
        (params, opt_state), info = jax.lax.scan(epoch, (carry.params, carry.opt_state),
                                                 jax.random.split(ekey, args.update_epochs),
                                                 unroll=bool(args.update_unroll))
        info = info.reshape(-1, info.shape[-1]).mean(0)
        lr = opt_state[1].hyperparams["learning_rate"]
        logs = dict(loss=info[0], pg_loss=info[1], v_loss=info[2], entropy=info[3], approx_kl=info[4],
                    learning_rate=lr, last_episode_return=carry.stats.last_ret.mean(),
                    last_episode_length=carry.stats.last_length.mean(), episodes=carry.stats.finished)
        return carry._replace(params=params, opt_state=opt_state, key=key), logs

    return init, rollout, update


# ----------------------------------------------------------------------------------------------------
# Running and timing.


def run(args: Args, verbose: bool = False) -> Dict[str, Any]:
    """Compiles, then runs args.num_iterations iterations; times iterations 2..N (all if N == 1)."""
    args.validate()
    envs = make_envs(args)
    init, rollout, update = build(args, envs)
    reset = envs.reset()
    obs0 = reset[0] if isinstance(reset, tuple) else reset  # gymnasium: (obs, info); old gym: obs

    t0 = time.perf_counter()
    carry = jax.block_until_ready(jax.jit(init)(jax.random.key(args.seed), obs0))
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rollout_c = jax.jit(rollout).lower(carry).compile()
    _, batch_shape = jax.eval_shape(rollout, carry)
    update_c = jax.jit(update).lower(carry, batch_shape).compile()
    compile_s = time.perf_counter() - t0
    params0 = carry.params

    history = []
    t_first = t_start = time.perf_counter()
    first_iter_s = 0.0
    for it in range(1, args.num_iterations + 1):
        carry, batch = rollout_c(carry)
        carry, logs = update_c(carry, batch)
        logs = jax.device_get(logs)  # host read each iteration, as CleanRL's logging does
        history.append({k: float(v) for k, v in logs.items()})
        if it == 1:
            first_iter_s = time.perf_counter() - t_first
            t_start = time.perf_counter()
        if verbose and (it % args.log_every == 0 or it == args.num_iterations):
            timed = it - 1 if args.num_iterations > 1 else it
            el = time.perf_counter() - (t_start if args.num_iterations > 1 else t_first)
            sps = timed * args.batch_size / el if timed and el > 0 else float("nan")
            print(f"iter {it}/{args.num_iterations} env_steps={it * args.batch_size} SPS={sps:.0f} "
                  f"loss={history[-1]['loss']:.4f} return={history[-1]['last_episode_return']:.2f} "
                  f"episodes={int(history[-1]['episodes'])}", flush=True)
    t_end = time.perf_counter()
    if args.num_iterations > 1:
        timed_iters, wall = args.num_iterations - 1, t_end - t_start
    else:
        timed_iters, wall = 1, t_end - t_first
    new, old = jax.device_get((carry.params, params0))
    param_change = float(np.sqrt(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
                                     for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)))))
    if hasattr(envs, "close"):
        envs.close()
    return dict(
        steps_per_s=timed_iters * args.batch_size / wall,
        compile_s=compile_s,
        init_s=init_s,
        first_iter_s=first_iter_s,
        timed_env_steps=timed_iters * args.batch_size,
        timed_s=wall,
        iterations=args.num_iterations,
        env_steps=args.num_iterations * args.batch_size,
        loss=history[-1]["loss"],
        losses=[h["loss"] for h in history],
        last_logs=history[-1],
        param_change=param_change,
        args=dataclasses.asdict(args),
    )


def measure(task: str = "Pong-v5", total_timesteps: int = 20_480, num_envs: Optional[int] = None,
            num_steps: Optional[int] = None, procgen_defaults: Optional[bool] = None, seed: int = 1,
            verbose: bool = False, **overrides: Any) -> Dict[str, Any]:
    """Env steps per second of the whole loop (rollout + update + per-iteration host read).

    `num_envs` / `num_steps` default to CleanRL's values for the task (Atari 8 × 128, ProcGen
    64 × 256); other `Args` fields may be overridden by keyword (e.g. `update_unroll=True`).
    Returns at least `steps_per_s` (env steps of iterations 2..N over their wall time; the single
    iteration if N == 1) and `compile_s` (ahead-of-time compilation of rollout and update), plus
    `init_s` (jitted parameter/optimiser initialisation: orthogonal init runs LAPACK QR, which is very
    slow under a loaded multi-threaded OpenBLAS; OPENBLAS_NUM_THREADS=1 avoids that), `loss` (last iteration's mean
    minibatch loss), `losses`, `param_change` (L2 norm of
    the parameter change over the run), `first_iter_s`, `last_logs`, `args`.
    """
    kw = dict(overrides)
    kw.update(total_timesteps=int(total_timesteps), seed=seed)
    if num_envs is not None:
        kw["num_envs"] = int(num_envs)
    if num_steps is not None:
        kw["num_steps"] = int(num_steps)
    return run(default_args(task, procgen_defaults, **kw), verbose=verbose)


def _parse(argv: Optional[Sequence[str]]) -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procgen-defaults", choices=("auto", "on", "off"), default="auto",
                   help="ProcGen settings of CleanRL's ppo_procgen.py (auto: by task name, -v0 = ProcGen)")

    def boolean(s: str) -> bool:
        if s.lower() in ("1", "true", "yes", "on"):
            return True
        if s.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"not a boolean: {s!r}")

    for f in dataclasses.fields(Args):
        typ = boolean if f.type in (bool, "bool") else {"int": int, "float": float, "str": str}.get(f.type, f.type)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=None, nargs="?" if typ is boolean else None,
                       const=True if typ is boolean else None, help=f"default: {f.default}")
    ns = vars(p.parse_args(argv))
    flag = ns.pop("procgen_defaults")
    given = {k: v for k, v in ns.items() if v is not None}
    task = given.pop("env_id", Args.env_id)
    return default_args(task, None if flag == "auto" else flag == "on", **given)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = _parse(argv)
    print(f"{args.env_id}: {args.num_envs} envs × {args.num_steps} steps, {args.num_iterations} iterations, "
          f"network={args.network}, jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    res = run(args, verbose=True)
    print(f"init_s={res['init_s']:.1f} compile_s={res['compile_s']:.1f} first_iter_s={res['first_iter_s']:.2f} "
          f"timed {res['timed_env_steps']} env steps in {res['timed_s']:.2f} s")
    print(f"env steps/s (whole loop, compile excluded): {res['steps_per_s']:.0f}")
    return res


if __name__ == "__main__":
    main()
