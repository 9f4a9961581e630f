"""The experiments' shared harness and run_all: CLI flags reach the config, the output folder is checked
before any computation, files are atomic and 0644, stale temporaries are removed. Nothing here trains."""

import dataclasses
import importlib
import os
import stat

import numpy as np
import pytest

from experiments import _harness, lyle22_fig3, lyle22_fig9, run_all
from tdjax.report import Claims, OutputFolderError


class _Stop(Exception):
    """Raised by a stand-in `run` to end `main` once the config it received is recorded."""


def _config_reaching_run(experiment, argv):
    seen = []

    def run(cfg, show_progress):
        seen.append((cfg, show_progress))
        raise _Stop

    with pytest.raises(_Stop):
        dataclasses.replace(experiment, run=run).main(argv)
    return seen[0]


def _leaf_flags(config, prefix=""):
    """--flag for every field of a config dataclass, nested dataclasses flattened (`--agent.total-steps`)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            yield from _leaf_flags(value, name + ".")
        else:
            yield "--" + name


def test_training_figure_flags_reach_the_config(tmp_path):
    cfg, progress = _config_reaching_run(lyle22_fig3.EXPERIMENT, [
        "--tiny", "--out", str(tmp_path), "--no-progress", "--seeds", "3", "--agent.total-steps", "5000",
        "--agent.lr", "0.01", "--sparse-games", "Freeway-MinAtar", "Asterix-MinAtar"])
    base = lyle22_fig3.tiny()
    assert cfg.seeds == 3 and cfg.agent.total_steps == 5000 and cfg.agent.lr == 0.01
    assert cfg.sparse_games == ("Freeway-MinAtar", "Asterix-MinAtar") and progress is False
    assert cfg == dataclasses.replace(base, seeds=3, sparse_games=cfg.sparse_games,
                                      agent=base.agent.replace(total_steps=5000, lr=0.01))
    # --scale picks the base config; the overrides apply on top of it
    cfg, progress = _config_reaching_run(lyle22_fig3.EXPERIMENT, [
        "--out", str(tmp_path), "--scale", "cpu", "--agent.probe-k", "16"])
    cpu = lyle22_fig3.config("cpu")
    assert cfg == dataclasses.replace(cpu, agent=cpu.agent.replace(probe_k=16)) and progress is True
    # tuple-of-(name, value) fields take NAME=VALUE words (values as Python literals, else strings)
    cfg, _ = _config_reaching_run(lyle22_fig3.EXPERIMENT, [
        "--tiny", "--out", str(tmp_path), "--agent.env-options", "distribution_mode=hard",
        "repeat_action_probability=0.0"])
    assert cfg.agent.env_options == (("distribution_mode", "hard"), ("repeat_action_probability", 0.0))


def test_closed_form_figure_flags_reach_the_config(tmp_path):
    cfg, _ = _config_reaching_run(lyle22_fig9.EXPERIMENT, [
        "--out", str(tmp_path), "--embedding", "circle", "--lengthscales", "0.5", "2", "--td-steps", "7"])
    assert cfg == dataclasses.replace(lyle22_fig9.config(), embedding="circle", lengthscales=(0.5, 2.0),
                                      td_steps=(7,))
    cfg, _ = _config_reaching_run(lyle22_fig9.EXPERIMENT, ["--out", str(tmp_path), "--scale", "tiny"])
    assert cfg == lyle22_fig9.tiny()


@pytest.mark.parametrize("name", run_all.EXPERIMENTS)
def test_every_config_field_has_a_flag(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapped flag names
    experiment = importlib.import_module(f"experiments.{name}").EXPERIMENT
    with pytest.raises(SystemExit) as exit_:
        experiment.main(["--tiny", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in [*_leaf_flags(experiment.tiny()), "--scale", "--out", "--no-progress"]:
        assert flag in text, f"{name}: {flag} missing from --help"


def test_bad_flag_and_bad_scale_are_usage_errors(tmp_path, capsys):
    for argv in (["--no-such-field", "1"], ["--scale", "huge"], ["--seeds", "many"]):
        with pytest.raises(SystemExit) as exit_:
            lyle22_fig3.main(["--out", str(tmp_path), *argv])
        assert exit_.value.code == 2, argv


def test_unwritable_output_folder_fails_before_any_computation(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "results"

    def run(cfg, show_progress):
        raise AssertionError("computed before checking the output folder")

    for experiment in (lyle22_fig3.EXPERIMENT, lyle22_fig9.EXPERIMENT):
        with pytest.raises(OutputFolderError, match="cannot write") as err:
            dataclasses.replace(experiment, run=run).main(["--tiny", "--out", str(out)])
        assert str(out) in str(err.value) and "Fix" in str(err.value)


def _toy_experiment():
    def run(cfg, show_progress):
        with _harness.progress_bar(1, desc="toy", enabled=show_progress) as bar:
            bar.update()
        return dict(x=np.arange(cfg.n) * cfg.scale_of_x)

    def plot(cfg, res):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(res["x"])
        return fig

    def claims(cfg, res):
        c = Claims("toy")
        c.check("x is increasing", bool(np.all(np.diff(res["x"]) > 0)), f"x = {res['x']}")
        return c

    @dataclasses.dataclass(frozen=True)
    class Config:
        n: int = 3
        scale_of_x: float = 1.0

    return _harness.Experiment("toy", "A toy experiment.\n\nMore.", config=Config, tiny=lambda: Config(n=2),
                               run=run, plot=plot, claims=claims, rows=lambda cfg, res: [dict(x=v) for v in res["x"]])


def test_files_are_0644_atomic_and_stale_temporaries_removed(tmp_path):
    old_umask = os.umask(0o077)  # mkstemp's 0600 must not leak into the results, whatever the umask
    try:
        stale = [tmp_path / ".toy.npz.k2j4_x.tmp", tmp_path / ".claims.json.abc.tmp"]
        for p in stale:
            p.write_bytes(b"half a file")
        keep = tmp_path / "notes.tmp"  # not one of ours (no leading dot): kept
        keep.write_text("mine")
        claims = _toy_experiment().main(["--out", str(tmp_path), "--scale-of-x", "2.5", "--no-progress"])
    finally:
        os.umask(old_umask)
    assert claims.all_held
    assert not any(p.exists() for p in stale) and keep.exists()
    written = sorted(p.name for p in tmp_path.iterdir() if p != keep)
    assert written == ["claims.json", "claims.md", "toy.csv", "toy.npz", "toy.png"]  # no temporaries left
    for name in written:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    np.testing.assert_array_equal(np.load(tmp_path / "toy.npz")["x"], [0.0, 2.5, 5.0])
    assert '"scale": "full"' in (tmp_path / "claims.json").read_text()


def test_config_fields_may_not_shadow_the_harness_flags():
    @dataclasses.dataclass(frozen=True)
    class Config:
        out: str = "x"

    experiment = dataclasses.replace(_toy_experiment(), config=Config, tiny=Config)
    with pytest.raises(TypeError, match="out"):
        experiment.parse([])


def test_run_all_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_all.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in run_all.EXPERIMENTS:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name + " "))
        assert "Lyle et al. 2022" in line or "Bengio et al. 2020" in line, line


def test_run_all_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_all.main(["--only", "lyle22_fig99", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'lyle22_fig99'" in err and all(n in err for n in run_all.EXPERIMENTS)
    assert not any(tmp_path.iterdir())


def test_run_all_forwards_scale_to_training_figures_and_writes_summary(tmp_path, monkeypatch):
    calls = {}

    class Stub:
        def __init__(self, name, scale_names):
            self.name, self.scale_names = name, scale_names

        def main(self, argv):
            calls[self.name] = argv
            c = Claims(self.name)
            c.check("holds", True)
            c.check("fails", False)
            return c

    monkeypatch.setattr(lyle22_fig3, "EXPERIMENT", Stub("lyle22_fig3", lyle22_fig3.EXPERIMENT.scale_names))
    monkeypatch.setattr(lyle22_fig9, "EXPERIMENT", Stub("lyle22_fig9", lyle22_fig9.EXPERIMENT.scale_names))
    assert run_all.main(["--only", "lyle22_fig9", "lyle22_fig3", "--scale", "cpu", "--out", str(tmp_path),
                         "--no-progress"]) == 0
    assert calls["lyle22_fig3"] == ["--out", str(tmp_path / "lyle22_fig3"), "--no-progress", "--scale", "cpu"]
    assert calls["lyle22_fig9"] == ["--out", str(tmp_path / "lyle22_fig9"), "--no-progress"]  # one setting
    summary = tmp_path / "SUMMARY.md"
    assert "lyle22_fig9: 1/2 claims held" in summary.read_text() and "lyle22_fig3: 1/2" in summary.read_text()
    assert stat.S_IMODE(summary.stat().st_mode) == 0o644
