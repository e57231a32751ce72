"""The CSVs beside an image tree: ``landmarks.csv`` (26 points per face) and ``votes.csv`` (annotators' votes).

Kept apart from the renderer that writes them, so loading real data never
imports the synthetic-face code.
"""

from __future__ import annotations

import csv
import os
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
