"""Bengio et al. 2020 Figs 1, 2, 8, 9: one tiny grid, trained once and read back by all four figures."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from experiments import bengio20_fig1, bengio20_fig2, bengio20_fig8, bengio20_fig9
from tests._shared import once_per_session

MODULES = (bengio20_fig1, bengio20_fig2, bengio20_fig8, bengio20_fig9)


@pytest.fixture(scope="module")
def outs(tmp_path_factory):
    def make(root):
        grid_dir = root / "grid"
        # classification only: the regression loop is tested in test_train_supervised (suite time); these
        # programs are the ones test_train_sweep runs too, compiled once per session
        claims = {m.NAME: m.main(["--tiny", "--tasks", "classification", "--out", str(root / m.NAME),
                                  "--no-progress", "--grid-dir", str(grid_dir)]) for m in MODULES}
        return root, grid_dir, claims

    return once_per_session(tmp_path_factory, "bengio20_grid", make)


def test_files_and_claims(outs):
    root, grid_dir, claims = outs
    for m in MODULES:
        out = root / m.NAME
        for name in (f"{m.NAME}.png", f"{m.NAME}.npz", f"{m.NAME}.csv", "claims.json", "claims.md"):
            assert (out / name).is_file(), (m.NAME, name)
        record = json.loads((out / "claims.json").read_text())
        assert record["settings"]["scale"] == "tiny"
        assert all("not a paper data set" in d for d in record["settings"]["data"])  # labelled data
        assert any(c["held"] is not None for c in record["claims"]), m.NAME
    # the grid was trained once, by the first figure; the others only read it
    for task in ("classification",):
        table = pd.read_csv(grid_dir / f"{task}.csv")
        assert len(table) == 2 * 1 * 2 * 2 and table.config_id.nunique() == 1
    assert claims["bengio20_fig2"].settings["runtime_s"] < claims["bengio20_fig1"].settings["runtime_s"]


def test_figures_recomputed_from_the_grid_table(outs):
    root, grid_dir, _ = outs
    table = pd.read_csv(grid_dir / "classification.csv")
    fig1 = np.load(root / "bengio20_fig1" / "bengio20_fig1.npz")
    for j, n in enumerate(fig1["classification_n_train"]):
        sel = table[table.n_train == n]
        r = scipy.stats.pearsonr(np.log(sel.rho_bar), sel.gap).statistic
        np.testing.assert_allclose(fig1["classification_r"][j], r, atol=1e-4)
        assert fig1["classification_low"][j] <= fig1["classification_r"][j] + 1e-6
    fig8 = np.load(root / "bengio20_fig8" / "bengio20_fig8.npz")
    np.testing.assert_allclose(fig8["classification_mean"], table.groupby("n_train").gap.mean().to_numpy(), atol=1e-6)
    fig2 = np.load(root / "bengio20_fig2" / "bengio20_fig2.npz")
    np.testing.assert_allclose(fig2["classification_r"][0],
                               scipy.stats.pearsonr(table.rho_bar, table.gap).statistic, atol=1e-4)
    fig9 = np.load(root / "bengio20_fig9" / "bengio20_fig9.npz")
    means = table.groupby(["n_hidden", "n_layers"]).rho_bar_during.mean().to_numpy()
    np.testing.assert_allclose(fig9["classification_mean"], means, rtol=1e-5)


def test_bad_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tasks=.*one of"):
        bengio20_fig1.main(["--tiny", "--tasks", "clustering", "--out", str(tmp_path), "--grid-dir", str(tmp_path)])
