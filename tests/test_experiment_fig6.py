"""Lyle et al. 2022 Fig. 6 experiment: a tiny run (CartPole, a short PPO teacher, two policy-distilled
students), checked on what it writes, and the PPO teacher cache (a second call reuses teacher and data)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import lyle22_fig6
from experiments._distill import policy_teacher_and_data
from tdjax.train import load_dataset, load_teacher
from tests._shared import once_per_session


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    def make(root):
        return root, lyle22_fig6.main(["--tiny", "--out", str(root / "out"), "--no-progress",
                                       "--teacher-dir", str(root / "teachers")])

    return once_per_session(tmp_path_factory, "lyle_fig6", make)


def test_outputs(run):
    root, _ = run
    out = root / "out"
    for name in ("lyle22_fig6.png", "lyle22_fig6.npz", "lyle22_fig6.csv", "claims.json", "claims.md"):
        assert (out / name).is_file(), name
    cfg = lyle22_fig6.tiny()
    res = np.load(out / "lyle22_fig6.npz")
    assert res["returns"].shape == (1, 4, cfg.student_seeds)
    # the teacher is one network: its bars fill seed 0 only; the students fill every seed
    assert np.isfinite(res["returns"][0, :2, 0]).all() and np.isnan(res["returns"][0, :2, 1:]).all()
    assert np.isfinite(res["returns"][0, 2:]).all()
    assert (res["returns"][0, :, 0] >= 8).all()  # CartPole episodes last at least 8 steps
    record = json.loads((out / "claims.json").read_text())
    held = [c for c in record["claims"] if c["held"] is not None]
    assert len(held) == 3 and all(c["evidence"] for c in held)
    rows = (out / "lyle22_fig6.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 + 2 * cfg.student_seeds  # header, teacher train/test, student train/test × seeds


def test_teacher_and_data_are_saved_and_reused(run):
    root, _ = run
    cfg = lyle22_fig6.tiny()
    t_cfg = cfg.teacher
    folder = root / "teachers" / t_cfg.env
    stamp = (folder / "teacher" / "params.npz").stat().st_mtime_ns
    t_path, d_path, metrics = policy_teacher_and_data(t_cfg, folder, jax.random.key(1), data_steps=cfg.data_steps,
                                                      data_epsilon=cfg.data_epsilon)
    assert (folder / "teacher" / "params.npz").stat().st_mtime_ns == stamp  # not retrained
    teacher = load_teacher(t_path)
    assert teacher.config == t_cfg and teacher.kind == "actor_critic"
    ds, info = load_dataset(d_path)
    assert info.source == "collected" and info.epsilon == cfg.data_epsilon
    assert ds.replay.data.action.shape[:2] == (cfg.data_steps, t_cfg.num_envs)
    assert np.isfinite(metrics["train_return"])


def test_bad_config_names_the_field():
    cfg = lyle22_fig6.tiny()
    with pytest.raises(ValueError, match="student.objective"):
        lyle22_fig6.run(dataclasses.replace(cfg, student=cfg.student.replace(objective="qa_regression")),
                        show_progress=False)
    with pytest.raises(ValueError, match="eval_epsilon"):
        lyle22_fig6.run(dataclasses.replace(cfg, eval_epsilon=1.5), show_progress=False)


def test_claims_are_not_decided_without_returns():
    """An evaluation in which no episode ended (NaN returns) leaves the claims undecided, with the fix."""
    cfg = lyle22_fig6.tiny()
    res = dict(returns=np.full((1, 4, cfg.student_seeds), np.nan), seconds=np.zeros(1), teacher_run=np.zeros((1, 2)))
    items = lyle22_fig6.check_claims(cfg, res).items
    assert all(i["held"] is None for i in items)
    assert any("--eval-steps" in i["claim"] for i in items)
    res["returns"][:] = 10.0
    res["returns"][0, 3] = 12.0  # student test above the teacher's test
    held = [i["held"] for i in lyle22_fig6.check_claims(cfg, res).items if i["held"] is not None]
    assert held == [True, True, True]
