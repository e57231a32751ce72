"""One-node graphs for every op the importer lists, each compared with ONNX Runtime.

``CASES`` must cover ``supported_ops()`` exactly: adding a converter without a
test here fails ``test_every_supported_op_has_a_case``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from xfer.errors import XferError
from xfer.importer import register, supported_ops, to_torch
from xfer.importer.registry import REGISTRY

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values):
    return np.array(values, np.int64)


def case(op, inputs, attrs=None, inits=None, opset=17, outputs=1, atol=1e-5):
    """``inputs``: arrays fed at run time; ``inits``: arrays stored as initializers (after the inputs)."""
    return dict(op=op, inputs=inputs, attrs=attrs or {}, inits=inits or [], opset=opset, outputs=outputs, atol=atol)


X4 = f32(2, 3, 7, 7)
CASES = {
    "Conv": [case("Conv", [X4], {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, [f32(4, 3, 3, 3)]),
             case("Conv", [X4], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}, [f32(4, 3, 2, 2), f32(4)]),
             case("Conv", [X4], {"kernel_shape": [3, 3], "auto_pad": "VALID", "dilations": [2, 2]}, [f32(4, 3, 3, 3)])],
    "ConvTranspose": [case("ConvTranspose", [X4], {"strides": [2, 2], "pads": [1, 1, 0, 0], "output_padding": [1, 1]},
                           [f32(3, 2, 3, 3), f32(2)]),
                      case("ConvTranspose", [X4], {"group": 3}, [f32(3, 1, 2, 2)])],
    "Gemm": [case("Gemm", [f32(3, 5)], {"transB": 1, "alpha": 0.5, "beta": 2.0}, [f32(4, 5), f32(4)])],
    "MatMul": [case("MatMul", [f32(2, 3, 5)], {}, [f32(5, 4)])],
    "Add": [case("Add", [f32(2, 3, 4), f32(3, 4)])],
    "Sub": [case("Sub", [f32(2, 3, 4), f32(4)])],
    "Mul": [case("Mul", [f32(2, 3, 4), f32(1, 3, 1)])],
    "Div": [case("Div", [f32(2, 3), np.abs(f32(2, 3)) + 0.5]),
            case("Div", [np.array([7, -7, 9], np.int32), np.array([2, 2, -4], np.int32)])],
    "Sum": [case("Sum", [f32(2, 3), f32(3), f32(2, 1)])],
    "Mean": [case("Mean", [f32(2, 3), f32(3), f32(2, 3)])],
    "Max": [case("Max", [f32(2, 3), f32(3), f32(2, 1)])],
    "Min": [case("Min", [f32(2, 3), f32(2, 3)])],
    "Relu": [case("Relu", [f32(3, 7)])],
    "Tanh": [case("Tanh", [f32(3, 7)])],
    "Sigmoid": [case("Sigmoid", [f32(3, 7)])],
    "Identity": [case("Identity", [f32(3, 7)])],
    "LeakyRelu": [case("LeakyRelu", [f32(3, 7)]), case("LeakyRelu", [f32(3, 7)], {"alpha": 0.3})],
    "Elu": [case("Elu", [f32(3, 7)]), case("Elu", [f32(3, 7)], {"alpha": 0.5})],
    "Clip": [case("Clip", [f32(3, 7)], {}, [np.float32(-0.5), np.float32(0.7)]),
             case("Clip", [f32(3, 7)], {"min": -0.2, "max": 0.3}, opset=9)],
    "Cast": [case("Cast", [f32(3, 7) * 4], {"to": TensorProto.INT64}), case("Cast", [f32(3, 7)], {"to": TensorProto.DOUBLE})],
    "Softmax": [case("Softmax", [f32(2, 3, 4)], {"axis": 1}), case("Softmax", [f32(2, 3, 4)], {"axis": 1}, opset=11)],
    "LogSoftmax": [case("LogSoftmax", [f32(2, 3, 4)]), case("LogSoftmax", [f32(2, 3, 4)], {"axis": 1}, opset=11)],
    "Dropout": [case("Dropout", [f32(2, 5)], outputs=2), case("Dropout", [f32(2, 5)], {"ratio": 0.3}, opset=9)],
    "BatchNormalization": [case("BatchNormalization", [X4], {"epsilon": 1e-3},
                                [f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5])],
    "LRN": [case("LRN", [X4], {"size": 3}), case("LRN", [f32(2, 6, 4, 4)], {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0})],
    "MaxPool": [case("MaxPool", [X4], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
                case("MaxPool", [X4], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
                case("MaxPool", [X4], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})],
    "AveragePool": [case("AveragePool", [X4], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
                    case("AveragePool", [X4], {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]})],
    "GlobalAveragePool": [case("GlobalAveragePool", [X4])],
    "GlobalMaxPool": [case("GlobalMaxPool", [X4])],
    "Flatten": [case("Flatten", [X4], {"axis": 2})],
    "Reshape": [case("Reshape", [X4], {}, [i64(0, -1)])],
    "Concat": [case("Concat", [X4, X4[:, :1]], {"axis": 1})],
    "Transpose": [case("Transpose", [X4], {"perm": [0, 2, 3, 1]}), case("Transpose", [f32(2, 3, 4)])],
    "Squeeze": [case("Squeeze", [f32(2, 1, 3, 1)], {}, [i64(1, -1)]), case("Squeeze", [f32(2, 1, 3, 1)], {"axes": [1]}, opset=11)],
    "Unsqueeze": [case("Unsqueeze", [f32(2, 3)], {}, [i64(0, -1)]), case("Unsqueeze", [f32(2, 3)], {"axes": [1]}, opset=11)],
    "Shape": [case("Shape", [X4]), case("Shape", [X4], {"start": 1, "end": -1})],
    "Gather": [case("Gather", [X4], {"axis": 1}, [i64(2, -1, 0)]), case("Gather", [f32(5, 3)], {}, [np.array(-2, np.int64)])],
    "Slice": [case("Slice", [X4], {}, [i64(1, 0), i64(100, -2), i64(2, 3)]),
              case("Slice", [X4], {}, [i64(-1), i64(-100), i64(3), i64(-2)])],
    "Pad": [case("Pad", [X4], {"mode": "constant"}, [i64(0, 0, 1, 2, 0, 0, 2, 1), np.float32(0.5)]),
            case("Pad", [X4], {"mode": "reflect"}, [i64(0, 0, 1, 2, 0, 0, 2, 1)]),
            case("Pad", [X4], {"mode": "edge"}, [i64(0, 0, 0, 2, 0, 0, 1, 0)])],
    "Constant": [case("Constant", [], {"value": numpy_helper.from_array(f32(2, 3))}),
                 case("Constant", [], {"value_floats": [1.0, 2.5]}), case("Constant", [], {"value_int": 4})],
    "ReduceMean": [case("ReduceMean", [X4], {"axes": [2, 3]}, opset=17),
                   case("ReduceMean", [X4], {"keepdims": 0}, [i64(-1, -2)], opset=18),
                   case("ReduceMean", [X4], {"noop_with_empty_axes": 1}, opset=18)],
    "ReduceSum": [case("ReduceSum", [X4], {"keepdims": 0}, [i64(1)]),
                  case("ReduceSum", [np.arange(24, dtype=np.int32).reshape(2, 3, 4)], {}, [i64(0, 2)])],
    "ReduceMax": [case("ReduceMax", [X4], {"axes": [1], "keepdims": 0}, opset=17), case("ReduceMax", [X4], {}, [i64(-1)], opset=20)],
    "ReduceMin": [case("ReduceMin", [X4], {"axes": [0, 3]}, opset=13), case("ReduceMin", [X4], {"keepdims": 0}, opset=18)],
    "ReduceProd": [case("ReduceProd", [f32(2, 3, 4)], {"axes": [1]}, opset=17)],
    "ReduceL1": [case("ReduceL1", [f32(2, 3, 4)], {}, [i64(2)], opset=18)],
    "ReduceL2": [case("ReduceL2", [f32(2, 3, 4)], {"axes": [2, 1], "keepdims": 0}, opset=17)],
    "ReduceSumSquare": [case("ReduceSumSquare", [f32(2, 3, 4)], {"axes": [0]}, opset=17)],
    "ReduceLogSum": [case("ReduceLogSum", [np.abs(f32(2, 3, 4)) + 0.1], {"axes": [1]}, opset=17)],
    "ReduceLogSumExp": [case("ReduceLogSumExp", [f32(2, 3, 4)], {}, [i64(-1)], opset=18)],
    "ArgMax": [case("ArgMax", [f32(3, 5)], {"axis": 1}), case("ArgMax", [np.array([[1, 3, 3]], np.float32)], {"select_last_index": 1})],
    "ArgMin": [case("ArgMin", [f32(3, 5)], {"axis": 0, "keepdims": 0})],
    "CumSum": [case("CumSum", [f32(3, 5)], {}, [np.array(1, np.int64)]),
               case("CumSum", [f32(3, 5)], {"exclusive": 1, "reverse": 1}, [np.array(0, np.int64)])],
    "LayerNormalization": [case("LayerNormalization", [f32(2, 5, 8)], {}, [np.abs(f32(8)) + 0.5, f32(8)]),
                           case("LayerNormalization", [f32(2, 5, 8)], {"axis": 1, "epsilon": 1e-3}, [f32(5, 8)], outputs=3)],
    "GroupNormalization": [case("GroupNormalization", [f32(2, 6, 3, 3)], {"num_groups": 3}, [f32(6), f32(6)], opset=21),
                           case("GroupNormalization", [f32(2, 6, 3, 3)], {"num_groups": 2}, [f32(2), f32(2)], opset=18)],
    "InstanceNormalization": [case("InstanceNormalization", [X4], {"epsilon": 1e-3}, [f32(3), f32(3)])],
    "Erf": [case("Erf", [f32(3, 7)])],
    "Gelu": [case("Gelu", [f32(3, 7)], opset=20), case("Gelu", [f32(3, 7)], {"approximate": "tanh"}, opset=20)],
    "HardSwish": [case("HardSwish", [f32(3, 7) * 4])],
    "HardSigmoid": [case("HardSigmoid", [f32(3, 7) * 4]), case("HardSigmoid", [f32(3, 7) * 4], {"alpha": 1 / 6, "beta": 0.5})],
    "Softplus": [case("Softplus", [f32(3, 7) * 10])],
    "Mish": [case("Mish", [f32(3, 7) * 3], opset=18)],
    "Softsign": [case("Softsign", [f32(3, 7)])],
    "Selu": [case("Selu", [f32(3, 7)]), case("Selu", [f32(3, 7)], {"alpha": 2.0, "gamma": 3.0})],
    "PRelu": [case("PRelu", [X4], {}, [f32(3, 1, 1)])],
    "Sqrt": [case("Sqrt", [np.abs(f32(3, 7))])],
    "Reciprocal": [case("Reciprocal", [np.abs(f32(3, 7)) + 0.5])],
    "Exp": [case("Exp", [f32(3, 7)])],
    "Log": [case("Log", [np.abs(f32(3, 7)) + 0.1])],
    "Floor": [case("Floor", [f32(3, 7) * 3])],
    "Ceil": [case("Ceil", [f32(3, 7) * 3])],
    "Round": [case("Round", [np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.4], np.float32)])],
    "Sin": [case("Sin", [f32(3, 7)])],
    "Cos": [case("Cos", [f32(3, 7)])],
    "Neg": [case("Neg", [f32(3, 7)]), case("Neg", [np.array([3, -2, 0], np.int64)])],
    "Abs": [case("Abs", [f32(3, 7)]), case("Abs", [np.array([3, -2, 0], np.int32)])],
    "Sign": [case("Sign", [f32(3, 7)])],
    "Pow": [case("Pow", [np.abs(f32(3, 4)) + 0.1, f32(4)]), case("Pow", [f32(3, 4)], {}, [np.array(2, np.int64)]),
            case("Pow", [np.array([2, 3, -4], np.int64), np.array([3, 2, 2], np.int64)])],
    "Mod": [case("Mod", [np.array([7, -7, 7, -7], np.int64), np.array([3, 3, -3, -3], np.int64)]),
            case("Mod", [np.array([7, -7, 7, -7], np.int32), np.array([3, 3, -3, -3], np.int32)], {"fmod": 1}),
            case("Mod", [f32(3, 4) * 5, np.abs(f32(4)) + 1], {"fmod": 1})],
    "Equal": [case("Equal", [np.array([1, 2, 3], np.int64), np.array([1, 0, 3], np.int64)])],
    "Less": [case("Less", [f32(3, 4), f32(4)])],
    "Greater": [case("Greater", [f32(3, 4), f32(3, 1)])],
    "LessOrEqual": [case("LessOrEqual", [np.array([1, 2, 3], np.int32), np.array([2, 2, 2], np.int32)])],
    "GreaterOrEqual": [case("GreaterOrEqual", [f32(3, 4), f32(4)])],
    "Not": [case("Not", [np.array([True, False, True])])],
    "And": [case("And", [np.array([True, False, True]), np.array([True, True, False])])],
    "Or": [case("Or", [np.array([True, False, False]), np.array([True, True, False])])],
    "Xor": [case("Xor", [np.array([True, False, False]), np.array([True, True, False])])],
    "Where": [case("Where", [f32(3, 4) > 0, f32(3, 4), f32(4)])],
    "Split": [case("Split", [f32(2, 6, 3)], {"axis": 1}, [i64(2, 4)], outputs=2),
              case("Split", [f32(2, 7, 3)], {"axis": 1, "num_outputs": 3}, opset=18, outputs=3),
              case("Split", [f32(2, 6, 3)], {"axis": 1, "split": [1, 5]}, opset=11, outputs=2)],
    "ConstantOfShape": [case("ConstantOfShape", [i64(2, 3)]),
                        case("ConstantOfShape", [i64(3)], {"value": numpy_helper.from_array(np.array([7], np.int64))})],
    "Expand": [case("Expand", [f32(3, 1)], {}, [i64(2, 1, 4)])],
    "Tile": [case("Tile", [f32(2, 3)], {}, [i64(2, 2)])],
    "Range": [case("Range", [np.array(1, np.int64), np.array(10, np.int64), np.array(3, np.int64)]),
              case("Range", [np.array(0.5, np.float32), np.array(-2.0, np.float32), np.array(-0.75, np.float32)])],
    "Einsum": [case("Einsum", [f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij, bjk -> bik"})],
    "GatherElements": [case("GatherElements", [f32(3, 4)], {"axis": 1}, [np.array([[0, -1], [2, 1], [3, 0]], np.int64)])],
    "GatherND": [case("GatherND", [f32(3, 4, 5)], {}, [np.array([[0, 1], [2, -1]], np.int64)]),
                 case("GatherND", [f32(2, 3, 4)], {"batch_dims": 1}, [np.array([[[1], [0]], [[2], [2]]], np.int64)])],
    "ScatterND": [case("ScatterND", [f32(4, 3)], {}, [np.array([[1], [3]], np.int64), f32(2, 3)]),
                  case("ScatterND", [f32(4, 3)], {"reduction": "add"}, [np.array([[1, 2], [1, 2]], np.int64), f32(2)])],
    "CastLike": [case("CastLike", [f32(3, 7) * 4, np.zeros(1, np.int32)])],
    "GridSample": [case("GridSample", [X4, (np.random.default_rng(4).random((2, 5, 4, 2)) * 2.4 - 1.2).astype(np.float32)],
                        {"padding_mode": "border"}, atol=1e-4)],
    "Resize": [case("Resize", [X4], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
                    [np.zeros(0, np.float32), np.array([1, 1, 2, 2], np.float32)]),
               case("Resize", [X4], {"mode": "linear"}, [np.zeros(0, np.float32), np.array([1, 1, 1.5, 2], np.float32)]),
               case("Resize", [X4], {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                    [np.zeros(0, np.float32), np.zeros(0, np.float32), i64(2, 3, 5, 9)]),
               case("Resize", [X4], {"mode": "cubic"}, [np.zeros(0, np.float32), np.array([1, 1, 2, 2], np.float32)]),
               case("Resize", [X4], {"mode": "linear", "axes": [2, 3]}, [None, None, i64(4, 3)], opset=18)],
    "Upsample": [case("Upsample", [X4], {"mode": "nearest"}, [np.array([1, 1, 2, 3], np.float32)], opset=9)],
}


def _model(c):
    inputs = [(f"x{i}", a) for i, a in enumerate(c["inputs"])]
    inits = [(f"c{i}" if a is not None else "", a) for i, a in enumerate(c["inits"])]  # None: an omitted input
    outs = ["y"] + [f"y{i}" for i in range(1, c["outputs"])]
    node = helper.make_node(c["op"], [n for n, _ in inputs + inits], outs, **c["attrs"])
    g = helper.make_graph(
        [node], "one",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits if a is not None])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", c["opset"])])
    m.ir_version = 8
    return m, inputs


PARAMS = [(op, i, c) for op, cs in CASES.items() for i, c in enumerate(cs)]


@pytest.mark.parametrize("op,i,c", PARAMS, ids=[f"{op}-{i}" for op, i, _ in PARAMS])
def test_converter_matches_onnxruntime(op, i, c):
    m, inputs = _model(c)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, dict(inputs))
    with torch.no_grad():
        got = to_torch(m).eval()(*[torch.from_numpy(np.asarray(a)) for _, a in inputs])
    got = got if isinstance(got, tuple) else (got,)
    for g, r in zip(got, ref):
        g = g.numpy()
        assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, g.dtype, r.shape, r.dtype)
        np.testing.assert_allclose(g, r, atol=c["atol"], rtol=1e-5)


def test_every_supported_op_has_a_case():
    assert set(CASES) == set(supported_ops())


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="registered twice"):
        register("Conv", until=22)(lambda node, a, opset: None)
    assert REGISTRY["Conv"].fn.__name__ == "conv"


def test_op_version_outside_range_is_refused():
    c = case("ReduceLogSum", [f32(2, 3)], {}, [i64(1)], opset=28)  # version 28 of the op: no converter implements it
    m, _ = _model(c)
    with pytest.raises(XferError, match=r"op version 28 .*versions 1-18"):
        to_torch(m)


def test_old_op_versions_are_converted_first():
    c = case("BatchNormalization", [X4], {}, [f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5], opset=6)
    m, inputs = _model(c)
    mod = to_torch(m).eval()
    assert (mod.source_opset, mod.opset) == (6, 7)
    x = inputs[0][1]
    inv = 1 / np.sqrt(c["inits"][3] + 1e-5)
    want = (x - c["inits"][2][:, None, None]) * (inv * c["inits"][0])[:, None, None] + c["inits"][1][:, None, None]
    with torch.no_grad():
        np.testing.assert_allclose(mod(torch.from_numpy(x)).numpy(), want, atol=1e-5, rtol=1e-5)


def test_buffers_are_declared_at_registration():
    m, _ = _model(CASES["BatchNormalization"][0])
    mod = to_torch(m)
    assert {n for n, _ in mod.named_parameters()} == {"params.t0_c0", "params.t1_c1"}
    assert REGISTRY["BatchNormalization"].buffers == (3, 4)


def test_unsupported_types_are_refused_naming_the_node():
    m, _ = _model(case("Add", [np.arange(3, dtype=np.uint32), np.arange(3, dtype=np.uint32)]))
    with pytest.raises(XferError, match=r"node 'y' \(Add\): UINT32 tensors are not supported"):
        to_torch(m)


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    m, inputs = _model(CASES["BatchNormalization"][0])
    mod = to_torch(m, frozen={"c0", "c1"}).train()
    before = [b.clone() for b in mod.buffers()]
    mod(torch.from_numpy(inputs[0][1]))
    assert all(torch.equal(a, b) for a, b in zip(before, mod.buffers()))


def test_readme_lists_exactly_the_supported_ops():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"<!-- ops -->\n(.*)\n<!-- /ops -->", text).group(1)
    assert listed == ", ".join(sorted(supported_ops()))
