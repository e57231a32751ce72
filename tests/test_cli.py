import subprocess
import sys

from xfer.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "xfer", *args], capture_output=True, text=True, timeout=300)


def test_inspect(lenet_onnx, capsys):
    assert main(["inspect", str(lenet_onnx)]) == 0
    out = capsys.readouterr().out
    assert "Gemm" in out and "61,706" in out and "xfer.classes" in out


def test_error_is_one_line(tmp_path):
    r = run("inspect", str(tmp_path / "missing.onnx"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "missing.onnx: no such model file" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_argument_values():
    for args in (["data", "synth", "--per-class", "0"], ["pretrain", "--batch-size", "-4"], ["pretrain", "--lr", "nan"]):
        r = run(*args)
        assert r.returncode == 2 and "expected a positive" in r.stderr


def test_pack_cli(synth_root, tmp_path, capsys):
    out = tmp_path / "p.xpack"
    assert main(["data", "pack", str(synth_root), "--out", str(out)]) == 0
    assert "126 images" in capsys.readouterr().out
