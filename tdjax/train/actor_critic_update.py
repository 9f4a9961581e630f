"""The steps of the actor-critic loop (`tdjax.train.actor_critic`), as module-level functions of an
`ActorCriticSpec` and their data.

  * network outputs and the per-example objectives (batch them with `jax.vmap`);
  * `fit`: one network's epochs × minibatches of optimizer steps; `learner_update`: an iteration's
    whole update (PPO's joint fit, or the actor's and the critic's);
  * `rollout`, `normalise_rewards`, `make_batch`, `collect`: acting and the advantage batch (GAE);
  * `probe_sample`, `update_matrices`, `probe`: the in-loop probes (Lyle et al. 2022, App. B.1);
  * `evaluate`: the test environments; `init_local`, `iteration`: the loop for `core.build_loop`.

With `axis_name` (inside `shard_map` over "data") each function computes its part of the
single-device result on this device's environments and adds it up over devices (see the module
docstring of `tdjax.train.actor_critic`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from tdjax._src.returns import generalized_advantage_estimation
from tdjax._src.update_matrix import policy_update_matrix, srank, update_matrix, update_rank
from tdjax.train import actor_critic as ac  # types and spec (that module imports this one for its agent)
from tdjax.train import core, host_loop
from tdjax.train.replay import Transition

__all__ = [
    "PolicyOutputs",
    "policy_logits",
    "value",
    "features",
    "policy_terms",
    "value_term",
    "policy_loss",
    "value_loss",
    "fit",
    "learner_update",
    "rollout",
    "normalise_rewards",
    "make_batch",
    "collect",
    "probe_sample",
    "init_params",
    "update_matrices",
    "probe",
    "evaluate",
    "init_local",
    "iteration",
]

def _nan() -> jax.Array:
    return jnp.full((), jnp.nan, jnp.float32)


# ----------------------------------------------------------------------------------------------------
# Network outputs.


def _prep(spec: ac.ActorCriticSpec, x: jax.Array) -> jax.Array:
    """Observations in their stored units → network input (×1/255 for pixels)."""
    x = jnp.asarray(x, jnp.float32)
    return x if spec.env.obs_scale == 1.0 else x * spec.env.obs_scale


def _actor_out(spec: ac.ActorCriticSpec, p: Any, x: jax.Array) -> Tuple[jax.Array, Optional[jax.Array]]:
    """(logits, advantages or None) of the acting network at (already prepared) x."""
    nets = spec.networks
    if spec.algo.shared:
        return nets["shared"].apply(p, x)[0], None
    out = nets["actor"].apply(p, x)
    return out if spec.algo.advantage_head else (out, None)  # type: ignore[return-value]


def _critic_out(spec: ac.ActorCriticSpec, p: Any, x: jax.Array) -> jax.Array:
    if spec.algo.shared:
        return spec.networks["shared"].apply(p, x)[1]  # type: ignore[return-value]
    return spec.networks["critic"].apply(p, x)  # type: ignore[return-value]


def _logits_and_value(spec: ac.ActorCriticSpec, params: Dict[str, Any], x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    if spec.algo.shared:
        return spec.networks["shared"].apply(params["shared"], x)  # type: ignore[return-value]
    return _actor_out(spec, params["actor"], x)[0], _critic_out(spec, params["critic"], x)


def policy_logits(spec: ac.ActorCriticSpec, p: Any, x: jax.Array) -> jax.Array:
    """Logits [..., A] of the acting network (`params[spec.actor_name]`) at observations x."""
    return _actor_out(spec, p, _prep(spec, x))[0]


def value(spec: ac.ActorCriticSpec, p: Any, x: jax.Array) -> jax.Array:
    """V [...] of the critic (`params[spec.critic_name]`) at observations x."""
    return _critic_out(spec, p, _prep(spec, x))


def features(spec: ac.ActorCriticSpec, name: str, p: Any, x: jax.Array) -> jax.Array:
    """Penultimate activations [..., d] of network `name` at observations x."""
    net = spec.networks[name]
    return net.apply(p, _prep(spec, x), method=type(net).features)  # type: ignore[attr-defined, return-value]


# ----------------------------------------------------------------------------------------------------
# Per-example objectives: (loss, aux dict) of ONE example.


def policy_terms(spec: ac.ActorCriticSpec, logits: jax.Array, adv_pred: Optional[jax.Array],
                 ex: ac.Batch) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """surrogate − c_H·H (+ α_A·(A_θ(x,a) − Â)² for DAAC) of one example with logits [A] (and the
    advantage head's A_θ(x,·) [A] or None), with the logged terms."""
    c = spec.config
    surrogate = spec.algo.surrogate(c, logits, ex.action, ex.logp, ex.advantage)
    log_p = jax.nn.log_softmax(logits)
    probs = jnp.exp(log_p)
    entropy = -jnp.sum(probs * jnp.where(probs > 0, log_p, 0.0))  # finite if a logit is −∞
    loss = surrogate - c.entropy_coef * entropy
    log_ratio = log_p[ex.action] - ex.logp
    aux = dict(policy_loss=surrogate, entropy=entropy,
               approx_kl=jnp.expm1(log_ratio) - log_ratio,
               clip_fraction=(jnp.abs(jnp.expm1(log_ratio)) > c.clip_eps).astype(jnp.float32))
    if adv_pred is not None:  # DAAC: the advantage head regresses the (normalised) GAE
        adv_loss = jnp.square(adv_pred[ex.action] - jax.lax.stop_gradient(ex.advantage))
        loss = loss + c.daac_advantage_coef * adv_loss
        aux["advantage_loss"] = adv_loss
    return loss, aux


def value_term(spec: ac.ActorCriticSpec, v: jax.Array, ex: ac.Batch) -> jax.Array:
    """L_V = ½ max((V − G)², (V_clip − G)²), or ½(V − G)² without value clipping, of one example."""
    c = spec.config
    if c.clip_value_loss:
        v_clipped = ex.value + jnp.clip(v - ex.value, -c.clip_eps, c.clip_eps)
        return 0.5 * jnp.maximum(jnp.square(v - ex.target), jnp.square(v_clipped - ex.target))
    return 0.5 * jnp.square(v - ex.target)


def policy_loss(spec: ac.ActorCriticSpec, p: Any, ex: ac.Batch) -> jax.Array:
    """The actor's loss on ONE example, without any value term (the loss of the policy update matrix)."""
    logits, adv_pred = _actor_out(spec, p, _prep(spec, ex.obs))
    return policy_terms(spec, logits, adv_pred, ex)[0]


def value_loss(spec: ac.ActorCriticSpec, p: Any, ex: ac.Batch) -> jax.Array:
    """L_V on ONE example."""
    return value_term(spec, _critic_out(spec, p, _prep(spec, ex.obs)), ex)


# The same objectives on a minibatch: the network runs ONCE on the batch of observations and only the
# per-example terms are vmapped (vmapping the network's forward as well gives the same numbers but
# costs ~9% more per IMPALA-CNN gradient step on XLA:CPU, where max-pool gradients batch poorly).
# Each returns per-example (losses, aux) [B].


def _policy_objective(spec: ac.ActorCriticSpec, p: Any, mb: ac.Batch):
    logits, adv_pred = _actor_out(spec, p, _prep(spec, mb.obs))
    return jax.vmap(functools.partial(policy_terms, spec))(logits, adv_pred, mb)


def _value_objective(spec: ac.ActorCriticSpec, p: Any, mb: ac.Batch):
    loss = jax.vmap(functools.partial(value_term, spec))(_critic_out(spec, p, _prep(spec, mb.obs)), mb)
    return loss, dict(value_loss=loss)


def _joint_objective(spec: ac.ActorCriticSpec, p: Any, mb: ac.Batch):  # PPO: one network, one loss
    logits, v = spec.networks["shared"].apply(p, _prep(spec, mb.obs))

    def terms(lg, vi, ex):
        loss, aux = policy_terms(spec, lg, None, ex)
        vl = value_term(spec, vi, ex)
        return loss + spec.config.value_coef * vl, dict(aux, value_loss=vl)

    return jax.vmap(terms)(logits, v, mb)


# ----------------------------------------------------------------------------------------------------
# The update.


def fit(spec: ac.ActorCriticSpec, params: Any, opt_state: Any, objective: Callable, epochs: int, batch: ac.Batch,
        key: jax.Array, axis_name: Optional[str]) -> Tuple[Any, Any, jax.Array, Dict[str, jax.Array]]:
    """One network's `epochs` × `num_minibatches` optimizer steps on the weighted mean of
    `objective(spec, params, minibatch)`. Epoch e permutes the rollout's time steps with
    `fold_in(key, e)`; a minibatch is `num_steps / num_minibatches` time steps × all environments.
    With `config.loop == "host"` the steps are straight-line code (`host_loop.steps`).

    Returns (params, opt_state, mean loss, mean of each aux term) over the steps (losses before each step)."""
    c = spec.config
    num_mb = spec.num_minibatches
    t_mb = c.num_steps // num_mb
    unroll = c.loop == "host"

    def minibatch_step(carry, idx):
        params, opt_state = carry
        mb = jax.tree.map(lambda x: x[idx].reshape((-1,) + x.shape[2:]), batch)  # [t_mb · E, ...]
        n = jnp.sum(mb.weight)
        if axis_name is not None:
            n = jax.lax.psum(n, axis_name)
        n = jnp.maximum(n, 1.0)

        def total(p):
            losses, aux = objective(spec, p, mb)  # per-example [t_mb · E] losses and aux
            aux = {k: jnp.sum(v * mb.weight) / n for k, v in aux.items()}
            return jnp.sum(losses * mb.weight) / n, aux

        p = params
        if axis_name is not None:
            # each device differentiates its own shard's share of the global mean; psum adds them up
            p = jax.lax.pcast(params, axis_name, to="varying")
        (loss, aux), grads = jax.value_and_grad(total, has_aux=True)(p)
        if axis_name is not None:
            grads, loss, aux = jax.lax.psum((grads, loss, aux), axis_name)
        updates, opt_state = spec.optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, aux)

    def epoch(carry, e):
        perm = jax.random.permutation(jax.random.fold_in(key, e), c.num_steps)
        return host_loop.steps(minibatch_step, carry, perm.reshape(num_mb, t_mb), unroll=unroll)

    (params, opt_state), (loss, aux) = host_loop.steps(epoch, (params, opt_state), jnp.arange(epochs),
                                                       unroll=unroll)
    return params, opt_state, jnp.mean(loss), jax.tree.map(jnp.mean, aux)


def learner_update(spec: ac.ActorCriticSpec, learner: ac.LearnerState, batch: ac.Batch, i: jax.Array,
                   axis_name: Optional[str] = None) -> Tuple[ac.LearnerState, Dict[str, jax.Array]]:
    """Iteration i's whole update: PPO's joint fit, or the actor's fit and (when i % value_freq == 0)
    the critic's. Returns (learner, means of loss, policy_loss, value_loss, entropy, advantage_loss,
    approx_kl, clip_fraction, and critic_updated)."""
    k_update = jax.random.fold_in(jax.random.fold_in(learner.key, i), 0)
    params, opt = dict(learner.params), dict(learner.opt_state)
    nan = _nan()
    out = dict(advantage_loss=nan)
    if spec.algo.shared:
        params["shared"], opt["shared"], loss, aux = fit(
            spec, params["shared"], opt["shared"], _joint_objective, spec.policy_epochs, batch, k_update, axis_name)
        out.update(aux, loss=loss, critic_updated=jnp.ones((), bool))
    else:
        params["actor"], opt["actor"], loss_a, aux = fit(
            spec, params["actor"], opt["actor"], _policy_objective, spec.policy_epochs, batch,
            jax.random.fold_in(k_update, 0), axis_name)
        out.update(aux)

        def critic_fit(p_o):
            p, o, loss, aux = fit(spec, *p_o, _value_objective, spec.value_epochs, batch,
                                  jax.random.fold_in(k_update, 1), axis_name)
            return p, o, loss, aux["value_loss"]

        value_freq = spec.value_freq
        trained = (i % value_freq == 0) if value_freq > 1 else jnp.ones((), bool)
        if value_freq > 1:
            params["critic"], opt["critic"], loss_c, vl = jax.lax.cond(
                trained, critic_fit, lambda p_o: (*p_o, nan, nan), (params["critic"], opt["critic"]))
        else:
            params["critic"], opt["critic"], loss_c, vl = critic_fit((params["critic"], opt["critic"]))
        out.update(loss=loss_a + jnp.where(trained, loss_c, 0.0), value_loss=vl, critic_updated=trained)
    out = {k: (v if k == "critic_updated" else jnp.asarray(v, jnp.float32)) for k, v in out.items()}
    return learner._replace(params=params, opt_state=opt), out


# ----------------------------------------------------------------------------------------------------
# Acting and the advantage batch.


class PolicyOutputs(NamedTuple):
    """What the networks said at each rollout step (leaves [T, E])."""

    logp: jax.Array  # float32. log μ(aₜ|xₜ) of the action taken.
    value: jax.Array  # float32. V_old(xₜ).
    final_value: jax.Array  # float32. V(final observation) where an episode ended (gymnax); 0 otherwise.


def rollout(spec: ac.ActorCriticSpec, params: Dict[str, Any], actor: ac.ActorState, i: jax.Array
            ) -> Tuple[ac.ActorState, Transition, PolicyOutputs, jax.Array, core.EndedEpisodes]:
    """Iteration i's `num_steps` vector steps with actions sampled from the policy.

    Returns (actor, transitions [T, E] (obs in storage dtype, no next_obs), policy outputs [T, E],
    V of the observations after the last step [E], the training episodes that ended)."""
    env = spec.env
    k_act, k_env, _ = jax.random.split(jax.random.fold_in(actor.key, i), 3)

    def vector_step(actor: ac.ActorState, t):
        logits, v = _logits_and_value(spec, params, _prep(spec, actor.obs))
        a = jax.random.categorical(jax.random.fold_in(k_act, t), logits).astype(jnp.int32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), a[:, None], axis=-1)[:, 0]
        env_state, s = env.step(actor.env_state, jax.random.fold_in(k_env, t), a)
        done = s.terminated | s.truncated
        if env.always_valid:
            # gymnax resets inside the step: the final observation is only in next_obs
            final_value = jnp.where(done, _critic_out(spec, params[spec.critic_name], _prep(spec, s.next_obs)), 0.0)
        else:
            # envpool resets on the NEXT call: the final observation is the next step's obs, whose
            # value the next step (or the bootstrap) computes anyway
            final_value = jnp.zeros_like(v)
        episodes, ended = core.track_episodes(actor.episodes, s, spec.config.gamma)
        tr = Transition(obs=actor.obs.astype(env.obs_storage_dtype), action=a, reward=s.reward,
                        discount=1.0 - s.terminated.astype(jnp.float32), next_obs=None, done=done, valid=s.valid)  # type: ignore[arg-type]
        out = PolicyOutputs(logp=logp, value=v, final_value=final_value)
        return actor._replace(env_state=env_state, obs=s.obs, episodes=episodes), (tr, out, ended)

    actor, (traj, outs, ended) = jax.lax.scan(vector_step, actor, jnp.arange(spec.config.num_steps))
    last_value = _critic_out(spec, params[spec.critic_name], _prep(spec, actor.obs))
    return actor, traj, outs, last_value, core.sum_ended(ended)


def normalise_rewards(spec: ac.ActorCriticSpec, learner: ac.LearnerState, actor: ac.ActorState, traj: Transition,
                      axis_name: Optional[str]) -> Tuple[ac.LearnerState, ac.ActorState, jax.Array]:
    """Scale rewards by the running std of the discounted return (baselines' VecNormalize, updated
    once per rollout with all its returns rather than once per step). Returns the rewards [T, E]
    clipped to ±10, with the statistics (learner) and running returns (actor) updated."""
    gamma = float(spec.config.gamma)

    def acc(ret, x):
        r, done, valid = x
        ret = jnp.where(valid, ret * gamma + r, ret)
        return jnp.where(done, 0.0, ret), ret

    norm_return, rets = jax.lax.scan(acc, actor.norm_return, (traj.reward, traj.done, traj.valid))
    w = traj.valid.astype(jnp.float32)
    n, s = jnp.sum(w), jnp.sum(rets * w)
    if axis_name is not None:
        n, s = jax.lax.psum((n, s), axis_name)
    mean_b = s / jnp.maximum(n, 1.0)
    m2_b = jnp.sum(jnp.square(rets - mean_b) * w)
    if axis_name is not None:
        m2_b = jax.lax.psum(m2_b, axis_name)
    st = learner.reward_stats
    tot = st.count + n
    delta = mean_b - st.mean
    mean = st.mean + delta * n / tot
    var = (st.var * st.count + m2_b + jnp.square(delta) * st.count * n / tot) / tot
    reward = jnp.clip(traj.reward / jnp.sqrt(var + 1e-8), -10.0, 10.0)
    return (learner._replace(reward_stats=ac.RunningStats(tot, mean, var)),
            actor._replace(norm_return=norm_return), reward)


def _weighted_mean(x: jax.Array, w: jax.Array, axis_name: Optional[str]) -> jax.Array:
    s, n = jnp.sum(x * w), jnp.sum(w)
    if axis_name is not None:
        s, n = jax.lax.psum((s, n), axis_name)
    return s / jnp.maximum(n, 1.0)


def make_batch(spec: ac.ActorCriticSpec, learner: ac.LearnerState, actor: ac.ActorState, traj: Transition,
               outs: PolicyOutputs, last_value: jax.Array, axis_name: Optional[str]
               ) -> Tuple[ac.LearnerState, ac.ActorState, ac.Batch]:
    """Advantages (GAE per environment, λ = `spec.gae_lambda`) and λ-return targets of a rollout.

    Traces stop where an episode ended (discount γ(1 − done)); a truncated step (done with
    discount > 0) gets γ·V(final observation) added to its reward."""
    c = spec.config
    gamma = float(c.gamma)
    reward = traj.reward
    if c.normalize_rewards:
        learner, actor, reward = normalise_rewards(spec, learner, actor, traj, axis_name)
    if spec.env.always_valid:
        boot = outs.final_value
    else:
        boot = jnp.concatenate([outs.value[1:], last_value[None]])
    truncated = traj.done & (traj.discount > 0)
    # a truncated episode still has a value after its last step: fold it into the reward
    reward = reward + gamma * truncated.astype(jnp.float32) * boot
    discount = gamma * (1.0 - traj.done.astype(jnp.float32))
    adv = jax.vmap(generalized_advantage_estimation, in_axes=(1, 1, 1, 0, None), out_axes=1)(
        reward, discount, outs.value, last_value, spec.gae_lambda)
    w = traj.valid.astype(jnp.float32)
    target = adv + outs.value
    if c.normalize_advantages:
        mean = _weighted_mean(adv, w, axis_name)
        std = jnp.sqrt(_weighted_mean(jnp.square(adv - mean), w, axis_name))
        adv = (adv - mean) / (std + 1e-8)
    batch = ac.Batch(obs=traj.obs, action=traj.action, logp=outs.logp, value=outs.value, advantage=adv,
                     target=target, weight=w)
    return learner, actor, batch


def collect(spec: ac.ActorCriticSpec, state: ac.RunnerState, i: jax.Array, axis_name: Optional[str] = None
            ) -> Tuple[ac.RunnerState, ac.Batch, core.EndedEpisodes]:
    """Iteration i's rollout, advantages and targets: (state with the environments advanced and the
    reward statistics updated, Batch [T, E], this device's training episodes that ended)."""
    learner, actor, evaluator = state
    actor, traj, outs, last_value, ended = rollout(spec, learner.params, actor, i)
    learner, actor, batch = make_batch(spec, learner, actor, traj, outs, last_value, axis_name)
    return ac.RunnerState(learner, actor, evaluator), batch, ended


# ----------------------------------------------------------------------------------------------------
# Probes.


def probe_sample(spec: ac.ActorCriticSpec, batch: ac.Batch, key: jax.Array) -> ac.Batch:
    """`probe_k` distinct transitions [k] of a rollout batch [T, E] (valid transitions first)."""
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    u = jax.random.uniform(key, flat.weight.shape)
    _, idx = jax.lax.top_k(jnp.where(flat.weight > 0, u, u - 2.0), spec.config.probe_k)
    return jax.tree.map(lambda x: x[idx], flat)


def init_params(spec: ac.ActorCriticSpec, key: jax.Array) -> Dict[str, Any]:
    """Fresh parameters of every network (one key each, in the order of their sorted names)."""
    keys = jax.random.split(key, len(spec.networks))
    dummy = jnp.zeros(spec.env.obs_shape, jnp.float32)
    return {name: net.init(k, dummy) for (name, net), k in zip(sorted(spec.networks.items()), keys)}


def update_matrices(spec: ac.ActorCriticSpec, learner: ac.LearnerState, examples: ac.Batch,
                    fresh_key: jax.Array) -> Dict[str, jax.Array]:
    """The [k, k] policy ("actor") and value ("critic") update matrices of `examples` [k] with the
    learner's parameters and optimizer states (and "actor_fresh", "critic_fresh" for a network and
    optimizer state initialised with `fresh_key`, when `probe_fresh`)."""
    c, opt_tx = spec.config, spec.optimizer
    kw: Dict[str, Any] = dict(chunk_size=c.probe_chunk_size)
    sets = [("", learner.params, learner.opt_state)]
    if c.probe_fresh:
        fresh = init_params(spec, fresh_key)
        # a fresh optimizer state, at the learner's learning rate (data when set by set_hyperparams)
        lr = {k: o.hyperparams["learning_rate"] for k, o in learner.opt_state.items()}
        sets.append(("_fresh", fresh, {k: core.set_learning_rate(opt_tx.init(v), lr[k]) for k, v in fresh.items()}))
    a, v = spec.actor_name, spec.critic_name
    out = {}
    for suffix, params, opt in sets:
        out["actor" + suffix] = policy_update_matrix(
            functools.partial(policy_loss, spec), functools.partial(policy_logits, spec), opt_tx, params[a], opt[a],
            examples, examples.obs, **kw)
        out["critic" + suffix] = update_matrix(
            functools.partial(value_loss, spec), functools.partial(value, spec), opt_tx, params[v], opt[v],
            examples, examples.obs, **kw)
    return out


def probe(spec: ac.ActorCriticSpec, learner: ac.LearnerState, batch: ac.Batch, i: jax.Array,
          actor_key: jax.Array) -> ac.ActorCriticProbes:
    """Iteration i's probe on its rollout batch: update ranks and feature sranks (Lyle et al. 2022,
    Fig. 4). The sample comes from `fold_in(actor_key, i)`, the fresh network from `fold_in(learner.key, i)`."""
    c = spec.config
    k_sample = jax.random.split(jax.random.fold_in(actor_key, i), 3)[2]
    k_fresh = jax.random.fold_in(jax.random.fold_in(learner.key, i), 1)
    examples = probe_sample(spec, batch, k_sample)
    mats = update_matrices(spec, learner, examples, k_fresh)

    def rank(name):
        return core.rank_or_nan(update_rank(mats[name], float(c.probe_rank_eps))) if name in mats else _nan()

    def feature_srank(name):
        phi = features(spec, name, learner.params[name], examples.obs)
        return core.rank_or_nan(srank(phi.reshape(phi.shape[0], -1), float(c.probe_srank_delta)))

    return ac.ActorCriticProbes(
        probed=jnp.ones((), bool), actor_update_rank=rank("actor"), critic_update_rank=rank("critic"),
        actor_update_rank_fresh=rank("actor_fresh"), critic_update_rank_fresh=rank("critic_fresh"),
        actor_srank=feature_srank(spec.actor_name), critic_srank=feature_srank(spec.critic_name),
    )


# ----------------------------------------------------------------------------------------------------
# Evaluation, init and one iteration.


def evaluate(spec: ac.ActorCriticSpec, learner: ac.LearnerState, ev: ac.EvalState, i: jax.Array
             ) -> Tuple[ac.EvalState, core.EndedEpisodes]:
    """`eval_steps` vector steps of this device's test environments with the current (sampled) policy;
    returns (evaluator, the test episodes that ended)."""
    k_act, k_env = jax.random.split(jax.random.fold_in(ev.key, i))
    p = learner.params[spec.actor_name]

    def vector_step(ev: ac.EvalState, t):
        logits = policy_logits(spec, p, ev.obs)
        a = jax.random.categorical(jax.random.fold_in(k_act, t), logits).astype(jnp.int32)
        env_state, s = spec.test_env.step(ev.env_state, jax.random.fold_in(k_env, t), a)  # type: ignore[union-attr]
        episodes, ended = core.track_episodes(ev.episodes, s, spec.config.gamma)
        return ev._replace(env_state=env_state, obs=s.obs, episodes=episodes), ended

    ev, ended = jax.lax.scan(vector_step, ev, jnp.arange(spec.config.eval_steps))
    return ev, core.sum_ended(ended)


def init_local(spec: ac.ActorCriticSpec, key: jax.Array, axis_name: Optional[str], *,
               pool: Optional[jax.Array] = None) -> ac.RunnerState:
    """The state of one device (of the "data" axis when `axis_name` is given); `pool`: the training
    environments' episodes draw their seeds from their first `pool` (`VecEnv.reset(key, pool)`)."""
    k_net, k_learn, k_actor, k_eval = jax.random.split(key, 4)
    params = init_params(spec, k_net)
    learner = ac.LearnerState(
        params=params, opt_state={k: spec.optimizer.init(v) for k, v in params.items()}, key=k_learn,
        reward_stats=ac.RunningStats(jnp.full((), 1e-4, jnp.float32), jnp.zeros((), jnp.float32),
                                     jnp.ones((), jnp.float32)),
    )
    if axis_name is not None:
        k_actor = jax.random.fold_in(k_actor, jax.lax.axis_index(axis_name))
        k_eval = jax.random.fold_in(k_eval, jax.lax.axis_index(axis_name))
    k_reset, k_base = jax.random.split(k_actor)
    env_state, obs, episodes = core.reset_envs(spec.env, k_reset, spec.num_envs, pool)
    actor = ac.ActorState(key=k_base, env_state=env_state, obs=obs, episodes=episodes,
                          norm_return=jnp.zeros((spec.num_envs,), jnp.float32))
    evaluator = None
    if spec.test_env is not None:
        k_reset, k_base = jax.random.split(k_eval)
        env_state, obs, episodes = core.reset_envs(spec.test_env, k_reset, spec.num_test_envs)
        evaluator = ac.EvalState(key=k_base, env_state=env_state, obs=obs, episodes=episodes)
    return ac.RunnerState(learner, actor, evaluator)


def _maybe_probe(spec: ac.ActorCriticSpec, learner: ac.LearnerState, batch: ac.Batch, i: jax.Array,
                 actor_key: jax.Array, axis_name: Optional[str]) -> ac.ActorCriticProbes:
    """The probe when i % probe_interval == 0 (`lax.cond`), averaged over devices; empty otherwise."""
    if spec.config.probe_interval <= 0:
        return ac.empty_probes()

    def do_probe():
        m = probe(spec, learner, batch, i, actor_key)
        if axis_name is None:
            return m
        # each device probes its own rollout shard; report the mean over devices
        return ac.ActorCriticProbes(m.probed, *jax.lax.pmean(tuple(m[1:]), axis_name))

    return jax.lax.cond(i % spec.config.probe_interval == 0, do_probe, ac.empty_probes)


def _maybe_evaluate(spec: ac.ActorCriticSpec, learner: ac.LearnerState, evaluator: Optional[ac.EvalState],
                    i: jax.Array, axis_name: Optional[str]
                    ) -> Tuple[Optional[ac.EvalState], jax.Array, core.EndedEpisodes]:
    """Evaluation when i % eval_interval == 0 (`lax.cond`): (evaluator, evaluated, test episodes
    ended, summed over devices)."""
    zero = core.EndedEpisodes(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    if evaluator is None:
        return evaluator, jnp.zeros((), bool), zero
    evaluated = i % spec.config.eval_interval == 0

    def do_eval(ev):
        ev, ended = evaluate(spec, learner, ev, i)
        return ev, core.sum_ended(ended, axis_name)

    evaluator, test = jax.lax.cond(evaluated, do_eval, lambda ev: (ev, zero), evaluator)
    return evaluator, evaluated, test


def iteration(spec: ac.ActorCriticSpec, state: ac.RunnerState, i: jax.Array, axis_name: Optional[str],
              phase: None = None) -> Tuple[ac.RunnerState, ac.ActorCriticMetrics]:
    """Iteration i: rollout and advantages, the probe (before the update), the update, the evaluation.
    The loop has no static phases (`phase` is always None)."""
    del phase
    state, batch, ended = collect(spec, state, i, axis_name)
    learner, actor, evaluator = state
    probes = _maybe_probe(spec, learner, batch, i, actor.key, axis_name)
    learner, upd = learner_update(spec, learner, batch, i, axis_name)
    evaluator, evaluated, test = _maybe_evaluate(spec, learner, evaluator, i, axis_name)
    if axis_name is not None:
        ended = jax.lax.psum(ended, axis_name)
    metrics = ac.ActorCriticMetrics(
        env_steps=((i + 1) * spec.steps_per_iteration).astype(jnp.int32), learned=jnp.ones((), bool),
        loss=upd["loss"], policy_loss=upd["policy_loss"], value_loss=upd["value_loss"], entropy=upd["entropy"],
        advantage_loss=upd["advantage_loss"], approx_kl=upd["approx_kl"], clip_fraction=upd["clip_fraction"],
        critic_updated=upd["critic_updated"], return_sum=ended.return_sum,
        discounted_return_sum=ended.discounted_return_sum, return_count=ended.count, evaluated=evaluated,
        test_return_sum=test.return_sum, test_discounted_return_sum=test.discounted_return_sum,
        test_return_count=test.count, probes=probes,
    )
    return ac.RunnerState(learner, actor, evaluator), metrics
