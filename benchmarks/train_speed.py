"""Training speed of imported networks against the same networks in native PyTorch, side by side in one run.

For resnet18, mobilenet_v2 and efficientnet_b0 (torchvision, random weights with realistic BatchNorm
statistics): the network exported by PyTorch's default (dynamo) exporter and imported by xfer, against the
native network with every conv+BN pair fused (``torch.fx.experimental.optimization.fuse``; the exporter folds
BatchNorm into the convolutions of an eval-mode network the same way). Each step is forward + backward +
an SGD update at batch 32 of 3x64x64 in training mode, 2 threads; the two are timed alternately, and the
median of 10 steps after 2 warm-up steps is reported.

torchvision does not import beside the core's torch, so the timing runs in the torchvision environment
(``XFER_TORCHVISION_PYTHON``, else the one ``torchvision_suite.py`` builds), with this checkout's ``xfer`` on
the path and the kernel built here passed as ``XFER_C_LIBRARY``: both networks run on the same torch.

    .venv/bin/python benchmarks/train_speed.py [--models resnet18,mobilenet_v2,efficientnet_b0] [--out reports/train_speed.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")
BAR = 1.05


def _step(net, opt, x, y) -> float:
    import torch.nn.functional as F

    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    return time.perf_counter() - t


def inside(models: list[str], steps: int, batch: int) -> list[dict]:
    """In the torchvision environment: native (fused) vs imported, alternating steps."""
    import warnings

    import onnx
    import torch
    import torchvision
    from torch.fx.experimental.optimization import fuse

    from xfer.importer import to_torch

    sys.path.insert(0, str(HERE))
    from torchvision_worker import _realistic

    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    rows = []
    for name in models:
        torch.manual_seed(0)
        net = _realistic(torchvision.models.get_model(name, weights=None), 0)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            prog = torch.onnx.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
        f = io.BytesIO()
        onnx.save(prog.model_proto, f)
        imported = to_torch(onnx.load_from_string(f.getvalue())).train()
        native = fuse(net).train()
        g = torch.Generator().manual_seed(0)
        xb, yb = torch.randn(batch, 3, 64, 64, generator=g), torch.randint(0, 1000, (batch,), generator=g)
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4) for k, m in (("native", native), ("imported", imported))}
        times: dict[str, list[float]] = {"native": [], "imported": []}
        for i in range(steps + 2):
            for k, m in (("native", native), ("imported", imported)) if i % 2 else (("imported", imported), ("native", native)):
                s = _step(m, opts[k], xb, yb)
                if i >= 2:
                    times[k].append(s)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append({"model": name, "native_ms": med["native"] * 1e3, "imported_ms": med["imported"] * 1e3,
                     "ratio": med["imported"] / med["native"], "torch": torch.__version__})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated torchvision models (default: {','.join(MODELS)})")
    p.add_argument("--steps", type=int, default=10, help="timed steps per network (default: 10)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--out", default="reports/train_speed.json", help="where the JSON goes (default: reports/train_speed.json)")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = args.models.split(",")
    if args.inside:
        print(json.dumps(inside(models, args.steps, args.batch)))
        return 0
    from torchvision_suite import cpu_label, interpreter
    from xfer.io import write_text
    from xfer.preprocess import _C

    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "XFER_C_LIBRARY": _C.__file__}
    run = subprocess.run([interpreter(), __file__, "--inside", "--models", args.models, "--steps", str(args.steps),
                          "--batch", str(args.batch)], env=env, stdout=subprocess.PIPE, text=True, check=False)
    if run.returncode != 0:
        print("train_speed: the timing run failed (its errors are above)", file=sys.stderr)
        return 1
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    write_text(args.out, json.dumps({"cpu": cpu_label(), "batch": args.batch, "steps": args.steps, "rows": rows}, indent=1))
    print(f"Measured on {cpu_label()}, torch {rows[0]['torch']}, batch {args.batch} x 3x64x64, 2 threads, median of {args.steps}.\n")
    print("| model | native PyTorch, conv+BN fused (ms/step) | imported by xfer (ms/step) | ratio |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['native_ms']:.0f} | {r['imported_ms']:.0f} | {r['ratio']:.2f}x |")
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst ratio {worst:.2f}x (bar {BAR}x)")
    return 0 if worst <= BAR else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main(sys.argv[1:]))
