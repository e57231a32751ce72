"""`xfer data faces`: the ORL faces with dlib's landmarks, built in the faces environment from wheels."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xfer.errors import XferError

WORKER = Path(__file__).parents[2] / "xfer" / "workers" / "faces_worker.py"


def _worker():
    sys.path.insert(0, str(WORKER.parent))
    spec = importlib.util.spec_from_file_location("faces_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_crlf_damaged_pgm_is_repaired(tmp_path):
    """Every LF byte (0x0a) of the pixels became CR LF in transit: undoing it gives the photo back exactly."""
    w = _worker()
    pixels = np.random.default_rng(0).integers(0, 256, (112, 92), dtype=np.uint8)
    pixels[0, :4] = [13, 10, 10, 13]  # CR LF, LF, CR: pairs that must survive
    good = b"P5\n92 112\n255\n" + pixels.tobytes()
    (tmp_path / "good.pgm").write_bytes(good)
    (tmp_path / "bad.pgm").write_bytes(good.replace(b"\n", b"\r\n"))
    img, fixed = w.read_pgm(tmp_path / "good.pgm", np)
    assert not fixed and (img == pixels).all()
    img, fixed = w.read_pgm(tmp_path / "bad.pgm", np)
    assert fixed and (img == pixels).all()
    (tmp_path / "junk.pgm").write_bytes(b"P6\n1 1\n255\nabc")
    with pytest.raises(w.JobError, match="not a binary PGM"):
        w.read_pgm(tmp_path / "junk.pgm", np)


def test_pnm_and_ljson_readers():
    w = _worker()
    pts = w.read_ljson('{"groups": {"LJSON": {"landmarks": {"points": [[10, 20], [30, 40]]}}}}', np)
    assert pts.tolist() == [[20, 10], [40, 30]]  # menpo stores [y, x]
    true = np.zeros((68, 2), np.float32)
    true[42:48, 0] = 10.0  # eye centres 10 apart; outer corners 36 and 45 also 10 apart
    assert w.nme(np, true + [1.0, 0.0], true) == pytest.approx(0.1)
    assert w.nme(np, true + [1.0, 0.0], true, outer=True) == pytest.approx(0.1)


@pytest.mark.slow
def test_orl_faces_with_dlib_landmarks(tmp_path):
    """The whole command in a fresh process: 400 photos of 40 people, a .pts beside each (68 points inside the photo),
    the damaged PGMs repaired, dlib within reach of menpo's manual annotations; the tree trains a DAN."""
    from xfer.data.faces import FacesResult
    from xfer.data.formats import scan
    from xfer.data.pack import decode_index

    out = tmp_path / "orl"
    run = subprocess.run([sys.executable, "-m", "xfer", "data", "faces", "--out", str(out)], capture_output=True,
                         text=True, env=os.environ, check=False)
    assert run.returncode == 0, run.stderr[-500:]
    r = FacesResult.from_json(__import__("json").loads((out / "faces.json").read_text()))
    assert (r.images, r.people) == (400, 40) and r.repaired > 0 and r.faces_found >= 390
    assert [m.image for m in r.manual] == ["breakingbad", "einstein", "takeo", "lenna"]
    assert sorted(m.nme_outer for m in r.manual)[2] < 0.05 and r.manual_nme_outer < 0.07
    from xfer.data.faces import manual_faces

    images, points = manual_faces(out)  # menpo's four, framed as ORL's, beside the tree (hidden: not a class)
    assert images.shape == (4, 112, 92, 1) and points.shape == (4, 68, 2)
    assert ((points > 0) & (points < 1)).all(-1).mean() > 0.9
    p = decode_index(scan(out), workers=1, progress=False)
    assert p.landmarks.shape == (400, 68, 2) and len(p.classes) == 40
    inside = ((p.landmarks >= 0) & (p.landmarks <= [92, 112])).all(-1)
    assert inside.mean() > 0.95  # a chin or jaw point may fall past the frame of a close crop
    again = subprocess.run([sys.executable, "-m", "xfer", "data", "faces", "--out", str(out)], capture_output=True,
                           text=True, check=False)
    assert again.returncode == 0  # its own folder: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    refused = subprocess.run([sys.executable, "-m", "xfer", "data", "faces", "--out", str(tmp_path / "mine")],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1


def test_faces_environment_named_without_dlib_is_one_line(tmp_path, monkeypatch):
    from xfer.data.faces import build_faces

    monkeypatch.setenv("XFER_FACES_PYTHON", sys.executable)  # this interpreter has no dlib
    with pytest.raises(XferError, match="XFER_FACES_PYTHON=.*cannot import dlib"):
        build_faces(tmp_path / "o", progress=False)
