import numpy as np
import pytest
from PIL import Image

from xfer.data.ferg import EMOTIONS, loco_split, scan_ferg, split, stratified_split
from xfer.data.formats import scan
from xfer.errors import XferError


def make_tree(root, characters=("aia", "ray"), emotions=EMOTIONS, n=2):
    for ch in characters:
        for emo in emotions:
            d = root / ch / f"{ch}_{emo}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), (i * 40, 10, 10)).save(d / f"{ch}_{emo}_{i + 1}.png")
    return root


def test_scan_layout(tmp_path):
    idx = scan(make_tree(tmp_path))
    assert idx.layout == "ferg"
    assert len(idx) == 2 * 7 * 2
    assert idx.classes == list(EMOTIONS)
    assert sorted(set(idx.group_names[g] for g in idx.groups)) == ["aia", "ray"]
    assert set(idx.labels) == set(range(7))


def test_malformed_emotion_folder(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "aia" / "aia-joy").mkdir()
    with pytest.raises(XferError, match=r"aia-joy.*folder name must be 'aia_<emotion>'"):
        scan_ferg(tmp_path)


def test_unknown_emotion(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "ray" / "ray_boredom").mkdir()
    with pytest.raises(XferError, match="unknown emotion 'boredom'"):
        scan_ferg(tmp_path)


def test_unknown_character(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "bob" / "bob_joy").mkdir(parents=True)
    with pytest.raises(XferError, match="unknown character folder 'bob'"):
        scan_ferg(tmp_path)


def test_empty_class(tmp_path):
    make_tree(tmp_path)
    for f in (tmp_path / "aia" / "aia_fear").iterdir():
        f.unlink()
    with pytest.raises(XferError, match="aia_fear: class folder has no images"):
        scan_ferg(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(XferError, match="does not exist"):
        scan(tmp_path / "nope")


def test_stratified_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(7), 20)
    groups = np.tile(np.repeat(np.arange(2), 10), 7)
    tr, te = stratified_split(labels, groups, 0.2, seed=3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 140
    assert len(te) == 28
    for g in range(2):
        for k in range(7):
            assert ((labels[te] == k) & (groups[te] == g)).sum() == 2
    tr2, te2 = stratified_split(labels, groups, 0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(labels, groups, 0.2, seed=4)[1])


def test_loco_split():
    groups = np.array([0, 1, 2, 1, 0])
    tr, te = loco_split(groups, ["aia", "bonnie", "jules"], "bonnie")
    assert list(te) == [1, 3] and list(tr) == [0, 2, 4]
    with pytest.raises(XferError, match="unknown character"):
        loco_split(groups, ["aia", "bonnie", "jules"], "zed")
    with pytest.raises(XferError, match="expected 'random' or 'loco"):
        split("half", groups, groups, ["aia"])
