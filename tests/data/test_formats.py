"""The data-format registry: each format recognised and loaded by its own record; a new one is one record."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from xfer.data import formats
from xfer.data.formats import DataFormat, detect, load_dataset
from xfer.data.pack import Pack
from xfer.data.split import class_word, load_split
from xfer.errors import XferError


def write_mnist(d, n_train, n_test):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for name, a in ((f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                        (f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)):
            (d / name).write_bytes(struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def test_each_format_is_recognised(synth_root, synth_pack, tmp_path):
    (tmp_path / "idx").mkdir()
    write_mnist(tmp_path / "idx", n_train=40, n_test=10)
    (tmp_path / "cls" / "cat").mkdir(parents=True)
    assert [detect(p).name for p in (synth_pack, synth_root, tmp_path / "idx", tmp_path / "cls")] == \
        ["pack", "ferg", "idx", "folders"]


def test_an_idx_folder_is_target_data(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=20)
    pack = load_dataset(tmp_path)
    assert pack.images.shape == (80, 28, 28, 1) and pack.layout == "idx" and pack.classes[0] == "0"
    s = load_split(str(tmp_path), "random", (16, 16), 1, seed=0, progress=False)
    assert len(s.y_train) + len(s.y_test) == 80 and class_word(s.layout) == "digit"
    with pytest.raises(XferError, match="needs FERG-DB data"):
        load_split(str(tmp_path), "loco:x", (16, 16), 1, seed=0, progress=False)


def test_a_new_format_is_one_record(tmp_path, monkeypatch):
    """A throw-away format (a JSON list of 2x2 gray images) registered as one record is read by every stage's loader."""
    f = tmp_path / "tiny.json"
    f.write_text(json.dumps({"images": [[[0, 255], [255, 0]]] * 4 + [[[9, 9], [9, 9]]] * 4, "labels": [0] * 4 + [1] * 4}))

    def load(p, size, progress):
        d = json.loads(p.read_text())
        images = np.asarray(d["images"], np.uint8)[..., None]
        return Pack(images, np.asarray(d["labels"], np.int64), np.zeros(len(images), np.int64), ["x", "flat"], ["all"])

    monkeypatch.setattr(formats, "FORMATS", [DataFormat("tinyjson", "a tiny JSON set", lambda p: p.suffix == ".json",
                                                        load)] + formats.FORMATS)
    monkeypatch.setattr(formats, "check_root", lambda p: p)
    pack = load_dataset(f)
    assert len(pack) == 8 and pack.classes == ["x", "flat"]
    assert len(load_split(str(f), "random", (2, 2), 1, seed=0, progress=False).y_test) == 2


def test_an_unknown_path_names_the_formats(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(XferError, match="not a directory"):
        detect(tmp_path / "x.bin")
