"""The data sets of Bengio et al. 2020 §4, from local files, and stand-ins that ship with scikit-learn.

Nothing is downloaded: the real data sets are read from a local folder in their standard distribution
formats (the `data_dir` argument, or the environment variable `TDJAX_DATA`):

  ============ ========================================= ==================================================
  name         files (in data_dir)                       where they come from
  ============ ========================================= ==================================================
  cifar10      cifar-10-batches-py/data_batch_1…5,       https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz
               cifar-10-batches-py/test_batch             (python pickle batches)
  svhn         train_32x32.mat, test_32x32.mat           http://ufldl.stanford.edu/housenumbers/ (format 2)
  sarcos       sarcos_inv.mat, sarcos_inv_test.mat       http://www.gaussianprocess.org/gpml/data/
  california   cal_housing.data  (or housing.csv)        the StatLib archive scikit-learn fetches
                                                          (cal_housing.tgz → CaliforniaHousing/cal_housing.data),
                                                          or the CSV with a header row of handson-ml
                                                          (github.com/ageron/handson-ml2, datasets/housing)
  ============ ========================================= ==================================================

and two stand-ins, bundled with scikit-learn, so that everything runs on a fresh machine:

  * digits:   scikit-learn's 1,797 8×8 greyscale digits (`sklearn.datasets.load_digits`), upsampled ×4
    (nearest neighbour) to 32×32×1 uint8; train = the first 1,500 images, test = the last 297. For the
    image tasks (classification, the masked-image agents).
  * diabetes: scikit-learn's diabetes regression set (442 × 10 → 1), for the regression tasks.

Every loader returns a `Dataset` whose `name`, `is_standin` and `source` say what it is, so every
output can print whether it comes from the paper's data or a stand-in (`Dataset.label`).

Formats returned: images [N, 32, 32, C] uint8 (channels last) with labels [N] int32 in 0…9 (SVHN's
label 10 is the digit 0); regression inputs [N, d] and targets [N, k] float32. California Housing
and the diabetes stand-in are min-max scaled as in the authors' code (dataset_experiments/
calif_regression.py: one global min and max over all inputs, and over the targets, of the training
split); SARCOS is left raw, as the authors did.
"""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["Dataset", "DATASETS", "STANDINS", "resolve_data_dir", "load", "load_cifar10", "load_svhn", "load_sarcos",
           "load_california_housing", "load_digits32", "load_diabetes", "DataFileError"]

ENV_VAR = "TDJAX_DATA"


class DataFileError(FileNotFoundError):
    """A data file is missing (the message names it, where it comes from and where it was looked for)."""


class Dataset(NamedTuple):
    """One data set, split into training and test sets.

    Attributes:
      name: e.g. "cifar10", "digits".
      is_standin: True for a stand-in (not the paper's data).
      source: where it was read from (a path, or the bundled package data set).
      task: "classification" or "regression".
      x_train, y_train, x_test, y_test: arrays (see the module docstring for shapes and dtypes).
      num_classes: classes of a classification task; 0 for regression.
    """

    name: str
    is_standin: bool
    source: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 0

    @property
    def label(self) -> str:
        """What to print beside every result: e.g. "digits (STAND-IN, not the paper's data: …)"."""
        if self.is_standin:
            return f"{self.name} (STAND-IN, not the paper's data: {self.source})"
        return f"{self.name} (real data: {self.source})"

    def __repr__(self) -> str:
        return (f"Dataset({self.label}, task={self.task}, train={self.x_train.shape}, test={self.x_test.shape})")


def resolve_data_dir(path: Optional[str] = None) -> Path:
    """The folder the real data sets are read from: `path`, else $TDJAX_DATA, else ./data."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get(ENV_VAR, "data")).expanduser()


def _require(path: Path, what: str, origin: str) -> Path:
    if not path.is_file():
        raise DataFileError(
            f"{what}: expected the file {path} (not found). It comes from {origin}. Fix: put it there, or pass "
            f"data_dir=<folder> / set {ENV_VAR}=<folder>; nothing is downloaded at run time. Without the real "
            "data, use the stand-in (tdjax.datasets.load(..., allow_standin=True), or 'digits' / 'diabetes')."
        )
    return path


def _check_images(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    if x.ndim != 4 or x.shape[1:3] != (32, 32) or x.dtype != np.uint8:
        raise ValueError(f"{path}: expected 32×32 uint8 images, got an array of shape {x.shape} and dtype {x.dtype}. "
                         "Fix: use the original distribution of the file.")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{path}: {x.shape[0]} images but labels of shape {y.shape}. Fix: use the original file.")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0…9, got [{y.min()}, {y.max()}]. Fix: use the original file.")


# ----------------------------------------------------------------------------------------------------
# Images.

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked: the folder cifar-10-batches-py)"


def _cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as err:  # noqa: BLE001 - reported with the file
            raise ValueError(f"{path}: not a CIFAR-10 python pickle batch ({type(err).__name__}: {err}). "
                             f"Fix: use the python version of CIFAR-10, {_CIFAR_URL}.") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels', got "
                         f"{type(d).__name__} with keys {sorted(d)[:5] if isinstance(d, dict) else None}.")
    data = np.asarray(d[b"data"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be [N, 3072] (3 × 32 × 32, channel-major), got {data.shape}.")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
    y = np.asarray(d[b"labels"], np.int32)
    _check_images(x, y, path)
    return x, y


@functools.lru_cache(maxsize=4)
def _load_cifar10(root: str) -> Dataset:
    folder = Path(root) / "cifar-10-batches-py"
    parts = [_cifar_batch(_require(folder / f"data_batch_{i}", "CIFAR-10", _CIFAR_URL)) for i in range(1, 6)]
    x_test, y_test = _cifar_batch(_require(folder / "test_batch", "CIFAR-10", _CIFAR_URL))
    return Dataset("cifar10", False, str(folder), "classification", np.concatenate([p[0] for p in parts]),
                   np.concatenate([p[1] for p in parts]), x_test, y_test, 10)


def load_cifar10(data_dir: Optional[str] = None) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from `<data_dir>/cifar-10-batches-py/` (python pickle batches):
    train 50,000 / test 10,000 images [N, 32, 32, 3] uint8, labels 0…9."""
    return _load_cifar10(str(resolve_data_dir(data_dir)))


_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits: train_32x32.mat, test_32x32.mat)"


def _svhn_file(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    import scipy.io  # deferred: only the .mat loaders need SciPy

    _require(path, "SVHN", _SVHN_URL)
    try:
        m = scipy.io.loadmat(path)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: not a MATLAB .mat file ({type(err).__name__}: {err}). Fix: {_SVHN_URL}.") from None
    if "X" not in m or "y" not in m:
        raise ValueError(f"{path}: an SVHN .mat holds 'X' [32, 32, 3, N] and 'y' [N, 1]; found "
                         f"{sorted(k for k in m if not k.startswith('__'))}.")
    x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1).astype(np.int32)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' must be [32, 32, 3, N], got {x.shape}. Fix: use format 2 (cropped digits).")
    x = np.ascontiguousarray(np.moveaxis(x, -1, 0)).astype(np.uint8)
    y = np.where(y == 10, 0, y)  # SVHN labels the digit 0 as 10
    _check_images(x, y, path)
    return x, y


@functools.lru_cache(maxsize=4)
def _load_svhn(root: str) -> Dataset:
    x_tr, y_tr = _svhn_file(Path(root) / "train_32x32.mat")
    x_te, y_te = _svhn_file(Path(root) / "test_32x32.mat")
    return Dataset("svhn", False, root, "classification", x_tr, y_tr, x_te, y_te, 10)


def load_svhn(data_dir: Optional[str] = None) -> Dataset:
    """SVHN (Netzer et al. 2011), cropped digits, from `<data_dir>/{train,test}_32x32.mat`: train 73,257
    / test 26,032 images [N, 32, 32, 3] uint8, labels 0…9 (the file's 10 is the digit 0)."""
    return _load_svhn(str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=1)
def _load_digits32() -> Dataset:
    from sklearn.datasets import (
        load_digits,  # deferred: scikit-learn is an optional dependency
    )

    d = load_digits()
    pix = np.round(np.asarray(d.images, np.float64) * (255.0 / 16.0)).astype(np.uint8)  # 0…16 → 0…255
    x = np.repeat(np.repeat(pix, 4, axis=1), 4, axis=2)[..., None]  # 8×8 → 32×32, nearest neighbour
    y = np.asarray(d.target, np.int32)
    n_train = 1500
    return Dataset("digits", True, "scikit-learn's bundled 8×8 digits (sklearn.datasets.load_digits), upsampled ×4",
                   "classification", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def load_digits32() -> Dataset:
    """The image STAND-IN: scikit-learn's bundled 8×8 digits upsampled (nearest, ×4) to [N, 32, 32, 1]
    uint8 (0…16 scaled to 0…255); train: the first 1,500 images, test: the last 297; labels 0…9."""
    return _load_digits32()


# ----------------------------------------------------------------------------------------------------
# Regression.

_SARCOS_URL = "http://www.gaussianprocess.org/gpml/data/ (sarcos_inv.mat, sarcos_inv_test.mat)"


def _sarcos_file(path: Path, key: str) -> np.ndarray:
    import scipy.io

    _require(path, "SARCOS", _SARCOS_URL)
    try:
        m = scipy.io.loadmat(path)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: not a MATLAB .mat file ({type(err).__name__}: {err}). Fix: {_SARCOS_URL}.") from None
    if key not in m:
        found = sorted(k for k in m if not k.startswith("__"))
        raise ValueError(f"{path}: expected the variable {key!r}, found {found}.")
    a = np.asarray(m[key], np.float64)
    if a.ndim != 2 or a.shape[1] != 28:
        raise ValueError(f"{path}: {key!r} must be [N, 28] (21 inputs, 7 torques), got {a.shape}.")
    return a


@functools.lru_cache(maxsize=4)
def _load_sarcos(root: str) -> Dataset:
    tr = _sarcos_file(Path(root) / "sarcos_inv.mat", "sarcos_inv")
    te = _sarcos_file(Path(root) / "sarcos_inv_test.mat", "sarcos_inv_test")
    f = np.float32
    return Dataset("sarcos", False, root, "regression", tr[:, :21].astype(f), tr[:, 21:].astype(f),
                   te[:, :21].astype(f), te[:, 21:].astype(f))


def load_sarcos(data_dir: Optional[str] = None) -> Dataset:
    """SARCOS inverse dynamics (Vijayakumar & Schaal 2000) from `<data_dir>/sarcos_inv.mat` and
    `sarcos_inv_test.mat`: 21 inputs → 7 joint torques, train 44,484 / test 4,449 rows, float32, raw
    (the authors' scripts do not normalise it). The paper's App. B.1 says 8 outputs; the file has 7."""
    return _load_sarcos(str(resolve_data_dir(data_dir)))


_CAL_URL = ("the StatLib archive cal_housing.tgz that scikit-learn's fetch_california_housing downloads "
            "(https://ndownloader.figshare.com/files/5976036, member CaliforniaHousing/cal_housing.data), or "
            "housing.csv of github.com/ageron/handson-ml2 (datasets/housing)")
_CAL_COLUMNS = ("longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms", "population",
                "households", "median_income", "median_house_value")


def _minmax_split(x: np.ndarray, y: np.ndarray, test_fraction: float,
                  seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The authors' split and scaling (calif_regression.py): a fixed shuffle, the last `test_fraction` as
    test, then (v − min) / (max − min) with ONE min and max over all training inputs (and targets)."""
    idx = np.arange(len(x))
    np.random.RandomState(seed).shuffle(idx)
    x, y = x[idx], y[idx]
    n_test = int(test_fraction * len(x))
    n_train = len(x) - n_test
    x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    xa, xb, ya, yb = x_tr.min(), x_tr.max(), y_tr.min(), y_tr.max()
    f = np.float32
    return (((x_tr - xa) / (xb - xa)).astype(f), ((y_tr - ya) / (yb - ya)).astype(f),
            ((x_te - xa) / (xb - xa)).astype(f), ((y_te - ya) / (yb - ya)).astype(f))


def _california_raw(root: Path) -> Tuple[np.ndarray, Path]:
    data, csv = root / "cal_housing.data", root / "housing.csv"
    if data.is_file():
        path = data
        try:
            a = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{path}: expected 9 comma-separated numbers per row "
                             f"({', '.join(_CAL_COLUMNS)}): {err}") from None
    elif csv.is_file():
        path = csv
        with open(path) as f:
            header = [h.strip() for h in f.readline().strip().split(",")]
        missing = [c for c in _CAL_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: the header lacks the columns {missing}; expected {', '.join(_CAL_COLUMNS)} "
                             "(plus ocean_proximity). Fix: use housing.csv as distributed.")
        cols = [header.index(c) for c in _CAL_COLUMNS]
        a = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=cols, dtype=np.float64, ndmin=2)
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():  # handson-ml's copy has 207 blanked total_bedrooms
            warnings.warn(f"{path}: dropped {int(bad.sum())} rows with missing values (the handson-ml copy blanks "
                          "some total_bedrooms); cal_housing.data has none.", stacklevel=3)
            a = a[~bad]
    else:
        _require(data, "California Housing", _CAL_URL)
    if a.ndim != 2 or a.shape[1] != 9:
        raise ValueError(f"{path}: expected 9 columns ({', '.join(_CAL_COLUMNS)}), got an array of shape {a.shape}.")
    return a, path


@functools.lru_cache(maxsize=4)
def _load_california(root: str) -> Dataset:
    a, path = _california_raw(Path(root))
    lon, lat, age, rooms, bedrooms, pop, households, income, value = a.T
    # The 8 features of sklearn.datasets.fetch_california_housing, in its order.
    x = np.stack([income, age, rooms / households, bedrooms / households, pop, pop / households, lat, lon], axis=1)
    y = (value / 100_000.0)[:, None]
    return Dataset("california", False, str(path), "regression", *_minmax_split(x, y, 0.05, 1283))


def load_california_housing(data_dir: Optional[str] = None) -> Dataset:
    """California Housing (Pace & Barry 1997) from `<data_dir>/cal_housing.data` (StatLib, no header) or
    `<data_dir>/housing.csv` (with a header): the 8 inputs of scikit-learn's `fetch_california_housing`
    (MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude, Longitude) → the median
    house value in 100 k$; split and scaled as the authors did (shuffle with seed 1283, last 5 % as
    test, global min-max scaling from the training split)."""
    return _load_california(str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=1)
def _load_diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes as sk_diabetes

    d = sk_diabetes()
    x, y = np.asarray(d.data, np.float64), np.asarray(d.target, np.float64)[:, None]
    return Dataset("diabetes", True, "scikit-learn's bundled diabetes set (sklearn.datasets.load_diabetes)",
                   "regression", *_minmax_split(x, y, 0.2, 1283))


def load_diabetes() -> Dataset:
    """The regression STAND-IN: scikit-learn's bundled diabetes set, 10 inputs → 1 target, split and
    scaled like California Housing (shuffle seed 1283, but the last 20 % as test: 354 / 88 rows)."""
    return _load_diabetes()


# ----------------------------------------------------------------------------------------------------
# By name.

_REAL = {"cifar10": load_cifar10, "svhn": load_svhn, "sarcos": load_sarcos, "california": load_california_housing}
STANDINS = {"cifar10": "digits", "svhn": "digits", "sarcos": "diabetes", "california": "diabetes"}
"""The stand-in of each real data set's task family."""
_STANDIN_LOADERS = {"digits": load_digits32, "diabetes": load_diabetes}
DATASETS: Tuple[str, ...] = tuple(_REAL) + tuple(_STANDIN_LOADERS)
"""Names `load` accepts."""


def load(name: str, data_dir: Optional[str] = None, *, allow_standin: bool = False) -> Dataset:
    """A data set by name (`DATASETS`).

    Args:
      name: "cifar10", "svhn", "sarcos", "california" (real, from local files) or "digits", "diabetes"
        (stand-ins bundled with scikit-learn).
      data_dir: the folder of the real files (default: $TDJAX_DATA, else ./data).
      allow_standin: when a real data set's files are missing, warn and return its family's stand-in
        (`STANDINS`) instead of raising; the result's `is_standin` and `label` say so.

    Raises:
      ValueError: an unknown name, or a file of the wrong format or shape.
      DataFileError: (a FileNotFoundError) a missing file, named with where it comes from.
    """
    if name in _STANDIN_LOADERS:
        return _STANDIN_LOADERS[name]()
    if name not in _REAL:
        raise ValueError(f"tdjax.datasets.load: unknown data set {name!r}. Valid names: {', '.join(DATASETS)}.")
    try:
        return _REAL[name](data_dir)
    except DataFileError as err:
        if not allow_standin:
            raise
        warnings.warn(f"{err} Using the stand-in {STANDINS[name]!r} instead.", stacklevel=2)
        return _STANDIN_LOADERS[STANDINS[name]]()
