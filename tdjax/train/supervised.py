"""The supervised family: classification and regression on the training core, for Bengio et al.
2020 §4 (Figs 1, 2, 8, 9): `make_train(SupervisedConfig(...)) -> train(key)`.

A run is `num_updates` ITERATIONS, scanned with `jax.lax.scan`. Iteration i draws a minibatch of
`batch_size` indices uniformly from the first n_T examples of the training pool (with replacement,
as the released code's `np.random.randint(0, n_T, 32)`), takes one optimizer step on the mean loss
(cross-entropy for classification, squared error averaged over outputs for regression), and every
`eval_interval` updates evaluates, after the step:

  * train and test loss and accuracy: on the n_T training examples and on the whole test set;
  * the generalisation gap, train minus test PERFORMANCE: accuracy for classifiers
    (train_acc − test_acc), minus the loss for regression (test_loss − train_loss, so that for both
    a positive gap means the model does better on what it was trained on; Bengio §3/§4);
  * ρ̄, the mean function interference (eq. 8): the mean over pairs i < j of `tdjax.gram_matrix` of
    f(θ, x) = maxₖ fₖ(θ, x) (the paper's footnote 3: the max output, here the logit/prediction) on
    the first min(probe_k, n_T) training inputs (the released code uses the first 96 / 200).

Training-set size as data, not shape: the pool has a fixed N examples and n_T is a traced scalar in
the state (`SupervisedState.n_train`), so runs with different n_T (and learning rates, held in the
optimizer's state by `optax.inject_hyperparams`) share one program and are vmapped together
(`tdjax.train.sweep`). The iteration index is scan data that `jax.vmap` does not batch, so the
evaluation's `lax.cond` stays a real branch.

Random numbers: iteration i draws from `fold_in(state.key, i)`; the key of a run is split into the
network's initialisation and the minibatch stream, so runs of one seed with different n_T start
from the same parameters (the paper's "meta seed").

Data sets are looked up by name in `DATASETS` (`register_dataset`): two small synthetic ones
(`synthetic_classification`, `synthetic_regression`, from a fixed seed, for tests), and those of
`tdjax.datasets`: the stand-ins `digits` (sklearn digits at 32×32, for SVHN/CIFAR-10) and `diabetes`
(for SARCOS/California), and the paper's `svhn`, `cifar10`, `sarcos`, `california` from local files.
Networks (`NETWORKS`, `network="auto"` takes the data set's): `bengio_cnn`, Bengio App. B.1's conv
net (n_h = `n_hidden`, n_L = `n_layers`), and `bengio_mlp`, its MLPs (1 + n_layers leaky-ReLU hidden
layers of n_hidden units; California Housing's 3 hidden layers are n_layers=2).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tdjax._src.gradients import gram_matrix
from tdjax._src.outputs import scalar_output_fn
from tdjax.networks.bengio import BengioCNN, BengioMLP
from tdjax.train import core
from tdjax.train.validation import check_choice, check_types, require

__all__ = [
    "SupervisedConfig",
    "Dataset",
    "DATASETS",
    "NETWORKS",
    "register_dataset",
    "register_network",
    "load_dataset",
    "SupervisedState",
    "SupervisedMetrics",
    "Evaluation",
    "SupervisedSpec",
    "SupervisedAgent",
    "build_spec",
    "init_local",
    "evaluate",
    "example_loss",
    "make_agent",
    "summarise",
    "final_evaluation",
]


# ----------------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    """A classifier or regressor trained on n_T examples (Bengio et al. 2020, §4, App. B.1). Frozen:
    derive variants with `config.replace(...)`.

    Counting units: `n_train`, `batch_size`, `probe_k` count examples; `num_updates`,
    `eval_interval` count gradient updates (= iterations).
    """

    data: str = "synthetic_classification"  # a data set in tdjax.train.supervised.DATASETS
    network: str = "auto"  # "auto" (the data set's choice) or a tdjax.train.supervised.NETWORKS name
    n_hidden: int = 32  # n_h: hidden units / channels of the App. B.1 networks
    n_layers: int = 0  # n_L: extra hidden layers of the App. B.1 networks
    n_train: int = 100  # n_T: training examples, the first n_T of the data set's training pool
    num_updates: int = 1_000  # gradient updates in the run (the released code: 1000)
    batch_size: int = 32  # minibatch of one update, drawn with replacement from the n_T examples
    optimizer: str = "adam"  # "adam" | "rmsprop" | "sgd" (momentum 0.9), PyTorch's defaults (App. B.1)
    lr: float = 1e-3  # learning rate
    adam_eps: float = 1e-8  # Adam's ε
    eval_interval: int = 50  # updates between evaluations (loss, accuracy, gap, ρ̄)
    probe_k: int = 96  # training inputs over whose pairs ρ̄ is averaged (min(probe_k, n_T) used)
    probe_chunk_size: Optional[int] = None  # examples per vmapped chunk inside the ρ̄ probe
    eval_chunk_size: int = 1_024  # examples per chunk of the evaluation forward passes
    checkpoint_interval: int = 1_000  # iterations per jitted chunk / checkpoint
    num_devices: int = 1  # devices ONE run is split over (supervised runs: 1)
    seed_devices: int = 1  # devices the seeds of tdjax.train.train_seeds are spread over (mesh axis "seeds")
    loop: str = "scan"  # "scan" (one XLA program) | "host" (one jitted iteration per call)

    def replace(self, **changes: Any) -> "SupervisedConfig":
        """A copy with `changes` applied (the config itself is never mutated)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------------
# Data sets and networks, by name.


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A supervised data set: a training pool and a test set, as arrays.

    `jittable` is True: a data set plays the part an environment plays for the RL families
    (`agent.env`), and its runs can be vmapped (`tdjax.train.train_seeds`).
    """

    name: str
    task: str  # "classification" | "regression"
    x_train: np.ndarray  # [N, *input_shape] float32 (or uint8 images): the training pool (n_T ≤ N used)
    y_train: np.ndarray  # [N] int32 class (classification) or [N, n_out] float32 targets
    x_test: np.ndarray  # [M, *input_shape] float32
    y_test: np.ndarray  # [M] or [M, n_out]
    num_outputs: int  # classes, or regression outputs
    network: str = "bengio_mlp"  # the NETWORKS entry "auto" picks
    label: str = ""  # what the data is (e.g. "stand-in: sklearn digits, not SVHN"), for every output
    jittable: bool = True

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def pool_size(self) -> int:
        return int(self.x_train.shape[0])


DATASETS: Dict[str, Callable[[], Dataset]] = {}
"""Data set name → a function loading it (called once per name and cached)."""


def register_dataset(name: str, loader: Callable[[], Dataset]) -> None:
    """Makes `SupervisedConfig(data=name)` load `loader()` (replacing an earlier registration)."""
    DATASETS[name] = loader
    load_dataset.cache_clear()


@functools.lru_cache(maxsize=16)
def load_dataset(name: str) -> Dataset:
    """The registered data set `name`, checked (shapes, dtypes); ValueError naming the fix otherwise."""
    if name not in DATASETS:
        raise ValueError(f"SupervisedConfig.data={name!r}: unknown data set. Fix: use one of "
                         f"{', '.join(map(repr, DATASETS))}, or register one with "
                         "tdjax.train.supervised.register_dataset(name, loader).")
    ds = DATASETS[name]()
    x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    ok = (x.shape[0] == y.shape[0] and xt.shape[0] == yt.shape[0] and x.shape[1:] == xt.shape[1:]
          and x.shape[0] >= 2 and xt.shape[0] >= 1)
    if ds.task == "classification":
        ok = ok and y.ndim == 1 and yt.ndim == 1
    elif ds.task == "regression":
        ok = ok and y.shape[1:] == (ds.num_outputs,) and yt.shape[1:] == (ds.num_outputs,)
    else:
        ok = False
    if not ok:
        raise ValueError(f"data set {name!r}: inconsistent arrays (x_train {x.shape}, y_train {y.shape}, x_test "
                         f"{xt.shape}, y_test {yt.shape}, task {ds.task!r}, num_outputs {ds.num_outputs}). Fix: "
                         "[N, ...] inputs with [N] int labels (classification) or [N, num_outputs] targets "
                         "(regression), at least 2 training and 1 test example.")
    return ds


def _synthetic(task: str, n_train: int = 256, n_test: int = 128, dim: int = 8, classes: int = 4) -> Dataset:
    """A small teacher-network data set from a fixed seed (tests, tiny scales): inputs N(0, I), targets
    from a random 2-layer tanh network (argmax for classification, plus noise for regression)."""
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(n_train + n_test, dim)).astype(np.float32)
    w1, w2 = rng.normal(size=(dim, 16)) / np.sqrt(dim), rng.normal(size=(16, classes)) / 4.0
    out = np.tanh(x @ w1) @ w2
    if task == "classification":
        y = np.argmax(out + 0.3 * rng.normal(size=out.shape), axis=1).astype(np.int32)
        n_out = classes
    else:
        y = (out[:, :2] + 0.1 * rng.normal(size=(len(x), 2))).astype(np.float32)
        n_out = 2
    return Dataset(f"synthetic_{task}", task, x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_out,
                   network="bengio_mlp",
                   label=f"synthetic {task} data (a random teacher network), not a paper data set")


register_dataset("synthetic_classification", lambda: _synthetic("classification"))
register_dataset("synthetic_regression", lambda: _synthetic("regression"))


def _from_tdjax_datasets(name: str) -> Callable[[], Dataset]:
    """A loader of `tdjax.datasets.load(name)` (real files, or a stand-in: digits, diabetes)."""

    def load() -> Dataset:
        from tdjax import datasets

        d = datasets.load(name)
        if d.task == "classification":
            return Dataset(d.name, d.task, d.x_train, np.asarray(d.y_train, np.int32), d.x_test,
                           np.asarray(d.y_test, np.int32), int(d.num_classes), network="bengio_cnn", label=d.label)
        y, yt = (np.asarray(a, np.float32) for a in (d.y_train, d.y_test))
        y, yt = (a[:, None] if a.ndim == 1 else a for a in (y, yt))
        return Dataset(d.name, d.task, np.asarray(d.x_train, np.float32), y, np.asarray(d.x_test, np.float32), yt,
                       int(y.shape[1]), network="bengio_mlp", label=d.label)

    return load


for _name in ("digits", "diabetes", "cifar10", "svhn", "sarcos", "california"):
    register_dataset(_name, _from_tdjax_datasets(_name))


NETWORKS: Dict[str, Callable[[SupervisedConfig, Tuple[int, ...], int], nn.Module]] = {}
"""Network name → `(config, input_shape, num_outputs) -> flax module` taking ONE input."""


def register_network(name: str, factory: Callable[[SupervisedConfig, Tuple[int, ...], int], nn.Module]) -> None:
    """Makes `SupervisedConfig(network=name)` build `factory(config, input_shape, num_outputs)`."""
    NETWORKS[name] = factory


def _bengio_mlp(c: SupervisedConfig, input_shape: Tuple[int, ...], n_out: int) -> nn.Module:
    require(len(input_shape) == 1, c, "network", f"an MLP needs vector inputs, {c.data!r} has {input_shape}",
            "use network='bengio_cnn' or 'auto'")
    return BengioMLP(c.n_hidden, 1 + c.n_layers, n_out)


def _bengio_cnn(c: SupervisedConfig, input_shape: Tuple[int, ...], n_out: int) -> nn.Module:
    require(len(input_shape) == 3, c, "network", f"a conv net needs [H, W, C] images, {c.data!r} has {input_shape}",
            "use network='bengio_mlp' or 'auto'")
    return BengioCNN(c.n_hidden, c.n_layers, n_out)


# App. B.1: California Housing has 3 hidden layers (n_layers=2 here), SARCOS 1 + n_L.
register_network("bengio_mlp", _bengio_mlp)
register_network("bengio_cnn", _bengio_cnn)


# ----------------------------------------------------------------------------------------------------
# State and metrics.


class SupervisedState(NamedTuple):
    params: Any  # pytree of the network parameters θ.
    opt_state: Any  # optax state (inject_hyperparams: the learning rate is in it).
    key: jax.Array  # shape=(), typed PRNG key. Iteration i draws from fold_in(key, i).
    n_train: jax.Array  # shape=(), int32. n_T: the run trains on the first n_T pool examples.


class Evaluation(NamedTuple):
    """One evaluation (float32 scalars; NaN where not evaluated, accuracies NaN for regression)."""

    train_loss: jax.Array  # shape=(). Mean loss on the n_T training examples.
    test_loss: jax.Array  # shape=(). Mean loss on the test set.
    train_acc: jax.Array  # shape=(). Accuracy on the n_T training examples.
    test_acc: jax.Array  # shape=(). Accuracy on the test set.
    gap: jax.Array  # shape=(). Train minus test performance (see the module docstring).
    rho_bar: jax.Array  # shape=(). Mean function interference over pairs of training inputs (eq. 8).


class SupervisedMetrics(NamedTuple):
    """Per iteration (stacked [num_updates], or [seeds, num_updates])."""

    loss: jax.Array  # shape=(), float32. Minibatch loss before the update.
    evaluated: jax.Array  # shape=(), bool. An evaluation was made after this update.
    eval: Evaluation  # NaN unless `evaluated`.


# ----------------------------------------------------------------------------------------------------
# Validation and the spec.


def _validate(c: SupervisedConfig) -> Dataset:
    if not isinstance(c, SupervisedConfig):
        raise ValueError(f"supervised.make_agent: expected a SupervisedConfig, got {type(c).__name__}.")
    check_types(c)
    ds = load_dataset(c.data)
    check_choice(c, "network", ("auto",) + tuple(NETWORKS))
    check_choice(c, "optimizer", ("adam", "rmsprop", "sgd"))
    check_choice(c, "loop", ("scan", "host"))
    for name in ("n_hidden", "num_updates", "batch_size", "eval_interval", "eval_chunk_size",
                 "checkpoint_interval", "num_devices", "seed_devices"):
        require(getattr(c, name) >= 1, c, name, "must be a positive integer", f"set {name} >= 1")
    require(c.n_layers >= 0, c, "n_layers", "must be >= 0", "set n_layers >= 0 (0: no extra layers)")
    require(2 <= c.n_train <= ds.pool_size, c, "n_train",
            f"the training pool of {c.data!r} holds {ds.pool_size} examples (and ρ̄ needs two)",
            f"set 2 <= n_train <= {ds.pool_size}")
    require(c.probe_k >= 2, c, "probe_k", "ρ̄ needs at least 2 training inputs", "e.g. probe_k=96")
    require(c.probe_chunk_size is None or c.probe_chunk_size >= 1, c, "probe_chunk_size", "must be None or >= 1",
            "use None or a positive chunk size")
    require(c.lr > 0 and np.isfinite(c.lr), c, "lr", "must be a positive number", "e.g. lr=1e-3")
    require(c.adam_eps > 0, c, "adam_eps", "must be > 0", "e.g. adam_eps=1e-8")
    require(c.num_updates % c.eval_interval == 0, c, "num_updates",
            f"must be a multiple of eval_interval={c.eval_interval}, so that the last update is evaluated",
            f"e.g. num_updates={max(1, c.num_updates // c.eval_interval) * c.eval_interval}")
    require(c.num_devices == 1, c, "num_devices", "a supervised run is one device's work",
            "use num_devices=1 and spread runs with seed_devices or tdjax.train.sweep (docs/sweeps.md)")
    require(c.seed_devices <= jax.device_count(), c, "seed_devices",
            f"only {jax.device_count()} devices are visible", f"use at most {jax.device_count()}")
    return ds


@dataclasses.dataclass(frozen=True, eq=False)
class SupervisedSpec:
    config: SupervisedConfig
    env: Dataset  # the data set (named env: it plays the environment's part in the core)
    network: nn.Module
    optimizer: optax.GradientTransformation
    x_train: jax.Array  # [N, ...] pool
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    probe_k: int  # min(probe_k, N): the ρ̄ inputs are the first probe_k pool examples (masked to n_T)
    num_iterations: int
    steps_per_iteration: int = 1


def _optimizer(c: SupervisedConfig) -> optax.GradientTransformation:
    if c.optimizer == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=c.lr, eps=c.adam_eps)
    if c.optimizer == "rmsprop":  # PyTorch's defaults: α = 0.99, ε = 1e-8 outside the square root
        return optax.inject_hyperparams(optax.rmsprop)(learning_rate=c.lr, decay=0.99, eps=1e-8)
    return optax.inject_hyperparams(optax.sgd)(learning_rate=c.lr, momentum=0.9)


def _dtype(ds: Dataset):
    """uint8 images stay uint8 (the networks scale them to [0, 1]); everything else is float32."""
    return jnp.uint8 if ds.x_train.dtype == np.uint8 else jnp.float32


def build_spec(c: SupervisedConfig) -> SupervisedSpec:
    """Validates `c` (ValueError naming the field) and builds its data, network and optimizer."""
    ds = _validate(c)
    name = ds.network if c.network == "auto" else c.network
    require(name in NETWORKS, c, "network", f"the data set asks for network {name!r}, which is not registered",
            f"use one of {', '.join(map(repr, NETWORKS))}")
    network = NETWORKS[name](c, ds.input_shape, ds.num_outputs)
    try:
        jax.eval_shape(lambda x: network.init(jax.random.key(0), x),
                       jax.ShapeDtypeStruct(ds.input_shape, _dtype(ds)))
    except Exception as err:  # noqa: BLE001 - reported with the field that caused it
        raise ValueError(f"SupervisedConfig.network={c.network!r}: cannot take inputs of shape {ds.input_shape} "
                         f"of {c.data!r} ({type(err).__name__}: {err}). Fix: use network='auto'.") from None
    return SupervisedSpec(
        config=c, env=ds, network=network, optimizer=_optimizer(c),
        x_train=jnp.asarray(ds.x_train, _dtype(ds)), y_train=jnp.asarray(ds.y_train),
        x_test=jnp.asarray(ds.x_test, _dtype(ds)), y_test=jnp.asarray(ds.y_test),
        probe_k=min(c.probe_k, ds.pool_size), num_iterations=c.num_updates)


# ----------------------------------------------------------------------------------------------------
# Losses, evaluation, the loop.


def apply(spec: SupervisedSpec, params: Any, x: jax.Array) -> jax.Array:
    """The network's outputs [n_out] for ONE input."""
    return spec.network.apply(params, x)  # type: ignore[return-value]


def example_loss(spec: SupervisedSpec, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Loss on ONE example: cross-entropy (classification), mean squared error over outputs (regression)."""
    out = apply(spec, params, x)
    if spec.env.task == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    return jnp.mean(jnp.square(out - y))


def _correct(spec: SupervisedSpec, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return (jnp.argmax(apply(spec, params, x)) == y).astype(jnp.float32)


def _masked_means(spec: SupervisedSpec, params: Any, xs: jax.Array, ys: jax.Array, count: jax.Array | int):
    """(mean loss, mean accuracy) over the first `count` of xs (a traced count), in chunks."""
    classify = spec.env.task == "classification"

    def one(ex):
        x, y = ex
        loss = example_loss(spec, params, x, y)
        acc = _correct(spec, params, x, y) if classify else jnp.zeros((), jnp.float32)
        return loss, acc

    losses, accs = jax.lax.map(one, (xs, ys), batch_size=spec.config.eval_chunk_size)
    w = (jnp.arange(xs.shape[0]) < count).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    acc = jnp.sum(accs * w) / n if classify else jnp.full((), jnp.nan, jnp.float32)
    return jnp.sum(losses * w) / n, acc


def output_fn(spec: SupervisedSpec) -> Callable[[Any, jax.Array], jax.Array]:
    """f(θ, x) = maxₖ fₖ(θ, x), the scalar output of ρ̄ (Bengio et al. 2020, eq. 8 and footnote 3)."""
    return scalar_output_fn(functools.partial(apply, spec), "max")


def mean_interference(spec: SupervisedSpec, params: Any, n_train: jax.Array) -> jax.Array:
    """ρ̄: mean over pairs i < j < min(probe_k, n_T) of `gram_matrix(f, θ, x_train[:probe_k])`."""
    xs = spec.x_train[: spec.probe_k]
    gram = gram_matrix(output_fn(spec), params, xs, chunk_size=spec.config.probe_chunk_size)
    idx = jnp.arange(spec.probe_k)
    pair = (idx[:, None] < idx[None, :]) & (idx[None, :] < n_train)
    return jnp.sum(jnp.where(pair, gram, 0.0)) / jnp.maximum(jnp.sum(pair), 1)


def evaluate(spec: SupervisedSpec, params: Any, n_train: jax.Array) -> Evaluation:
    """Train/test loss and accuracy, the gap and ρ̄ of `params` for a run on n_T examples."""
    tr_loss, tr_acc = _masked_means(spec, params, spec.x_train, spec.y_train, n_train)
    te_loss, te_acc = _masked_means(spec, params, spec.x_test, spec.y_test, spec.x_test.shape[0])
    gap = tr_acc - te_acc if spec.env.task == "classification" else te_loss - tr_loss
    rho = mean_interference(spec, params, n_train)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return Evaluation(*map(f32, (tr_loss, te_loss, tr_acc, te_acc, gap, rho)))


def _nan_evaluation() -> Evaluation:
    nan = jnp.full((), jnp.nan, jnp.float32)
    return Evaluation(*([nan] * len(Evaluation._fields)))


def init_local(spec: SupervisedSpec, key: jax.Array, axis_name: Optional[str] = None, *,
               n_train: Optional[jax.Array] = None, lr: Optional[jax.Array] = None) -> SupervisedState:
    """The initial state; `n_train` and `lr` (traced scalars, for vmapped sweeps) override the config's."""
    del axis_name
    key = core.typed_key(key)
    k_net, k_batch = jax.random.split(key)
    params = spec.network.init(k_net, jnp.zeros_like(spec.x_train[0]))
    opt_state = spec.optimizer.init(params)
    if lr is not None:
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    n = spec.config.n_train if n_train is None else n_train
    return SupervisedState(params, opt_state, k_batch, jnp.asarray(n, jnp.int32))


def minibatch(spec: SupervisedSpec, state: SupervisedState, i: jax.Array) -> jax.Array:
    """The [batch_size] pool indices of iteration i: uniform over 0 .. n_T − 1, with replacement."""
    return jax.random.randint(jax.random.fold_in(state.key, i), (spec.config.batch_size,), 0, state.n_train)


def update(spec: SupervisedSpec, params: Any, opt_state: Any, xs: jax.Array, ys: jax.Array):
    """One optax step on the mean loss of (xs, ys): (params, opt_state, loss before the step)."""

    def batch_loss(p):
        return jnp.mean(jax.vmap(example_loss, in_axes=(None, None, 0, 0))(spec, p, xs, ys))

    loss, grads = jax.value_and_grad(batch_loss)(params)
    updates, opt_state = spec.optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def iteration(spec: SupervisedSpec, state: SupervisedState, i: jax.Array, axis_name: Optional[str],
              phase: Optional[Tuple[bool]] = None) -> Tuple[SupervisedState, SupervisedMetrics]:
    """Iteration i: one update on a minibatch, then (every eval_interval updates) an evaluation."""
    del axis_name
    idx = minibatch(spec, state, i)
    params, opt_state, loss = update(spec, state.params, state.opt_state, spec.x_train[idx], spec.y_train[idx])
    state = state._replace(params=params, opt_state=opt_state)
    evaluated = ((i + 1) % spec.config.eval_interval == 0) if phase is None else jnp.asarray(phase[0])
    if phase is None:
        ev = jax.lax.cond(evaluated, lambda p: evaluate(spec, p, state.n_train), lambda p: _nan_evaluation(), params)
    else:
        ev = evaluate(spec, params, state.n_train) if phase[0] else _nan_evaluation()
    return state, SupervisedMetrics(loss.astype(jnp.float32), jnp.asarray(evaluated), ev)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SupervisedAgent(core.Agent):
    """`core.Agent` for the supervised loop, plus `init_with(key, n_train, lr)` (traced overrides),
    `evaluate(params, n_train)`, `example_loss(params, x, y)` and `output_fn(params, x)`."""

    init_with: Optional[Callable[..., SupervisedState]] = None

    def phase(self, i: int) -> Tuple[bool]:
        return (bool((int(i) + 1) % self.spec.config.eval_interval == 0),)

    def reattach_env(self, state: Any) -> Any:
        return state

    evaluate = core.bound(evaluate)
    example_loss = core.bound(example_loss)

    def output_fn(self, params, x):
        return output_fn(self.spec)(params, x)


def make_agent(config: SupervisedConfig) -> SupervisedAgent:
    """Validates `config` and builds the agent (`tdjax.train.make_agent` dispatches here)."""
    spec = build_spec(config)
    init, run = core.build_loop(spec, init_local, iteration, per_device=(), phase_size=1)

    def init_with(key, n_train=None, lr=None):
        return init_local(spec, key, None, n_train=n_train, lr=lr)

    return SupervisedAgent(spec, init, run, init_with)


# ----------------------------------------------------------------------------------------------------
# Summaries.


def final_evaluation(metrics: SupervisedMetrics) -> Evaluation:
    """The last evaluation of a run (fields [...] per run; metrics stacked [..., T])."""
    return jax.tree.map(lambda x: np.asarray(x)[..., -1], metrics.eval)


def summarise(metrics: SupervisedMetrics) -> dict:
    """Scalars of ONE run: the mean minibatch loss, the last evaluation, ρ̄ averaged over evaluations."""
    m = jax.tree.map(np.asarray, metrics)
    ev = m.evaluated.astype(bool)
    out = {"updates": int(m.loss.shape[0]), "loss": float(np.mean(m.loss))}
    out.update({k: float(v[ev][-1]) if ev.any() else float("nan") for k, v in m.eval._asdict().items()})
    out["rho_bar_during"] = core.nanmean(m.eval.rho_bar[ev])
    return out


def _no_return(metrics: Any, last: Optional[int] = None, **_: Any) -> np.ndarray:
    """Supervised runs have no episodes: NaN per run."""
    return np.full(np.shape(metrics.loss)[:-1], np.nan)


core.register_family(SupervisedConfig, core.Family("supervised", make_agent, summarise, _no_return))
