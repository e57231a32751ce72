"""Hostile inputs and faults, each a defect once found: data loss, silent wrong results, unbounded memory,
tracebacks instead of one line. ``test_hostile_onnx.py`` holds the ONNX files (it also runs under onnx 1.17)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xfer
from xfer.errors import XferError

XFER = [sys.executable, "-m", "xfer"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, XFER_PROGRESS="0")
    return subprocess.run([*XFER, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False)


def _one_line(r: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1 with one ``xfer: error:`` line that says ``words``, and no traceback."""
    err = r.stderr.strip()
    assert r.returncode == 1, (r.returncode, r.stdout, err)
    assert err.startswith("xfer: error:") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# --- never delete what xfer did not write ---------------------------------------------------------------------------

def test_synth_refuses_a_folder_of_the_users(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    (v / "thesis.txt").write_text("keep")
    _one_line(_cli("data", "synth", "--out", str(v), "--per-class", "1"), "xfer did not write it", "--force")
    assert (v / "thesis.txt").read_text() == "keep"


def test_force_replaces_only_what_xfer_writes(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    (v / "thesis.txt").write_text("keep")
    r = _cli("data", "synth", "--out", str(v), "--per-class", "1", "--force")
    assert r.returncode == 0, r.stderr
    assert (v / "thesis.txt").read_text() == "keep" and (v / "landmarks.csv").is_file()
    assert not (v / ".xfer-written").exists()  # still the user's folder: the next run is refused again
    _one_line(_cli("data", "synth", "--out", str(v), "--per-class", "1"), "xfer did not write it")


def test_xfers_own_folder_is_replaced_whole(tmp_path):
    v = tmp_path / "v"
    assert _cli("data", "synth", "--out", str(v), "--per-class", "1").returncode == 0
    assert _cli("data", "synth", "--out", str(v), "--per-class", "1", "--seed", "1").returncode == 0
    assert (v / ".xfer-written").is_file()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_pack_never_writes_over_its_input(synth_root, tmp_path, where):
    src = tmp_path / "imgs"
    shutil.copytree(synth_root, src)
    out = {"same": src, "inside": src / "p.xpack", "around": tmp_path}[where]
    before = sorted(p.relative_to(src) for p in src.rglob("*.png"))
    _one_line(_cli("data", "pack", str(src), "--out", str(out)), "overlaps the input")
    assert sorted(p.relative_to(src) for p in src.rglob("*.png")) == before


def test_out_that_is_a_file_or_under_a_file(tmp_path, synth_root):
    f = tmp_path / "f"
    f.write_text("x")
    _one_line(_cli("data", "pack", str(synth_root), "--out", str(f)), "is not a folder")
    _one_line(_cli("data", "pack", str(synth_root), "--out", str(f / "p.xpack")), "is a file, not a folder")
    assert f.read_text() == "x"


# --- one run per --out, stale temporaries, records that match their model --------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path):
    from xfer.io import exclusive

    lock = tmp_path / ".frozen.lock"
    with exclusive(lock, "out/frozen"):
        code = ("from pathlib import Path; from xfer.io import exclusive; from xfer.errors import XferError\n"
                f"try:\n    exclusive(Path({str(lock)!r}), 'out/frozen').__enter__()\n"
                "except XferError as e:\n    print(e)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert f"another xfer process (pid {os.getpid()})" in r.stdout
    with exclusive(lock, "out/frozen"):  # released on exit, and a dead holder's lock is simply free
        pass


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path, synth_pack, lenet_onnx):
    from xfer import train
    from xfer.config import TrainConfig

    for junk in (".frozen.ckpt.ab12.tmp.ckpt", ".frozen.onnx.cd34.tmp.onnx", ".frozen.metrics.json.x.tmp.json"):
        (tmp_path / junk).write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("the user's")
    train.main(TrainConfig(mode="frozen", data=str(synth_pack), source=str(lenet_onnx), epochs=1, batch_size=32,
                           head=(16,), out=str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == ["notes.tmp"]


def test_a_study_does_not_reuse_a_model_its_metrics_do_not_describe(tmp_path, synth_pack, lenet_onnx, monkeypatch):
    from xfer import train
    from xfer.config import TrainConfig

    cfg = TrainConfig(mode="frozen", data=str(synth_pack), source=str(lenet_onnx), epochs=1, batch_size=32,
                      head=(16,), out=str(tmp_path))
    first = train.train_or_reuse(cfg)
    runs: list[int] = []
    real = train.main
    monkeypatch.setattr(train, "main", lambda c: runs.append(1) or real(c))
    assert train.train_or_reuse(cfg).model_sha256 == first.model_sha256 and runs == []  # reused as is
    model = tmp_path / "frozen.onnx"
    model.write_bytes(model.read_bytes() + b"\0")  # another run's model beside these metrics
    train.train_or_reuse(cfg)
    assert runs == [1]


# --- no silent wrong result ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,words", [({"threads": 2**30}, "threads: expected 0 (all cores) to 1024"),
                                       ({"threads": 2**40}, "threads"), ({"std": 1e-45}, "std: expected finite"),
                                       ({"std": float("inf")}, "std"), ({"mean": float("nan")}, "mean: expected finite")])
def test_kernel_arguments_that_once_gave_garbage(kw, words):
    x = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        xfer.preprocess(x, (4, 4), 3, **kw)


def test_the_extension_itself_caps_threads():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    ext = sys.modules["xfer._C"]
    with pytest.raises(ValueError, match="threads"):
        ext.preprocess(x, (4, 4), 3, [0.0], [1.0], "area", None, "cpu", 2**30, 0, None)
    with pytest.raises(ValueError, match="set_num_threads"):
        ext.set_num_threads(5000)


def test_bench_refuses_data_of_other_classes(tmp_path, lenet_onnx, synth_pack):
    r = _cli("bench", str(lenet_onnx), "--data", str(synth_pack))
    _one_line(r, "are not the model's", "anger")


def test_an_onnx_runtime_refusal_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from xfer.graph import ort_session

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)])
    with pytest.raises(XferError, match="ONNX Runtime cannot run the model") as e:
        ort_session(m)
    assert "\n" not in str(e.value)
    assert isinstance(m, onnx.ModelProto)


# --- bounded memory --------------------------------------------------------------------------------------------------

def test_a_gzipped_idx_bomb_is_refused_after_its_header(tmp_path):
    from xfer.data.digits import read_idx

    p = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:  # says 60000 x 28 x 28, holds 6 GB of zeros once inflated ... or would
        f.write(struct.pack(">HBBIII", 0, 0x08, 3, 2**31 - 1, 28, 28))
        f.write(b"\0" * (1 << 20))
    assert p.stat().st_size < 100_000
    with pytest.raises(XferError, match="above the 2.1 GB xfer reads"):
        read_idx(p)


def test_a_short_gzipped_idx_is_refused(tmp_path):
    from xfer.data.digits import read_idx

    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBII", 0, 0x08, 2, 4, 4) + b"\0" * 10)
    with pytest.raises(XferError, match="IDX payload is 10 bytes, header \\(4, 4\\) says 16"):
        read_idx(p)


def test_size_has_an_upper_bound(synth_root, tmp_path):
    _one_line(_cli("data", "pack", str(synth_root), "--out", str(tmp_path / "p"), "--size", "100000", "100000"),
              "--size: expected sizes from 1 to 4096")


def test_a_pack_streams_to_disk_and_checks_the_space_first(synth_root, tmp_path, monkeypatch):
    from xfer.data import pack

    monkeypatch.setattr(pack.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(XferError, match="need .* GB, .* has 0.0 GB free"):
        from xfer.data.formats import pack_folder

        pack_folder(synth_root, tmp_path / "p.xpack", progress=False)
    assert not (tmp_path / "p.xpack").exists()


# --- one line for every user-caused failure --------------------------------------------------------------------------

def _pack_copy(synth_pack: Path, tmp_path: Path) -> Path:
    p = tmp_path / "p.xpack"
    shutil.copytree(synth_pack, p)
    return p


BAD_PACKS = {
    "two channels": (lambda p: np.save(p / "images.npy", np.zeros((126, 8, 8, 2), np.uint8)), "expected C-ordered"),
    "fortran order": (lambda p: np.save(p / "images.npy", np.asfortranarray(np.zeros((126, 8, 8, 3), np.uint8))),
                      "Fortran order"),
    "2-D labels": (lambda p: np.save(p / "labels.npy", np.zeros((126, 2), np.int64)), "one integer per image"),
    "float labels": (lambda p: np.save(p / "labels.npy", np.zeros(126, np.float32)), "one integer per image"),
    "short landmarks": (lambda p: np.save(p / "landmarks.npy", np.zeros((3, 26, 2), np.float32)), "3 rows for 126"),
    "meta a list": (lambda p: (p / "meta.json").write_text("[1, 2]"), "expected an object"),
    "meta classes a string": (lambda p: (p / "meta.json").write_text(json.dumps(
        json.loads((p / "meta.json").read_text()) | {"classes": "abc"})), "expected an object"),
}


@pytest.mark.parametrize("name", list(BAD_PACKS))
def test_bad_pack_contents_are_one_line(synth_pack, tmp_path, name):
    from xfer.data.pack import load_pack

    p = _pack_copy(synth_pack, tmp_path)
    spoil, words = BAD_PACKS[name]
    spoil(p)
    with pytest.raises(XferError, match=words) as e:
        load_pack(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["fifo", "loop", "unreadable", "folder"])
def test_image_paths_that_are_not_images_say_what_they_are(tmp_path, kind):
    from xfer.data.folders import load_image

    p = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(p)
        words = "not a regular file"
    elif kind == "loop":
        os.symlink(p, p)
        words = "cannot be read"
    elif kind == "folder":
        p.mkdir()
        words = "not a regular file"
    else:
        p.write_bytes(b"\x89PNG....")
        p.chmod(0)
        if os.access(p, os.R_OK):
            pytest.skip("root reads a file without permission bits")
        words = "permission denied"
    with pytest.raises(XferError, match=words):
        load_image(p)


def _fill_tmpfs_and_write(script: str) -> subprocess.CompletedProcess | None:
    """Run ``script`` with $D a 256 KiB tmpfs of its own (a user + mount namespace); None where none can be made."""
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=256k t /mnt"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        return None
    shell = f"D=$(mktemp -d) && mount -t tmpfs -o size=256k t $D && D=$D {sys.executable} -c \"$0\""
    return subprocess.run(["unshare", "-rm", "sh", "-c", shell, script], capture_output=True, text=True, timeout=120,
                          check=False, env=dict(os.environ))


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    script = ("import os, numpy as np\nfrom pathlib import Path\nfrom xfer.io import write_with, write_bytes\n"
              "from xfer.errors import XferError\nd = Path(os.environ['D'])\nwrite_bytes(d / 'm.bin', b'old')\n"
              "try:\n    write_with(d / 'm.bin', lambda t: np.save(t, np.zeros(1 << 20)))\n"
              "except XferError as e:\n    print('ERR', e)\nprint('KEPT', (d / 'm.bin').read_bytes())\n")
    r = _fill_tmpfs_and_write(script)
    if r is not None:  # a real full disk
        assert "ERR no space left on" in r.stdout and "while writing" in r.stdout, (r.stdout, r.stderr)
        assert "KEPT b'old'" in r.stdout
        return
    import errno

    from xfer import io  # no namespaces here: the writer itself reports ENOSPC

    target = tmp_path / "m.bin"
    io.write_bytes(target, b"old")

    def full(_: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(XferError, match=f"no space left on .* while writing {target}"):
        io.write_with(target, full)
    assert target.read_bytes() == b"old"


def test_torchs_words_for_a_full_disk_are_recognised():
    from xfer.io import is_disk_full

    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"))
    assert not is_disk_full(RuntimeError("something else"))


# --- the fuzz: one XferError line or success, never another exception ------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=400), cut=st.integers(0, 10_000), flip=st.integers(0, 10_000))
def test_fuzz_the_onnx_loader(lenet_onnx, tmp_path, data, cut, flip):
    from xfer.graph import load_model

    raw = bytearray(Path(lenet_onnx).read_bytes())
    raw = raw[: cut % (len(raw) + 1)] if cut % 3 == 0 else raw
    if raw and flip % 2:
        raw[flip % len(raw)] ^= 0xFF
    p = tmp_path / "f.onnx"
    p.write_bytes(bytes(raw) + data if flip % 5 == 0 else bytes(raw))
    try:
        load_model(p)
    except XferError as e:
        assert "\n" not in str(e)


@FUZZ
@given(meta=st.dictionaries(st.sampled_from(["version", "count", "classes", "groups", "shape", "layout"]),
                            st.one_of(st.none(), st.integers(-3, 200), st.text(max_size=4),
                                      st.lists(st.text(max_size=3), max_size=3), st.floats(allow_nan=True))),
       labels=st.sampled_from(["ok", "float", "2d", "negative", "short"]))
def test_fuzz_the_pack_reader(synth_pack, tmp_path, meta, labels):
    from xfer.data.pack import load_pack

    p = tmp_path / "p.xpack"
    if not p.exists():
        shutil.copytree(synth_pack, p)
    base = json.loads((Path(synth_pack) / "meta.json").read_text())
    (p / "meta.json").write_text(json.dumps(base | meta))
    y = {"ok": np.zeros(126, np.int64), "float": np.zeros(126, np.float32), "2d": np.zeros((126, 1), np.int64),
         "negative": -np.ones(126, np.int64), "short": np.zeros(5, np.int64)}[labels]
    np.save(p / "labels.npy", y)
    try:
        load_pack(p)
    except XferError as e:
        assert "\n" not in str(e)


@FUZZ
@given(n=st.integers(0, 3), h=st.integers(0, 9), w=st.integers(0, 9), c=st.integers(0, 5),
       size=st.tuples(st.integers(-2, 70000), st.integers(-2, 70000)), channels=st.integers(-1, 4),
       threads=st.integers(-2, 2**33), std=st.floats(allow_nan=True, allow_infinity=True),
       dtype=st.sampled_from([np.uint8, np.float32, np.int16]))
def test_fuzz_the_kernel_arguments(n, h, w, c, size, channels, threads, std, dtype):
    """A ValueError/TypeError that names the argument, or a result: never a crash, never garbage."""
    x = np.zeros((n, h, w, c), dtype)
    try:
        y = xfer.preprocess(x, size if size[0] * size[1] < 4096 else (2, 2), channels, 0.0, std, threads=threads)
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in ("images", "size", "channels", "std", "threads", "mean", "index") or \
            "expected" in str(e), str(e)
        return
    assert y.shape[0] == n and np.isfinite(y).all()


@pytest.mark.parametrize("change", ["opset 99", "zero height", "negative height"])
def test_models_onnx_itself_refuses_are_one_line(tmp_path, lenet_onnx, trained_frozen, synth_pack, change):
    """A model from the future or with an impossible input reaches neither train nor bench as a traceback."""
    import onnx

    def spoil(path: Path) -> Path:
        m = onnx.load(path)
        if change == "opset 99":
            m.opset_import[0].version = 99
        else:
            m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0 if change == "zero height" else -3
        bad = tmp_path / f"bad-{path.name}"
        bad.write_bytes(m.SerializeToString())
        return bad

    _one_line(_cli("bench", str(spoil(trained_frozen)), "--data", str(synth_pack), "--images", "20", "--no-baselines"),
              "bad-")
    if change == "opset 99":  # (surgery gives a source a new input layer, so its declared height does not matter)
        _one_line(_cli("train", "--mode", "frozen", "--source", str(spoil(lenet_onnx)), "--data", str(synth_pack),
                       "--epochs", "1", "--out", str(tmp_path / "out")), "bad-", "opset 99")
