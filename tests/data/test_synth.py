import hashlib

import numpy as np
import pytest

from xfer.data.ferg import CHARACTERS, EMOTIONS, scan_ferg
from xfer.data.sidecars import read_landmarks
from xfer.data.synth import LANDMARK_NAMES, generate, render_face
from xfer.errors import XferError


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_landmarks(synth_root):
    idx = scan_ferg(synth_root)
    assert len(idx) == len(CHARACTERS) * len(EMOTIONS) * 3
    table = read_landmarks(synth_root)
    assert len(table) == len(idx)
    pts, intensity = next(iter(table.values()))
    assert pts.shape == (len(LANDMARK_NAMES), 2) and len(LANDMARK_NAMES) >= 20
    assert 0.35 <= intensity <= 1.0
    assert (pts > -32).all() and (pts < 288).all()  # the chin may leave the frame, as in close-ups
    inner = [i for i, n in enumerate(LANDMARK_NAMES) if n.split("_")[0] in ("eye", "brow", "mouth", "nose")]
    assert (pts[inner] >= 0).all() and (pts[inner] < 256).all()


def test_deterministic(tmp_path):
    a = generate(tmp_path / "a", per_class=1, seed=5, workers=1, progress=False, characters=("aia", "ray"))
    b = generate(tmp_path / "b", per_class=1, seed=5, workers=2, progress=False, characters=("aia", "ray"))
    c = generate(tmp_path / "c", per_class=1, seed=6, workers=1, progress=False, characters=("aia", "ray"))
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_expressions_differ_and_characters_differ():
    imgs = {}
    for ch in ("aia", "malcolm"):
        for emo in ("joy", "surprise"):
            img, pts, _ = render_face(ch, emo, np.random.default_rng(0), intensity=1.0)
            assert img.shape == (256, 256, 3) and img.dtype == np.uint8
            imgs[ch, emo] = (img, pts)
    # Same jitter (same seed): landmarks move with the expression (mouth opens in surprise)
    j, s = imgs["aia", "joy"][1], imgs["aia", "surprise"][1]
    mouth_open = lambda p: p[LANDMARK_NAMES.index("mouth_bottom"), 1] - p[LANDMARK_NAMES.index("mouth_top"), 1]
    assert mouth_open(s) > mouth_open(j) + 5
    assert np.abs(imgs["aia", "joy"][0].astype(int) - imgs["malcolm", "joy"][0].astype(int)).mean() > 10


def test_bad_arguments(tmp_path):
    with pytest.raises(XferError, match="per-class"):
        generate(tmp_path / "x", per_class=0)
    with pytest.raises(XferError, match="unknown character"):
        generate(tmp_path / "x", per_class=1, characters=("zed",))


def test_bad_sidecars(tmp_path):
    (tmp_path / "votes.csv").write_text("path,anger,disgust,fear,joy,neutral,sadness,surprise\na.png,1,0,0,0,0,0,x\n")
    with pytest.raises(XferError, match=r"votes.csv:2: vote counts must be integers"):
        from xfer.data.sidecars import read_votes

        read_votes(tmp_path)
    (tmp_path / "landmarks.csv").write_text("path,intensity,a_x,a_y\na.png,0.5,1\n")
    with pytest.raises(XferError, match=r"landmarks.csv:2: expected 4 columns, got 3"):
        read_landmarks(tmp_path)
    (tmp_path / "landmarks.csv").write_text("file,x\n")
    with pytest.raises(XferError, match="not a landmarks.csv file"):
        read_landmarks(tmp_path)
