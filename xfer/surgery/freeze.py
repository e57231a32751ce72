"""What trains is recorded in the ONNX file itself (``xfer.frozen`` in ``metadata_props``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfer.errors import XferError
from xfer.meta import read_meta, write_meta

if TYPE_CHECKING:
    import onnx


def set_frozen(model: onnx.ModelProto, names) -> None:
    names = sorted(set(names))
    known = {t.name for t in model.graph.initializer}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise XferError(f"cannot freeze '{unknown[0]}': no such initializer")
    write_meta(model, frozen=names)


def get_frozen(model: onnx.ModelProto) -> set[str]:
    return set(read_meta(model).frozen or [])
