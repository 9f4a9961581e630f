"""Claim: tdjax.update_matrix (Lyle et al. 2022, eq. 21) is never slower than a Python loop of jitted
one-step updates, ≥ 2× faster for the 2→256→256→3 MLP at k = 128, at least as fast as a PyTorch loop of
the same construction on the Nature-DQN CNN under XLA's default CPU flags (issue 14; since the probe
forwards run their convolutions as matmuls, `probe_forward="auto"`), and bounded in memory (CNN
at k = 256 within 8 GiB). Measured results: benchmarks/RESULTS.md (issue 14), docs/update_matrix.md.

Construction measured (the same in every variant): k transitions, f = max_a Q(θ, x), the loss of one
transition is ½(Q(s)[a] − r − 0.99·max Q(s'))² with a stop-gradient target, Adam from a non-trivial state
(three real Adam steps first), probes = the k states, so A is [k, k] and needs k² forward evaluations.

Variants (each in its own live subprocess, so that peak memory — VmHWM, the peak resident set — is its
own; timed calls are interleaved round-robin across the subprocesses):
  loop        JAX: Python loop over i of one jitted call (grad, Adam update, forward on all probes)
  map:C[/P]   tdjax.update_matrix(strategy="map", chunk_size=C, probe_chunk_size=P), jitted; a suffix
              @as_is or @matmul sets probe_forward (default "auto": convolutions as matmuls on CPU)
  hloop:C[/P] tdjax.update_matrix(strategy="loop", chunk_size=C, probe_chunk_size=P) (host loop of
              jitted chunk calls)
  torch[:T]   PyTorch loop: autograd + torch.optim.Adam with the JAX Adam state copied in, per example,
              on T intra-op threads (default: all cores; on a loaded machine OpenMP's spinning makes
              torch:1 the faster for small nets)
  …+ynn       the same under XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot (XLA:CPU's YNNPACK
              path for dots and convolutions; an experimental flag of jaxlib 0.10)
Columns: wall = median wall-clock seconds of --reps calls after one warm-up call (which compiles);
"vs loop" = the JAX loop's wall time (under the same XLA flags) over this one; cpu = median CPU seconds
of the process (all threads; less sensitive to other processes on a shared machine); err =
max|A − A_loop| / max|A_loop|, checking that every variant computes the same matrix.

FLOP floor: k² forwards at the matmul rate measured at the start of the run (jitted 2048² float32
matmul), i.e. the time that the unavoidable forward evaluations would take at peak matmul speed.

Usage: python benchmarks/bench_update_matrix.py [--quick] [--nets mlp,cnn] [--ks 32,128,256]
          [--variants loop,map:4,hloop:1,torch:1,loop+ynn] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

YNN_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot"

# Best configurations found on a 2-core CPU (see docs/update_matrix.md); the table's "tdjax" rows.
DEFAULT_VARIANTS = {
    "mlp": ["loop", "map:4", "torch", "torch:1"],
    "cnn": ["loop", "map:4", "hloop:1", "hloop:4@as_is", "torch", "torch:1"],  # map:4 = the default call
}


def _flops_per_forward(net: str) -> float:
    if net == "mlp":
        return 2.0 * (2 * 256 + 256 * 256 + 256 * 3)
    conv = 20 * 20 * 32 * 8 * 8 * 4 + 9 * 9 * 64 * 4 * 4 * 32 + 7 * 7 * 64 * 3 * 3 * 64
    return 2.0 * (conv + 3136 * 512 + 512 * 6)


def _vmhwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


# ----------------------------------------------------------------------------------------------------
# The problem, built identically in every worker (seeded).


def _jax_problem(net: str, k: int, seed: int = 0):
    import jax
    import jax.numpy as jnp
    import optax

    from tdjax import scalar_output_fn
    from tdjax.networks import MLP, NatureCNN

    rng = np.random.default_rng(seed)
    if net == "mlp":
        model, shape, n_actions = MLP((256, 256), 3), (2,), 3
        obs, next_obs = rng.normal(size=(k, 2)), rng.normal(size=(k, 2))
    else:
        model, shape, n_actions = NatureCNN(6), (84, 84, 4), 6
        obs, next_obs = rng.uniform(size=(k, *shape)), rng.uniform(size=(k, *shape))
    batch = {
        "obs": jnp.asarray(obs, jnp.float32),
        "a": jnp.asarray(rng.integers(0, n_actions, size=k), jnp.int32),
        "r": jnp.asarray(rng.normal(size=k), jnp.float32),
        "next_obs": jnp.asarray(next_obs, jnp.float32),
    }
    params = model.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))

    def loss_fn(p, ex):
        q = model.apply(p, ex["obs"])
        target = ex["r"] + 0.99 * jnp.max(jax.lax.stop_gradient(model.apply(p, ex["next_obs"])))
        return 0.5 * (q[ex["a"]] - target) ** 2

    output_fn = scalar_output_fn(model.apply, "max")
    tx = optax.adam(1e-4)
    opt_state = tx.init(params)
    mean_loss = lambda p: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, batch))
    for _ in range(3):  # a non-trivial Adam state: mu, nu and count all non-zero
        updates, opt_state = tx.update(jax.grad(mean_loss)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    return model, loss_fn, output_fn, tx, params, opt_state, batch


def _jax_runner(variant: str, net: str, k: int):
    import jax
    import optax

    from tdjax import update_matrix

    _, loss_fn, output_fn, tx, params, opt_state, batch = _jax_problem(net, k)
    probes = batch["obs"]
    if variant == "loop":
        forward = jax.jit(jax.vmap(output_fn, in_axes=(None, 0)))

        @jax.jit
        def row(p, s, example, xs, f0):
            updates, _ = tx.update(jax.grad(loss_fn)(p, example), s, p)
            return forward(optax.apply_updates(p, updates), xs) - f0

        def run():
            f0 = forward(params, probes)
            rows = [row(params, opt_state, jax.tree.map(lambda l: l[i], batch), probes, f0) for i in range(k)]
            return jax.numpy.stack(rows)

        return run
    variant, _, forward = variant.partition("@")
    strategy, chunks = variant.split(":")
    c, pc = (int(x) for x in chunks.split("/")) if "/" in chunks else (int(chunks), None)
    kw = dict(chunk_size=c, probe_chunk_size=pc, probe_forward=forward or "auto")
    if strategy == "map":
        fn = jax.jit(lambda p, s, b: update_matrix(loss_fn, output_fn, tx, p, s, b, b["obs"], **kw))
        return lambda: fn(params, opt_state, batch)
    if strategy == "hloop":
        return lambda: update_matrix(loss_fn, output_fn, tx, params, opt_state, batch, probes, strategy="loop", **kw)
    raise ValueError(f"unknown variant {variant!r}")


def _torch_runner(net: str, k: int, threads: int):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _torch_nets import TorchMLP, TorchNatureCNN, from_flax

    torch.set_num_threads(threads)
    _, _, _, _, params, opt_state, batch = _jax_problem(net, k)
    model = TorchMLP(2, (256, 256), 3) if net == "mlp" else TorchNatureCNN(4, 6)
    from_flax(model, params)
    adam_state = opt_state[0]  # optax.adam = chain(scale_by_adam, scale_by_learning_rate)
    as_model = lambda tree: [torch.tensor(np.asarray(t)) for t in _torch_order(net, tree)]
    mu, nu, count = as_model(adam_state.mu), as_model(adam_state.nu), int(adam_state.count)
    tensors = list(model.parameters())
    base = [t.detach().clone() for t in tensors]
    opt = torch.optim.Adam(tensors, lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    b = {name: torch.tensor(np.asarray(v)) for name, v in batch.items()}
    probes = b["obs"]

    def run():
        with torch.no_grad():
            f0 = model(probes).max(dim=-1).values
        rows = []
        for i in range(k):
            with torch.no_grad():
                for t, t0 in zip(tensors, base):
                    t.copy_(t0)
            for t, m, v in zip(tensors, mu, nu):
                opt.state[t] = {"step": torch.tensor(float(count)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
            opt.zero_grad(set_to_none=True)
            q = model(b["obs"][i])
            with torch.no_grad():
                target = b["r"][i] + 0.99 * model(b["next_obs"][i]).max()
            (0.5 * (q[b["a"][i]] - target) ** 2).backward()
            opt.step()
            with torch.no_grad():
                rows.append(model(probes).max(dim=-1).values - f0)
        with torch.no_grad():
            for t, t0 in zip(tensors, base):
                t.copy_(t0)
        return torch.stack(rows)

    return run


def _torch_order(net: str, tree):
    """Flax params-shaped leaves in the twin's `parameters()` order and layout."""
    p = tree["params"]
    out = []
    if net == "mlp":
        for i in range(3):
            out += [np.asarray(p[f"Dense_{i}"]["kernel"]).T, np.asarray(p[f"Dense_{i}"]["bias"])]
    else:
        for i in range(3):
            out += [np.asarray(p[f"Conv_{i}"]["kernel"]).transpose(3, 2, 0, 1), np.asarray(p[f"Conv_{i}"]["bias"])]
        for name in ("Dense_0", "Dense_1"):
            out += [np.asarray(p[name]["kernel"]).T, np.asarray(p[name]["bias"])]
    return [np.ascontiguousarray(a, dtype=np.float32) for a in out]


def _worker(variant: str, net: str, k: int, out_npy: str) -> None:
    """Builds one variant, warms it up (compiles), then times one call per "run" line read from stdin."""
    base = variant.split("+")[0]
    if base.startswith("torch"):
        threads = int(base.split(":")[1]) if ":" in base else (os.cpu_count() or 1)
        run = _torch_runner(net, k, threads)
        block, to_np = (lambda x: x), (lambda x: x.numpy())
    else:
        import jax

        run = _jax_runner(base, net, k)
        block, to_np = jax.block_until_ready, np.asarray
    A = block(run())
    np.save(out_npy, to_np(A))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        block(run())
        print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}), flush=True)
    print(json.dumps({"vmhwm_kib": _vmhwm_kib()}), flush=True)


# ----------------------------------------------------------------------------------------------------
# Parent: one live worker per variant, timed calls interleaved round-robin, then the table.


def _matmul_gflops() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a))
        ts.append(time.perf_counter() - t0)
    return 2 * 2048**3 / np.median(ts) / 1e9


class _Worker:
    def __init__(self, variant: str, net: str, k: int, tmp: str):
        self.variant, self.error = variant, None
        safe = "".join(ch if ch.isalnum() else "_" for ch in variant)
        self.out_npy = os.path.join(tmp, f"{net}_{k}_{safe}.npy")
        env = dict(os.environ)
        if variant.endswith("+ynn"):
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + YNN_FLAGS).strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, net, str(k), self.out_npy]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.walls, self.cpus = [], []

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            self.error = (self.proc.stderr.read().strip().splitlines() or ["worker died"])[-1][:120]
        return line

    def wait_ready(self):
        self._line()

    def run_once(self):
        if self.error:
            return
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self._line()
        if line:
            r = json.loads(line)
            self.walls.append(r["wall"])
            self.cpus.append(r["cpu"])

    def finish(self) -> dict:
        if self.error:
            return {"error": self.error}
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        line = self._line()
        self.proc.wait()
        if not line:
            return {"error": self.error}
        return {"wall": float(np.median(self.walls)), "cpu": float(np.median(self.cpus)),
                "vmhwm_kib": json.loads(line)["vmhwm_kib"], "A": np.load(self.out_npy)}


def _measure(variants, net: str, k: int, reps: int, tmp: str) -> dict:
    workers = []
    for v in variants:  # started one after another so that warm-ups (compiles) do not overlap
        w = _Worker(v, net, k, tmp)
        w.wait_ready()
        workers.append(w)
    for rep in range(reps):  # interleaved; the order rotates so that drifting load hits all alike
        for w in workers[rep % len(workers):] + workers[: rep % len(workers)]:
            w.run_once()
    return {w.variant: w.finish() for w in workers}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="k = 32 only, 2 timed calls: a smoke test")
    parser.add_argument("--nets", default="mlp,cnn")
    parser.add_argument("--ks", default="32,128,256")
    parser.add_argument("--variants", default=None, help="comma list; default: the table's variants per net")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        variant, net, k, out_npy = args.worker
        _worker(variant, net, int(k), out_npy)
        return
    ks = [32] if args.quick else [int(k) for k in args.ks.split(",")]
    reps = 2 if args.quick else args.reps
    gflops = _matmul_gflops()
    print(f"# cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}, matmul rate "
          f"{gflops:.0f} GFLOP/s, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '')!r}")
    print(f"{'net':4} {'k':>4} {'variant':14} {'wall s':>8} {'vs loop':>8} {'x floor':>8} {'cpu s':>8} "
          f"{'peak GiB':>9} {'err':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets.split(","):
            variants = args.variants.split(",") if args.variants else DEFAULT_VARIANTS[net]
            for k in ks:
                floor = k * k * _flops_per_forward(net) / (gflops * 1e9)
                results = _measure(variants, net, k, reps, tmp)
                ref = results.get("loop", {}).get("A")
                for v, r in results.items():
                    if "error" in r:
                        print(f"{net:4} {k:4} {v:14} failed: {r['error']}")
                        continue
                    # ratios against the JAX loop run under the same XLA flags
                    loop_t = results.get("loop+ynn" if v.endswith("+ynn") else "loop", {}).get("wall")
                    ratio = f"{loop_t / r['wall']:.2f}x" if loop_t else "-"
                    err = (f"{np.max(np.abs(r['A'] - ref)) / np.max(np.abs(ref)):.1e}" if ref is not None
                           else "-")
                    print(f"{net:4} {k:4} {v:14} {r['wall']:8.3f} {ratio:>8} {r['wall'] / floor:8.1f} "
                          f"{r['cpu']:8.3f} {r['vmhwm_kib'] / 2**20:9.2f} {err:>8}", flush=True)
                print(f"{net:4} {k:4} {'FLOP floor':14} {floor:9.3f}  (k² = {k * k} forwards of "
                      f"{_flops_per_forward(net) / 1e6:.2f} MFLOP)", flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.2f}, matmul rate {_matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
