"""The graph view surgery shares: its maps stay current through the passes, and the source's geometry is kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from xfer.graph import consumers, producers, shapes
from xfer.surgery import apply, retarget_input
from xfer.surgery.canon import canonical_head, canonical_input, fold_constants
from xfer.surgery.view import View


def _shuffle_cnn(batch: int = 1, size: int = 8) -> onnx.ModelProto:
    """Conv -> a channel shuffle written with reshapes that hard-code batch 1 and 8x8 -> pool -> Gemm -> Softmax."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([batch, 2, 2, size, size], np.int64), "s5"),
             numpy_helper.from_array(np.array([batch, 4, size, size], np.int64), "s4"),
             numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "s5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "s4"], ["r4"]),
             helper.make_node("Relu", ["r4"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"])]
    g = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _maps_are_current(v: View) -> None:
    assert {k: id(n) for k, n in v.producers.items()} == {k: id(n) for k, n in producers(v.graph).items()}
    assert {k: [id(n) for n in ns] for k, ns in v.consumers.items()} == \
        {k: [id(n) for n in ns] for k, ns in consumers(v.graph).items()}
    assert v.shapes == shapes(v.model)
    assert set(v.inits) == {t.name for t in v.graph.initializer}


def test_the_maps_stay_current_through_every_pass():
    v = View(_shuffle_cnn())
    for step in (fold_constants, canonical_input, canonical_head, lambda w: retarget_input(w, 1, (16, 12))):
        v.producers, v.consumers, v.shapes, v.inits  # noqa: B018  (read every map, so a stale one would show)
        step(v)
        _maps_are_current(v)
    assert "y" not in v.producers or v.producers["y"].op_type == "Gemm"  # the softmax went, the head emits logits


def test_the_source_geometry_is_the_views_not_the_callers():
    """Reshapes that hard-code the source's batch and size follow the new input with no separate pass to call."""
    v = View(_shuffle_cnn())
    assert v.source_batch == 1 and v.source_input == [3, 8, 8]
    canonical_input(v)
    retarget_input(v, 3, (16, 12))
    sess = ort.InferenceSession(v.model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.zeros((4, 3, 16, 12), np.float32)})[0]
    assert y.shape == (4, 5)


def test_surgery_rewrites_the_shuffle_for_every_mode():
    for mode in ("reuse", "frozen"):
        m = apply(mode, _shuffle_cnn(), ["a", "b", "c"], channels=1, size=(20, 20), head=(8,))
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        assert sess.run(None, {m.graph.input[0].name: np.zeros((2, 1, 20, 20), np.float32)})[0].shape == (2, 3)
