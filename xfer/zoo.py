"""The nine classic model-zoo CNNs that ship inside the ``onnx`` wheel, made runnable.

The wheel stores them "light": every weight is a ``ConstantOfShape`` node fed
by a shape initializer. ``load_zoo`` replaces each generator by a seeded
random initializer of that shape (normal x 0.05 + the generator's value;
BatchNormalization variances kept positive), so the graphs are real
third-party CNNs with runnable weights - the inputs xfer is proven on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfer.errors import XferError
from xfer.graph import remove_dead

ZOO = ("bvlc_alexnet", "zfnet512", "vgg19", "resnet50", "inception_v1", "inception_v2", "densenet121",
       "shufflenet", "squeezenet")


def zoo_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def load_zoo(name: str, seed: int = 0):
    """The zoo model ``name`` (see ``ZOO``) with materialised, seeded weights, as an ``onnx.ModelProto``."""
    import onnx
    from onnx import numpy_helper

    if name not in ZOO:
        raise XferError(f"unknown zoo model '{name}' (expected one of {', '.join(ZOO)})")
    path = zoo_dir() / f"light_{name}.onnx"
    if not path.is_file():
        raise XferError(f"{path}: not found (this onnx wheel does not ship the light model zoo)")
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    variances = {n.input[4] for n in g.node if n.op_type == "BatchNormalization" and len(n.input) > 4}
    rng = np.random.default_rng(seed)
    made, used_shapes, keep = [], set(), []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep.append(n)
            continue
        value = next((numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"), np.zeros(1, np.float32))
        shape = tuple(int(v) for v in inits[n.input[0]])
        w = (rng.standard_normal(shape) * 0.05 + value.reshape(-1)[0]).astype(value.dtype)
        if n.output[0] in variances:
            w = np.abs(w) + 1e-3
        made.append(numpy_helper.from_array(w, n.output[0]))
        used_shapes.add(n.input[0])
    del g.node[:]
    g.node.extend(keep)
    kept = [t for t in g.initializer if t.name not in used_shapes] + made
    del g.initializer[:]
    g.initializer.extend(kept)
    names = {t.name for t in kept}
    real_inputs = [i for i in g.input if i.name not in names and i.name not in used_shapes]
    del g.input[:]
    g.input.extend(real_inputs)
    model.ir_version = max(model.ir_version, 7)
    remove_dead(g)
    onnx.checker.check_model(model)
    return model
