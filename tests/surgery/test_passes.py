import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cnn_zoo import make_cnn
from xfer.data.ferg import EMOTIONS
from xfer.errors import XferError
from xfer.graph import initializers
from xfer.meta import read_meta
from xfer.surgery import MODES, apply, get_frozen, replace_head, retarget_input
from xfer.surgery.inputs import adapt_channels


def run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels,size", [(1, 32), (3, 48)])
def test_recipes_run_in_ort(cnn, mode, channels, size):
    m = apply(mode, cnn, list(EMOTIONS), channels, (size, size))
    onnx.checker.check_model(m)
    y = run(m, np.zeros((2, channels, size, size), np.float32))
    assert y.shape == (2, 7)
    meta = read_meta(m)
    assert meta.mode == mode and meta.classes == list(EMOTIONS)
    assert meta.input_shape == [channels, size, size] and meta.init_seed == 0
    frozen = get_frozen(m)
    inits = initializers(m)
    src = initializers(cnn)
    if mode in ("scratch", "finetune"):
        assert not frozen
    if mode == "frozen":
        assert "c1_w" in frozen and "c2_w" in frozen and not any(k.startswith("head_") for k in frozen)
        np.testing.assert_array_equal(inits["c2_w"], src["c2_w"])
        widths = [v.shape[0] for k, v in inits.items() if k.startswith("head_fc") and k.endswith("_weight")]
        assert widths == [1000, 500, 200, 7]
    if mode == "reuse":
        assert "c2_w" in frozen and "c1_w" not in frozen and "fc2_w" not in frozen
        np.testing.assert_array_equal(inits["c2_w"], src["c2_w"])
    if mode == "scratch":
        assert not np.array_equal(inits["c2_w"], src["c2_w"])


def test_reuse_keeps_first_fc_when_width_unchanged():
    m = apply("reuse", make_cnn(size=28), list(EMOTIONS), 1, (28, 28))
    assert "fc1_w" in get_frozen(m)
    np.testing.assert_array_equal(initializers(m)["fc1_w"], initializers(make_cnn(size=28))["fc1_w"])
    m = apply("reuse", make_cnn(size=28), list(EMOTIONS), 1, (32, 32))
    assert "fc1_w" not in get_frozen(m)


def test_train_all_freezes_nothing():
    assert not get_frozen(apply("reuse", make_cnn(), list(EMOTIONS), train_all=True))


def test_channel_adaptation_preserves_gray_response():
    m = make_cnn(size=28)
    m3 = onnx.ModelProto()
    m3.CopyFrom(m)
    retarget_input(m3, 3, (28, 28), "average")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(run(m3, np.repeat(x, 3, axis=1)), run(m, x), rtol=1e-4, atol=1e-4)


def test_adapt_channels_modes():
    w = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1)
    assert adapt_channels(w, 1, "average").shape == (2, 1, 1, 1)
    np.testing.assert_allclose(adapt_channels(w, 1, "average")[:, 0, 0, 0], w.sum(axis=1)[:, 0, 0])
    np.testing.assert_array_equal(adapt_channels(w, 4, "replicate")[:, 3], w[:, 0])
    with pytest.raises(XferError):
        adapt_channels(w, 2, "median")


def test_replace_head_custom_widths():
    m = make_cnn()
    replace_head(m, (64, 16), 3)
    from xfer.graph import finalize

    m = finalize(m)
    assert run(m, np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 3)


def test_bad_arguments():
    with pytest.raises(XferError, match="--mode"):
        apply("distill", make_cnn(), list(EMOTIONS))
    with pytest.raises(XferError, match="input-size"):
        apply("frozen", make_cnn(), list(EMOTIONS), size=(0, 32))
    with pytest.raises(XferError, match="too small|feature map"):
        apply("frozen", make_cnn(), list(EMOTIONS), size=(8, 8))


def test_lenet_from_converter(lenet_onnx):
    src = onnx.load(lenet_onnx)
    for mode in MODES:
        m = apply(mode, src, list(EMOTIONS), 1, (32, 32))
        assert run(m, np.zeros((3, 1, 32, 32), np.float32)).shape == (3, 7)


def test_a_fifth_mode_is_one_recipe(cnn, monkeypatch, tmp_path):
    """A throw-away mode (fresh body under a new MLP head) registered as one row: surgery, the learning rate, the
    CLI's choices and the config's check all take it, and the study's Table 1 shows it without a study value."""
    from xfer import config
    from xfer.cli import build_parser
    from xfer.config import RECIPES, Recipe, TrainConfig, default_lr

    monkeypatch.setitem(RECIPES, "mlp-scratch", Recipe("mlp-scratch", "fresh", "replace", "all", 2e-3,
                                                       "a fresh body under a new MLP head"))
    m = apply("mlp-scratch", cnn, list(EMOTIONS), 1, (32, 32), head=(16,))
    inits, src = initializers(m), initializers(cnn)
    assert not get_frozen(m) and read_meta(m).mode == "mlp-scratch"
    assert not np.array_equal(inits["c2_w"], src["c2_w"])  # the body is fresh
    assert [v.shape[0] for k, v in inits.items() if k.startswith("head_fc") and k.endswith("_weight")] == [16, 7]
    assert default_lr("mlp-scratch") == 2e-3 and TrainConfig(mode="mlp-scratch").learning_rate == 2e-3
    assert build_parser().parse_args(["train", "--mode", "mlp-scratch"]).mode == "mlp-scratch"
    with pytest.raises(XferError, match="--mode: expected one of reuse, scratch, frozen, finetune, mlp-scratch"):
        config.recipe("nope")


def _with_input_scaling(cnn):
    """A Keras-style Rescaling + Normalization before the first conv: x * s + m, then * r, per channel."""
    from onnx import helper, numpy_helper

    g = cnn.graph
    consts = {"s": np.full((1, 3, 1, 1), 1 / 255, np.float32), "m": np.array([-0.4, -0.5, -0.6], np.float32).reshape(1, 3, 1, 1),
              "r": np.array([4.0, 4.5, 5.0], np.float32).reshape(1, 3, 1, 1)}
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    first = next(n for n in g.node if n.op_type == "Conv")
    first.input[0] = "scaled"
    pre = [helper.make_node("Mul", ["input", "s"], ["a"]), helper.make_node("Add", ["a", "m"], ["b"]),
           helper.make_node("Mul", ["b", "r"], ["scaled"])]
    for i, n in enumerate(pre):
        g.node.insert(i, n)
    return cnn


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_a_normalisation_before_the_first_conv_is_part_of_the_input(mode, channels):
    """EfficientNet from Keras scales its input per channel before the first conv: surgery finds that conv behind it,
    and a gray target gets the channels' mean of the constants (no broadcast back to 3 channels)."""
    m = apply(mode, _with_input_scaling(make_cnn(channels=3)), list(EMOTIONS), channels, (32, 32))
    assert run(m, np.zeros((2, channels, 32, 32), np.float32)).shape == (2, 7)
    if channels == 1:
        assert initializers(m)["r"].shape == (1, 1, 1, 1) and initializers(m)["r"].item() == pytest.approx(4.5)


def _conv_class_maps(classes: int = 7):
    """mini-Xception's head: a 3x3 conv with one map per class, a global average pool, a softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"c1": (8, 1, 3, 3), "c2": (8, 8, 3, 3), "cls": (classes, 8, 3, 3)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), k) for k, s in w.items()]
    nodes = [helper.make_node("Conv", ["input", "c1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "c2"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("Conv", ["d", "cls"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["e"], ["f"]), helper.make_node("Flatten", ["f"], ["g"]),
             helper.make_node("Softmax", ["g"], ["logits"])]
    graph = helper.make_graph(nodes, "classmaps", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("mode", MODES)
def test_a_conv_of_class_maps_under_a_global_pool_is_the_classifier(mode):
    from xfer.surgery.cut import find_boundary

    src = _conv_class_maps()
    b = find_boundary(src)
    assert b.classifier.input[1] == "cls" and b.features == "d" and b.pool == "GlobalAveragePool"
    m = apply(mode, src, list(EMOTIONS), 1, (32, 32))
    assert run(m, np.zeros((2, 1, 32, 32), np.float32)).shape == (2, 7)
    if mode == "frozen":
        assert "c2" in get_frozen(m) and "cls" not in initializers(m)
