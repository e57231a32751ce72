import shutil

import onnx
import pytest

from xfer import convert
from xfer.config import ConvertConfig
from xfer.errors import XferError
from xfer.graph import load_model
from xfer.meta import read_meta


def test_parity_and_cleanup(lenet_mxnet, lenet_onnx):
    model = onnx.load(lenet_onnx)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert not {i.name for i in model.graph.initializer} & {i.name for i in model.graph.input}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Flatten") == 1 and ops.count("Gemm") == 3 and ops.count("Conv") == 2
    meta = read_meta(model)
    assert meta.classes == [str(i) for i in range(10)]
    assert meta.input_shape == [1, 28, 28]
    again, diff = convert.export(f"{lenet_mxnet}-symbol.json", f"{lenet_mxnet}-0000.params", (1, 28, 28), {}, seed=1)
    assert 0 < diff <= 1e-5  # MXNet's outputs came back from the pretraining environment and agree with ORT's
    assert [n.op_type for n in again.graph.node] == ops


def test_mismatched_params(lenet_mxnet, lenet7_mxnet, tmp_path):
    other = tmp_path / "other"
    shutil.copy(f"{lenet7_mxnet}-0000.params", f"{other}-0000.params")
    shutil.copy(f"{lenet_mxnet}-symbol.json", f"{other}-symbol.json")
    with pytest.raises(XferError, match=r"other-0000.params: parameters do not match other-symbol.json \('lenet5_fc3_weight' is "):
        convert.main(ConvertConfig(model=str(other), out=str(tmp_path / "o.onnx")))
    assert not (tmp_path / "o.onnx").exists()


def test_corrupt_sidecar(lenet_mxnet, tmp_path):
    other = tmp_path / "m"
    for suffix in ("-symbol.json", "-0000.params"):
        shutil.copy(f"{lenet_mxnet}{suffix}", f"{other}{suffix}")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(XferError, match="m.json: not a JSON sidecar"):
        convert.main(ConvertConfig(model=str(other), out=str(tmp_path / "o.onnx")))


def test_missing_model(tmp_path):
    with pytest.raises(XferError, match="no such file"):
        convert.main(ConvertConfig(model=str(tmp_path / "x"), out=str(tmp_path / "x.onnx")))


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"\x00garbage\xff" * 7, "not an ONNX model")])
def test_load_model_errors(tmp_path, content, match):
    p = tmp_path / "m.onnx"
    p.write_bytes(content)
    with pytest.raises(XferError, match=match):
        load_model(p)


def test_truncated_model(lenet_onnx, tmp_path):
    p = tmp_path / "t.onnx"
    p.write_bytes(lenet_onnx.read_bytes()[:500])
    with pytest.raises(XferError, match="t.onnx"):
        load_model(p)
