"""tdjax.train.sweep: a tiny 2×1×2×2 grid, vmapped == looped == single runs, cut and resumed, bad input."""

import jax
import numpy as np
import pandas as pd
import pytest

from experiments import _bengio20_grid
from tdjax.train import make_agent, sweep
from tdjax.train import supervised as sup

# The tiny experiment grid's classification task: its programs are compiled once per test session.
BASE, GRID = _bengio20_grid.task_base(_bengio20_grid.tiny(), "classification")
KEY = jax.random.key(0)


def _frame(rows):
    cols = ["n_hidden", "n_layers", "n_train", "lr", "seed", "train_perf", "test_perf", "gap", "rho_bar"]
    return pd.DataFrame(rows)[cols].sort_values(cols[:5]).reset_index(drop=True)


def test_grid_resume_and_vmapped_equals_looped(tmp_path):
    path = tmp_path / "grid.csv"
    calls = []
    # cut after the first capacity (program): part 0 of 2 runs capacity n_h=4 only
    first = sweep.run_grid(BASE, GRID, KEY, str(path), part=(0, 2))
    assert GRID.n_hidden == (4, 8) and GRID.n_train == (8, 32) and GRID.seeds == 2
    assert {r["n_hidden"] for r in first} == {4} and len(first) == 4
    rows = sweep.run_grid(BASE, GRID, KEY, str(path), progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 2), (2, 2)] and len(rows) == 8
    table = pd.read_csv(path)
    assert list(table.columns) == list(sweep.COLUMNS) and len(table) == 8
    assert table.label.str.contains("synthetic").all()
    # resuming a finished grid trains nothing and returns the same rows
    again = sweep.run_grid(BASE, GRID, KEY, str(path))
    pd.testing.assert_frame_equal(_frame(again), _frame(rows))
    # one by one (the same code, batches of one) gives the same numbers
    looped = sweep.run_grid(BASE, GRID.replace(n_hidden=(4,)), KEY, None, vmapped=False)
    pd.testing.assert_frame_equal(_frame(looped), _frame(first), rtol=1e-4, atol=1e-5)
    # and a cell equals the single run of make_train with that cell's config and key
    cell = table[(table.n_hidden == 4) & (table.n_train == 8) & (table.seed == 1)].iloc[0]
    cfg = BASE.replace(n_hidden=4, n_train=8)
    _, m = jax.jit(lambda k: make_agent(cfg).run(make_agent(cfg).init(k), 0, cfg.num_updates))(
        jax.random.fold_in(KEY, 1))
    ev = sup.final_evaluation(m)
    np.testing.assert_allclose([cell.gap, cell.rho_bar], [ev.gap, ev.rho_bar], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cell.gap, cell.train_perf - cell.test_perf, atol=1e-6)


def test_bad_grids(tmp_path):
    with pytest.raises(ValueError, match=r"GridConfig.n_train is empty"):
        sweep.run_grid(BASE, GRID.replace(n_train=()), KEY)
    with pytest.raises(ValueError, match=r"GridConfig.seeds=0"):
        sweep.run_grid(BASE, GRID.replace(seeds=0), KEY)
    with pytest.raises(ValueError, match=r"\[999\] exceed the 256 training examples"):
        sweep.run_grid(BASE, GRID.replace(n_train=(4, 999)), KEY)
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        sweep.paper_grid("mnist")
    with pytest.raises(ValueError, match="part must be"):
        sweep.run_grid(BASE, GRID, KEY, part=(2, 2))
    path = tmp_path / "g.csv"
    pd.DataFrame([dict.fromkeys(sweep.COLUMNS, 0) | {"config_id": "other"}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="rows of another config"):
        sweep.run_grid(BASE, GRID, KEY, str(path))
    assert sweep.paper_grid("svhn").n_train[-1] == 50_000 and sweep.paper_grid("sarcos").n_hidden[-1] == 256
