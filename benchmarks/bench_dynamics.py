"""Closed-form TD trajectories (eq. 10) against SciPy: expm at every time and expm_multiply over the grid.

Claim measured: `tdjax.td_value_trajectory` (Krylov, the default for n > 256) and the cached
eigendecomposition closed form `tdjax.td_dynamics`, decomposition time included, against
`scipy.linalg.expm` at every time point and `scipy.sparse.linalg.expm_multiply` over the same grid
(start=0, stop=horizon, num=T), for n = 100, 1000, 2500 and T = 100 time points, in float64, on
  * undirected random walks (reversible Pπ, real spectrum),
  * directed random walks (non-normal Pπ, complex eigenvalue pairs),
  * the circle MDP (all eigenvalues on the unit circle: the hardest case for polynomial methods).
Both SciPy baselines solve for Vπ (eq. 10 needs it) and that solve is in their times; tdjax's Krylov
form needs no solve. The expm loop at n ≥ 1000 is timed on a few evenly spaced time points and
extrapolated to all T (marked "~"). "cold" includes JAX compilation; "warm" is a second call.
Relative errors are ‖V − V_ref‖_F / ‖V_ref‖_F against expm_multiply.

Usage: python benchmarks/bench_dynamics.py [--quick] [--sizes 100 1000] [--horizon 100] [--gamma 0.99]
On a shared machine set OPENBLAS_NUM_THREADS=1 (printed below) so that SciPy and JAX's LAPACK calls do
not oversubscribe the cores.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np
import scipy.linalg as sl
import scipy.sparse.linalg as ssl

import tdjax


def _time(fn: Callable[[], np.ndarray], repeats: int = 1) -> tuple[float, np.ndarray]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = np.asarray(fn())
        best = min(best, time.perf_counter() - t0)
    return best, out


def _problem(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "circle":
        return tdjax.circle_mdp(n, n // 2)
    return tdjax.random_walk_mdp(n, directed=(kind == "directed"), seed=seed)


def _expm_loop(P, r, gamma, v0, ts) -> np.ndarray:
    A = np.eye(len(r)) - gamma * P
    v_pi = np.linalg.solve(A, r)
    return np.stack([sl.expm(-t * A) @ (v0 - v_pi) + v_pi for t in ts])


def _expm_multiply(P, r, gamma, v0, horizon, num) -> np.ndarray:
    A = np.eye(len(r)) - gamma * P
    v_pi = np.linalg.solve(A, r)
    return ssl.expm_multiply(-A, v0 - v_pi, start=0.0, stop=horizon, num=num, endpoint=True) + v_pi


def run(sizes: Sequence[int], kinds: Sequence[str], horizon: float, gamma: float, num: int,
        expm_points: int, seed: int = 0) -> list[dict]:
    rows = []
    ts = np.linspace(0.0, horizon, num)
    for n in sizes:
        for kind in kinds:
            P, r = _problem(kind, n, seed)
            v0 = np.random.default_rng(seed).standard_normal(n)
            t_mult, ref = _time(lambda: _expm_multiply(P, r, gamma, v0, horizon, num))
            if n <= 100:
                t_loop, loop = _time(lambda: _expm_loop(P, r, gamma, v0, ts))
                loop_err, loop_extrapolated = np.linalg.norm(loop - ref) / np.linalg.norm(ref), False
            else:
                sub = ts[np.linspace(0, num - 1, expm_points).round().astype(int)]
                t_sub, _ = _time(lambda: _expm_loop(P, r, gamma, v0, sub))
                t_loop, loop_err, loop_extrapolated = t_sub * num / expm_points, np.nan, True
            t_kry_cold, _ = _time(lambda: tdjax.td_value_trajectory(P, r, gamma, v0, ts, method="krylov"))
            t_kry, kry = _time(lambda: tdjax.td_value_trajectory(P, r, gamma, v0, ts, method="krylov"), repeats=3)
            t_eig_cold, _ = _time(lambda: tdjax.td_dynamics(P, r, gamma)(v0, ts))
            dyn = []
            t_eig, eig = _time(lambda: (dyn.append(tdjax.td_dynamics(P, r, gamma)) or dyn[-1])(v0, ts))
            n_complex = int(np.sum(np.abs(np.asarray(dyn[-1].decomposition.eigenvalues).imag) > 1e-9))
            rows.append(dict(
                n=n, kind=kind, n_complex=n_complex, expm_loop=t_loop, loop_extrapolated=loop_extrapolated,
                loop_err=loop_err, expm_multiply=t_mult, krylov_cold=t_kry_cold, krylov=t_kry,
                krylov_err=np.linalg.norm(kry - ref) / np.linalg.norm(ref), eig_cold=t_eig_cold, eig=t_eig,
                eig_err=np.linalg.norm(eig - ref) / np.linalg.norm(ref),
            ))
            _print_row(rows[-1])
    return rows


_HEADER = (f"{'n':>5} {'P':>10} {'#cplx λ':>8} | {'expm loop':>10} {'expm_mult':>9} | {'krylov':>7} "
           f"{'(cold)':>7} {'×mult':>6} {'×loop':>8} {'rel.err':>8} | {'eig':>7} {'(cold)':>7} {'×mult':>6} "
           f"{'rel.err':>8}")


def _print_row(row: dict) -> None:
    loop = ("~" if row["loop_extrapolated"] else "") + f"{row['expm_loop']:.3g}s"
    cplx = str(row["n_complex"])
    print(f"{row['n']:>5} {row['kind']:>10} {cplx:>8} | {loop:>10} {row['expm_multiply']:>8.3g}s | "
          f"{row['krylov']:>6.3g}s {row['krylov_cold']:>6.3g}s {row['expm_multiply'] / row['krylov']:>6.1f} "
          f"{row['expm_loop'] / row['krylov']:>8.0f} {row['krylov_err']:>8.1e} | {row['eig']:>6.3g}s "
          f"{row['eig_cold']:>6.3g}s {row['expm_multiply'] / row['eig']:>6.2f} {row['eig_err']:>8.1e}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 100 only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 2500])
    parser.add_argument("--kinds", nargs="+", default=["undirected", "directed", "circle"],
                        choices=["undirected", "directed", "circle"])
    parser.add_argument("--horizon", type=float, default=100.0, help="last time of the grid")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--num", type=int, default=100, help="number of time points T")
    parser.add_argument("--expm-points", type=int, default=5,
                        help="time points actually run for the expm loop at n > 100 (then extrapolated)")
    args = parser.parse_args(argv)
    sizes = [100] if args.quick else args.sizes
    print(f"td_value_trajectory vs SciPy: T = {args.num} times on [0, {args.horizon:g}], γ = {args.gamma}, "
          f"float64; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}")
    print("×mult / ×loop: speed-up over expm_multiply / over the expm loop (warm); '~': extrapolated")
    print(_HEADER)
    with jax.enable_x64(True):
        return run(sizes, args.kinds, args.horizon, args.gamma, args.num, args.expm_points)


if __name__ == "__main__":
    main()
