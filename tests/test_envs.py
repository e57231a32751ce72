"""The pretraining environment's life cycle, on a tiny environment (pip only) so each build takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xfer import envs
from xfer.config import MXNET_PYTHON_VAR
from xfer.errors import XferError

TINY = envs.EnvSpec(requirements=("pip",), name="tiny", modules=("pip",), free_bytes=0)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(MXNET_PYTHON_VAR, raising=False)
    return tmp_path / "cache"


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if ".building-" in p.name or ".old-" in p.name)


def test_built_on_first_use_then_reused(cache, capsys):
    stale = cache / f".{TINY.folder}.building-99999"  # a build killed earlier
    stale.mkdir(parents=True)
    found = envs.run("probe", {"modules": ["pip"]}, spec=TINY)
    assert found["pip"] and found["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    folder = envs.env_dir(TINY)
    assert envs.ready(folder) and folder.parent == cache and _leftovers(cache) == []
    assert "creating the pretraining environment" in capsys.readouterr().err
    marker = (folder / envs.MARKER).stat().st_mtime_ns
    envs.run("probe", {"modules": ["pip"]}, spec=TINY)
    assert (folder / envs.MARKER).stat().st_mtime_ns == marker  # not rebuilt
    assert "creating" not in capsys.readouterr().err


def test_a_broken_environment_is_rebuilt(cache, capsys):
    python = envs.ensure(TINY)
    site = next(python.parents[1].glob("lib/python*/site-packages"))
    for pip in site.glob("pip*"):  # the module the environment must import, gone
        subprocess.run(["rm", "-rf", str(pip)], check=True)
    found = envs.run("probe", {"modules": ["pip"]}, spec=TINY)
    assert found["pip"]
    assert "is broken (cannot import pip" in capsys.readouterr().err


def test_a_half_built_folder_is_not_trusted(cache):
    folder = envs.env_dir(TINY)
    (folder / "bin").mkdir(parents=True)  # what a build interrupted in place would leave: no marker
    (folder / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    assert not envs.ready(folder)
    assert envs.run("probe", {"modules": ["pip"]}, spec=TINY)["pip"]
    assert envs.ready(folder)


def test_no_registry_is_one_clear_line_and_leaves_nothing(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to install from
    spec = envs.EnvSpec(requirements=("mxnet==1.9.1",), name="noreg", free_bytes=0)
    with pytest.raises(XferError) as err:
        envs.ensure(spec)
    msg = str(err.value)
    assert "\n" not in msg and "pip install failed" in msg and "mxnet==1.9.1" in msg and MXNET_PYTHON_VAR in msg
    assert not envs.env_dir(spec).exists() and _leftovers(cache) == []


def test_no_disk_is_one_clear_line(cache):
    spec = envs.EnvSpec(requirements=("pip",), name="full", free_bytes=10**18)
    with pytest.raises(XferError, match=r"GB free on that disk, it needs .* \(set XFER_CACHE"):
        envs.ensure(spec)
    assert not envs.env_dir(spec).exists()


def test_a_named_interpreter_is_used_and_checked(cache, monkeypatch):
    monkeypatch.setenv(MXNET_PYTHON_VAR, sys.executable)  # this interpreter: the core, without MXNet
    assert envs.run("probe", {"modules": ["json"]})["python"]
    if "mxnet" not in sys.modules and not _importable("mxnet"):
        with pytest.raises(XferError, match=rf"{MXNET_PYTHON_VAR}=.*: cannot import mxnet .*unset it"):
            envs.run("probe", {})
    assert not cache.exists()  # a named interpreter is never replaced by a build
    monkeypatch.setenv(MXNET_PYTHON_VAR, str(cache / "nowhere" / "python"))
    with pytest.raises(XferError, match="no such interpreter"):
        envs.run("probe", {})


def test_a_crashing_worker_is_one_line(cache, monkeypatch, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'Boom: it broke' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(MXNET_PYTHON_VAR, str(fake))
    with pytest.raises(XferError, match=r"the mxnet worker \(.*python\) failed: Boom: it broke$"):
        envs.run("probe", {})


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_the_core_runs_without_mxnet(trained_frozen, synth_pack, lenet_onnx, tmp_path):
    """Given ONNX files, surgery, training, bench and inspect run in an interpreter where MXNet cannot be imported."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mxnet", "mnist"):
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
from xfer.cli import main
for argv in (["train", "--mode", "reuse", "--data", {str(synth_pack)!r}, "--source", {str(lenet_onnx)!r},
              "--epochs", "1", "--batch-size", "32", "--out", {str(tmp_path / "out")!r}],
             ["bench", {str(trained_frozen)!r}, "--data", {str(synth_pack)!r}, "--images", "64", "--no-baselines",
              "--repeat", "1", "--out", {str(tmp_path / "bench.json")!r}],
             ["inspect", {str(tmp_path / "out" / "reuse.onnx")!r}]):
    rc = main(argv)
    assert rc in (0, None), (argv, rc)
assert not [m for m in sys.modules if m.split(".")[0] in ("mxnet", "mnist")]
print("core ran without mxnet")
"""
    env = {**os.environ, MXNET_PYTHON_VAR: str(tmp_path / "no-such-python"), "XFER_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "core ran without mxnet" in out.stdout
    assert (tmp_path / "out" / "reuse.onnx").is_file() and (tmp_path / "bench.json").is_file()
