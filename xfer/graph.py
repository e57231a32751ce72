"""ONNX graph utilities every stage shares: metadata, clean-up, topological sort, checking, loading."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from xfer.errors import XferError
from xfer.io import atomic_path, write_bytes
from xfer.meta import read_meta

if TYPE_CHECKING:
    import onnx


def load_model(path_or_model: str | os.PathLike[str] | onnx.ModelProto, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model from a path (clear errors for missing, truncated or non-ONNX files) or pass one through."""
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    path = Path(path_or_model)
    if not path.is_file():
        raise XferError(f"{path}: no such model file")
    data = path.read_bytes()
    if not data:
        raise XferError(f"{path}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError, or RuntimeWarning-like errors from its C++ parser
        raise XferError(f"{path}: not an ONNX model (protobuf parse failed; truncated or another format?)") from None
    if not model.graph.node or not model.opset_import:
        raise XferError(f"{path}: not an ONNX model (no graph nodes or opset)")
    _check_external_data(model, path.parent)
    known = onnx.defs.onnx_opset_version()
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if default and not 1 <= default[0] <= known:
        raise XferError(f"{path}: opset {default[0]} of the default domain is not one this onnx knows (1..{known}); "
                        "export the model for an older opset")
    if check:
        try:  # a model over protobuf's 2 GB cannot be serialised whole: its skeleton is checked (weights by size)
            onnx.checker.check_model(model if not is_large(model) else skeleton(model, keep_ir=True))
            if is_large(model):
                _check_initializers(model)
        except XferError as e:
            raise XferError(f"{path}: invalid ONNX model ({str(e).split(': ', 1)[-1]})") from None
        except onnx.checker.ValidationError as e:
            raise XferError(f"{path}: invalid ONNX model ({str(e).splitlines()[0][:200]})") from None
        except Exception as e:  # the checker's own failures on damaged bytes (undecodable names, ...)
            raise XferError(f"{path}: invalid ONNX model ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:150]})") \
                from None
    try:
        read_meta(model)  # xfer's metadata is checked once, where the file's name is known
    except XferError as e:
        raise XferError(f"{path}: {e}") from None
    return model


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor a graph holds, with where it sits: initializers, sparse initializers, tensor attributes of
    nodes (``Constant`` and others), and the same inside every subgraph (``If``, ``Loop``, ``Scan``), recursively."""
    for t in graph.initializer:
        yield f"{where}initializer '{t.name}'", t
    for sp in graph.sparse_initializer:
        yield f"{where}sparse initializer '{sp.values.name}'", sp.values
        yield f"{where}sparse initializer '{sp.values.name}' (indices)", sp.indices
    yield from _node_tensors(graph.node, where)


def _node_tensors(nodes: Iterable[onnx.NodeProto], where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for n in nodes:
        label = f"{where}node '{n.name or (n.output[0] if n.output else n.op_type)}' ({n.op_type})"
        for a in n.attribute:
            yield from ((f"{label} attribute '{a.name}'", t) for t in ([a.t] if a.HasField("t") else []) + list(a.tensors))
            for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield f"{label} attribute '{a.name}'", sp.values
                yield f"{label} attribute '{a.name}' (indices)", sp.indices
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _graph_tensors(g, f"{label} subgraph '{a.name}': ")


def all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor in ``model`` that could carry external data, named by where it sits."""
    yield from _graph_tensors(model.graph, "")
    for f in model.functions:
        yield from _node_tensors(f.node, f"function '{f.name}': ")


def _check_external_data(model: onnx.ModelProto, base: Path) -> None:
    """External tensor data must live inside the model's folder and inside its file, checked for every tensor
    before any is read (not left to the installed onnx's own checks, which differ between versions)."""
    from onnx import TensorProto

    base = base.resolve()
    external = False
    for what, t in all_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        external = True
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if not loc or os.path.isabs(loc) or (base != target and base not in target.parents):
            raise XferError(f"{what}: external data path '{loc}' escapes the model's folder")
        if not target.is_file():
            raise XferError(f"{what}: external data file '{loc}' does not exist")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise XferError(f"{what}: external data offset/length are not integers") from None
        size = target.stat().st_size
        if offset < 0 or offset > size or (length >= 0 and offset + length > size):
            raise XferError(f"{what}: external data [{offset}, {offset + max(length, 0)}) runs past the end of "
                            f"'{loc}' ({size} bytes)")
    if not external:
        return
    import onnx.external_data_helper as edh

    try:
        edh.load_external_data_for_model(model, str(base))
    except Exception as e:  # onnx's own refusals (its path checks, a short read) as one line
        raise XferError(f"external data could not be read ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:150]})") from None


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace initializer ``name`` with ``value`` (any shape), or add it."""
    from onnx import numpy_helper

    g = model.graph
    for t in g.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value, name))
            return
    g.initializer.append(numpy_helper.from_array(value, name))


class Initializers(Mapping):
    """The model's initializers by name, decoded to numpy only when a value is read.

    Most passes ask only which names are constants; decoding every weight of a
    500 MB model for that would dominate surgery.
    """

    def __init__(self, model):
        self._protos = {t.name: t for t in model.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            from onnx import numpy_helper

            self._arrays[name] = numpy_helper.to_array(self._protos[name])
        return self._arrays[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._arrays[name] = value
        self._protos.setdefault(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __iter__(self):
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)


def initializers(model: onnx.ModelProto) -> Initializers:
    return Initializers(model)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def toposort(graph: onnx.GraphProto) -> None:
    """Sort nodes so every input is produced before use (Kahn's algorithm, stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = sorted({i for n in rest for i in n.input if i not in available})
            raise XferError(f"graph has a cycle or dangling inputs: {', '.join(missing[:5])}")
        pending = rest
    _replace(graph.node, ordered)


def _replace(field, items) -> None:
    """Replace a protobuf repeated field's contents with copies of ``items`` (which may alias it)."""
    copies = [type(x)() for x in items]
    for d, s in zip(copies, items):
        d.CopyFrom(s)
    del field[:]
    field.extend(copies)


def _delete_where(field, drop) -> None:
    """Delete, in place, the items of a protobuf repeated field for which ``drop`` is true (no copies)."""
    for i in reversed([i for i, x in enumerate(field) if drop(x)]):
        del field[i]


def remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers no node uses."""
    needed = {o.name for o in graph.output}
    live = set()
    for i, n in reversed(list(enumerate(graph.node))):
        if any(o in needed for o in n.output):
            live.add(i)
            needed.update(n.input)
    dead = [i for i in range(len(graph.node)) if i not in live]
    for i in reversed(dead):
        del graph.node[i]
    _delete_where(graph.initializer, lambda t: t.name not in needed)
    _delete_where(graph.value_info, lambda v: v.name not in needed)


def bypass(graph: onnx.GraphProto, node: onnx.NodeProto) -> None:
    """Remove a one-in one-out node, rewiring its readers to its input."""
    src, dst = node.input[0], node.output[0]
    outputs = {o.name for o in graph.output}
    if dst in outputs:
        for n in graph.node:
            n.output[:] = [dst if o == src else o for o in n.output]
        for i in graph.input:
            if i.name == src:
                return  # an input feeding the output directly: keep the node
    else:
        for n in graph.node:
            n.input[:] = [src if i == dst else i for i in n.input]
    graph.node.remove(node)


SMALL_CONSTANT = 4096  # initializers up to this many elements keep their values in a skeleton


def skeleton(model: onnx.ModelProto, keep_ir: bool = False) -> onnx.ModelProto:
    """The model without its large initializers' payloads (they become typed inputs).

    Shape and type inference only need types, shapes and the small constants
    (shape vectors, axes), so inferring on the skeleton costs the same for a
    500 MB model as for a 5 MB one.
    """
    import onnx
    from onnx import helper

    out = onnx.ModelProto(ir_version=model.ir_version if keep_ir else max(model.ir_version, 4))
    out.metadata_props.extend(model.metadata_props)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    src, g = model.graph, out.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    inputs = {i.name for i in src.input}
    for t in src.initializer:
        if int(np.prod(t.dims)) <= SMALL_CONSTANT or t.data_type == onnx.TensorProto.INT64:
            g.initializer.append(t)
        elif t.name not in inputs:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return out


def _inferred(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(skeleton(model), data_prop=True)
    except Exception:  # inference of exotic graphs may fail: callers get what the unchecked model declares
        return skeleton(model)


def value_types(model: onnx.ModelProto) -> dict[str, int | str]:
    """Every value's element type (an ``onnx.TensorProto`` enum), or the kind of a non-tensor value."""
    g = _inferred(model).graph
    out: dict[str, int | str] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        kind = v.type.WhichOneof("value")
        if kind == "tensor_type":
            if v.type.tensor_type.elem_type:
                out[v.name] = v.type.tensor_type.elem_type
        elif kind is not None:
            out[v.name] = kind.replace("_type", "")
    for t in g.initializer:
        out[t.name] = t.data_type
    return out


def shapes(model: onnx.ModelProto) -> dict[str, list[Any]]:
    """Static shapes (None for symbolic dims) of every value shape inference can determine."""
    inferred = _inferred(model)
    out = {}
    g = inferred.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        tt = v.type.tensor_type
        if tt.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def tensor_shape(model: onnx.ModelProto, name: str) -> list[Any] | None:
    """The shape of tensor ``name`` past the batch dim: from shape inference, else measured in ONNX Runtime.

    Shapes computed at run time (the old exporter's Shape -> Gather -> Concat ->
    Reshape) defeat static inference; running the graph up to ``name`` on a
    batch of 2 of the declared input size measures them.
    """
    s = shapes(model).get(name)
    if s and all(v is not None for v in s[1:]):
        return s
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    inp = probe.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 2 for d in inp.type.tensor_type.shape.dim]
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort_session(probe, opts)
        y = sess.run(None, {inp.name: np.zeros(dims, np.float32)}, _quiet_run())[0]
    except Exception:  # a graph ORT cannot run: the caller reports the unknown shape
        return s
    return [None, *y.shape[1:]]


def simplify(model: onnx.ModelProto) -> None:
    """Drop inference no-ops: Identity, Dropout, and Flatten of an already 2-D tensor."""
    g = model.graph
    changed = True
    while changed:
        changed = False
        sh = shapes(model)
        for n in list(g.node):
            noop = n.op_type in ("Identity", "Dropout") and len([o for o in n.output if o]) == 1
            if n.op_type == "Flatten":
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                s = sh.get(n.input[0])
                noop = s is not None and len(s) == 2 and axis == 1
            if noop:
                bypass(g, n)
                changed = True
                break
    remove_dead(g)


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (tools such as ONNX Runtime's quantizer key on node names)."""
    seen: set[str] = set()
    for n in graph.node:
        base = n.name or n.output[0] or n.op_type
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        n.name = name
        seen.add(name)


def finalize(model: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """Clean up, sort, check and infer shapes: the last step before any model is saved."""
    import onnx

    del model.graph.value_info[:]
    remove_dead(model.graph)
    name_nodes(model.graph)
    toposort(model.graph)
    _check_initializers(model)
    try:
        onnx.checker.check_model(skeleton(model, keep_ir=True))
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=strict, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise XferError(f"rewritten graph is invalid: {str(e).splitlines()[0][:300]}") from None
    known = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known)
    return model


def _check_initializers(model: onnx.ModelProto) -> None:
    """What the checker verifies of the weights the skeleton leaves out: a payload of the declared size."""
    from onnx import helper, numpy_helper

    for t in model.graph.initializer:
        n = int(np.prod(t.dims))
        if t.data_location == 1 or n <= SMALL_CONSTANT:
            continue
        if t.raw_data:
            ok = len(t.raw_data) == n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        else:
            ok = numpy_helper.to_array(t).size == n
        if not ok:
            raise XferError(f"rewritten graph is invalid: initializer '{t.name}' does not hold {list(t.dims)} values")


def _quiet_run():
    """Run options under which a failing kernel raises without also logging to stderr."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return ro


def check_runs(model: onnx.ModelProto, channels: int, size: tuple[int, int], outputs: int, x: np.ndarray | None = None) -> np.ndarray:
    """Run ``model`` in ONNX Runtime on a batch of 2: a rewritten graph that passes the checker may still not run.

    Returns the output for ``x`` (zeros unless given), for comparison with another runtime.
    """
    import onnxruntime as ort

    for name, shape in shapes(model).items():
        if any(d is not None and d < 1 for d in shape[1:]):
            raise XferError(f"input {channels}x{size[0]}x{size[1]} is too small for this model: "
                            f"'{name}' would have shape {['N', *shape[1:]]}")
    x = np.zeros((2, channels, *size), np.float32) if x is None else x
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort_session(model, opts)
        y = sess.run(None, {sess.get_inputs()[0].name: x}, _quiet_run())[0]
    except Exception as e:  # ORT raises its own exception types for graphs it cannot load or run
        message = str(e).splitlines()[0]
        if "Status Message:" in message:  # ORT's C++ source path and helper name tell a user nothing
            message = message.split("Name:", 1)[-1].split("Status Message:", 1)[0].strip() + ": " + \
                message.split("Status Message:", 1)[1].split(") ", 1)[-1].strip()
        raise XferError(f"rewritten graph does not run in ONNX Runtime at input {channels}x{size[0]}x{size[1]}: "
                        f"{message[:240]}") from None
    if y.shape != (2, outputs):
        raise XferError(f"rewritten graph outputs shape {y.shape} for a batch of 2, expected (2, {outputs})")
    return y


# protobuf cannot serialise a message of 2 GB or more; such models keep their weights in a side file
PROTO_LIMIT = 2 ** 31 - 2 ** 24


def is_large(model: onnx.ModelProto) -> bool:
    return sum(len(t.raw_data) for t in model.graph.initializer) > PROTO_LIMIT or model.ByteSize() > PROTO_LIMIT


def ort_session(model, opts=None):
    """An ONNX Runtime CPU session for ``model``; one over 2 GB goes through a temporary folder with external data."""
    import tempfile

    import onnx
    import onnxruntime as ort

    try:
        if not is_large(model):
            return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        with tempfile.TemporaryDirectory(prefix="xfer-large-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(copy, path, save_as_external_data=True, location="model.onnx.data")
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's Fail/InvalidGraph/NotImplemented: the model, not xfer
        raise ort_refusal(e) from None


def ort_refusal(e: BaseException) -> XferError:
    """ONNX Runtime's refusal of a model (an unknown opset or domain, a bad graph) as one line."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    # ORT prefixes its reason with the C++ source location ("... FAIL : /path/file.cc:46 void f(...) reason")
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first)
    reason = re.sub(r"^/\S+:\d+ [^(]*\([^)]*\)[^ ]* ", "", reason)
    return XferError(f"ONNX Runtime cannot run the model ({reason[:200]})")


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically; one over 2 GB keeps its weights in ``NAME.data`` beside it (written first)."""
    if not is_large(model):
        return write_bytes(path, model.SerializeToString())
    import onnx

    path = Path(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # the model is renamed into place last, so a reader never finds it without its weights
    with atomic_path(path) as tmp, atomic_path(path.with_name(path.name + ".data")) as tmp_data:
        onnx.save_model(copy, str(tmp), save_as_external_data=True, location=tmp_data.name)
        for t in copy.graph.initializer:  # point at the side file's final name
            for e in t.external_data:
                if e.key == "location":
                    e.value = path.name + ".data"
        tmp.write_bytes(copy.SerializeToString())
    return path


class InputSpec(NamedTuple):
    """What a trained model expects of the preprocessing: channels, (h, w), and the normalisation."""

    channels: int
    size: tuple[int, int]
    mean: list[float]
    std: list[float]


def input_spec(model: onnx.ModelProto, where: object = "model") -> InputSpec:
    """The input spec recorded in ``model``'s metadata; ``XferError`` naming ``where`` when it is missing."""
    meta = read_meta(model)
    shape = meta.input_shape
    if not shape or len(shape) != 3:
        raise XferError(f"{where}: no xfer.input_shape in the model's metadata (train it with `xfer train`)")
    if model.graph.input:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(declared) != 4 or any(d is not None and d != s for d, s in zip(declared[1:], shape, strict=False)):
            text = "x".join("?" if d is None else str(d) for d in declared)
            raise XferError(f"{where}: its input is declared {text}, its metadata says N x {shape[0]}x{shape[1]}x{shape[2]}")
    mean, std = meta.normalisation
    return InputSpec(int(shape[0]), (int(shape[1]), int(shape[2])), mean, std)
