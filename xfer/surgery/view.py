"""One view of the graph under surgery: producers, consumers, initializers, shapes and the cut, kept current.

Passes read these from the view and edit through it (or say ``changed()``
after editing protos in place), so no pass re-derives a map another pass
already built, and none reads a stale one. The view also keeps the source's
own geometry, taken when it is made (every value's shape at the source's input
size, its fixed batch): a pass that needs them, such as retargeting reshapes
that hard-code that geometry, finds them there whatever ran before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from xfer.graph import (
    Initializers,
    consumers,
    initializers,
    producers,
    remove_dead,
    set_initializer,
    shapes,
    tensor_shape,
    toposort,
)

if TYPE_CHECKING:
    import onnx

T = TypeVar("T")
Shape = list[Any]


def _data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto | None:
    init_names = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in init_names]
    return real[0] if len(real) == 1 else None


class View:
    """The model under surgery with its maps; ``changed()`` drops them, and the next read rebuilds them."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._cache: dict[str, Any] = {}
        self.source_shapes: dict[str, Shape] = shapes(model)
        inp = _data_input(model)
        dims = inp.type.tensor_type.shape.dim if inp is not None else []
        self.source_batch: int | None = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") else None
        self.source_input: list[int] = [d.dim_value for d in dims][1:]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """``make()``, kept until the graph changes (a pass's own derived fact, e.g. the cut)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def changed(self) -> None:
        """The graph was edited: every map is rebuilt on its next read."""
        self._cache.clear()

    @property
    def producers(self) -> dict[str, onnx.NodeProto]:
        return self.cached("producers", lambda: producers(self.graph))

    @property
    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        return self.cached("consumers", lambda: consumers(self.graph))

    @property
    def inits(self) -> Initializers:
        return self.cached("inits", lambda: initializers(self.model))

    @property
    def shapes(self) -> dict[str, Shape]:
        """Static shapes now (None for symbolic dims); ``source_shapes`` are those at the source's own geometry."""
        return self.cached("shapes", lambda: shapes(self.model))

    def shape(self, name: str) -> Shape | None:
        """``name``'s shape now, measured in ONNX Runtime where static inference cannot tell."""
        measured: dict[str, Shape | None] = self.cached("measured", dict)
        if name not in measured:
            measured[name] = tensor_shape(self.model, name)
        return measured[name]

    def set_init(self, name: str, value: np.ndarray) -> None:
        set_initializer(self.model, name, value)
        self.changed()

    def remove(self, node: onnx.NodeProto) -> None:
        self.graph.node.remove(node)
        self.changed()

    def replace(self, old: onnx.NodeProto, new: onnx.NodeProto) -> None:
        """``new`` takes ``old``'s place in the node order."""
        self.graph.node.insert(list(self.graph.node).index(old), new)
        self.graph.node.remove(old)
        self.changed()

    def append(self, *nodes: onnx.NodeProto) -> None:
        self.graph.node.extend(nodes)
        self.changed()

    def rewire(self, old: str, new: str) -> None:
        """Every reader of tensor ``old`` reads ``new`` instead."""
        for n in self.consumers.get(old, []):
            n.input[:] = [new if i == old else i for i in n.input]
        self.changed()

    def cleanup(self) -> None:
        """Drop dead nodes and unused initializers."""
        remove_dead(self.graph)
        self.changed()

    def sort(self) -> None:
        toposort(self.graph)
        self.changed()


def view_of(model: onnx.ModelProto | View) -> View:
    """``model``'s view: a pass called on a bare model (a test, a one-off) gets a fresh one."""
    return model if isinstance(model, View) else View(model)
