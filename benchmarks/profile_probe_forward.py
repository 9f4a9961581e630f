"""Where the update matrix's probe forwards spend their time on XLA:CPU, next to torch's layers.

The problem is bench_update_matrix.py's (Nature-DQN CNN `tdjax.networks.NatureCNN`, f = max Q, Adam after
three real steps), with k = M transitions whose states are the M probes. The forward measured is the one
`tdjax.update_matrix` runs for its k² probe evaluations (`probe_forward="matmul"`, the CPU default): its
first layer's patches prepared once, at S parameter sets vmapped (S = `chunk_size`, 4 by default).
It prints:
  1. tdjax's time per parameter set, split by XLA:CPU operation from a `jax.profiler` trace: the dot
     fusions (YNNPACK: the convolutions' matmuls, fc and head) and the loop fusions around them (bias,
     ReLU, layout changes, shifted sums and slices), each as ms per parameter set;
  2. torch's forward on M probes, whole and layer by layer (the benchmarks' twin `_torch_nets.TorchNatureCNN`, 2
     intra-op threads, in a subprocess so that OpenMP's spinning does not slow JAX's threads);
  3. the split of one update-matrix row: `update_matrix(..., chunk_size=S)` on the M probes against the
     same call on 2 probes (its per-example gradient, optimizer step and overhead).
Timings are medians of --reps calls after a warm-up; compare them only within one run.
Results: benchmarks/RESULTS.md (issue 14, "where the forward's time goes").

Usage: python benchmarks/profile_probe_forward.py [--probes 256] [--sets 4] [--reps 5] [--no-torch]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling benchmark modules


def _median_ms(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def _torch_layers(probes: int, reps: int) -> None:
    import torch
    from _torch_nets import TorchNatureCNN  # the benchmarks' twin of tdjax.networks.NatureCNN

    torch.set_num_threads(2)
    net = TorchNatureCNN(4, 6)
    (c1, c2, c3), fc, head = net.convs, net.fc, net.head
    x = torch.rand(probes, 84, 84, 4)
    a0, a1, a2 = x.permute(0, 3, 1, 2), torch.rand(probes, 32, 20, 20), torch.rand(probes, 64, 9, 9)
    a3 = torch.rand(probes, 3136)
    rows = [("whole forward", lambda: net(x).max(-1).values), ("conv1 (+ReLU)", lambda: torch.relu(c1(a0))),
            ("conv2 (+ReLU)", lambda: torch.relu(c2(a1))), ("conv3 (+ReLU)", lambda: torch.relu(c3(a2))),
            ("fc, head, max", lambda: head(torch.relu(fc(a3))).max(-1).values)]
    with torch.no_grad():
        for name, fn in rows:
            print(f"  torch {name:28s} {_median_ms(fn, reps):8.2f} ms", flush=True)


def _trace_fusions(call, n_calls: int) -> dict:
    """{fusion name without its numeric suffix: (total µs, count)} over n_calls calls, from a perfetto trace."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(n_calls):
                call()
        files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            return {}
        with gzip.open(files[0]) as f:
            events = json.load(f).get("traceEvents", [])
    agg: dict = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "fusion" in name and not name.startswith("end"):
            key = name.split(".")[0]
            agg[key][0] += float(e.get("dur", 0.0))
            agg[key][1] += 1
    return agg


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=256, help="M, probes per forward")
    parser.add_argument("--sets", type=int, default=4, help="S, parameter sets vmapped (update_matrix's chunk_size)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip torch's layers")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        _torch_layers(args.probes, args.reps)
        return

    import jax
    import jax.numpy as jnp
    from bench_update_matrix import _jax_problem  # the update-matrix benchmark's problem, built identically

    from tdjax import update_matrix
    from tdjax._src.update_matrix import _over_probes, _prepare_probes

    m, s = args.probes, args.sets
    print(f"# jax {jax.__version__}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX')!r}")
    _, loss_fn, out_fn, tx, params, opt_state, batch = _jax_problem("cnn", m)  # k = m transitions
    xs = batch["obs"]
    sets = jax.tree.map(lambda leaf: jnp.stack([leaf * (1 + 0.01 * i) for i in range(s)]), params)
    prepared = jax.jit(lambda p, x: _prepare_probes(out_fn, p, x, None, "matmul"))(params, xs)
    forward = jax.jit(lambda ps, x, prep: jax.vmap(lambda p: _over_probes(out_fn, p, x, None, "matmul", prep))(ps))

    def call():
        jax.block_until_ready(forward(sets, xs, prepared))

    wall = _median_ms(call, args.reps) / s
    print(f"\n1. tdjax probe forward, {m} probes, {s} parameter sets vmapped: {wall:.2f} ms per set (wall)")
    agg = _trace_fusions(call, args.reps)
    if not agg:
        print("  (no trace events: jax.profiler wrote no perfetto trace here)")
    per_set = {k: (v[0] / args.reps / 1e3 / s, v[1] // args.reps) for k, v in agg.items()}
    dots = sum(t for k, (t, _) in per_set.items() if k.startswith(("ynn", "xnn", "onednn", "dot")))
    others = sum(t for t, _ in per_set.values()) - dots
    for k, (t, n) in sorted(per_set.items(), key=lambda kv: -kv[1][0]):
        if t >= 0.05:
            print(f"  {k:32s} x{n:<3d} {t:8.2f} ms per set")
    print(f"  {'dot fusions':32s}      {dots:8.2f} ms per set")
    print(f"  {'other fusions':32s}      {others:8.2f} ms per set")

    if not args.no_torch:
        print(f"\n2. torch forward on {m} probes (2 threads, own process):", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--probes", str(m), "--reps",
               str(args.reps)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout.rstrip() or f"  (torch not available: {done.stderr.strip().splitlines()[-1:]})")

    # 3. One update-matrix row: all probes against 2 probes (the rest of the row's work).
    k = m
    um = jax.jit(lambda p, st, b, probe_xs: update_matrix(loss_fn, out_fn, tx, p, st, b, probe_xs, chunk_size=s))
    print(f"\n3. one update-matrix row (k = {k} examples, chunk_size = {s}):")
    for n_probes in (2, m):
        t = _median_ms(lambda n=n_probes: jax.block_until_ready(um(params, opt_state, batch, xs[:n])),
                       max(1, args.reps // 2))
        print(f"  {n_probes:4d} probes: {t / k:8.2f} ms per row")


if __name__ == "__main__":
    main()
