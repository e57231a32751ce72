"""Find where a CNN's feature extractor ends and its classifier head begins.

Walking back from the graph output over classifier-side ops (FC layers, bias
adds, activations, flattens, global pools, softmax), the *classifier* is the
first fully-connected op (``Gemm``/``MatMul`` with a constant weight) or,
when the head has none, a 1x1 ``Conv`` (SqueezeNet, DenseNet), or a k x k ``Conv``
whose class maps a global pool averages (mini-Xception). The
*features* are the last feature map the body produces (a transformer's last feature vector): the tensor
reached from the classifier's input by stepping back over flattens and
pass-through ops. The head is everything downstream of the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.errors import XferError
from xfer.surgery.view import View, view_of

if TYPE_CHECKING:
    import onnx

FC_OPS = ("Gemm", "MatMul")
FLATTEN_OPS = ("Flatten", "Reshape", "Squeeze")
PASS_THROUGH = ("Identity", "Dropout")
# activations a new head may be built of (one input, no required attribute) ...
ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "HardSwish", "Gelu", "Selu", "Mish", "Softplus")
# ... and those a source head may also hold (ReLU6 is a Clip)
HEAD_ACTIVATIONS = ACTIVATIONS + ("Clip", "HardSigmoid", "PRelu")
GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
REDUCE_POOLS = {"ReduceMean": "GlobalAveragePool", "ReduceMax": "GlobalMaxPool"}
PROBABILITIES = ("Softmax", "LogSoftmax")
HEAD_OPS = FC_OPS + FLATTEN_OPS + PASS_THROUGH + HEAD_ACTIVATIONS + GLOBAL_POOLS + tuple(REDUCE_POOLS) + PROBABILITIES \
    + ("Add", "Conv")


@dataclass
class Boundary:
    features: str            # the body's last feature map (N, C, H, W), or feature vector (N, D) of a transformer
    classifier: onnx.NodeProto  # first classifier layer: Gemm/MatMul, or a 1x1 Conv
    head: list[onnx.NodeProto] = field(default_factory=list)   # every node downstream of ``features``
    flatten: onnx.NodeProto | None = None  # the Flatten/Reshape between features and classifier, if any
    pool: str | None = None  # a global pool the source applies *after* a conv classifier

    @property
    def flat(self) -> str:
        """The tensor entering the classifier."""
        return self.classifier.input[0]

    @property
    def first_fc(self):
        return self.classifier


@dataclass
class Dense:
    """One fully-connected layer: a Gemm, or a MatMul followed by an Add of a bias."""

    nodes: list
    weight: str
    bias: str | None
    trans_b: bool            # weight stored (out, in) when True, (in, out) when False
    output: str


def downstream(model: onnx.ModelProto | View, start: str) -> list:
    """Every node that depends on tensor ``start``, in graph order."""
    v = view_of(model)
    cons = v.consumers
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
    order = {id(n): i for i, n in enumerate(v.graph.node)}
    return sorted(seen_n, key=lambda n: order[id(n)])


def _is_pointwise_conv(node, inits) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    w = inits[node.input[1]]
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return w.ndim == 4 and w.shape[2:] == (1, 1) and group == 1


def _is_pooled_conv_classifier(node, inits, after: list) -> bool:
    """A k x k Conv (one group, constant weights) whose maps a global pool averages into the class scores."""
    if len(node.input) < 2 or node.input[1] not in inits or inits[node.input[1]].ndim != 4:
        return False
    pooled = any(n.op_type in GLOBAL_POOLS or global_pool_of(n, inits) for n in after)
    convs = any(n.op_type == "Conv" for n in after)
    return pooled and not convs and next((a.i for a in node.attribute if a.name == "group"), 1) == 1


def global_pool_of(node, inits, rank: int | None = None) -> str | None:
    """The global pool a ``ReduceMean``/``ReduceMax`` over every spatial axis computes (whatever its keepdims).

    PyTorch's exporters write ``x.mean((2, 3))`` and the dynamo exporter's
    adaptive average pool this way. ``rank`` is the input's rank when known
    (4 is assumed otherwise).
    """
    if node.op_type not in REDUCE_POOLS:
        return None
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1] in inits:
        axes = [int(v) for v in inits[node.input[1]].reshape(-1)]
    r = rank or 4
    if not axes or r < 3 or sorted(a % r for a in axes) != list(range(2, r)):
        return None
    return REDUCE_POOLS[node.op_type]


def _data_input(node, inits) -> str | None:
    """The tensor a head op transforms (for a bias Add: the non-constant operand)."""
    if node.op_type == "Add":
        dynamic = [i for i in node.input if i not in inits]
        return dynamic[0] if len(dynamic) == 1 else None
    return node.input[0] if node.input else None


def _head_chain(v: View) -> list:
    """Classifier-side nodes on the path ending at the first graph output, body side first."""
    g, inits = v.graph, v.inits
    prod = v.producers
    chain: list = []
    t = g.output[0].name
    while t in prod:
        n = prod[t]
        if n.op_type == "Conv" and not _is_pointwise_conv(n, inits):
            if _is_pooled_conv_classifier(n, inits, chain):  # mini-Xception: a k x k conv of one map per class,
                chain.append(n)                               # then a global pool; the body is what it reads
            break
        if n.op_type not in HEAD_OPS:
            break
        if n.op_type in FC_OPS and (len(n.input) < 2 or n.input[1] not in inits):
            break
        if n.op_type in REDUCE_POOLS and global_pool_of(n, inits) is None:
            break
        nxt = _data_input(n, inits)
        if nxt is None:
            break
        chain.append(n)
        t = nxt
    chain.reverse()
    return chain


def find_boundary(model: onnx.ModelProto | View) -> Boundary:
    """Where the body ends and the classifier begins; ``XferError`` when the graph has no such cut."""
    v = view_of(model)
    return v.cached("boundary", lambda: _find_boundary(v))


def _find_boundary(v: View) -> Boundary:
    g, inits = v.graph, v.inits
    chain = _head_chain(v)
    fc = next((n for n in chain if n.op_type in FC_OPS), None)
    classifier = fc or next((n for n in chain if n.op_type == "Conv"), None)
    if classifier is None:
        ops = sorted({n.op_type for n in g.node})
        raise XferError(f"cannot cut graph '{g.name}': no fully-connected or 1x1-conv classifier before the output "
                        f"(ops: {', '.join(ops)})")
    prod = v.producers
    t, flatten = classifier.input[0], None
    while t in prod and prod[t].op_type in FLATTEN_OPS + PASS_THROUGH:
        if prod[t].op_type in FLATTEN_OPS:
            flatten = prod[t]
        t = prod[t].input[0]
    after = chain[chain.index(classifier) + 1:]
    pools = [n.op_type if n.op_type in GLOBAL_POOLS else global_pool_of(n, inits) for n in after]
    pool = next((p for p in pools if p), None) if fc is None else None
    return Boundary(t, classifier, downstream(v, t), flatten, pool)


def dense_layers(model: onnx.ModelProto | View, boundary: Boundary | None = None) -> list[Dense]:
    """The head's fully-connected layers in order, each with its weight and bias initializer names."""
    v = view_of(model)
    b = boundary or find_boundary(v)
    inits, cons = v.inits, v.consumers
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
    """The head's activation family (the first activation op after the features), Relu if none."""
    return next((n.op_type for n in boundary.head if n.op_type in ACTIVATIONS), "Relu")


def feature_nodes(model: onnx.ModelProto | View, boundary: Boundary) -> list:
    head = {id(n) for n in boundary.head}
    return [n for n in view_of(model).graph.node if id(n) not in head]


SCALING = ("Mul", "Add", "Sub", "Div")  # x * c, x + c, ...: an input normalisation the model carries (Keras Rescaling)


def _input_side(node, inits) -> str | None:
    """The tensor a step before the first conv passes on: pass-through ops, and scalings by a per-channel constant."""
    if node.op_type in PASS_THROUGH + ("Cast",):
        return node.input[0]
    if node.op_type in SCALING and len(node.input) == 2:
        dynamic = [i for i in node.input if i not in inits]
        consts = [inits[i] for i in node.input if i in inits]
        if len(dynamic) == 1 and consts and (consts[0].size == 1 or consts[0].squeeze().ndim == 1):
            return dynamic[0]
    return None


def input_steps(v: View, conv: onnx.NodeProto) -> list | None:
    """The nodes between the graph input and ``conv`` (pass-through ops, constant scalings), or None when ``conv``
    does not read the input through such steps alone."""
    inputs = {i.name for i in v.graph.input}
    steps: list = []
    t: str | None = conv.input[0]
    while t in v.producers and t not in inputs:
        steps.append(v.producers[t])
        t = _input_side(v.producers[t], v.inits)
    return steps if t in inputs else None


def first_conv(model: onnx.ModelProto | View):
    """The Conv that reads the graph input (through pass-through ops and a constant input normalisation)."""
    v = view_of(model)
    for n in v.graph.node:
        if n.op_type == "Conv" and input_steps(v, n) is not None:
            return n
    raise XferError(f"graph '{v.graph.name}': no Conv reads the input directly")
