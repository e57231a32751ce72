import pytest

from xfer import pretrain
from xfer.errors import XferError


def test_pretrain_smoke_files(lenet_mxnet):
    assert lenet_mxnet.with_name("lenet5-symbol.json").is_file()
    assert lenet_mxnet.with_name("lenet5-0000.params").is_file()
    assert lenet_mxnet.with_name("lenet5.json").is_file()


def test_pretrain_learns():
    from xfer.data.digits import DigitSet, load_embedded_digits

    d = load_embedded_digits(seed=0)
    small = DigitSet(d.x_train[:600], d.y_train[:600], d.x_test[:200], d.y_test[:200], d.source)
    _, history = pretrain.train(small, epochs=3, batch_size=32, seed=0, progress=False)
    assert history[-1]["test_acc"] > 0.7  # chance is 0.1


def test_bad_arguments():
    with pytest.raises(XferError, match="activation"):
        pretrain.build_lenet5("swish")
    with pytest.raises(XferError, match="epochs"):
        pretrain.train(None, epochs=0)
