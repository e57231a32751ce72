"""ONNX -> PyTorch and back: train an ONNX graph in PyTorch, then write the weights back into it.

ONNX stays the single source of truth: ``to_torch`` turns every float
initializer into an ``nn.Parameter`` (frozen ones with ``requires_grad=False``)
and every node into a small module from the converter registry; ``write_back``
copies trained values into the same graph's initializers.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from xfer.errors import XferError
from xfer.graph import load_model, value_types
from xfer.importer import fusion, ops  # noqa: F401  (ops registers the converters)
from xfer.importer.registry import ANY, REGISTRY, attributes, model_opset, node_label, register, spec_for, upgrade
from xfer.meta import read_meta

if TYPE_CHECKING:
    import onnx

__all__ = ["REGISTRY", "OnnxModule", "logits_of", "register", "supported_ops", "to_torch", "write_back"]


def logits_of(out: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """The class scores of an imported model's output: its first output when the graph has several."""
    return out[0] if isinstance(out, (tuple, list)) else out


def supported_ops() -> frozenset[str]:
    """The ONNX op types (default domain) the importer converts."""
    return frozenset(REGISTRY)


def check_types(model: onnx.ModelProto, specs) -> None:
    """Refuse, naming the node, any value the converters cannot represent with ONNX semantics."""
    from onnx import TensorProto

    types = value_types(model)
    for node, spec in zip(model.graph.node, specs):
        for j, name in enumerate(list(node.input) + list(node.output)):
            t = types.get(name) if name else None
            if t is None:
                continue
            if isinstance(t, str):
                raise XferError(f"{node_label(node)}: {t} values are not supported ('{name}'); tensors only")
            if t not in ANY:
                raise XferError(f"{node_label(node)}: {TensorProto.DataType.Name(t)} tensors are not supported ('{name}')")
            if j == 0 and node.input and t not in spec.types:
                raise XferError(f"{node_label(node)}: input of type {TensorProto.DataType.Name(t)} is not supported")


def _without_trailing_omitted(ins: list[str]) -> list[str]:
    """A node's inputs without trailing omitted ones: converters take optional inputs as defaults."""
    ins = list(ins)
    while ins and ins[-1] == "":
        ins.pop()
    return ins


def _key(i: int, name: str) -> str:
    """A ParameterDict-safe key that stays readable."""
    safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return f"t{i}_{safe}"[:120]


class OnnxModule(nn.Module):
    """Runs an ONNX graph node by node with PyTorch ops; its tensors are the graph's initializers."""

    def __init__(self, model, frozen: set[str] | None = None):
        super().__init__()
        from onnx import numpy_helper

        frozen = set(frozen if frozen is not None else (read_meta(model).frozen or []))
        self.source_opset = model_opset(model)
        model = upgrade(model)  # an old-opset file runs as onnx's version converter rewrote it
        g = model.graph
        self.opset = model_opset(model)
        specs = [spec_for(n, self.opset) for n in g.node]
        check_types(model, specs)
        buffer_names = {n.input[i] for n, s in zip(g.node, specs) for i in s.buffers if i < len(n.input)}
        self.params = nn.ParameterDict()
        self.keys: dict[str, str] = {}
        for i, t in enumerate(g.initializer):
            arr = numpy_helper.to_array(t)
            key = _key(i, t.name)
            self.keys[t.name] = key
            tensor = torch.from_numpy(np.array(arr, copy=True))
            if arr.dtype.kind == "f" and t.name not in buffer_names:
                self.params[key] = nn.Parameter(tensor, requires_grad=t.name not in frozen)
            else:
                self.register_buffer(key, tensor)
        modules = [s.fn(n, attributes(n), self.opset) for n, s in zip(g.node, specs)]
        wiring: list[tuple[list[str], list[str]]] = [(list(n.input), list(n.output)) for n in g.node]
        modules, wiring = fusion.fuse(list(g.node), modules, wiring, {o.name for o in g.output})
        self.nodes = nn.ModuleList(modules)
        self.calls = [(_without_trailing_omitted(ins), outs) for ins, outs in wiring]
        self.input_names = [i.name for i in g.input if i.name not in self.keys]
        self.output_names = [o.name for o in g.output]

    def tensor(self, name: str) -> torch.Tensor:
        key = self.keys[name]
        return self.params[key] if key in self.params else getattr(self, key)

    def _constants(self) -> dict[str, Any]:
        """Every initializer's tensor by ONNX name, read once per forward (not once per node input)."""
        params, buffers = self.params._parameters, self._buffers
        return {name: params[key] if key in params else buffers[key] for name, key in self.keys.items()}

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise XferError(f"model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        env: dict[str, Any] = self._constants()
        env.update(zip(self.input_names, inputs))
        env[""] = None  # an omitted optional input
        for module, (ins, outs) in zip(self.nodes, self.calls):
            result = module(*[env[name] for name in ins])
            if isinstance(result, (tuple, list)):
                env.update(zip(outs, result))
            else:
                env[outs[0]] = result
        out = [env[n] for n in self.output_names]
        return out[0] if len(out) == 1 else tuple(out)


def to_torch(model: onnx.ModelProto, frozen: set[str] | None = None) -> OnnxModule:
    """An ``nn.Module`` running ``model`` (an ``onnx.ModelProto`` or a path).

    Initializers listed in the model's ``xfer.frozen`` metadata (or ``frozen``)
    get ``requires_grad=False``; an op without a converter raises ``XferError``
    naming the op and the node.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    return OnnxModule(model, frozen)


def write_back(module: OnnxModule, model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers hold ``module``'s current values."""
    from onnx import numpy_helper

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    out = copy.deepcopy(model)
    for t in out.graph.initializer:
        if t.name not in module.keys:
            raise XferError(f"initializer '{t.name}' is not in the module: was it built from another model?")
        value = module.tensor(t.name).detach().cpu().numpy()
        if list(value.shape) != list(t.dims):
            raise XferError(f"initializer '{t.name}': module has shape {tuple(value.shape)}, model {tuple(t.dims)}")
        new = numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype, copy=False), t.name)
        t.CopyFrom(new)
    return out
