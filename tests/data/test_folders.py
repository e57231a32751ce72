import numpy as np
import pytest
from PIL import Image

from xfer.data import folders
from xfer.data.folders import load_image, scan_folders
from xfer.data.formats import scan
from xfer.errors import XferError


def test_class_per_folder(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / cls / f"{i}.jpg")
    idx = scan(tmp_path)
    assert idx.layout == "folders" and idx.classes == ["cat", "dog"]
    assert list(idx.labels) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "RGB"])
def test_image_modes_load(tmp_path, mode):
    p = tmp_path / "x.png"
    if mode == "I;16":
        Image.fromarray(np.full((6, 5), 65535, np.uint16)).save(p)
    else:
        Image.new(mode, (5, 6)).save(p)
    a = load_image(p)
    assert a.shape == (6, 5, 3) and a.dtype == np.uint8
    if mode == "I;16":
        assert a.min() == 255


def test_rgba_is_composited_over_white(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(p)
    assert load_image(p).min() == 255


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"not an image at all", "not an image file"),
])
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(XferError, match=match):
        load_image(p)


def test_truncated_png(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(XferError, match=r"t\.png: corrupt or truncated"):
        load_image(p)


def test_decompression_bomb(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(p)
    monkeypatch.setattr(folders, "MAX_PIXELS", 5000)
    with pytest.raises(XferError, match="pixel limit"):
        load_image(p)


def test_non_image_file_in_class_folder(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "1.png")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    with pytest.raises(XferError, match=r"notes\.txt: not an image file"):
        scan_folders(tmp_path)


def test_no_classes(tmp_path):
    with pytest.raises(XferError, match="no class folders"):
        scan_folders(tmp_path)
