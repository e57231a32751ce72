import subprocess
import sys

from xfer.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "xfer", *args], capture_output=True, text=True, timeout=300, check=False)


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


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, deeper in _subparsers(sub):
                    yield f"{name} {inner}", deeper


def test_every_option_has_help_with_its_default_and_every_command_an_example():
    import argparse

    from xfer.cli import _Formatter, build_parser

    commands = dict(_subparsers(build_parser()))
    assert {"train", "bench", "surgery", "zoo", "experiments", "demo", "data synth", "data pack"} <= set(commands)
    fmt = _Formatter("xfer")
    for name, sub in commands.items():
        assert "example" in (sub.epilog or ""), f"xfer {name}: no example in --help"
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"xfer {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where}: no help text"
            if action.option_strings and action.default is not None and action.default is not False:
                assert "default" in fmt._get_help_string(action), f"{where}: the default is not shown"


def test_train_help_reads_like_a_manual():
    r = run("train", "--help")
    assert r.returncode == 0
    assert "--epochs EPOCHS training epochs (default: 30)" in " ".join(r.stdout.split())
    assert "example:" in r.stdout and "xfer train --mode frozen" in r.stdout


def test_configs_validate_themselves():
    import pytest

    from xfer.config import BenchConfig, StudyConfig, TrainConfig
    from xfer.errors import XferError

    with pytest.raises(XferError, match="--mode is required"):
        TrainConfig()
    with pytest.raises(XferError, match="--mode"):
        TrainConfig(mode="distill")
    with pytest.raises(XferError, match="--val"):
        TrainConfig(mode="frozen", val=1.0)
    with pytest.raises(XferError, match="--input-size"):
        TrainConfig(mode="frozen", input_size=(32, 32, 3))
    with pytest.raises(XferError, match="--modes"):
        StudyConfig(modes=("frozen", "magic"))
    with pytest.raises(XferError, match="--repeat"):
        BenchConfig(repeat=0)
    cfg = TrainConfig(mode="reuse")
    assert cfg.learning_rate == 3e-3 and cfg.size == (32, 32) and cfg.but(lr=0.1).learning_rate == 0.1
