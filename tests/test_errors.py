"""Bad input through the real command line: one line naming the file or argument, exit != 0, nothing half-written."""

import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnn_zoo import make_cnn


def xfer(*args, cwd=None, timeout=300):
    env = dict(os.environ, XFER_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "xfer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, check=False)


def assert_clean_error(r, *needles):
    assert r.returncode != 0, r.stdout
    err = r.stderr.strip()
    assert "Traceback" not in err, err
    assert err.count("\n") == 0, err
    for n in needles:
        assert n in err, err


def tree(root, n=2, emotions=("joy", "fear")):
    for emo in emotions:
        d = root / "aia" / f"aia_{emo}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (i * 50, 20, 20)).save(d / f"aia_{emo}_{i + 1}.png")
    return root


@pytest.mark.parametrize("name,content,needle", [
    ("zero.png", b"", "empty file"),
    ("text.png", b"hello, not a png", "not an image file"),
    ("notes.txt", b"hello", "not an image file"),
])
def test_bad_files_in_class_folder(tmp_path, name, content, needle):
    src = tree(tmp_path / "src")
    (src / "aia" / "aia_joy" / name).write_bytes(content)
    r = xfer("data", "pack", src, "--out", tmp_path / "out.xpack")
    assert_clean_error(r, name, needle)
    assert not (tmp_path / "out.xpack").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary left behind


def test_truncated_png(tmp_path):
    src = tree(tmp_path / "src")
    p = src / "aia" / "aia_joy" / "aia_joy_1.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    assert_clean_error(xfer("data", "pack", src, "--out", tmp_path / "o.xpack"), "aia_joy_1.png", "truncated")


def test_decompression_bomb(tmp_path):
    src = tree(tmp_path / "src")
    Image.new("L", (8200, 8200)).save(src / "aia" / "aia_joy" / "bomb.png")
    assert_clean_error(xfer("data", "pack", src, "--out", tmp_path / "o.xpack"), "bomb.png", "pixel limit")


@pytest.mark.parametrize("mode", ["I;16", "P", "L", "RGBA"])
def test_image_kinds_that_load(tmp_path, mode):
    src = tree(tmp_path / "src")
    p = src / "aia" / "aia_joy" / "odd.png"
    if mode == "I;16":
        Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(p)
    else:
        Image.new(mode, (32, 32)).save(p)
    r = xfer("data", "pack", src, "--out", tmp_path / "o.xpack")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("folder,needle", [
    ("aia/aia_boredom", "unknown emotion 'boredom'"),
    ("zed/zed_joy", "unknown character folder 'zed'"),
    ("aia/aiajoy", "folder name must be 'aia_<emotion>'"),
])
def test_bad_folders(tmp_path, folder, needle):
    src = tree(tmp_path / "src")
    (src / folder).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(src / folder / "x.png")
    assert_clean_error(xfer("data", "pack", src, "--out", tmp_path / "o.xpack"), needle)


def test_empty_class_and_missing_dir(tmp_path):
    src = tree(tmp_path / "src")
    (src / "aia" / "aia_anger").mkdir()
    assert_clean_error(xfer("data", "pack", src), "aia_anger", "no images")
    assert_clean_error(xfer("data", "pack", tmp_path / "nowhere"), "nowhere", "does not exist")
    assert_clean_error(xfer("train", "--mode", "frozen", "--data", tmp_path / "nowhere", "--source", tmp_path / "nope.onnx"),
                       "nope.onnx")


@pytest.mark.parametrize("content,needle", [(b"", "empty file"), (b"\x08\x01garbage" * 10, "not an ONNX model")])
def test_bad_model_files(tmp_path, content, needle):
    p = tmp_path / "m.onnx"
    p.write_bytes(content)
    assert_clean_error(xfer("inspect", p), "m.onnx", needle)
    assert_clean_error(xfer("surgery", "--mode", "frozen", "--source", p, "--out", tmp_path / "o.onnx"), "m.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_model(tmp_path, lenet_onnx):
    p = tmp_path / "t.onnx"
    p.write_bytes(lenet_onnx.read_bytes()[:700])
    assert_clean_error(xfer("inspect", p), "t.onnx")


def test_uncuttable_graph(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "nofc",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])])
    p = tmp_path / "nofc.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    assert_clean_error(xfer("surgery", "--mode", "frozen", "--source", p), "cannot cut graph 'nofc'")


def test_unknown_op(tmp_path, synth_pack):
    m = make_cnn()
    odd = helper.make_node("Hardmax", ["c1"], ["c1_odd"], name="odd_hardmax")
    m.graph.node[1].input[0] = "c1_odd"  # conv1 -> Hardmax -> activation
    m.graph.node.insert(1, odd)
    p = tmp_path / "odd.onnx"
    onnx.save(m, p)
    r = xfer("train", "--mode", "finetune", "--source", p, "--data", synth_pack, "--epochs", "1", "--out", tmp_path / "o",
             "--input-size", "28")
    assert_clean_error(r, "odd_hardmax", "unsupported ONNX op Hardmax")


def test_external_data_may_not_escape(tmp_path):
    m = make_cnn()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    p = tmp_path / "ext.onnx"
    p.write_bytes(m.SerializeToString())
    assert_clean_error(xfer("inspect", p), "escapes the model's folder")


def test_mxnet_params_mismatch(tmp_path, lenet_mxnet, lenet7_mxnet):
    import shutil

    other = tmp_path / "other"
    shutil.copy(f"{lenet7_mxnet}-symbol.json", f"{other}-symbol.json")  # a 7-way symbol ...
    shutil.copy(f"{lenet_mxnet}-0000.params", f"{other}-0000.params")  # ... with the 10-way digit weights
    assert_clean_error(xfer("convert", other, "--out", tmp_path / "o.onnx"), "other-0000.params",
                       "parameters do not match", "(10, 84)", "(7, 84)")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("corrupt,needle", [("magic", "bad magic number"), ("short", "payload")])
def test_bad_idx(tmp_path, corrupt, needle):
    for prefix, n in (("train", 4), ("t10k", 2)):
        x = np.zeros((n, 28, 28), np.uint8)
        data = struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", n, 28, 28) + x.tobytes()
        if prefix == "train" and corrupt == "magic":
            data = b"\x12\x34" + data[2:]
        if prefix == "train" and corrupt == "short":
            data = data[:-5]
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(data)
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", n) + bytes(n))
    assert_clean_error(xfer("pretrain", "--mnist", tmp_path, "--out", tmp_path / "m"), "train-images-idx3-ubyte", needle)


@pytest.mark.parametrize("args,needle", [
    (["train", "--mode", "frozen", "--input-size", "0"], "--input-size"),
    (["train", "--mode", "frozen", "--batch-size", "-8"], "--batch-size"),
    (["train", "--mode", "distill"], "--mode"),
    (["bench", "--repeat", "0"], "--repeat"),
])
def test_bad_arguments(args, needle):
    r = xfer(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = xfer("--debug", "inspect", tmp_path / "missing.onnx")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_sigkill_then_resume_matches_unbroken_run(tmp_path, synth_pack, lenet_onnx):
    common = ["train", "--mode", "finetune", "--data", synth_pack, "--source", lenet_onnx, "--epochs", "3",
              "--batch-size", "2", "--head", "64", "32"]
    assert xfer(*common, "--out", tmp_path / "full").returncode == 0
    env = dict(os.environ, XFER_PROGRESS="0")
    proc = subprocess.Popen([sys.executable, "-m", "xfer", *map(str, common), "--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "finetune.ckpt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    assert not (tmp_path / "killed" / "finetune.onnx").exists()
    r = xfer(*common, "--out", tmp_path / "killed", "--resume")
    assert r.returncode == 0, r.stderr
    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "full" / "finetune.onnx").graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "killed" / "finetune.onnx").graph.initializer}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
