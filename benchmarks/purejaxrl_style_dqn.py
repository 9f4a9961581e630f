"""A single-purpose DQN in one file, fully jitted: the baseline tdjax's value loop is timed against.

Written for tdjax's benchmarks from a description of the design of PureJaxRL's `dqn.py` (no
PureJaxRL code or text is used; it cannot be downloaded here). What it shares with that design:

  * a gymnax environment, `jax.vmap`-ed over NUM_ENVS copies, auto-reset by gymnax itself;
  * a flat, circular replay buffer of BUFFER_SIZE transitions held in JAX arrays;
  * ε-greedy acting with a linear ε schedule, a target network, optax Adam;
  * ONE `lax.scan` over vectorised environment steps. Each scan step acts in all environments,
    writes the NUM_ENVS transitions, and — once more than LEARNING_STARTS env steps were taken —
    makes ONE gradient update on BATCH_SIZE transitions sampled uniformly from the buffer (a
    `lax.cond` on a step counter carried in the state, as PureJaxRL does; under `jax.vmap` over
    seeds that counter is batched, so the cond runs both branches, exactly as it does there);
  * `jax.vmap(train)` over seeds, one `jax.jit` around everything.

Same maths as `tdjax.train.make_train(ValueConfig(algo="dqn", train_frequency=1, ...))` with the
settings of `tdjax_config(config)`: the loss is ½·δ² averaged over the batch, δ = r + γ·(1 −
terminated)·maxₐ Q⁻(x′, a) − Q(x, a) with x′ the final observation of an episode that ended (so
truncated episodes bootstrap); the target network is copied every TARGET_UPDATE_INTERVAL updates;
ε goes linearly from EPS_START to EPS_END over EPS_DECAY_STEPS environment steps.

Network: NETWORK="tdjax" (default) IMPORTS `tdjax.networks.heads.ValueNetwork(MinAtarTorso(),
QHead(A))`, so the forward and backward passes are the very same maths and code as tdjax's loop and
only the loop around them differs. NETWORK="flax_conv" rebuilds the same architecture (conv 3×3/1,
16 channels, VALID → ReLU → dense 128 → ReLU → dense A, flax default initialisers, same parameter
shapes) with `flax.linen.Conv`, as one would write it without tdjax; it is there to show what
XLA:CPU's convolution inside `lax.scan` costs.

Differences from tdjax's loop that are part of the design, not of the maths: observations are
stored as the float32 that gymnax returns (tdjax stores uint8); the buffer is one flat axis
(tdjax's is [time, env]); no probes, no Q-mean metric, no checkpoint-friendly key schedule.

Usage:
  train = make_train(CONFIG)                       # CONFIG: the defaults below
  out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 8))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

CONFIG = {
    "ENV_NAME": "Breakout-MinAtar",
    "NUM_ENVS": 8,
    "TOTAL_TIMESTEPS": 40_000,  # per seed
    "BUFFER_SIZE": 10_000,
    "BATCH_SIZE": 64,
    "LEARNING_STARTS": 1_000,  # env steps (all environments) before the first update
    "TARGET_UPDATE_INTERVAL": 250,  # gradient updates
    "LR": 2.5e-4,
    "ADAM_EPS": 1e-8,
    "GAMMA": 0.99,
    "EPS_START": 1.0,
    "EPS_END": 0.05,
    "EPS_DECAY_STEPS": 10_000,  # env steps
    "NETWORK": "tdjax",  # "tdjax" (imported, identical) | "flax_conv" (rebuilt with nn.Conv)
}


class QNetworkConv(nn.Module):
    """MinAtar DQN network (Young & Tian 2019) written with `nn.Conv`."""

    num_actions: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), padding="VALID")(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.num_actions)(x)


def make_network(name: str, num_actions: int) -> nn.Module:
    if name == "tdjax":
        from tdjax.networks.heads import MinAtarTorso, QHead, ValueNetwork

        return ValueNetwork(MinAtarTorso(), QHead(num_actions))
    if name == "flax_conv":
        return QNetworkConv(num_actions)
    raise ValueError(f"NETWORK must be 'tdjax' or 'flax_conv', got {name!r}")


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array  # 1 − terminated
    next_obs: jax.Array


class Buffer(NamedTuple):
    data: Transition  # every field [BUFFER_SIZE, ...]
    pos: jax.Array  # next flat index to write
    size: jax.Array  # transitions stored


class Runner(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    buffer: Buffer
    rng: jax.Array
    timesteps: jax.Array  # env steps taken (all environments)
    n_updates: jax.Array
    ep_return: jax.Array  # [NUM_ENVS] return of the running episodes


def dqn_loss(network: nn.Module, gamma: float, params, target_params, batch: Transition) -> jax.Array:
    """Mean over the batch of ½·δ², δ = r + γ·discount·maxₐ Q⁻(x′, a) − Q(x, a)."""
    q = network.apply(params, batch.obs)
    q_taken = jnp.take_along_axis(q, batch.action[:, None], axis=-1)[:, 0]
    q_next = jnp.max(network.apply(target_params, batch.next_obs), axis=-1)
    target = jax.lax.stop_gradient(batch.reward + gamma * batch.discount * q_next)
    return jnp.mean(0.5 * jnp.square(target - q_taken))


def make_train(config: dict):
    """`train(rng) -> (final Runner, metrics dict stacked [TOTAL_TIMESTEPS // NUM_ENVS])`."""
    import gymnax

    c = dict(CONFIG, **config)
    n, cap, bs = c["NUM_ENVS"], c["BUFFER_SIZE"], c["BATCH_SIZE"]
    if cap % n:
        raise ValueError("BUFFER_SIZE must be a multiple of NUM_ENVS")
    num_steps = c["TOTAL_TIMESTEPS"] // n
    env, env_params = gymnax.make(c["ENV_NAME"])
    num_actions = env.action_space(env_params).n
    network = make_network(c["NETWORK"], num_actions)
    tx = optax.adam(c["LR"], eps=c["ADAM_EPS"])
    eps_schedule = optax.linear_schedule(c["EPS_START"], c["EPS_END"], max(c["EPS_DECAY_STEPS"], 1))
    gamma = c["GAMMA"]

    obs_shape = env.observation_space(env_params).shape

    def init_params(rng):
        return network.init(jax.random.split(rng, 3)[1], jnp.zeros(obs_shape, jnp.float32))

    def train(rng):
        rng, k_net, k_reset = jax.random.split(rng, 3)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n), env_params)
        params = network.init(k_net, obs[0])
        example = Transition(obs[0], jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()), obs[0])
        data = jax.tree.map(lambda x: jnp.zeros((cap,) + x.shape, x.dtype), example)
        runner = Runner(
            params=params, target_params=params, opt_state=tx.init(params), env_state=env_state, obs=obs,
            buffer=Buffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)), rng=rng,
            timesteps=jnp.zeros((), jnp.int32), n_updates=jnp.zeros((), jnp.int32),
            ep_return=jnp.zeros((n,)),
        )

        def loss_fn(p, target_params, batch: Transition):
            return dqn_loss(network, gamma, p, target_params, batch)

        def update_step(r: Runner, _):
            rng, k_explore, k_random, k_env, k_sample = jax.random.split(r.rng, 5)
            # act (ε-greedy) and step every environment
            eps = eps_schedule(r.timesteps)
            greedy = jnp.argmax(network.apply(r.params, r.obs), axis=-1)
            random_action = jax.random.randint(k_random, (n,), 0, num_actions)
            action = jnp.where(jax.random.uniform(k_explore, (n,)) < eps, random_action, greedy).astype(jnp.int32)
            obs, env_state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_env, n), r.env_state, action, env_params)
            tr = Transition(r.obs, action, reward.astype(jnp.float32), 1.0 - terminated.astype(jnp.float32),
                            info["final_observation"])
            # write NUM_ENVS transitions at the circular position
            buf = r.buffer
            data = jax.tree.map(lambda b, x: jax.lax.dynamic_update_slice_in_dim(b, x.astype(b.dtype), buf.pos, 0),
                                buf.data, tr)
            buf = Buffer(data, (buf.pos + n) % cap, jnp.minimum(buf.size + n, cap))
            timesteps = r.timesteps + n
            done = terminated | truncated
            ep_return = r.ep_return + reward
            ret_sum, ret_count = jnp.sum(jnp.where(done, ep_return, 0.0)), jnp.sum(done)
            ep_return = jnp.where(done, 0.0, ep_return)

            # learn: one gradient step on a uniform minibatch
            def learn(args):
                params, opt_state, n_updates = args
                idx = jax.random.randint(k_sample, (bs,), 0, buf.size)
                batch = jax.tree.map(lambda b: b[idx], buf.data)
                loss, grads = jax.value_and_grad(loss_fn)(params, r.target_params, batch)
                updates, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, n_updates + 1, loss

            def skip(args):
                return (*args, jnp.full((), jnp.nan))

            params, opt_state, n_updates, loss = jax.lax.cond(
                r.timesteps >= c["LEARNING_STARTS"], learn, skip, (r.params, r.opt_state, r.n_updates))
            refresh = (n_updates > r.n_updates) & (n_updates % c["TARGET_UPDATE_INTERVAL"] == 0)
            target_params = jax.lax.cond(refresh, lambda: params, lambda: r.target_params)
            r = Runner(params, target_params, opt_state, env_state, obs, buf, rng, timesteps, n_updates, ep_return)
            return r, {"timesteps": timesteps, "loss": loss, "return_sum": ret_sum, "return_count": ret_count}

        return jax.lax.scan(update_step, runner, None, num_steps)

    train.init_params = init_params  # the parameters train(rng) starts from
    train.network = network
    return train


def check_trained(config: dict, keys: jax.Array, runner: Runner, metrics: dict) -> dict:
    """Checks that a run of `jax.vmap(make_train(config))(keys)` really trained: the expected number of
    updates, finite losses, parameters moved away from their initial values, the target network
    refreshed, episodes ended. Raises AssertionError otherwise; returns the facts."""
    c = dict(CONFIG, **config)
    train = make_train(c)
    p0 = jax.jit(jax.vmap(train.init_params))(keys)
    loss = jnp.asarray(metrics["loss"])
    learned = jnp.isfinite(loss)
    leaves = jax.tree.leaves

    def max_change(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(leaves(a), leaves(b)))

    warm = -(-c["LEARNING_STARTS"] // c["NUM_ENVS"])
    expected = c["TOTAL_TIMESTEPS"] // c["NUM_ENVS"] - warm
    facts = {
        "updates": int(runner.n_updates.reshape(-1)[0]),
        "loss_first_50": float(jnp.mean(loss[..., warm:warm + 50])),
        "loss_last_50": float(jnp.mean(loss[..., -50:])),
        "max_param_change": max_change(runner.params, p0),
        "max_target_change": max_change(runner.target_params, p0),
        "episodes": int(metrics["return_count"].sum()),
    }
    assert facts["updates"] == expected, (facts, expected)
    assert int(learned.sum()) == loss.size // loss.shape[-1] * expected, "an update gave a non-finite loss"
    assert facts["max_param_change"] > 1e-4, "parameters did not change"
    if expected >= c["TARGET_UPDATE_INTERVAL"]:
        assert facts["max_target_change"] > 1e-4, "the target network was never refreshed"
    assert facts["episodes"] > 0, "no episode ended"
    return facts


def sanity_check(config: dict | None = None, seeds: int = 2) -> dict:
    """A short run of `seeds` vmapped seeds, checked with `check_trained`."""
    cfg = dict(CONFIG, TOTAL_TIMESTEPS=4_000, LEARNING_STARTS=500, TARGET_UPDATE_INTERVAL=50)
    cfg.update(config or {})
    keys = jax.random.split(jax.random.key(0), seeds)
    runner, metrics = jax.jit(jax.vmap(make_train(cfg)))(keys)
    return check_trained(cfg, keys, runner, metrics)


if __name__ == "__main__":
    import time

    print(sanity_check())
    train = make_train({})
    keys = jax.random.split(jax.random.key(0), 8)
    compiled = jax.jit(jax.vmap(train)).lower(keys).compile()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    print(f"8 seeds: {8 * CONFIG['TOTAL_TIMESTEPS'] / (time.perf_counter() - t0):.0f} env steps/s")
