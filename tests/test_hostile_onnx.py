"""Hostile ONNX files: external data anywhere a tensor can hold it, bad opsets and domains, bad xfer metadata.

Needs only numpy, onnx and xfer's graph module, so CI also runs it under the oldest onnx the package allows
(onnx 1.17, whose own external-data checks are weaker than today's): xfer's checks must not depend on them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from xfer.errors import XferError
from xfer.graph import all_tensors, load_model
from xfer.meta import KEYS, read_meta


def _external(t: onnx.TensorProto, location: str, offset: int = 0, length: int | None = None) -> onnx.TensorProto:
    """``t`` as an external tensor at ``location`` (its raw bytes dropped)."""
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length if length is not None else 16))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _model(nodes, inits=(), sparse=(), outputs=("y",), opset=17, functions=(), domains=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [4]) for o in outputs], list(inits),
                          sparse_initializer=list(sparse))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=ops, functions=list(functions))


def _tensor(name: str = "c") -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(4, np.float32), name)


def _save(tmp_path, model: onnx.ModelProto, name: str = "m.onnx"):
    d = tmp_path / "models"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_bytes(model.SerializeToString())  # raw: onnx.save would try to write the external data itself
    return p


def _if_with(tensor: onnx.TensorProto) -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Constant", [], ["t"], value=tensor)], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _model([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], inits=[cond])


def _sparse(tensor: onnx.TensorProto) -> onnx.SparseTensorProto:
    idx = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_idx")
    return helper.make_sparse_tensor(tensor, idx, [4])


PLACES = {
    "initializer": lambda t: _model([helper.make_node("Add", ["x", "c"], ["y"])], inits=[t]),
    "Constant node": lambda t: _model([helper.make_node("Constant", [], ["c"], value=t),
                                       helper.make_node("Add", ["x", "c"], ["y"])]),
    "If subgraph": _if_with,
    "sparse initializer": lambda t: _model([helper.make_node("Add", ["x", "c"], ["y"])], sparse=[_sparse(t)]),
    "function body": lambda t: _model(
        [helper.make_node("F", ["x"], ["y"], domain="custom")], domains=["custom"],
        functions=[helper.make_function("custom", "F", ["a"], ["b"],
                                        [helper.make_node("Constant", [], ["k"], value=t),
                                         helper.make_node("Add", ["a", "k"], ["b"])],
                                        [helper.make_opsetid("", 17)])]),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "link.bin"])
def test_external_data_outside_the_models_folder_is_refused_wherever_it_sits(tmp_path, place, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    p = _save(tmp_path, PLACES[place](_external(_tensor(), location)))
    os.symlink(tmp_path / "secret.bin", p.parent / "link.bin")  # inside by name, outside once resolved
    with pytest.raises(XferError, match="escapes the model's folder"):
        load_model(p)


@pytest.mark.parametrize("place", list(PLACES))
def test_every_place_a_tensor_sits_is_walked(place):
    found = [what for what, t in all_tensors(PLACES[place](_tensor())) if t.name == "c"]
    assert len(found) == 1, found


def test_external_data_past_the_end_of_its_file_is_refused(tmp_path):
    p = _save(tmp_path, PLACES["Constant node"](_external(_tensor(), "w.bin", offset=8, length=16)))
    (p.parent / "w.bin").write_bytes(b"\0" * 12)
    with pytest.raises(XferError, match=r"runs past the end of 'w.bin' \(12 bytes\)"):
        load_model(p)


def test_external_data_inside_the_folder_loads(tmp_path):
    p = _save(tmp_path, PLACES["initializer"](_external(_tensor(), "w.bin", length=16)))
    (p.parent / "w.bin").write_bytes(np.full(4, 2.0, np.float32).tobytes())
    m = load_model(p)
    assert np.array_equal(numpy_helper.to_array(m.graph.initializer[0]), np.full(4, 2.0, np.float32))


def test_a_custom_domain_without_an_opset_import_is_one_line(tmp_path):
    p = _save(tmp_path, _model([helper.make_node("Weird", ["x"], ["y"], domain="acme")]))
    with pytest.raises(XferError, match=f"{p}: invalid ONNX model"):
        load_model(p)


BAD_META = [("input_shape", "abc"), ("input_shape", [3, 100000, 100000]), ("input_shape", [2, 32, 32]),
            ("mean", [float("nan")]), ("std", [0]), ("std", [1e-9]), ("frozen", 5), ("classes", "happy"),
            ("split_seed", -1), ("test_accuracy", 2.0), ("train_all", "yes"), ("head", [0])]


@pytest.mark.parametrize("field,value", BAD_META, ids=[f"{f}={v}" for f, v in BAD_META])
def test_bad_metadata_is_one_line_naming_the_file_and_key(tmp_path, field, value):
    m = _model([helper.make_node("Relu", ["x"], ["y"])])
    p_ = m.metadata_props.add()
    p_.key, p_.value = KEYS[field], json.dumps(value) if value == value else "NaN"
    path = _save(tmp_path, m)
    with pytest.raises(XferError, match=f"{path}: model metadata '{KEYS[field]}': expected") as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_good_metadata_reads():
    m = _model([helper.make_node("Relu", ["x"], ["y"])])
    for k, v in {"input_shape": [3, 64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25], "classes": ["a", "b"]}.items():
        p = m.metadata_props.add()
        p.key, p.value = KEYS[k], json.dumps(v)
    meta = read_meta(m)
    assert meta.input_shape == [3, 64, 64] and meta.std == [0.25]
