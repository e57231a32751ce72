import json

import pytest

from xfer import pretrain
from xfer.config import PretrainConfig
from xfer.errors import XferError


def test_pretrain_smoke_files(lenet_mxnet):
    assert lenet_mxnet.with_name("lenet5-symbol.json").is_file()
    assert lenet_mxnet.with_name("lenet5-0000.params").is_file()
    info = json.loads(lenet_mxnet.with_name("lenet5.json").read_text())
    assert info["mxnet"] == "1.9.1" and info["train_size"] == 256 and len(info["history"]) == 1
    assert not list(lenet_mxnet.parent.glob(".*"))  # no temporary left beside the outputs


def test_pretrain_learns(tmp_path):
    from xfer.data.digits import DigitSet, load_embedded_digits

    d = load_embedded_digits(seed=0)
    small = DigitSet(d.x_train[:600], d.y_train[:600], d.x_test[:200], d.y_test[:200], d.source)
    info = pretrain.pretrain(small, tmp_path / "m", epochs=3, batch_size=32, seed=0, progress=False)
    assert info.test_accuracy > 0.7  # chance is 0.1
    assert [h["epoch"] for h in info.history] == [1, 2, 3]
    assert json.loads((tmp_path / "m.json").read_text())["test_accuracy"] == info.test_accuracy  # convert reads it


def test_bad_arguments():
    with pytest.raises(XferError, match="activation"):
        PretrainConfig(activation="swish")
    with pytest.raises(XferError, match="epochs"):
        PretrainConfig(epochs=0)
