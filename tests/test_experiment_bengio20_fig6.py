"""Bengio et al. 2020 Fig. 6 experiment: a tiny run (CartPole, MLP DQNs, 2 widths × 3 α × 2 seeds),
checked on what it writes; the recorded sign variance and ρ̄ of the last probe against TD errors and
gradients recomputed by hand from the final state's buffer and parameters; the learning rates as data;
bad configs; the torso width."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bengio20_fig6
from tdjax.train import ValueConfig, make_agent
from tdjax.train import replay as replay_lib
from tests._shared import once_per_session


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    def make(out):
        claims = bengio20_fig6.main(["--tiny", "--out", str(out), "--no-progress"])
        return out, claims, dict(np.load(out / "bengio20_fig6.npz"))

    return once_per_session(tmp_path_factory, "bengio_fig6", make)


def test_outputs(run):
    out, _, res = run
    for name in ("bengio20_fig6.png", "bengio20_fig6.npz", "bengio20_fig6.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    cfg = bengio20_fig6.tiny()
    W, L, R = len(cfg.widths), len(cfg.lrs), cfg.seeds
    for k in ("final_return", "sign_variance", "interference", "interference_cos", "final_loss"):
        assert res[k].shape == (W, L, R), k
        assert np.all(np.isfinite(res[k])), k
    assert np.all((res["sign_variance"] >= 0) & (res["sign_variance"] <= 1))
    assert np.all(np.abs(res["interference_cos"]) <= 1 + 1e-5)
    P = len(res["probe_updates"])
    assert list(res["probe_updates"]) == [cfg.agent.probe_interval * (p + 1) for p in range(P)]
    assert res["probe_sign_variance"].shape == res["probe_interference"].shape == (W, L, R, P)
    # "after training": the mean of the probes in the last quarter of the updates
    final = res["probe_updates"] > (1 - cfg.final_fraction) * bengio20_fig6._num_updates(cfg.agent)
    np.testing.assert_allclose(res["sign_variance"], res["probe_sign_variance"][..., final].mean(-1), rtol=1e-6)
    np.testing.assert_allclose(res["interference"], res["probe_interference"][..., final].mean(-1), rtol=1e-6)
    rows = (out / "bengio20_fig6.csv").read_text().splitlines()
    assert len(rows) == 1 + W * L * R
    record = json.loads((out / "claims.json").read_text())
    held = [c for c in record["claims"] if c["held"] is not None]
    assert len(held) == 6 and all(c["evidence"] for c in held)
    # r(log ρ̄, sign variance) in the claims is NumPy's Pearson r over the runs
    r = np.corrcoef(np.log(res["interference"].ravel()), res["sign_variance"].ravel())[0, 1]
    assert f"r(log ρ̄, sign variance) = {r:.2f}" in held[0]["evidence"]


def test_last_probe_equals_a_recomputation_by_hand(run):
    """The last iteration probes; its sign variance is recomputed from the TD errors of the final buffer's
    most recent steps (a naive loop over windows that skips those crossing an episode end) and its ρ̄
    from per-state gradients of maxₐ Q on the probe's k states, for two runs of width 0."""
    _, _, res = run
    cfg = bengio20_fig6.tiny()
    runner, state, metrics = bengio20_fig6.train_width(cfg, 0)  # the run's cached program
    L, R = len(cfg.lrs), cfg.seeds
    np.testing.assert_allclose(state.learner.opt_state.hyperparams["learning_rate"], np.repeat(cfg.lrs, R))
    summary = bengio20_fig6.summarise_runs(cfg, metrics, runner.agent.warmup_iterations)
    np.testing.assert_allclose(summary["sign_variance"], res["sign_variance"][0].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(summary["final_return"], res["final_return"][0].reshape(-1), rtol=1e-6)
    assert np.all(np.asarray(metrics.probes.probed[:, -1]))
    agent, a = runner.agent, runner.agent.config
    T, w = runner.num_iterations, a.probe_sign_window
    q_values = jax.jit(agent.q_values)
    grad_max_q = jax.jit(jax.grad(lambda p, x: jnp.max(agent.q_values(p, x))))
    for s in (R, L * R - 1):  # α = lrs[1] seed 0, α = lrs[-1] seed 1
        learner, actor = jax.tree.map(lambda x, s=s: x[s], (state.learner, state.actor))
        seg = jax.tree.map(np.asarray, replay_lib.recent(actor.replay, a.probe_sign_steps))
        q = np.asarray(q_values(learner.params, seg.obs), np.float64)
        q_next = np.asarray(q_values(learner.target_params, seg.next_obs), np.float64)
        q_taken = np.take_along_axis(q, seg.action[..., None], -1)[..., 0]
        delta = seg.reward + a.gamma * seg.discount * q_next.max(-1) - q_taken
        ends = seg.done | ~seg.valid
        variances = [np.var(np.sign(delta[t:t + w, e])) for e in range(delta.shape[1])
                     for t in range(delta.shape[0] - w + 1) if not ends[t:t + w - 1, e].any()]
        np.testing.assert_allclose(metrics.probes.td_sign_variance[s, -1], np.mean(variances), rtol=1e-4, atol=1e-6)

        k_probe = jax.random.split(jax.random.fold_in(actor.key, T - 1), 4)[3]
        batch = replay_lib.sample_distinct(actor.replay, jax.random.split(k_probe)[0], a.probe_k)
        grads = np.stack([np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad_max_q(learner.params, x))])
                          for x in batch.obs])  # one state at a time
        gram = grads.astype(np.float64) @ grads.T.astype(np.float64)
        k = a.probe_k
        np.testing.assert_allclose(metrics.probes.interference[s, -1], (gram.sum() - np.trace(gram)) / (k * (k - 1)),
                                   rtol=1e-4)


@pytest.mark.parametrize("change, field", [
    (lambda c: dict(agent=c.agent.replace(probe_sign_window=0)), "probe_sign_window"),
    (lambda c: dict(agent=c.agent.replace(probe_interval=0)), "agent"),
    (lambda c: dict(normal_lr=3e-3), "normal_lr"),
    (lambda c: dict(lrs=(1e-3, -1e-3)), "lrs"),
    (lambda c: dict(widths=()), "widths"),
    (lambda c: dict(final_fraction=0.0), "final_fraction"),
    (lambda c: dict(final_fraction=0.05), "final_fraction"),  # no probe in the last 12 updates
])
def test_bad_config_names_the_field(change, field):
    cfg = bengio20_fig6.tiny()
    with pytest.raises(ValueError, match=field):
        bengio20_fig6.run(dataclasses.replace(cfg, **change(cfg)), show_progress=False)


def test_torso_width_scales_the_minatar_cnn():
    """n_h = 8: conv 3×3 of 8 channels, dense 8·8 = 64 units (the default 16 → 128 is MinAtar's net)."""
    cfg = ValueConfig(env="Breakout-MinAtar", network="minatar_cnn", torso_width=8)
    agent = make_agent(cfg)
    shapes = jax.eval_shape(lambda: agent.network.init(jax.random.key(0), jnp.zeros(agent.env.obs_shape)))
    torso = shapes["params"]["torso"]
    assert torso["Conv_0"]["kernel"].shape[-1] == 8 and torso["Dense_0"]["kernel"].shape == (8 * 8 * 8, 64)
    assert make_agent(cfg.replace(torso_width=None)).network.torso.dense == 128
    with pytest.raises(ValueError, match="torso_width"):
        make_agent(ValueConfig(env="CartPole-v1", network="mlp", torso_width=8))
    with pytest.raises(ValueError, match="torso_width"):
        make_agent(cfg.replace(torso_width=0))
