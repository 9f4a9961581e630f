"""Probes taken inside the jitted loop equal the library functions called outside on the same data."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

import tdjax
from tdjax._src.losses import q_learning_loss
from tdjax.networks.heads import ValueNetwork
from tdjax.train import ValueConfig, make_agent, make_train
from tdjax.train.probes import masked_sign_variance

CFG = ValueConfig(hidden=(16,), total_steps=400, num_envs=2, buffer_size=200, batch_size=8, learning_starts=32,
                  probe_interval=1, probe_k=12, probe_sign_steps=12, probe_sign_window=3, probe_dormant_tau=0.1)


def _naive_sign_variance(td, done, w):
    vals = []
    for e in range(td.shape[1]):
        for t in range(td.shape[0] - w + 1):
            if not done[t : t + w - 1, e].any():
                vals.append(np.var(np.sign(td[t : t + w, e])))
    return np.mean(vals) if vals else np.nan


def test_masked_sign_variance_against_loop():
    rng = np.random.default_rng(0)
    td = rng.normal(size=(20, 3)).astype(np.float32)
    done = rng.random((20, 3)) < 0.2
    np.testing.assert_allclose(masked_sign_variance(td, done, 5), _naive_sign_variance(td, done, 5), rtol=1e-6)
    assert np.isnan(masked_sign_variance(td, np.ones_like(done), 5))


def test_probes_in_loop_equal_library_outside():
    agent = make_agent(CFG)
    run = jax.jit(agent.run, static_argnums=2)
    state = jax.jit(agent.init)(jax.random.key(5))
    w = agent.warmup_iterations
    for i in range(w + 1):  # the first update is iteration w; probe_interval=1 probes right after it
        state, m = run(state, i, 1)
    p = m.probes
    assert bool(p.probed[0]) and bool(m.learned[0])
    learner, actor = state

    # the probe's randomness, as documented: fold_in(actor key, i), 4th of 4 splits, then (batch, fresh)
    k_batch, k_fresh = jax.random.split(jax.random.split(jax.random.fold_in(actor.key, w), 4)[3])
    rep, e = actor.replay, CFG.num_envs
    cap = rep.data.action.shape[0]
    uniform = np.asarray(jax.random.uniform(k_batch, (cap * e,)))
    scores = np.where(np.arange(cap * e) < int(rep.count) * e, uniform, -1.0)
    idx = np.argsort(-scores, kind="stable")[: CFG.probe_k]
    batch = jax.tree.map(lambda buf: jnp.asarray(np.asarray(buf)[idx // e, idx % e]), rep.data)
    batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))
    assert len(set(idx.tolist())) == CFG.probe_k

    apply = agent.network.apply

    def loss_with_target(target):
        def loss_fn(params, tr):
            return q_learning_loss(apply(params, tr.obs), tr.action, tr.reward, CFG.gamma * tr.discount,
                                   apply(target, tr.next_obs))
        return loss_fn

    f = tdjax.scalar_output_fn(apply, "max")
    a = tdjax.update_matrix(loss_with_target(learner.target_params), f, agent.optimizer, learner.params,
                            learner.opt_state, batch, batch.obs)
    assert float(p.update_rank[0]) == int(tdjax.update_rank(a, 0.1))

    fresh = agent.network.init(k_fresh, jnp.zeros(agent.env.obs_shape))
    a0 = tdjax.update_matrix(loss_with_target(fresh), f, agent.optimizer, fresh, agent.optimizer.init(fresh),
                             batch, batch.obs)
    assert float(p.update_rank_fresh[0]) == int(tdjax.update_rank(a0, 0.1))

    phi = apply(learner.params, batch.obs, method=ValueNetwork.features)
    assert float(p.srank[0]) == int(tdjax.srank(phi, 0.01))
    np.testing.assert_allclose(p.dormant_fraction[0], tdjax.dormant_fraction(phi, 0.1), rtol=1e-6)

    g = np.asarray(tdjax.gram_matrix(f, learner.params, batch.obs), np.float64)
    off = ~np.eye(CFG.probe_k, dtype=bool)
    np.testing.assert_allclose(p.interference[0], g[off].mean(), rtol=1e-4)
    cos = g / np.sqrt(np.outer(np.diag(g), np.diag(g)))
    np.testing.assert_allclose(p.interference_cos[0], cos[off].mean(), rtol=1e-4)

    # TD errors of the last probe_sign_steps slots of each environment, oldest first
    t = (int(rep.pos) - CFG.probe_sign_steps + np.arange(CFG.probe_sign_steps)) % cap
    seg = jax.tree.map(lambda buf: np.asarray(buf)[t], rep.data)
    q = np.asarray(apply(learner.params, jnp.asarray(seg.obs, jnp.float32)))
    q_next = np.asarray(apply(learner.target_params, jnp.asarray(seg.next_obs, jnp.float32)))
    q_taken = np.take_along_axis(q, seg.action[..., None], -1)[..., 0]
    td = seg.reward + CFG.gamma * seg.discount * q_next.max(-1) - q_taken
    want = _naive_sign_variance(td, seg.done, CFG.probe_sign_window)
    np.testing.assert_allclose(p.td_sign_variance[0], want, rtol=1e-5)


def _count_conds(jaxpr):
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "cond"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += _count_conds(sub)
    return n


def test_probe_cond_stays_a_branch_under_vmap():
    """vmap over seeds must not turn the probe/learn/target conds into both-branch selects."""
    train = make_train(CFG)
    keys = jax.random.split(jax.random.key(0), 3)
    single = _count_conds(jax.make_jaxpr(train)(keys[0]).jaxpr)
    batched = _count_conds(jax.make_jaxpr(jax.vmap(train))(keys).jaxpr)
    assert single >= 3 and batched == single
