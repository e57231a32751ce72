"""What lies beside an image tree: ``landmarks.csv`` (26 points per face), iBUG/300-W ``.pts`` files (68 points,
one beside each image), and ``votes.csv`` (annotators' votes); and the landmark schemes they use.

Kept apart from the renderer that writes them, so loading real data never
imports the synthetic-face code.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.data.ferg import EMOTIONS
from xfer.errors import XferError

LANDMARK_NAMES = (
    "brow_l_outer", "brow_l_mid", "brow_l_inner", "brow_r_inner", "brow_r_mid", "brow_r_outer",
    "eye_l_outer", "eye_l_top", "eye_l_inner", "eye_l_bottom",
    "eye_r_inner", "eye_r_top", "eye_r_outer", "eye_r_bottom",
    "nose_tip", "nostril_l", "nostril_r",
    "mouth_l", "mouth_top", "mouth_r", "mouth_bottom",
    "jaw_l", "chin", "jaw_r", "temple_l", "temple_r",
)


def _read_sidecar(root, name: str, header_ok, parse_row) -> dict | None:
    """A CSV beside the images, keyed by relative image path: ``parse_row(header, row)`` gives each value and
    raises ``ValueError`` with the reason on a bad row."""
    path = Path(root) / name
    if not path.is_file():
        return None
    table = {}
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r, None)
        if not header or not header_ok(header):
            raise XferError(f"{path}: not a {name} file (bad header)")
        for i, row in enumerate(r, start=2):
            if len(row) != len(header):
                raise XferError(f"{path}:{i}: expected {len(header)} columns, got {len(row)}")
            try:
                table[row[0]] = parse_row(header, row)
            except ValueError as e:
                raise XferError(f"{path}:{i}: {e}") from None
    return table


def _votes_row(_header: list[str], row: list[str]) -> np.ndarray:
    try:
        v = np.asarray(row[1:], np.int64)
    except ValueError:
        raise ValueError("vote counts must be integers") from None
    if (v < 0).any() or v.sum() == 0:
        raise ValueError(f"expected {len(EMOTIONS)} non-negative counts with at least one vote")
    return v


def _landmarks_row(_header: list[str], row: list[str]) -> tuple[np.ndarray, float]:
    try:
        return np.asarray(row[2:], np.float32).reshape(-1, 2), float(row[1])
    except ValueError:
        raise ValueError("non-numeric landmark value") from None


def read_votes(root: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The FER+-style ``votes.csv`` of a tree: relative path -> vote counts over EMOTIONS."""
    return _read_sidecar(root, "votes.csv", lambda h: h[0] == "path" and tuple(h[1:]) == EMOTIONS, _votes_row)


def read_landmarks(root: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, float]] | None:
    """The sidecar ``landmarks.csv`` of a synthetic tree: relative path -> ((K, 2) pixels, intensity)."""
    return _read_sidecar(root, "landmarks.csv", lambda h: h[:2] == ["path", "intensity"] and len(h) % 2 == 0,
                         _landmarks_row)


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark layout: how many points, which ones are the eyes (the inter-ocular distance normalises NME), and
    which point each becomes when the face is mirrored (a horizontal flip swaps left and right)."""

    name: str
    count: int
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    mirror: tuple[int, ...]


def _mirror_by_name(names: tuple[str, ...]) -> tuple[int, ...]:
    swap = {"_l": "_r", "_r": "_l"}
    out = []
    for n in names:
        side = next((k for k in swap if f"{k}_" in n + "_"), None)
        out.append(names.index(n.replace(side, swap[side], 1)) if side else names.index(n))
    return tuple(out)


def _ibug_mirror() -> tuple[int, ...]:
    """The 68-point iBUG scheme's left-right pairs (0-based): jaw, brows, nose, eyes, outer and inner mouth."""
    pairs = [(i, 16 - i) for i in range(17)] + [(17 + i, 26 - i) for i in range(5)] + [(27 + i, 27 + i) for i in range(4)]
    pairs += [(31 + i, 35 - i) for i in range(5)]
    pairs += list(zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46)))
    pairs += [(48 + i, 54 - i) for i in range(7)] + [(55 + i, 59 - i) for i in range(5)]
    pairs += [(60 + i, 64 - i) for i in range(5)] + [(65 + i, 67 - i) for i in range(3)]
    m = list(range(68))
    for a, b in pairs:
        m[a], m[b] = b, a
    return tuple(m)


SYNTHETIC_26 = LandmarkScheme("synthetic-26", len(LANDMARK_NAMES),
                              tuple(i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_l")),
                              tuple(i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_r")),
                              _mirror_by_name(LANDMARK_NAMES))
IBUG_68 = LandmarkScheme("ibug-68", 68, tuple(range(36, 42)), tuple(range(42, 48)), _ibug_mirror())
SCHEMES = {s.count: s for s in (SYNTHETIC_26, IBUG_68)}

# Each synthetic point as the mean of iBUG points (image-left first in both): compares a 68-point set with the 26.
IBUG_TO_SYNTHETIC = ((17,), (19,), (21,), (22,), (24,), (26,), (36,), (37, 38), (39,), (40, 41), (42,), (43, 44), (45,),
                     (46, 47), (30,), (31,), (35,), (48,), (51,), (54,), (57,), (4,), (8,), (12,), (0,), (16,))


def scheme_of(count: int) -> LandmarkScheme:
    """The scheme of ``count`` points (26: the synthetic faces, 68: iBUG/300-W)."""
    if count not in SCHEMES:
        raise XferError(f"{count} landmarks per face: no known scheme (expected one of {sorted(SCHEMES)})")
    return SCHEMES[count]


def ibug_to_synthetic(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) iBUG points as the 26 synthetic ones (..., 26, 2)."""
    return np.stack([points[..., list(ix), :].mean(-2) for ix in IBUG_TO_SYNTHETIC], -2)


def read_pts(path: str | os.PathLike[str]) -> np.ndarray:
    """One iBUG/300-W ``.pts`` file as (K, 2) pixels (its 1-based pixel convention moved to 0-based)."""
    p = Path(path)
    try:
        text = p.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise XferError(f"{p}: cannot read landmark file ({type(e).__name__})") from None
    head, brace, rest = text.partition("{")
    body, close, _ = rest.partition("}")
    fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
    if not brace or not close or "n_points" not in fields:
        raise XferError(f"{p}: not a .pts file (expected 'n_points: K' and the points between {{ and }})")
    try:
        n = int(fields["n_points"])
        pts = np.asarray([[float(v) for v in line.split()] for line in body.splitlines() if line.strip()], np.float64)
    except ValueError:
        raise XferError(f"{p}: non-numeric value in a .pts file") from None
    if pts.shape != (n, 2) or not np.isfinite(pts).all():
        raise XferError(f"{p}: expected {n} finite (x, y) points, got {pts.shape[0]} rows of shape {pts.shape[1:]}")
    return (pts - 1.0).astype(np.float32)


def read_pts_beside(images: list[Path]) -> list[np.ndarray] | None:
    """The ``.pts`` file beside each image (``face.png`` -> ``face.pts``), or None when there is none at all; all or
    nothing, every file with the same number of points."""
    found = [p.with_suffix(".pts") for p in images]
    have = [f.is_file() for f in found]
    if not any(have):
        return None
    if not all(have):
        missing = found[have.index(False)]
        raise XferError(f"{missing}: missing ({have.count(False)} of {len(found)} images have no .pts file beside them)")
    rows = [read_pts(f) for f in found]
    if len({r.shape for r in rows}) > 1:
        bad, points = next((f, r) for f, r in zip(found, rows) if r.shape != rows[0].shape)
        raise XferError(f"{bad}: {len(points)} points, the first file has {len(rows[0])}")
    return rows
