"""The README's quick-start runs as written, and its numbers agree with the library's references."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python quick-start block"
    ns: dict = {}
    exec(compile(blocks[0], str(README), "exec"), ns)
    k = ns["obs"].shape[0]
    leaves = __import__("jax").tree_util.tree_leaves(ns["grads"])
    assert all(leaf.shape[0] == k for leaf in leaves)
    assert ns["ntk"].shape == (k, k) and ns["rho"].shape == (k, k) and ns["A"].shape == (k, k)
    # The update rank printed is that of the matrix, computed independently with NumPy.
    s = np.linalg.svd(np.asarray(ns["A"]), compute_uv=False)
    printed = int(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == int(np.sum(s > 0.1 * s.max()))
    # ρ is the Gram matrix of the per-example loss gradients.
    flat = np.concatenate([np.asarray(g).reshape(k, -1) for g in leaves], axis=1)
    np.testing.assert_allclose(np.asarray(ns["rho"]), flat @ flat.T, rtol=2e-4, atol=1e-5)
