"""Lyle et al. 2022 Fig. 3 experiment: a tiny run (one dense, one sparse MinAtar game), checked on what it writes."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import lyle22_fig3


@pytest.fixture(scope="module")
def fig3_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig3")
    claims = lyle22_fig3.main(["--tiny", "--out", str(out), "--no-progress"])
    return out, claims


def test_fig3_files_and_claims(fig3_out):
    out, claims = fig3_out
    for name in ("lyle22_fig3.png", "lyle22_fig3.npz", "lyle22_fig3.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    record = json.loads((out / "claims.json").read_text())
    assert record["experiment"] == "lyle22_fig3"
    checked = [c for c in record["claims"] if c["held"] is not None]
    assert len(checked) == 4  # dense rise, sparse near baseline, sparse below dense, dense learned
    assert all(c["evidence"] for c in checked)


def test_fig3_arrays(fig3_out):
    out, _ = fig3_out
    cfg = lyle22_fig3.tiny()
    a = cfg.agent
    res = np.load(out / "lyle22_fig3.npz")
    G, S = len(cfg.games), cfg.seeds
    updates = a.total_steps // a.num_envs - -(-a.learning_starts // a.num_envs)
    P = updates // a.probe_interval
    assert res["update_rank"].shape == res["update_rank_fresh"].shape == (G, S, P)
    assert res["probe_env_steps"].shape == (P,)
    assert np.all(np.diff(res["probe_env_steps"]) == a.probe_interval * a.num_envs)
    assert res["returns"].shape == (G, S, cfg.return_bins)
    assert list(res["games"]) == list(cfg.games)
    for key in ("update_rank", "update_rank_fresh", "srank", "dormant_fraction", "interference_cos"):
        assert np.all(np.isfinite(res[key])), key


def test_fig3_ranks_are_ranks_and_baseline_is_fresh_per_probe(fig3_out):
    out, _ = fig3_out
    k = lyle22_fig3.tiny().agent.probe_k
    res = np.load(out / "lyle22_fig3.npz")
    for key in ("update_rank", "update_rank_fresh"):
        r = res[key]
        assert np.all(r == np.round(r)) and r.min() >= 1 and r.max() <= k, key
    # A new random network (new key) per probe and per seed: the baseline is not one constant.
    assert np.unique(res["update_rank_fresh"]).size > 1


def test_fig3_paper_scale_is_a_valid_atari_config():
    from tdjax.train import make_agent

    cfg = lyle22_fig3.config("paper")
    assert set(cfg.games) == {"Pong-v5", "Boxing-v5", "Seaquest-v5", "MontezumaRevenge-v5"}
    assert cfg.sparse_games == ("MontezumaRevenge-v5",)
    assert cfg.agent.total_steps * 4 == 7_000_000  # 7M frames at frame skip 4
    for game in cfg.games:  # validates and builds envpool environments; compiles nothing
        agent = make_agent(cfg.agent.replace(env=game))
        assert agent.env.obs_shape == (84, 84, 4) and type(agent.network.torso).__name__ == "NatureTorso"


def test_fig3_envpool_seeds_run_one_after_another(monkeypatch):
    # The seeds of an envpool game cannot be vmapped: run() trains them one after another, each with its
    # own env_seed. Checked on MinAtar posing as a non-jittable game (cheap), against the vmapped run.
    from tdjax.envs import vec_spec

    cfg = dataclasses.replace(lyle22_fig3.tiny(), dense_games=("Breakout-MinAtar",),
                              sparse_games=("Freeway-MinAtar",))
    cfg = dataclasses.replace(cfg, agent=cfg.agent.replace(total_steps=1_600))
    vmapped = lyle22_fig3.run(cfg, show_progress=False)
    seen = []
    real_make_train = lyle22_fig3.make_train

    def spy(agent_cfg):
        seen.append((agent_cfg.env, agent_cfg.env_seed))
        return real_make_train(agent_cfg)

    monkeypatch.setattr(lyle22_fig3, "vec_spec", lambda g: vec_spec(g)._replace(jittable=False))
    monkeypatch.setattr(lyle22_fig3, "make_train", spy)
    looped = lyle22_fig3.run(cfg, show_progress=False)
    assert seen == [(g, cfg.seed + s) for g in cfg.games for s in range(cfg.seeds)]
    # gymnax ignores env_seed, so the per-seed runs reproduce the vmapped ones
    np.testing.assert_allclose(looped["update_rank"], vmapped["update_rank"], atol=1.0)
    assert np.mean(looped["update_rank"] == vmapped["update_rank"]) > 0.8
