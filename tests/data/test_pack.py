import json

import numpy as np
import pytest
from PIL import Image

from xfer.data.folders import load_image
from xfer.data.formats import load_dataset, pack_folder, scan
from xfer.data.pack import is_pack, load_pack
from xfer.errors import XferError


def test_roundtrip(synth_root, synth_pack):
    p = load_pack(synth_pack)
    idx = scan(synth_root)
    assert isinstance(p.images, np.memmap)
    assert p.images.shape == (len(idx), 256, 256, 3)
    np.testing.assert_array_equal(p.labels, idx.labels)
    np.testing.assert_array_equal(p.groups, idx.groups)
    for i in (0, len(idx) // 2, len(idx) - 1):
        np.testing.assert_array_equal(p.images[i], load_image(idx.paths[i]))
    assert p.landmarks.shape == (len(idx), 26, 2) and p.intensity.shape == (len(idx),)
    assert p.classes[3] == "joy" and p.group_names[0] == "aia"
    assert is_pack(synth_pack) and load_dataset(synth_pack).images.shape == p.images.shape


def test_mixed_sizes_need_size(tmp_path):
    for cls, size in (("a", (8, 8)), ("b", (10, 6))):
        (tmp_path / "src" / cls).mkdir(parents=True)
        Image.new("RGB", size).save(tmp_path / "src" / cls / "1.png")
    with pytest.raises(XferError, match="--size"):
        pack_folder(tmp_path / "src", tmp_path / "out.xpack", progress=False)
    assert not (tmp_path / "out.xpack").exists()
    pack_folder(tmp_path / "src", tmp_path / "out.xpack", size=(4, 5), progress=False)
    assert load_pack(tmp_path / "out.xpack").images.shape == (2, 4, 5, 3)


def test_corrupt_pack(tmp_path, synth_pack):
    import shutil

    bad = tmp_path / "bad.xpack"
    shutil.copytree(synth_pack, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["count"] = 3
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(XferError, match="disagree"):
        load_pack(bad)
    with pytest.raises(XferError, match="does not exist"):
        load_pack(tmp_path / "nothing")
