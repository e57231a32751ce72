"""``xfer inspect``: what is inside an ONNX model, layer by layer, and what xfer recorded about it."""

from __future__ import annotations

from xfer.config import InspectConfig
from xfer.graph import initializers, load_model, shapes
from xfer.meta import meta_dict, read_meta


def describe(model) -> dict:
    """A JSON-able summary: nodes with output shapes and parameter counts, totals, metadata."""
    inits = initializers(model)
    sh = shapes(model)
    meta = read_meta(model)
    frozen = set(meta.frozen or [])
    layers = []
    for n in model.graph.node:
        params = [i for i in n.input if i in inits]
        count = int(sum(inits[p].size for p in params))
        layers.append({"name": n.name or n.output[0], "op": n.op_type, "output_shape": sh.get(n.output[0]),
                       "params": count, "frozen": bool(params) and all(p in frozen for p in params)})
    total = int(sum(a.size for a in inits.values()))
    n_frozen = int(sum(a.size for k, a in inits.items() if k in frozen))
    io_shapes = {v.name: sh.get(v.name) for v in list(model.graph.input) + list(model.graph.output)}
    return {"opset": model.opset_import[0].version, "inputs": io_shapes, "layers": layers, "params": total,
            "frozen_params": n_frozen, "trainable_params": total - n_frozen, "metadata": meta_dict(meta)}


def _fmt_shape(s) -> str:
    return "?" if s is None else "(" + ", ".join("N" if d is None else str(d) for d in s) + ")"


def main(args: InspectConfig) -> dict:
    from xfer.tables import print_table

    model = load_model(args.model)
    d = describe(model)
    print(f"{args.model}: opset {d['opset']}, " + ", ".join(f"{k} {_fmt_shape(v)}" for k, v in d["inputs"].items()))
    rows = [[i, L["op"], L["name"], _fmt_shape(L["output_shape"]), f"{L['params']:,}" if L["params"] else "",
             "frozen" if L["frozen"] else ""] for i, L in enumerate(d["layers"])]
    print_table(["#", "op", "name", "output", "params", ""], rows)
    print(f"parameters: {d['params']:,} ({d['trainable_params']:,} trainable, {d['frozen_params']:,} frozen)")
    for k, v in d["metadata"].items():
        print(f"  {k}: {f'{len(v)} initializers' if k == 'xfer.frozen' else v}")
    return d
