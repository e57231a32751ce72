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
from dataclasses import asdict, dataclass, fields
from typing import Any

from xfer.records import JSONObject

PREFIX = "xfer."


@dataclass
class ModelMeta:
    source: str | None = None             # what the model itself was trained on (source models)
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
    return ModelMeta(**values)


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
