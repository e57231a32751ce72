"""FERG-DB: ``<root>/<character>/<character>_<emotion>/<character>_<emotion>_<n>.png`` and its splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xfer.config import TEST_FRACTION
from xfer.data.folders import ImageIndex, check_root, list_images, subfolders
from xfer.errors import XferError

CHARACTERS = ("aia", "bonnie", "jules", "malcolm", "mery", "ray")
EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")


def looks_like_ferg(root: Path) -> bool:
    """A tree is FERG-shaped when a top folder is a known character or holds ``<name>_<emotion>`` folders."""
    for top in subfolders(root):
        if top.name.lower() in CHARACTERS:
            return True
        for sub in subfolders(top):
            if sub.name.lower().startswith(top.name.lower() + "_"):
                return True
    return False


def scan_ferg(root: str | os.PathLike[str]) -> ImageIndex:
    """Scan a FERG-DB tree; labels are emotions, groups are characters."""
    root = check_root(root)
    characters = subfolders(root)
    if not characters:
        raise XferError(f"{root}: no character folders found (expected <root>/<character>/<character>_<emotion>/)")
    paths, labels, groups = [], [], []
    present = []
    for char_dir in characters:
        char = char_dir.name.lower()
        if char not in CHARACTERS:
            raise XferError(f"{char_dir}: unknown character folder '{char_dir.name}' (expected one of {', '.join(CHARACTERS)})")
        present.append(char)
        emotion_dirs = subfolders(char_dir)
        if not emotion_dirs:
            raise XferError(f"{char_dir}: no <character>_<emotion> folders inside")
        for emo_dir in emotion_dirs:
            name = emo_dir.name.lower()
            prefix, _, emotion = name.partition("_")
            if prefix != char or not emotion:
                raise XferError(f"{emo_dir}: folder name must be '{char}_<emotion>', got '{emo_dir.name}'")
            if emotion not in EMOTIONS:
                raise XferError(f"{emo_dir}: unknown emotion '{emotion}' (expected one of {', '.join(EMOTIONS)})")
            files = list_images(emo_dir)
            paths += files
            labels += [EMOTIONS.index(emotion)] * len(files)
            groups += [CHARACTERS.index(char)] * len(files)
    return ImageIndex(root, paths, np.asarray(labels, np.int64), list(EMOTIONS), np.asarray(groups, np.int64),
                      list(CHARACTERS), "ferg")


def stratified_split(labels: np.ndarray, groups: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The study's protocol: a seeded 80/20 split, stratified by (group, label) so every cell keeps its share."""
    if not 0.0 < test_fraction < 1.0:
        raise XferError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    strata = np.asarray(groups, np.int64) * 1000 + np.asarray(labels, np.int64)
    train, test = [], []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def loco_split(groups: np.ndarray, group_names: list[str], held_out: str) -> tuple[np.ndarray, np.ndarray]:
    """Leave one character out: every image of ``held_out`` is the test set."""
    name = held_out.lower()
    if name not in group_names:
        raise XferError(f"--split loco:{held_out}: unknown character (expected one of {', '.join(group_names)})")
    g = group_names.index(name)
    test = np.flatnonzero(groups == g)
    if len(test) == 0:
        raise XferError(f"--split loco:{held_out}: the data has no images of {name}")
    train = np.flatnonzero(groups != g)
    if len(train) == 0:
        raise XferError(f"--split loco:{held_out}: no images are left to train on")
    return train, test


def split(spec: str, labels: np.ndarray, groups: np.ndarray, group_names: list[str],
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``random`` or ``loco:<character>`` and split accordingly."""
    if spec == "random":
        return stratified_split(labels, groups, TEST_FRACTION, seed)
    if spec.startswith("loco:"):
        return loco_split(groups, group_names, spec.split(":", 1)[1])
    raise XferError(f"--split: expected 'random' or 'loco:<character>', got '{spec}'")
