"""Jittable environments registered by name, so that a training config (`env: str`) can name them.

`register_env(name, factory, ...)` makes `tdjax.envs.make_vec(name, num_envs, options=...)`,
`vec_spec(name)` and the training loops accept `name`; `factory(**options)` builds ONE environment
with the `tdjax.envs.JaxEnv` protocol (`reset(key) -> (state, obs)`, `step(state, key, action) ->
(state, EnvStep)`, auto-reset) and the attributes `obs_shape`, `num_actions`, `obs_storage_dtype`,
`obs_scale`, `max_episode_steps`. The config's `env_options` are the factory's keyword arguments.

Masked-image tasks (Bengio et al. 2020 §3) registered here:

  ==================== ====================================================== ==============
  name                 images                                                 observation
  ==================== ====================================================== ==============
  MaskedImage-digits   scikit-learn's digits upsampled to 32×32 (STAND-IN)    [32, 32, 2]
  MaskedImage-cifar10  CIFAR-10 from local files (`tdjax.datasets`)           [32, 32, 4]
  MaskedImage-svhn     SVHN from local files (`tdjax.datasets`)               [32, 32, 4]
  ==================== ====================================================== ==============

Their options (`env_options` of a config): `num_images` (n_T: episodes are seeded by the images
[start_image, start_image + num_images) of the split; default all), `start_image` (0), `split`
("train" | "test"), `test_num_images` / `test_start_image` (the test environment's range, default the
whole test split), `step_penalty` (0.1), `max_steps` (20), `data_dir` (folder of the real files,
default $TDJAX_DATA). `test_env_options(name, options)` gives the options of the test environment:
the same task on the data set's TEST split, i.e. images disjoint from the training ones, like
ProcGen's held-out levels. Register your own arrays with `register_masked_image_env`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from tdjax.envs._masked_image import MaskedImageEnv

__all__ = ["RegisteredEnv", "register_env", "registered_env_names", "registered_env", "test_env_options",
           "register_masked_image_env", "MASKED_IMAGE_OPTIONS"]


class RegisteredEnv(NamedTuple):
    """What the registry knows about a name without building its environment."""

    factory: Callable[..., Any]  # (**options) -> one environment (JaxEnv protocol)
    obs_shape: Tuple[int, ...]
    num_actions: int
    obs_storage_dtype: Any
    obs_scale: float
    network: str  # the torso `network="auto"` picks for it (a tdjax.networks.TORSOS name)
    test_options: Callable[[Dict[str, Any]], Dict[str, Any]]  # train options -> test-env options


_REGISTRY: Dict[str, RegisteredEnv] = {}


def register_env(name: str, factory: Callable[..., Any], *, obs_shape: Tuple[int, ...], num_actions: int,
                 obs_storage_dtype: Any = jnp.float32, obs_scale: float = 1.0, network: str = "auto",
                 test_options: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
                 overwrite: bool = False) -> None:
    """Makes `name` a jittable environment of `tdjax.envs.make_vec` and of the training configs.

    Args:
      name: the name configs use (`ValueConfig(env=name)`); must not clash with a gymnax or envpool name.
      factory: `factory(**options) -> env`, options from `make_vec(..., options=)` / a config's `env_options`.
      obs_shape, num_actions, obs_storage_dtype, obs_scale: what every environment `factory` builds has
        (configs are checked against them before anything is built).
      network: the torso `network="auto"` picks ("auto": the rule of `tdjax.train.core.auto_network`).
      test_options: maps the training environment's options to the test environment's (held-out
        seeds); default: the same options.
      overwrite: replace an existing registration.
    """
    from tdjax.envs import _gymnax, _vec

    if not isinstance(name, str) or not name:
        raise ValueError(f"register_env: name must be a non-empty string, got {name!r}.")
    if name in _gymnax.ENV_NAMES or name.endswith("-v5") or name.endswith("-v0"):
        raise ValueError(f"register_env: {name!r} clashes with a gymnax name or envpool's '-v5'/'-v0' ids. "
                         "Fix: choose another name, e.g. 'MaskedImage-mydata'.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register_env: {name!r} is already registered. Fix: pass overwrite=True to replace it.")
    if not callable(factory):
        raise TypeError(f"register_env: factory must be callable (**options) -> env, got {type(factory).__name__}.")
    _REGISTRY[name] = RegisteredEnv(factory, tuple(int(s) for s in obs_shape), int(num_actions), obs_storage_dtype,
                                    float(obs_scale), network, test_options or (lambda opts: dict(opts)))
    _vec.vec_spec.cache_clear()


def registered_env_names() -> Tuple[str, ...]:
    """The names registered with `register_env` (the masked-image tasks included)."""
    return tuple(_REGISTRY)


def registered_env(name: str) -> Optional[RegisteredEnv]:
    """The registration of `name`, or None."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def test_env_options(name: str, options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The options of `name`'s TEST environment (held-out seeds) given its training options."""
    entry = registered_env(name)
    if entry is None:
        raise ValueError(f"test_env_options: {name!r} is not a registered environment "
                         f"({', '.join(registered_env_names())}).")
    return entry.test_options(dict(options or {}))


# ----------------------------------------------------------------------------------------------------
# Masked-image tasks.

MASKED_IMAGE_OPTIONS: Tuple[str, ...] = ("split", "num_images", "start_image", "test_num_images",
                                         "test_start_image", "step_penalty", "max_steps", "data_dir")
"""The options (`env_options`) a masked-image environment takes."""


def _masked_test_options(opts: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(opts)
    out.update(split="test", start_image=opts.get("test_start_image", 0), num_images=opts.get("test_num_images"))
    return out


def _masked_factory(name: str, load: Callable[[Optional[str]], Any]) -> Callable[..., MaskedImageEnv]:
    def factory(split: str = "train", num_images: Optional[int] = None, start_image: int = 0,
                test_num_images: Optional[int] = None, test_start_image: int = 0, step_penalty: float = 0.1,
                max_steps: int = 20, data_dir: Optional[str] = None, **unknown: Any) -> MaskedImageEnv:
        del test_num_images, test_start_image  # read by test_env_options
        if unknown:
            raise ValueError(f"{name}: unknown env_options {sorted(unknown)}. Valid: {', '.join(MASKED_IMAGE_OPTIONS)}.")
        if split not in ("train", "test"):
            raise ValueError(f"{name}: env_options split must be 'train' or 'test', got {split!r}.")
        data = load(data_dir)
        images, labels = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        if np.asarray(images).dtype != np.uint8:
            raise TypeError(f"{name}: a registered masked-image task needs uint8 images (0…255), got "
                            f"{np.asarray(images).dtype} from {data.label}. Fix: (x * 255).round().astype(np.uint8).")
        n = len(images)
        if not isinstance(start_image, (int, np.integer)) or not 0 <= start_image < n:
            raise ValueError(f"{name}: env_options start_image={start_image!r} must lie in [0, {n}) "
                             f"(the {split} split of {data.label} has {n} images).")
        count = n - start_image if num_images is None else num_images
        if not isinstance(count, (int, np.integer)) or count < 1 or start_image + count > n:
            raise ValueError(
                f"{name}: env_options num_images={num_images!r} (n_T) must be a positive integer with start_image + "
                f"num_images <= {n}, the size of the {split} split of {data.label}. Fix: use n_T <= "
                f"{n - start_image}" + (" or the real data set (the stand-in is small)." if data.is_standin else ".")
            )
        return MaskedImageEnv(images, labels, indices=np.arange(start_image, start_image + count),
                              num_classes=data.num_classes, step_penalty=float(step_penalty), max_steps=int(max_steps),
                              name=f"{name}[{split} {start_image}:{start_image + count}]")

    return factory


def register_masked_image_env(name: str, load: Callable[[Optional[str]], Any], channels: int, *,
                              overwrite: bool = False) -> None:
    """Registers a masked-image task on a data set: `load(data_dir) -> tdjax.datasets.Dataset` (images
    [N, 32, 32, `channels`] uint8 in x_train / x_test, labels 0…9), e.g. to use your own arrays:

      >>> import numpy as np, tdjax.datasets as ds
      >>> x = np.zeros((30, 32, 32, 3), np.uint8); y = np.arange(30) % 10
      >>> mine = ds.Dataset("mine", False, "my arrays", "classification", x[:20], y[:20], x[20:], y[20:], 10)
      >>> register_masked_image_env("MaskedImage-mine", lambda data_dir: mine, channels=3)
      >>> import tdjax.envs
      >>> tdjax.envs.make_vec("MaskedImage-mine", 2, options={"num_images": 5}).obs_shape
      (32, 32, 4)
    """
    register_env(name, _masked_factory(name, load), obs_shape=(32, 32, 1 + channels), num_actions=40,
                 obs_storage_dtype=jnp.uint8, obs_scale=1.0 / 255.0, network="bengio_cnn",
                 test_options=_masked_test_options, overwrite=overwrite)


def _register_builtins() -> None:
    from tdjax import datasets

    register_masked_image_env("MaskedImage-digits", lambda data_dir: datasets.load_digits32(), 1)
    register_masked_image_env("MaskedImage-cifar10", datasets.load_cifar10, 3)
    register_masked_image_env("MaskedImage-svhn", datasets.load_svhn, 3)
