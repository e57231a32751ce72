"""Find where a CNN's feature extractor ends and its classifier head begins.

The boundary is the flatten (``Flatten`` or ``Reshape``) whose output feeds the
first fully-connected op (``Gemm`` or ``MatMul``), possibly through
``Identity``/``Dropout``. The head is everything downstream of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xfer.errors import XferError
from xfer.graph import consumers, initializers, producers

FC_OPS = ("Gemm", "MatMul")
FLATTEN_OPS = ("Flatten", "Reshape")
PASS_THROUGH = ("Identity", "Dropout")
ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu")


@dataclass
class Boundary:
    flatten: object          # the flatten NodeProto
    features: str            # tensor entering the flatten: (N, C, H, W)
    flat: str                # tensor leaving it: (N, C*H*W)
    first_fc: object         # first Gemm/MatMul reading it
    head: list = field(default_factory=list)   # every node downstream of ``flat``


@dataclass
class Dense:
    """One fully-connected layer: a Gemm, or a MatMul followed by an Add of a bias."""

    nodes: list
    weight: str
    bias: str | None
    trans_b: bool            # weight stored (out, in) when True, (in, out) when False
    output: str


def _downstream(graph, start: str) -> list:
    cons = consumers(graph)
    seen_t, seen_n, stack = {start}, [], [start]
    ids = set()
    while stack:
        t = stack.pop()
        for n in cons.get(t, []):
            if id(n) not in ids:
                ids.add(id(n))
                seen_n.append(n)
                for o in n.output:
                    if o not in seen_t:
                        seen_t.add(o)
                        stack.append(o)
    order = {id(n): i for i, n in enumerate(graph.node)}
    return sorted(seen_n, key=lambda n: order[id(n)])


def find_boundary(model) -> Boundary:
    """The flatten feeding the first fully-connected op; ``XferError`` when there is none."""
    g = model.graph
    cons = consumers(g)
    for node in g.node:
        if node.op_type not in FLATTEN_OPS:
            continue
        t = node.output[0]
        while True:
            readers = cons.get(t, [])
            if len(readers) == 1 and readers[0].op_type in PASS_THROUGH:
                t = readers[0].output[0]
                continue
            break
        fc = next((r for r in readers if r.op_type in FC_OPS and r.input[0] == t), None)
        if fc is not None:
            return Boundary(node, node.input[0], node.output[0], fc, _downstream(g, node.output[0]))
    ops = sorted({n.op_type for n in g.node})
    raise XferError(f"cannot cut graph '{g.name}': no Flatten/Reshape feeds a Gemm/MatMul (ops: {', '.join(ops)})")


def dense_layers(model, boundary: Boundary | None = None) -> list[Dense]:
    """The head's fully-connected layers in order, each with its weight and bias initializer names."""
    g = model.graph
    b = boundary or find_boundary(model)
    inits = initializers(model)
    cons = consumers(g)
    layers = []
    for n in b.head:
        if n.op_type == "Gemm":
            if n.input[1] not in inits:
                raise XferError(f"node '{n.name or n.output[0]}': Gemm weight is not an initializer")
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            bias = n.input[2] if len(n.input) > 2 and n.input[2] in inits else None
            layers.append(Dense([n], n.input[1], bias, trans_b, n.output[0]))
        elif n.op_type == "MatMul" and n.input[1] in inits:
            nodes, out, bias = [n], n.output[0], None
            readers = cons.get(out, [])
            if len(readers) == 1 and readers[0].op_type == "Add":
                add = readers[0]
                other = add.input[1] if add.input[0] == out else add.input[0]
                if other in inits:
                    nodes.append(add)
                    out, bias = add.output[0], other
            layers.append(Dense(nodes, n.input[1], bias, False, out))
    return layers


def activation_of(boundary: Boundary) -> str:
    """The head's activation family (the first activation op after the flatten), Relu if none."""
    return next((n.op_type for n in boundary.head if n.op_type in ACTIVATIONS), "Relu")


def feature_nodes(model, boundary: Boundary) -> list:
    head = {id(n) for n in boundary.head}
    return [n for n in model.graph.node if id(n) not in head]


def first_conv(model):
    """The Conv that reads the graph input (through at most pass-through ops)."""
    g = model.graph
    prod = producers(g)
    inputs = {i.name for i in g.input}
    for n in g.node:
        if n.op_type != "Conv":
            continue
        t = n.input[0]
        while t in prod and prod[t].op_type in PASS_THROUGH + ("Cast",):
            t = prod[t].input[0]
        if t in inputs:
            return n
    raise XferError(f"graph '{g.name}': no Conv reads the input directly")
