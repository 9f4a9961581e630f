"""Lyle et al. 2022 Fig. 4 experiment: a tiny run (CartPole, vmapped seeds), checked on what it writes."""

import json

import numpy as np
import pytest

from experiments import lyle22_fig4
from tests._shared import once_per_session


@pytest.fixture(scope="module")
def fig4_out(tmp_path_factory):
    def make(out):
        return out, lyle22_fig4.main(["--tiny", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig4", make)


def test_fig4_writes_figure_data_and_claims(fig4_out):
    out, claims = fig4_out
    for f in ("lyle22_fig4.png", "lyle22_fig4.npz", "lyle22_fig4.csv", "claims.json", "claims.md"):
        assert (out / f).stat().st_size > 0, f
    data = np.load(out / "lyle22_fig4.npz")
    rank = data["rank"]
    assert rank.shape[:3] == (1, 4, 2)  # games, curves (ppo/daac × actor/critic), seeds
    k = 8
    assert np.isfinite(rank).all() and rank.min() >= 1 and rank.max() <= k and np.all(rank == np.round(rank))
    saved = json.loads((out / "claims.json").read_text())
    assert len([c for c in saved["claims"] if c["held"] is not None]) == 2


# ~45 s of CPU (a second compilation of the whole DAAC run). The in-loop probes equal the library
# outside the loop in test_train_probes and test_train_actor_critic; run by `make test-paper`.
@pytest.mark.paper_scale
def test_fig4_probes_match_the_loop_run_outside_the_experiment(fig4_out):
    # the experiment's curves are the loop's own probe fields, in CURVES order (independent re-run)
    import jax

    from tdjax.train import make_train

    out, _ = fig4_out
    rank = np.load(out / "lyle22_fig4.npz")["rank"]
    cfg = lyle22_fig4.tiny()
    keys = jax.random.split(jax.random.key(cfg.seed), cfg.seeds)
    _, m = jax.jit(jax.vmap(make_train(lyle22_fig4._agent_config(cfg, "CartPole-v1", "daac", cfg.seed))))(keys)
    probed = np.asarray(m.probes.probed[0])
    np.testing.assert_array_equal(rank[0, 3], np.asarray(m.probes.critic_update_rank)[:, probed])
    np.testing.assert_array_equal(rank[0, 2], np.asarray(m.probes.actor_update_rank)[:, probed])


def test_fig4_configs():
    smoke, cpu, paper = (lyle22_fig4.config(s) for s in ("smoke", "cpu", "paper"))
    assert all(g.endswith("MinAtar") for g in smoke.games)
    assert [lyle22_fig4.procgen_id(g) for g in cpu.games] == ["BigfishEasy-v0", "HeistEasy-v0", "MinerEasy-v0"]
    assert cpu.agent.num_levels == 10 and cpu.agent.loop == "host"
    a = lyle22_fig4._agent_config(paper, "bigfish", "daac", 0)
    assert (a.total_steps, a.num_envs, a.num_steps, a.gamma, a.num_levels) == (25_000_000, 64, 256, 0.999, 10)
    assert paper.seeds == 4 and {"bigfish", "heist", "miner"} <= set(paper.games)
    with pytest.raises(ValueError, match="scale"):
        lyle22_fig4.config("huge")


def test_fig4_bad_config_names_the_field():
    import dataclasses

    with pytest.raises(ValueError, match="Config.games"):
        lyle22_fig4.run(dataclasses.replace(lyle22_fig4.tiny(), games=()))
    with pytest.raises(ValueError, match="Config.seeds"):
        lyle22_fig4.run(dataclasses.replace(lyle22_fig4.tiny(), seeds=0))
