"""tdjax.datasets: loaders on tiny fake files in the standard formats, errors, and the stand-ins."""

import pickle

import numpy as np
import pytest
import scipy.io

from tdjax import datasets as ds


def _cifar(root, n=3, bad_shape=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072 if not bad_shape else 100), dtype=np.uint8)
        labels = list(rng.integers(0, 10, size=n))
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f)
        batches[name] = (data, labels)
    return batches


def test_cifar10_pickle_batches(tmp_path):
    batches = _cifar(tmp_path)
    d = ds.load("cifar10", str(tmp_path))
    assert d.name == "cifar10" and not d.is_standin and "real data" in d.label
    assert d.x_train.shape == (15, 32, 32, 3) and d.x_test.shape == (3, 32, 32, 3) and d.x_train.dtype == np.uint8
    data, labels = batches["data_batch_2"]
    # pixel (row 5, col 7) of channel c of image 1 of batch 2 sits at c*1024 + 5*32 + 7 of its row
    for c in range(3):
        assert d.x_train[4, 5, 7, c] == data[1, c * 1024 + 5 * 32 + 7]
    np.testing.assert_array_equal(d.y_train[3:6], labels)


def test_cifar10_missing_and_wrong_shape(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar-10-python.tar.gz"):
        ds.load_cifar10(str(tmp_path))
    _cifar(tmp_path, bad_shape=True)
    with pytest.raises(ValueError, match="3072"):
        ds.load_cifar10(str(tmp_path))


def test_svhn_mat(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[..., :2], "y": y[:2]})
    d = ds.load_svhn(str(tmp_path))
    assert d.x_train.shape == (4, 32, 32, 3) and d.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(d.x_train[2], x[..., 2])
    np.testing.assert_array_equal(d.y_train, [0, 1, 9, 0])  # SVHN's 10 is the digit 0
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[:16], "y": y})
    ds._load_svhn.cache_clear()
    with pytest.raises(ValueError, match=r"\[32, 32, 3, N\]"):
        ds.load_svhn(str(tmp_path))


def test_sarcos_mat(tmp_path):
    with pytest.raises(FileNotFoundError, match="sarcos_inv.mat.*gaussianprocess"):
        ds.load_sarcos(str(tmp_path))
    a = np.arange(5 * 28, dtype=np.float64).reshape(5, 28)
    scipy.io.savemat(tmp_path / "sarcos_inv.mat", {"sarcos_inv": a})
    scipy.io.savemat(tmp_path / "sarcos_inv_test.mat", {"sarcos_inv_test": a[:2, :27]})
    with pytest.raises(ValueError, match=r"\[N, 28\]"):
        ds.load_sarcos(str(tmp_path))
    scipy.io.savemat(tmp_path / "sarcos_inv_test.mat", {"sarcos_inv_test": a[:2]})
    d = ds.load_sarcos(str(tmp_path))
    np.testing.assert_array_equal(d.x_train, a[:, :21]) and np.testing.assert_array_equal(d.y_test, a[:2, 21:])
    assert d.y_train.shape == (5, 7) and d.task == "regression"


def _cal_rows(n=40, seed=2):
    rng = np.random.default_rng(seed)
    a = rng.uniform(1, 100, size=(n, 9))
    a[:, 0] -= 150
    return a


def _cal_reference(a):
    """sklearn.datasets.fetch_california_housing's features, then the authors' split and min-max."""
    lon, lat, age, rooms, bed, pop, hh, inc, val = a.T
    x = np.stack([inc, age, rooms / hh, bed / hh, pop, pop / hh, lat, lon], 1)
    y = val[:, None] / 1e5
    np.random.seed(1283)
    idx = np.arange(len(x))
    np.random.shuffle(idx)
    x, y = x[idx], y[idx]
    ntest = int(0.05 * len(x))
    xtr, ytr = x[: len(x) - ntest], y[: len(x) - ntest]
    return (xtr - xtr.min()) / (xtr.max() - xtr.min()), (x[len(x) - ntest:] - xtr.min()) / (xtr.max() - xtr.min()), \
        (ytr - ytr.min()) / (ytr.max() - ytr.min())


def test_california_statlib_and_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="cal_housing.data"):
        ds.load_california_housing(str(tmp_path))
    a = _cal_rows()
    np.savetxt(tmp_path / "cal_housing.data", a, delimiter=",")
    d = ds.load_california_housing(str(tmp_path))
    xtr, xte, ytr = _cal_reference(a)
    np.testing.assert_allclose(d.x_train, xtr, rtol=1e-5)
    np.testing.assert_allclose(d.x_test, xte, rtol=1e-5)
    np.testing.assert_allclose(d.y_train, ytr, rtol=1e-5, atol=1e-7)
    assert d.x_train.shape == (38, 8) and d.x_test.shape == (2, 8)
    # the handson-ml CSV: header, a text column, and one blank total_bedrooms (dropped with a warning)
    csv = tmp_path / "csv"
    csv.mkdir()
    header = "longitude,latitude,housing_median_age,total_rooms,total_bedrooms,population,households," \
             "median_income,median_house_value,ocean_proximity"
    lines = [header] + [",".join(f"{v:.10g}" for v in row) + ",NEAR BAY" for row in a]
    lines.append("-122.0,37.0,41.0,880.0,,322.0,126.0,8.3252,452600.0,NEAR BAY")
    (csv / "housing.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="dropped 1 rows"):
        d2 = ds.load_california_housing(str(csv))
    np.testing.assert_allclose(d2.x_train, xtr, rtol=1e-5)
    (csv / "housing.csv").write_text("a,b\n1,2\n")
    ds._load_california.cache_clear()
    with pytest.raises(ValueError, match="lacks the columns"):
        ds.load_california_housing(str(csv))


def test_standins_are_labelled_and_shaped():
    from sklearn.datasets import load_digits

    d = ds.load("digits")
    assert d.is_standin and "STAND-IN" in d.label and d.num_classes == 10
    assert d.x_train.shape == (1500, 32, 32, 1) and d.x_test.shape == (297, 32, 32, 1) and d.x_train.dtype == np.uint8
    raw = load_digits().images[7]
    np.testing.assert_array_equal(d.x_train[7, ::4, ::4, 0], np.round(raw * 255 / 16))  # nearest-neighbour ×4
    np.testing.assert_array_equal(d.x_train[7, 1::4, 2::4, 0], d.x_train[7, ::4, ::4, 0])
    r = ds.load("diabetes")
    assert r.is_standin and r.x_train.shape == (354, 10) and r.y_test.shape == (88, 1)
    assert r.x_train.min() == 0.0 and r.x_train.max() == 1.0


def test_load_by_name_errors_and_fallback(tmp_path):
    with pytest.raises(ValueError, match="unknown data set"):
        ds.load("mnist")
    with pytest.warns(UserWarning, match="stand-in 'diabetes'"):
        d = ds.load("sarcos", str(tmp_path / "none"), allow_standin=True)
    assert d.is_standin and d.name == "diabetes"
