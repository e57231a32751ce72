"""The README's model-zoo table: the nine CNNs of the onnx wheel through xfer's importer, surgery and training.

For each model: import parity with ONNX Runtime at its native input (max |torch - ORT| over the output's
range, on the pre-softmax logits), whether surgery succeeds in each of the four modes at 64x64x3 (the
rewritten graph is run in ONNX Runtime at a batch of 2 before it counts), and the seconds of one
training epoch (xfer.loop.train_one_epoch, 256 images of 64x64x3, batch 32) in frozen and finetune mode.

    .venv/bin/python benchmarks/zoo_table.py [--images 256] [--out reports/zoo.json]

Exits non-zero when a model fails to import within 1e-4 of ORT or fails surgery in a mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper

from xfer.dan import TaskLoss
from xfer.errors import XferError
from xfer.importer import to_torch
from xfer.io import write_text
from xfer.loop import train_one_epoch
from xfer.surgery import MODES, apply
from xfer.zoo import ZOO, load_zoo

CLASSES = [str(i) for i in range(7)]


def parity(m) -> float:
    """max |torch - ORT| / range of ORT's output, on the input of a final Softmax when there is one."""
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    soft = next((n for n in probe.graph.node if n.output[0] == probe.graph.output[0].name and n.op_type == "Softmax"), None)
    if soft is not None:
        probe.graph.output[0].CopyFrom(helper.make_empty_tensor_value_info(soft.input[0]))
        probe.graph.node.remove(soft)
    dims = [d.dim_value for d in probe.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = to_torch(probe).eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(got - ref).max() / max(float(ref.max() - ref.min()), 1e-12))


def epoch_seconds(model, images: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((images, 3, 64, 64)).astype(np.float32)
    y = rng.integers(0, len(CLASSES), images).astype(np.int64)
    net = to_torch(model)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    return train_one_epoch(net, opt, x, y, 32, 0, 0, torch.device("cpu"), TaskLoss(y)).seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="training images per timed epoch (default: 256)")
    p.add_argument("--out", default="reports/zoo.json", help="JSON results (default: reports/zoo.json)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows, ok = [], True
    for name in ZOO:
        src = load_zoo(name)
        row = {"model": name, "nodes": len(src.graph.node),
               "params_M": round(sum(int(np.prod(t.dims)) for t in src.graph.initializer) / 1e6, 1),
               "parity": parity(src)}
        ok &= row["parity"] <= 1e-4
        for mode in MODES:
            try:
                m = apply(mode, src, CLASSES, 3, (64, 64))
                row[mode] = "ok"
                if mode in ("frozen", "finetune"):
                    row[f"{mode}_epoch_s"] = round(epoch_seconds(m, a.images), 2)
            except XferError as e:
                row[mode] = f"refused: {e}"
                ok = False
        rows.append(row)
        print(f"{name:14s} parity {row['parity']:.1e}  " + "  ".join(f"{m} {row[m]}" for m in MODES)
              + f"  epoch frozen {row.get('frozen_epoch_s')} s, finetune {row.get('finetune_epoch_s')} s", flush=True)
    print()
    print("| model | params (M) | import parity (max err / range) | scratch | reuse | frozen | finetune "
          "| s/epoch frozen | s/epoch finetune |")
    print("|---|---:|---:|:-:|:-:|:-:|:-:|---:|---:|")
    for r in rows:
        marks = " | ".join("✓" if r[m] == "ok" else "✗" for m in MODES)
        print(f"| {r['model']} | {r['params_M']} | {r['parity']:.1e} | {marks} | {r.get('frozen_epoch_s', '-')} "
              f"| {r.get('finetune_epoch_s', '-')} |")
    write_text(a.out, json.dumps({"images": a.images, "input": [3, 64, 64], "rows": rows}, indent=2))
    print(f"\nwrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    start = time.time()
    rc = main()
    print(f"({time.time() - start:.0f} s)")
    sys.exit(rc)
