import pytest

from xfer.io import atomic_dir, atomic_path, write_json, write_text


def test_write_text_replaces(tmp_path):
    p = tmp_path / "a.txt"
    write_text(p, "one")
    write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_old_file(tmp_path):
    p = tmp_path / "a.json"
    write_json(p, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert p.read_text().strip().startswith("{")
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_replaces_whole(tmp_path):
    d = tmp_path / "out"
    with atomic_dir(d) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(ValueError), atomic_dir(d) as tmp:
        (tmp / "y").write_text("2")
        raise ValueError
    assert sorted(p.name for p in d.iterdir()) == [".xfer-written", "x"]
    with atomic_dir(d) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in d.iterdir()) == [".xfer-written", "z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
