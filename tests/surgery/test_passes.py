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
