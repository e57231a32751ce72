"""Shared fixtures: tiny synthetic data and a tiny pretrained model, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XFER_PROGRESS", "0")
sys.path.insert(0, os.path.dirname(__file__))  # shared helpers such as cnn_zoo

from cnn_zoo import VARIANTS  # noqa: E402


def pytest_collection_modifyitems(config, items):
    from xfer.preprocess import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and the CUDA build of xfer._C")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A synthetic FERG-DB tree: 6 characters x 7 emotions x 3 images."""
    from xfer.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "ferg", per_class=3, seed=0, workers=1, progress=False)


@pytest.fixture(scope="session")
def synth_pack(synth_root, tmp_path_factory) -> Path:
    from xfer.data.formats import pack_folder

    return pack_folder(synth_root, tmp_path_factory.mktemp("pack") / "ferg.xpack", progress=False)


@pytest.fixture(scope="session")
def lenet_mxnet(tmp_path_factory) -> Path:
    """A LeNet-5 trained for one epoch on a slice of the embedded digits, in the pretraining environment.

    Returns the MXNet prefix. The first run on a machine builds that environment (a one-time pip install).
    """
    from xfer import pretrain
    from xfer.data.digits import DigitSet, load_embedded_digits

    d = load_embedded_digits(seed=0)
    small = DigitSet(d.x_train[:256], d.y_train[:256], d.x_test[:64], d.y_test[:64], d.source)
    prefix = tmp_path_factory.mktemp("lenet") / "lenet5"
    pretrain.pretrain(small, prefix, epochs=1, batch_size=64, seed=0, progress=False)
    return prefix


@pytest.fixture(scope="session")
def lenet7_mxnet(tmp_path_factory) -> Path:
    """An untrained 7-way LeNet-5 (symbol + params), made with the pretraining environment's MXNet."""
    import subprocess

    from xfer import envs

    python, _ = envs.interpreter()
    prefix = tmp_path_factory.mktemp("lenet7") / "lenet7"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import mxnet_worker as w; import mxnet as mx; "
            "net = w.build_lenet5('relu', classes=7); net.initialize(mx.init.Xavier()); net.hybridize(); "
            "net(mx.nd.zeros((1, 1, 28, 28))); w._export_block(net, sys.argv[2])")
    subprocess.run([str(python), "-I", "-c", code, str(envs.WORKERS), str(prefix)], check=True)
    return prefix


@pytest.fixture(scope="session")
def lenet_onnx(lenet_mxnet) -> Path:
    from xfer import convert

    out = lenet_mxnet.parent / "lenet5.onnx"
    from xfer.config import ConvertConfig

    convert.main(ConvertConfig(model=str(lenet_mxnet), out=str(out)))
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(params=range(len(VARIANTS)), ids=lambda i: "-".join(f"{k}={v}" for k, v in VARIANTS[i].items()) or "default")
def cnn(request):
    """Each plain-CNN variant of ``cnn_zoo`` in turn."""
    from cnn_zoo import make_cnn

    return make_cnn(**VARIANTS[request.param])


@pytest.fixture(scope="session")
def trained_frozen(synth_pack, lenet_onnx, tmp_path_factory) -> Path:
    """A frozen-mode model trained for one epoch on the tiny synthetic pack."""
    from xfer import train

    out = tmp_path_factory.mktemp("trained")
    from xfer.config import TrainConfig

    train.main(TrainConfig(mode="frozen", data=str(synth_pack), source=str(lenet_onnx), epochs=1, batch_size=32,
                           lr=1e-3, out=str(out), head=(64, 32)))
    return out / "frozen.onnx"
