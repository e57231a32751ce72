"""Node patterns the importer runs as one fused PyTorch function, for training speed.

Exporters write SiLU (EfficientNet's activation) as ``Mul(x, Sigmoid(x))``;
run node by node that costs two kernels forward and two saved tensors
backward, ``F.silu`` one of each. Only exact patterns are fused: the sigmoid's
output must feed nothing but the Mul and must not be a graph output, so the
module computes what the graph computes, value for value.
"""

from __future__ import annotations

import torch.nn.functional as F

from xfer.importer.ops.common import Lambda


def silu_pairs(nodes, outputs: set[str]) -> list[tuple[int, int, str]]:
    """(sigmoid index, mul index, x) for every ``Mul(x, Sigmoid(x))`` whose sigmoid feeds only that Mul."""
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            readers.setdefault(t, []).append(i)
    made = {o: i for i, n in enumerate(nodes) for o in n.output}
    pairs = []
    for i, n in enumerate(nodes):
        if n.op_type != "Mul" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        for s, x in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            j = made.get(s)
            if j is None or nodes[j].op_type != "Sigmoid" or nodes[j].input[0] != x:
                continue
            if readers.get(s) == [i] and s not in outputs:
                pairs.append((j, i, x))
                break
    return pairs


def fuse(nodes, modules: list, wiring: list, outputs: set[str]) -> tuple[list, list]:
    """``modules``/``wiring`` with every SiLU pair run as one ``F.silu`` (the sigmoid node dropped)."""
    pairs = silu_pairs(nodes, outputs)
    if not pairs:
        return modules, wiring
    drop = {j for j, _, _ in pairs}
    for _, i, x in pairs:
        modules[i] = Lambda("SiLU", F.silu)
        wiring[i] = ([x], list(nodes[i].output))
    keep = [k for k in range(len(modules)) if k not in drop]
    return [modules[k] for k in keep], [wiring[k] for k in keep]
