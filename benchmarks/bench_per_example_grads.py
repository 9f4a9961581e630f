"""Claim: tdjax's per-example gradients and Gram matrices (default method: the jaxpr-level layer-wise fast
path) are at least as fast on the CPU as torch.func's vmap(grad) and within 1.5× the batch-gradient floor,
for the 2→256→256→3 MLP and the Nature-DQN CNN at k = 32 and 128 examples, whatever library wrote the CNN:
`cnn` is flax linen (tdjax.networks.NatureCNN), `cnn-lax` the same network as a hand-written function of
jax.lax.conv_general_dilated and matmuls (no network library), `cnn-nnx` a flax NNX model via nnx.split.
The torch baseline is the same torch.func twin for every CNN kind.

Rows per network and k (milliseconds, medians of interleaved repetitions after two warm-up calls):
  per-example gradients  tdjax (default) | JAX jit(vmap(grad)) | JAX Python loop of jitted grads |
                         JAX batch gradient of the mean loss (the floor: no per-example work at all) |
                         torch.func vmap(grad) on a twin torch model with the same weights
  Gram matrix [k, k]     tdjax (default) | JAX jit(vmap(grad)) + per-leaf J Jᵀ | torch.func + per-leaf J Jᵀ
The loss is one example's squared TD-like error on the taken action's Q-value, ½(Q(s)[a] − y)², and
the Gram matrix is that of these per-example loss gradients.

Large outputs (1.7M parameters × k floats) make allocation matter: XLA:CPU allocates from worker
threads, so glibc's per-thread arenas hand out fresh mmap'ed (page-faulting) memory on every call unless
MALLOC_ARENA_MAX=1 (or GLIBC_TUNABLES=glibc.malloc.hugetlb=1) is set; the settings in use are printed.

Usage: python benchmarks/bench_per_example_grads.py [--quick] [--reps N] [--nets mlp,cnn,cnn-lax,cnn-nnx]
          [--ks 32,128]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from tdjax import gram_matrix, per_example_grads
from tdjax.networks import MLP, NatureCNN

try:
    import torch
    import torch.func
except ImportError:  # torch is the optional `bench` extra; its rows are then skipped
    torch = None
else:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _torch_nets import TorchMLP, TorchNatureCNN, from_flax

def _lax_cnn_init(key):
    """Nature-DQN CNN parameters for `_lax_cnn` (OIHW kernels, [in, out] dense weights)."""
    ks = jax.random.split(key, 5)
    w = lambda k, shape, fan: jax.random.normal(k, shape) / np.sqrt(fan)  # noqa: E731
    return {
        "c1": {"w": w(ks[0], (32, 4, 8, 8), 256), "b": jnp.zeros(32)},
        "c2": {"w": w(ks[1], (64, 32, 4, 4), 512), "b": jnp.zeros(64)},
        "c3": {"w": w(ks[2], (64, 64, 3, 3), 576), "b": jnp.zeros(64)},
        "fc": {"w": w(ks[3], (3136, 512), 3136), "b": jnp.zeros(512)},
        "out": {"w": w(ks[4], (512, 6), 512), "b": jnp.zeros(6)},
    }


def _lax_cnn(p, x):
    """The Nature-DQN CNN written with jax.lax only: [84, 84, 4] -> Q-values [6]."""
    x = jnp.transpose(x, (2, 0, 1))[None]
    for name, stride in (("c1", 4), ("c2", 2), ("c3", 1)):
        x = lax.conv_general_dilated(x, p[name]["w"], (stride, stride), "VALID")
        x = jax.nn.relu(x + p[name]["b"][None, :, None, None])
    x = jax.nn.relu(x.reshape(-1) @ p["fc"]["w"] + p["fc"]["b"])
    return x @ p["out"]["w"] + p["out"]["b"]


class _NNXNatureCNN(nnx.Module):
    """The Nature-DQN CNN as a flax NNX model."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(4, 32, (8, 8), strides=4, padding="VALID", rngs=rngs)
        self.c2 = nnx.Conv(32, 64, (4, 4), strides=2, padding="VALID", rngs=rngs)
        self.c3 = nnx.Conv(64, 64, (3, 3), strides=1, padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(3136, 512, rngs=rngs)
        self.out = nnx.Linear(512, 6, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.c3(nnx.relu(self.c2(nnx.relu(self.c1(x))))))
        return self.out(nnx.relu(self.fc(x.reshape(x.shape[:-3] + (-1,)))))


def _problem(net: str, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, 2)) if net == "mlp" else rng.uniform(size=(k, 84, 84, 4))
    n_actions = 3 if net == "mlp" else 6
    batch = (
        jnp.asarray(x, jnp.float32),
        jnp.asarray(rng.integers(0, n_actions, size=k), jnp.int32),
        jnp.asarray(rng.normal(size=k), jnp.float32),
    )
    if net == "cnn-lax":
        params, apply = _lax_cnn_init(jax.random.key(seed)), _lax_cnn
    elif net == "cnn-nnx":
        graphdef, params = nnx.split(_NNXNatureCNN(nnx.Rngs(seed)))
        apply = lambda state, s: nnx.merge(graphdef, state)(s)  # noqa: E731
    else:
        model = MLP((256, 256), 3) if net == "mlp" else NatureCNN(6)
        params, apply = model.init(jax.random.key(seed), batch[0][0]), model.apply

    def loss_fn(p, example):
        s_tm1, a_tm1, target_tm1 = example
        return 0.5 * (apply(p, s_tm1)[a_tm1] - target_tm1) ** 2

    return params, batch, loss_fn


def _jax_fns(params, batch, loss_fn):
    k = batch[0].shape[0]
    grad = jax.jit(jax.grad(loss_fn))
    examples = [jax.tree_util.tree_map(lambda x: x[i], batch) for i in range(k)]

    def gram_of(grads):
        return sum(g.reshape(k, -1) @ g.reshape(k, -1).T for g in jax.tree_util.tree_leaves(grads))

    vmap_grad = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))
    peg = {
        "tdjax per_example_grads": jax.jit(lambda p, b: per_example_grads(loss_fn, p, b)),
        "JAX jit(vmap(grad))": jax.jit(vmap_grad),
        "JAX loop of jitted grads": lambda p, b: [grad(p, e) for e in examples],
        "JAX floor (batch grad)": jax.jit(
            jax.grad(lambda p, b: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(p, b)))
        ),
    }
    gram = {
        "tdjax gram_matrix": jax.jit(lambda p, b: gram_matrix(loss_fn, p, b)),
        "JAX jit(vmap(grad)) + JJᵀ": jax.jit(lambda p, b: gram_of(vmap_grad(p, b))),
    }
    return peg, gram


def _torch_fns(net, params, batch):
    if net == "mlp":
        model = from_flax(TorchMLP(2, (256, 256), 3), params)
    elif net == "cnn":
        model = from_flax(TorchNatureCNN(4, 6), params)
    else:  # the same twin (random torch weights) times every CNN kind
        model = TorchNatureCNN(4, 6)
    tparams = {n: p.detach() for n, p in model.named_parameters()}
    tbatch = tuple(torch.tensor(np.asarray(x)) for x in batch)
    tbatch = (tbatch[0], tbatch[1].long(), tbatch[2])

    def loss(p, s, a, y):
        q = torch.func.functional_call(model, p, (s,))
        return 0.5 * (torch.gather(q, 0, a[None])[0] - y) ** 2

    peg = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))

    def gram(p, *b):
        grads = peg(p, *b)
        k = b[0].shape[0]
        return sum(g.reshape(k, -1) @ g.reshape(k, -1).T for g in grads.values())

    with torch.no_grad():
        return (
            {"torch.func vmap(grad)": lambda: peg(tparams, *tbatch)},
            {"torch.func + JJᵀ": lambda: gram(tparams, *tbatch)},
        )


def _block(x):
    if torch is not None and isinstance(x, dict) and x and isinstance(next(iter(x.values())), torch.Tensor):
        return x
    return jax.block_until_ready(x)


def _time(fns: dict, reps: int) -> dict:
    """{name: (wall ms, process CPU ms)}: medians over `reps` interleaved rounds after two warm-up calls."""
    for f in fns.values():  # compile, fill caches
        _block(f())
        _block(f())
    wall, cpu = {n: [] for n in fns}, {n: [] for n in fns}
    for _ in range(reps):  # interleaved, so background load hits every method alike
        for n, f in fns.items():
            time.sleep(0.02)  # let the previous method's spinning worker threads (OpenMP, Eigen) go idle
            t0, c0 = time.perf_counter(), time.process_time()
            _block(f())
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return {n: (1e3 * float(np.median(wall[n])), 1e3 * float(np.median(cpu[n]))) for n in fns}


def _check(net, params, batch, loss_fn):
    """Max relative differences of tdjax's results against jax.vmap(jax.grad) and torch.func."""
    ref = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)
    got = per_example_grads(loss_fn, params, batch)
    rel = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref))
    )
    out = f"tdjax vs vmap(grad) {rel:.1e}"
    if torch is not None and net in ("mlp", "cnn"):
        g_torch = _torch_fns(net, params, batch)[1]["torch.func + JJᵀ"]().numpy()
        g_jax = np.asarray(gram_matrix(loss_fn, params, batch))
        out += f"; Gram vs torch.func {np.max(np.abs(g_torch - g_jax)) / np.max(np.abs(g_torch)):.1e}"
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: k = 8, 3 repetitions")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--nets", default="mlp,cnn,cnn-lax,cnn-nnx")
    parser.add_argument("--ks", default="32,128")
    args = parser.parse_args(argv)
    ks = [8] if args.quick else [int(k) for k in args.ks.split(",")]
    reps = 3 if args.quick else args.reps

    env = {
        k: v for k, v in sorted(os.environ.items())
        if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "OMP_NUM_THREADS", "XLA_FLAGS")
    }
    torch_version = torch.__version__ if torch else "missing"
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch_version}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"env: {env or 'none set'}; load average at start {os.getloadavg()[0]:.1f}")
    if os.environ.get("MALLOC_ARENA_MAX") != "1":
        print("note: without MALLOC_ARENA_MAX=1, XLA:CPU's large buffers are fresh mmap'ed memory on every call "
              "(page faults dominate at k=128)")
    if torch is not None:
        print(f"torch threads {torch.get_num_threads()}")

    rows = []
    for net in args.nets.split(","):
        for k in ks:
            params, batch, loss_fn = _problem(net, k)
            print(f"\n{net} k={k}: {_check(net, params, batch, loss_fn)}", flush=True)
            peg, gram = _jax_fns(params, batch, loss_fn)
            if torch is not None:
                t_peg, t_gram = _torch_fns(net, params, batch)
                peg.update(t_peg)
                gram.update(t_gram)
            fns = {("grads", n): (lambda f=f: f(params, batch)) if not n.startswith("torch") else f
                   for n, f in peg.items()}
            fns.update({("gram", n): (lambda f=f: f(params, batch)) if not n.startswith("torch") else f
                        for n, f in gram.items()})
            if k > 64:  # the Python loop is slow and adds nothing new at large k for the CNN
                fns = {key: f for key, f in fns.items() if not (net != "mlp" and "loop" in key[1])}
            times = _time(fns, reps)
            floor = times[("grads", "JAX floor (batch grad)")]
            nan = (float("nan"), float("nan"))
            for what, torch_name in (("grads", "torch.func vmap(grad)"), ("gram", "torch.func + JJᵀ")):
                ref = times.get((what, torch_name), nan)
                for (w, n), t in times.items():
                    if w == what:
                        ratios = [a / b for a, b in zip(t, ref)], [a / b for a, b in zip(t, floor)]
                        rows.append((net, k, what, n, t) + ratios)
            _print(rows[-len(times):])
            print(f"load average now {os.getloadavg()[0]:.1f}", flush=True)
    print("\nSummary (medians in ms; ÷torch < 1: faster than torch.func; process CPU sums all threads and\n"
          "is the steadier measure on a shared machine; the load average shows how busy the CPUs were)")
    _print(rows)


def _print(rows):
    print(f"{'':54}{'---------- wall ----------':>27}   {'------- process CPU ------':>26}")
    print(f"{'net':7} {'k':>4} {'what':6} {'method':34} {'ms':>9} {'÷torch':>7} {'÷floor':>7}   "
          f"{'ms':>9} {'÷torch':>7} {'÷floor':>7}")
    for net, k, what, n, t, r_torch, r_floor in rows:
        print(f"{net:7} {k:4d} {what:6} {n:34} {t[0]:9.2f} {r_torch[0]:7.2f} {r_floor[0]:7.2f}   "
              f"{t[1]:9.2f} {r_torch[1]:7.2f} {r_floor[1]:7.2f}")


if __name__ == "__main__":
    main()
