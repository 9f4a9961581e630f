"""Along-trajectory probes (loss change and stiffness by offset, ρ′ terms, singular values) taken inside the
value and offline loops equal the library functions called outside on the same parameters, optimizer state
and samples (re-drawn with the documented keys, neighbours and masks from explicit loops over the buffer)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tdjax
from tdjax._src.losses import q_learning_loss
from tdjax.networks.heads import ValueNetwork
from tdjax.train import (
    OfflineConfig,
    ValueConfig,
    collect_dataset,
    core,
    make_agent,
    save_dataset,
    save_teacher,
    value_based,
)
from tdjax.train import probes as probes_lib
from tdjax.train import replay as replay_lib
from tdjax.train import teacher as teacher_lib

X, N, K = 2, 3, 4
TRAJ = dict(probe_interval=1, probe_k=K, probe_max_offset=X, probe_offset_samples=N, probe_rho_terms=True,
            probe_singular_values=True)
VCFG = ValueConfig(hidden=(8,), total_steps=200, num_envs=2, buffer_size=60, batch_size=4, learning_starts=60,
                   probe_sign_steps=6, probe_sign_window=3, **TRAJ)


# ----------------------------------------------------------------------------------------------------
# References written independently of the loops.


def _naive_mask(rep, t, e, x_max):
    """Explicit walk over the buffer in time order: [N, 2X+1] bool, neighbour in the same episode and valid."""
    cap = rep.data.action.shape[0]
    count, pos = int(rep.count), int(rep.pos)
    order = [(pos - count + j) % cap for j in range(count)]  # oldest first
    done, valid = np.asarray(rep.data.done), np.asarray(rep.data.valid)
    mask = np.zeros((len(t), 2 * x_max + 1), bool)
    for n, (tn, en) in enumerate(zip(t, e)):
        j = order.index(int(tn))
        for c, x in enumerate(range(-x_max, x_max + 1)):
            h = j + x
            if not 0 <= h < count:
                continue
            between = order[j:h] if x > 0 else order[h:j]
            mask[n, c] = not done[between, en].any() and valid[order[h], en]
    return mask


def _redraw(key, ok_flat, n):
    """The top-n of uniform scores among `ok_flat` (replay.sample_distinct_slots), with NumPy."""
    scores = np.where(ok_flat, np.asarray(jax.random.uniform(key, ok_flat.shape)), -1.0)
    return np.argsort(-scores, kind="stable")[:n]


def _summary(terms):
    out = []
    for r in terms:
        r = np.asarray(r, np.float64).ravel()
        out.append([r.mean(), r[r > 0].mean() if (r > 0).any() else np.nan,
                    r[r < 0].mean() if (r < 0).any() else np.nan])
    return np.array(out)


def _jit(f, *args):
    """`f(*args)` under jit (eager dispatch of the library's vmapped gradients is ~10× slower on CPU)."""
    return jax.jit(f)(*args)


def _close(got, want, rtol=2e-4, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=rtol, atol=atol)


def test_rho_term_summary_and_probe_means_against_numpy():
    rng = np.random.default_rng(0)
    terms = tdjax.InterferenceDerivativeTerms(*(rng.normal(size=(4, 4)).astype(np.float32) for _ in range(3)))
    terms = terms._replace(r1=np.abs(terms.r1))  # no negative samples: NaN
    _close(probes_lib.rho_term_summary(terms), _summary(terms), rtol=1e-5)
    assert np.isnan(probes_lib.rho_term_summary(terms)[0, 2])

    s = probes_lib.ProbeSettings(max_offset=1, rho_terms=True, num_singular_values=2)
    e = probes_lib.empty_probe_metrics(s)
    assert e.loss_change_by_offset.shape == (3,) and e.rho_terms.shape == (3, 3) and e.singular_values.shape == (2,)
    off = probes_lib.empty_probe_metrics()  # the default: the new probes are zero-size
    assert off.loss_change_by_offset.shape == (0,) and off.rho_terms.shape == (0, 3) and off.singular_values.size == 0
    stacked = jax.tree.map(lambda *xs: np.stack(xs), e, e._replace(probed=np.ones((), bool),
                                                                   loss_change_by_offset=np.array([1.0, 2.0, np.nan])))
    means = core.probe_means(stacked)
    assert means["probe_loss_change_by_offset[1]"] == 2.0 and np.isnan(means["probe_loss_change_by_offset[2]"])
    assert "probe_rho_terms[2,1]" in means and "probe_update_rank" in means
    assert not any(k.startswith("probe_loss_change") for k in core.probe_means(jax.tree.map(
        lambda *xs: np.stack(xs), off, off)))


def test_value_loop_probe_equals_library_outside():
    agent = make_agent(VCFG)
    run = jax.jit(agent.run, static_argnums=2)
    state = jax.jit(agent.init)(jax.random.key(1))
    w = agent.warmup_iterations
    for i in range(w + 1):  # iteration w makes the first update, and probes after it
        state, m = run(state, i, 1)
        if i == 0:  # not probed: NaN with the settings' shapes
            p0 = m.probes
            assert not bool(p0.probed[0])
            assert p0.loss_change_by_offset.shape == p0.stiffness_by_offset.shape == (1, 2 * X + 1)
            assert p0.rho_terms.shape == (1, 3, 3) and p0.singular_values.shape == (1, K)
            assert all(np.isnan(np.asarray(f)).all() for f in p0[8:])
    p = jax.tree.map(lambda x: x[0], m.probes)
    assert bool(p.probed)
    learner, actor = state
    rep, ne = actor.replay, VCFG.num_envs
    cap = rep.data.action.shape[0]
    written = np.arange(cap * ne) < int(rep.count) * ne

    # the documented keys: probe key = 4th of split(fold_in(actor key, i), 4); k transitions from its first
    # split; the update samples from fold_in(probe key, 1)
    k_probe = jax.random.split(jax.random.fold_in(actor.key, w), 4)[3]
    idx = _redraw(jax.random.fold_in(k_probe, 1), written & np.asarray(rep.data.valid).reshape(-1), N)
    t, e = idx // ne, idx % ne
    mask = _naive_mask(rep, t, e, X)
    slots = (t[:, None] + np.arange(-X, X + 1)) % cap

    def pick(tt, ee):
        tr = jax.tree.map(lambda buf: jnp.asarray(np.asarray(buf)[tt, ee]), rep.data)
        return replay_lib.Transition(obs=tr.obs, action=tr.action, reward=tr.reward, discount=tr.discount,
                                     next_obs=tr.next_obs, done=tr.done, valid=tr.valid)

    update, nb = pick(t, e), pick(slots, np.broadcast_to(e[:, None], slots.shape))
    apply = agent.network.apply

    def loss_fn(params, tr):
        return q_learning_loss(apply(params, tr.obs), tr.action, tr.reward, VCFG.gamma * tr.discount,
                               apply(learner.target_params, tr.next_obs))

    lc = _jit(lambda *a: tdjax.loss_change_by_offset(loss_fn, learner.params, agent.optimizer, learner.opt_state, *a),
              update, nb, mask)
    _close(p.loss_change_by_offset, lc.mean)
    st = _jit(lambda *a: tdjax.stiffness_by_offset(loss_fn, learner.params, *a), update, nb, mask)
    _close(p.stiffness_by_offset, st.mean)

    kidx = _redraw(jax.random.split(k_probe)[0], written, K)
    batch = pick(kidx // ne, kidx % ne)

    def value_fn(params, tr):
        return apply(params, tr.obs)[tr.action]

    def target_fn(params, tr):  # the frozen target network: no θ-dependence
        return tr.reward + VCFG.gamma * tr.discount * jnp.max(apply(learner.target_params, tr.next_obs))

    terms = _jit(lambda b: tdjax.interference_derivative_terms(value_fn, target_fn, learner.params, b, b), batch)
    _close(p.rho_terms, _summary(terms), rtol=1e-3, atol=1e-5)
    phi = np.asarray(apply(learner.params, batch.obs, method=ValueNetwork.features), np.float64)
    _close(p.singular_values, np.linalg.svd(phi, compute_uv=False) / np.sqrt(K), rtol=1e-4)

    # replay.neighbours, which the loop calls, against the explicit walk at EVERY stored position
    tt, ee = np.divmod(np.arange(int(rep.count) * ne), ne)
    _, loop_mask = jax.jit(replay_lib.neighbours, static_argnums=3)(rep, tt, ee, X)
    want = _naive_mask(rep, tt, ee, X)
    np.testing.assert_array_equal(loop_mask, want)
    reach = (tt - int(rep.pos) + int(rep.count)) % cap + np.arange(-X, X + 1)[:, None]  # place in time order
    inside = ((reach >= 0) & (reach < int(rep.count))).T
    assert (inside & ~want).any()  # some positions sit at an episode edge, masked without an error


def test_value_rho_targets_frozen_and_moving():
    spec = make_agent(VCFG).spec
    params = spec.network.init(jax.random.key(0), jnp.zeros(4))
    target = spec.network.init(jax.random.key(1), jnp.zeros(4))
    learner = value_based.LearnerState(params, target, spec.optimizer.init(params))
    tr = replay_lib.Transition(obs=jnp.ones(4), action=jnp.asarray(1), reward=jnp.asarray(0.5),
                               discount=jnp.asarray(1.0), next_obs=jnp.full(4, 0.3), done=jnp.asarray(False),
                               valid=jnp.asarray(True))
    _, frozen = value_based.rho_fns(spec, learner)
    moving_spec = dataclasses.replace(spec, config=VCFG.replace(probe_rho_moving_target=True))
    _, moving = value_based.rho_fns(moving_spec, learner)
    apply = spec.network.apply
    _close(frozen(params, tr), 0.5 + VCFG.gamma * np.max(apply(target, tr.next_obs)), rtol=1e-6)
    _close(moving(params, tr), 0.5 + VCFG.gamma * np.max(apply(params, tr.next_obs)), rtol=1e-6)
    zero = jax.tree.leaves(jax.grad(frozen)(params, tr))
    assert all(not np.any(g) for g in zero)  # the loop's frozen target ignores θ
    assert any(np.any(g) for g in jax.tree.leaves(jax.grad(moving)(params, tr)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectory_probes")
    cfg = ValueConfig(env="CartPole-v1", hidden=(8,), total_steps=400, learning_starts=64, batch_size=16,
                      buffer_size=200)
    save_teacher(root / "teacher", cfg, teacher_lib._params_init(make_agent(cfg), jax.random.key(3)))
    ds, info = collect_dataset(teacher_lib.load_teacher(root / "teacher"), 16, jax.random.key(0), epsilon=0.5)
    save_dataset(root / "dstar", ds, info)
    return root


def _offline_cfg(files, **kw):
    base = dict(teacher=str(files / "teacher"), dataset=str(files / "dstar"), objective="mc_regression",
                network="mlp", hidden=(8,), num_updates=2, batch_size=4, probe_sign_steps=6, probe_sign_window=3,
                **TRAJ)
    return OfflineConfig(**dict(base, **kw))


def test_offline_loop_probe_equals_library_outside(files):
    cfg = _offline_cfg(files)
    agent = make_agent(cfg)
    state = jax.jit(agent.init)(jax.random.key(2))
    state, m = jax.jit(agent.run, static_argnums=2)(state, 0, 1)
    p = jax.tree.map(lambda x: x[0], m.probes)
    assert bool(p.probed)
    learner, data = state
    ds = data.dataset
    rep = ds.replay
    cap, ne = rep.data.action.shape
    usable = np.asarray(rep.data.valid) & np.asarray(ds.mc_complete)  # mc_regression trains on complete returns

    k_probe = jax.random.split(jax.random.fold_in(data.key, 0), 3)[2]
    idx = _redraw(jax.random.fold_in(k_probe, 1), usable.reshape(-1), N)
    t, e = idx // ne, idx % ne
    slots = (t[:, None] + np.arange(-X, X + 1)) % cap
    ee = np.broadcast_to(e[:, None], slots.shape)
    mask = _naive_mask(rep, t, e, X) & usable[slots, ee]
    obs, act, ret = np.asarray(rep.data.obs, np.float32), np.asarray(rep.data.action), np.asarray(ds.mc_return)
    apply = agent.network.apply

    def loss_fn(params, ex):  # (q(x, a) − G)², written here from the dataset arrays
        o, a, g = ex
        return jnp.square(apply(params, o)[a] - g)

    update = (obs[t, e], act[t, e], ret[t, e])
    nb = (obs[slots, ee], act[slots, ee], ret[slots, ee])
    lc = _jit(lambda *a: tdjax.loss_change_by_offset(loss_fn, learner.params, agent.optimizer, learner.opt_state, *a),
              update, nb, mask)
    _close(p.loss_change_by_offset, lc.mean)
    st = _jit(lambda *a: tdjax.stiffness_by_offset(loss_fn, learner.params, *a), update, nb, mask)
    _close(p.stiffness_by_offset, st.mean)

    # the k transitions: top-k of uniform(first split of the probe key), valid ones first
    u = np.asarray(jax.random.uniform(jax.random.split(k_probe)[0], (cap * ne,)))
    kidx = np.argsort(-np.where(np.asarray(rep.data.valid).reshape(-1), u, u - 2.0), kind="stable")[:K]
    batch = (obs[kidx // ne, kidx % ne], act[kidx // ne, kidx % ne], ret[kidx // ne, kidx % ne])
    terms = _jit(lambda b: tdjax.interference_derivative_terms(lambda q, ex: apply(q, ex[0])[ex[1]],
                                                               lambda q, ex: ex[2], learner.params, b, b), batch)
    _close(p.rho_terms, _summary(terms), rtol=1e-3, atol=1e-5)
    phi = np.asarray(apply(learner.params, batch[0], method=ValueNetwork.features), np.float64)
    _close(p.singular_values, np.linalg.svd(phi, compute_uv=False) / np.sqrt(K), rtol=1e-4)


def _value_bad():
    base = VCFG.replace(probe_interval=10)
    return [
        (base.replace(probe_max_offset=-1), "probe_max_offset"),
        (base.replace(probe_max_offset=base.buffer_size // base.num_envs // 2), "probe_max_offset"),
        (base.replace(probe_offset_samples=0), "probe_offset_samples"),
        (base.replace(probe_offset_samples=61), "probe_offset_samples"),  # 30 slots × 2 envs at the first probe
        (base.replace(algo="c51"), "probe_rho_terms"),
        (base.replace(probe_rho_terms=False, probe_rho_moving_target=True), "probe_rho_moving_target"),
        (base.replace(probe_sign_window=0), "probe_sign_window"),
    ]


@pytest.mark.parametrize("cfg,field", _value_bad())
def test_value_bad_configs(cfg, field):
    with pytest.raises(ValueError, match=field):
        make_agent(cfg)


def test_offline_bad_configs(files):
    ok = _offline_cfg(files)
    for cfg, field in [
        (ok.replace(probe_max_offset=8), "probe_max_offset"),  # 17 steps > the dataset's 16 per environment
        (ok.replace(probe_offset_samples=10_000), "probe_offset_samples"),
        (ok.replace(objective="value_distillation"), "probe_rho_terms"),
        (ok.replace(probe_rho_moving_target=True), "probe_rho_moving_target"),
        (ok.replace(probe_sign_window=0), "probe_sign_window"),
        (ok.replace(probe_offset_samples=-1), "probe_offset_samples"),
    ]:
        with pytest.raises(ValueError, match=field):
            make_agent(cfg)
    make_agent(ok.replace(objective="q_learning", probe_rho_moving_target=True))  # a TD target may move


def test_interference_probe_set_still_takes_the_trajectory_probes():
    """probe_set="interference" (settings.full=False) skips the update matrices, not the along-trajectory
    probes that are switched on: they equal the library functions; the skipped fields are NaN."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=3), jnp.float32), "b": jnp.zeros((), jnp.float32)}

    def out(p, x):
        return jnp.tanh(x @ p["w"]) + p["b"]

    def loss(p, ex):
        return jnp.square(out(p, ex["x"]) - ex["y"])

    def ex(*shape):
        return {"x": jnp.asarray(rng.normal(size=shape + (3,)), jnp.float32),
                "y": jnp.asarray(rng.normal(size=shape), jnp.float32)}

    batch, offset_batch, neighbours = ex(4), ex(2), ex(2, 3)
    mask = jnp.asarray([[True, True, False], [False, True, True]])
    opt = optax.adam(0.1)
    opt_state = opt.init(params)
    settings = probes_lib.ProbeSettings(full=False, max_offset=1, offset_samples=2, rho_terms=True,
                                        num_singular_values=3)
    m = jax.jit(lambda p: probes_lib.value_probes(
        settings, loss_fn=loss, output_fn=out, features_fn=lambda p, xs: xs, optimizer=opt, params=p,
        opt_state=opt_state, batch=batch, probe_xs=batch["x"], fresh_loss_fn=loss, fresh_params=p,
        td_errors=jnp.zeros((6, 1)), done=jnp.zeros((6, 1), bool), offset_batch=offset_batch,
        offset_neighbours=neighbours, offset_mask=mask, value_fn=lambda p, e: out(p, e["x"]),
        target_fn=lambda p, e: e["y"]))(params)
    assert np.isnan(m.update_rank) and np.isnan(m.srank) and np.isfinite(m.interference)
    want = tdjax.loss_change_by_offset(loss, params, opt, opt_state, offset_batch, neighbours, mask)
    np.testing.assert_allclose(m.loss_change_by_offset, want.mean, rtol=1e-5, atol=1e-7)
    want = tdjax.stiffness_by_offset(loss, params, offset_batch, neighbours, mask)
    np.testing.assert_allclose(m.stiffness_by_offset, want.mean, rtol=1e-5, atol=1e-7)
    terms = tdjax.interference_derivative_terms(lambda p, e: out(p, e["x"]), lambda p, e: e["y"], params, batch, batch)
    np.testing.assert_allclose(m.rho_terms, probes_lib.rho_term_summary(terms), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.singular_values, np.linalg.svd(np.asarray(batch["x"]), compute_uv=False) / 2,
                               rtol=1e-5)


def test_fresh_network_update_matrix_takes_the_learners_learning_rate(monkeypatch):
    """The fresh network's update matrix is taken at the learner's learning rate when the optimizer state
    holds it as data (`optax.inject_hyperparams`, `set_hyperparams`), not at the one the optimizer was
    built with. (Its rank hardly depends on the rate, so the optimizer states passed to `update_matrix`
    are recorded, and both matrices are checked against a naive loop of SGD steps at the learner's rate.)"""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "v": jnp.asarray(rng.normal(size=4), jnp.float32)}

    def out(p, x):
        return jnp.tanh(x @ p["w"]) @ p["v"]

    def loss(p, ex):
        return jnp.square(out(p, ex["x"]) - ex["y"])

    batch = {"x": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "y": jnp.asarray(rng.normal(size=4), jnp.float32)}
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)  # built with 0.1; the learner's rate is 0.003
    state = opt.init(params)
    state = state._replace(hyperparams=dict(state.hyperparams, learning_rate=jnp.float32(0.003)))
    fresh = jax.tree.map(lambda l: 0.5 * l, params)
    calls = []

    def spy(loss_fn, output_fn, optimizer, p, s, *args, **kw):
        a = tdjax.update_matrix(loss_fn, output_fn, optimizer, p, s, *args, **kw)
        calls.append((p, s, a))
        return a

    monkeypatch.setattr(probes_lib, "update_matrix", spy)

    @jax.jit
    def probe():  # returns what update_matrix was called with (traced in this same program)
        probes_lib.value_probes(
            probes_lib.ProbeSettings(full=True), loss_fn=loss, output_fn=out,
            features_fn=lambda p, xs: jnp.tanh(xs @ p["w"]), optimizer=opt, params=params, opt_state=state,
            batch=batch, probe_xs=batch["x"], fresh_loss_fn=loss, fresh_params=fresh,
            td_errors=jnp.zeros((6, 1)), done=jnp.zeros((6, 1), bool))
        return [(c[1].hyperparams["learning_rate"], c[2]) for c in calls]

    got = probe()
    assert len(calls) == 2 and calls[0][0] is params and calls[1][0] is fresh
    assert [float(lr) for lr, _ in got] == [np.float32(0.003)] * 2
    # and the matrices are those of one SGD step at 0.003, by a naive loop
    for p, (_, a) in zip((params, fresh), got):
        for i in range(4):
            ex = jax.tree.map(lambda l: l[i], batch)
            stepped = jax.tree.map(lambda w, g: w - 0.003 * g, p, jax.grad(loss)(p, ex))
            np.testing.assert_allclose(a[i], jax.vmap(lambda x: out(stepped, x) - out(p, x))(batch["x"]),
                                       rtol=1e-4, atol=1e-7)
