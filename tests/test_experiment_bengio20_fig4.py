"""Bengio et al. 2020 Figs 4, 10, 12, 14 experiment: a tiny run (CartPole, MLP control agents and
policy-evaluation students on a short teacher's D*), checked on what it writes; the control gain against
an Adam step written out by hand and the Q-learning loss written out from the buffer's arrays; its mask
against an explicit walk along the buffer; its singular values against NumPy; the claims' logic on
profiles built by hand."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import bengio20_fig4

GAME = "CartPole-v1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny run, with the inputs and outputs of the last control measurement recorded."""
    root = tmp_path_factory.mktemp("bengio_fig4")
    last = {}
    measurer = bengio20_fig4.control_measurer

    def recording(agent, cfg):
        fn = measurer(agent, cfg)

        def measure(learner, replay, keys, dstar_obs):
            out = fn(learner, replay, keys, dstar_obs)
            last.update(agent=agent, args=jax.tree.map(np.asarray, (learner, replay, dstar_obs)),
                        out=jax.tree.map(np.asarray, out))
            return out

        return measure

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bengio20_fig4, "control_measurer", recording)
        claims = bengio20_fig4.main(["--tiny", "--out", str(root / "out"), "--no-progress",
                                     "--teacher-dir", str(root / "teachers")])
    return root, claims, np.load(root / "out" / "bengio20_fig4.npz"), last


def test_outputs(run):
    root, _, res, _ = run
    out = root / "out"
    for name in ("bengio20_fig4.png", "bengio20_fig4.npz", "bengio20_fig4.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    cfg = bengio20_fig4.tiny()
    G, K, S, N = 1, len(cfg.optimizers), cfg.num_seeds, cfg.num_samples
    W, X = 2 * cfg.max_offset + 1, cfg.max_offset
    Mc = bengio20_fig4.control_updates(cfg) // cfg.measure_every
    Mp = cfg.evaluation.num_updates // cfg.measure_every
    assert list(res["offsets"]) == list(range(-X, X + 1))
    assert list(res["control_updates"]) == [cfg.measure_every * (m + 1) for m in range(Mc)]
    for mode, M in (("control", Mc), ("pe", Mp)):
        gain, count, per_sample, mask = (res[f"{mode}_{k}"] for k in ("gain", "count", "per_sample", "mask"))
        assert gain.shape == count.shape == (G, K, M, S, W)
        assert per_sample.shape == mask.shape == (G, K, M, S, N, W)
        # the mask is respected: nothing where masked, the count is the mask's, the mean the masked mean
        assert np.all(per_sample[~mask] == 0)
        np.testing.assert_array_equal(count, mask.sum(axis=4))
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(gain, per_sample.sum(axis=4) / count, rtol=1e-5, atol=1e-7)
        assert np.all(mask[..., X])  # every update sample is a stored, valid transition
        assert np.all(np.isnan(gain) == (count == 0))
        assert np.all(np.mean(per_sample[..., X], axis=-1) > 0)  # one step on s_t lowers its own loss on average
        assert np.all(np.isfinite(res[f"{mode}_loss"]))
    # the singular values: descending, non-negative, one per feature (R = min(sv_states, width))
    for name, M in (("control_sv", Mc), ("control_sv_dstar", Mc), ("pe_sv", Mp)):
        sv = res[name]
        assert sv.shape == (G, K, M, S, min(cfg.sv_states, cfg.control.hidden[-1])), name
        assert np.all(sv >= 0) and np.all(np.diff(sv, axis=-1) <= 1e-6), name
    assert res["reference_gain"].shape == (G, Mp, S, W)  # NaN: tiny() runs no reference
    # control update samples: distinct slots of each seed's buffer
    pos = res["control_positions"].reshape(-1, N, 2)
    assert all(len({tuple(p) for p in one}) == N for one in pos)
    record = json.loads((out / "claims.json").read_text())
    decided = [c for c in record["claims"] if c["held"] is not None]
    assert decided and all(c["evidence"] for c in decided)
    rows = (out / "bengio20_fig4.csv").read_text().splitlines()
    assert len(rows) == 1 + G * K * 2 * W


def _adam_by_hand(params, grads, opt_state, lr, b1=0.9, b2=0.999, eps=1e-8):
    """θ′ of one Adam step (Kingma & Ba, with bias correction) from the moments in optax's state."""
    adam = next(s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState))
    c = adam.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, adam.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, adam.nu, grads)
    return jax.tree.map(lambda p, m, v: p - lr * (m / (1 - b1**c)) / (jnp.sqrt(v / (1 - b2**c)) + eps), params, mu, nu)


def test_control_gain_equals_an_adam_step_by_hand(run):
    """gain(t, x) = J_θ(s_{t+x}) − J_θ′(s_{t+x}), θ′ one Adam step (written out) on s_t alone, J the
    Q-learning loss ½(r + γ d maxₐ′ Q_θ⁻(s′, a′) − Q_θ(s, a))² read from the buffer's arrays, for the
    update samples of the run's last control measurement and their neighbours; the mask against a walk
    along the buffer; the singular values against NumPy's SVD of the features of the same D* states."""
    _, _, res, last = run
    cfg = bengio20_fig4.tiny()
    agent = last["agent"]
    c_cfg = agent.config
    learners, replays, obs = last["args"]
    prof, mask, pos, _, s_obs = last["out"]
    np.testing.assert_array_equal(pos, res["control_positions"][0, 0, -1])
    np.testing.assert_array_equal(prof.per_sample, res["control_per_sample"][0, 0, -1])
    s = 1
    learner = jax.tree.map(lambda a: a[s], learners)
    d = jax.tree.map(lambda a: a[s], replays.data)
    capacity = d.action.shape[0]
    written = int(replays.count[s])
    X, gamma = cfg.max_offset, c_cfg.gamma

    arrays = jax.tree.map(jnp.asarray, (d.obs, d.action, d.reward, d.discount, d.next_obs))

    def loss(p, tt, ee):
        o, a, r, disc, o_next = (v[tt, ee] for v in arrays)
        target = r + gamma * disc * jnp.max(agent.q_values(learner.target_params, o_next))
        return 0.5 * (target - agent.q_values(p, o)[a]) ** 2

    @jax.jit
    def by_hand(t0, e0, tt):
        new = _adam_by_hand(learner.params, jax.grad(loss)(learner.params, t0, e0), learner.opt_state, c_cfg.lr)
        return loss(learner.params, tt, e0) - loss(new, tt, e0)

    for n in range(cfg.num_samples):
        t0, e0 = (int(v) for v in pos[s, n])
        assert t0 < written and d.valid[t0, e0]
        expected = np.zeros(2 * X + 1, bool)
        expected[X] = True
        for step in (1, -1):  # walk from t0 one slot at a time until the episode or the written slots end
            t = t0
            for k in range(1, X + 1):
                t_next = t + step
                if not 0 <= t_next < written or d.done[min(t, t_next), e0]:
                    break
                t = t_next
                expected[X + step * k] = d.valid[t, e0]
        np.testing.assert_array_equal(mask[s, n], expected, err_msg=f"slot {t0}, env {e0}")
        for x in [0] + [x for x in range(-X, X + 1) if x and expected[X + x]][:3]:
            want = by_hand(t0, e0, (t0 + x) % capacity)
            np.testing.assert_allclose(prof.per_sample[s, n, X + x], want, rtol=1e-3, atol=1e-7, err_msg=f"x={x}")
    # singular values of the features of the D* states, divided by √B
    phi = np.asarray(agent.features(learner.params, obs.astype(np.float32)), np.float64)
    np.testing.assert_allclose(s_obs[s], np.linalg.svd(phi, compute_uv=False) / np.sqrt(len(obs)), rtol=1e-3,
                               atol=1e-5)


def _synthetic(cfg, near, at0, ref_near, ref0, sv_control, sv_pe):
    """A result dict whose profiles are flat at `near` [mode][k] away from x = 0 and `at0` at x = 0."""
    K, X = len(cfg.optimizers), cfg.max_offset
    W = 2 * X + 1
    res = dict(offsets=np.arange(-X, X + 1), optimizers=np.array(cfg.optimizers), games=np.array(cfg.games),
               control_updates=np.array([100]), pe_updates=np.array([100]), seconds=np.zeros(1))
    for mode in bengio20_fig4.MODES:
        g = np.tile(np.asarray(near[mode], np.float32)[:, None], (1, W))
        g[:, X] = at0[mode]
        res[f"{mode}_gain"] = g[None, :, None, None, :]
        res[f"{mode}_count"] = np.ones((1, K, 1, 1, W), np.int32)
        res[f"{mode}_loss"] = np.ones((1, K, 1))
    res["control_return"] = np.ones((1, K, 1))
    ref = np.full(W, ref_near, np.float32)
    ref[X] = ref0
    res["reference_gain"], res["reference_count"] = ref[None, None, None], np.ones((1, 1, 1, W), np.int32)
    res["control_sv"] = res["control_sv_dstar"] = np.full((1, K, 1, 1, 3), sv_control)
    res["pe_sv"] = np.full((1, K, 1, 1, 3), sv_pe)
    return res


def test_claims_on_profiles_built_by_hand():
    """The paper's pattern held on every claim; its opposite on none."""
    cfg = dataclasses.replace(bengio20_fig4.tiny(), optimizers=bengio20_fig4.OPTIMIZERS, max_offset=12,
                              reference="td_star")
    paper = _synthetic(cfg, near={"control": [2e-3, -1e-3, -1e-3, 2e-3], "pe": [1e-3, -2e-3, -2e-3, 1e-3]},
                       at0={"control": [0.1, 0.5, 0.05, 0.1], "pe": [0.1, 0.5, 0.05, 0.1]},
                       ref_near=0.1, ref0=0.2, sv_control=1.0, sv_pe=2.0)
    held = [i["held"] for i in bengio20_fig4.check_claims(cfg, paper).items if i["held"] is not None]
    assert len(held) == 2 + 3 * 2 + 1 + 2 * 2 and all(held)
    opposite = _synthetic(cfg, near={"control": [-2e-3, 1e-3, 1e-3, -2e-3], "pe": [-1e-3, 2e-3, 2e-3, -1e-3]},
                          at0={"control": [0.5, 0.1, 0.5, 0.5], "pe": [0.5, 0.1, 0.5, 0.5]},
                          ref_near=1e-3, ref0=1.0, sv_control=2.0, sv_pe=1.0)
    held = [i["held"] for i in bengio20_fig4.check_claims(cfg, opposite).items if i["held"] is not None]
    assert not any(held)


@pytest.mark.parametrize("change, field", [
    (dict(optimizers=("adagrad",)), "optimizers"),
    (dict(measure_every=70), "control"),
    (dict(update="minibatch"), "update"),
    (dict(reference="q_learning"), "reference"),
    (dict(max_offset=600), "max_offset"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        bengio20_fig4.run(dataclasses.replace(bengio20_fig4.tiny(), **change), show_progress=False)
