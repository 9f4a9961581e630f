"""Lyle et al. 2022 Fig. 3 experiment: a tiny run (one dense, one sparse MinAtar game), checked on what it writes."""

import json

import numpy as np
import pytest

from experiments import lyle22_fig3
from tests._shared import once_per_session


@pytest.fixture(scope="module")
def fig3_out(tmp_path_factory):
    def make(out):
        return out, lyle22_fig3.main(["--tiny", "--out", str(out), "--no-progress"])

    return once_per_session(tmp_path_factory, "fig3", make)


def test_fig3_files_and_claims(fig3_out):
    out, claims = fig3_out
    for name in ("lyle22_fig3.png", "lyle22_fig3.npz", "lyle22_fig3.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_mode & 0o777 == 0o644, name  # readable by everyone
    assert not list(out.glob(".*.tmp"))
    record = json.loads((out / "claims.json").read_text())
    assert record["experiment"] == "lyle22_fig3"
    checked = [c for c in record["claims"] if c["held"] is not None]
    assert len(checked) == 4  # dense rise, sparse near baseline, sparse below dense, dense learned
    assert all(c["evidence"] for c in checked)
    assert record["settings"]["scale"] == "tiny" and len(record["settings"]["seconds_per_game"]) == 2


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
