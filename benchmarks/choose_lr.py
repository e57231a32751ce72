"""How xfer's default learning rates are chosen: on a validation split carved from the training data.

For each mode and candidate rate, `xfer train --val 0.2` trains on 80% of the training split and scores
the other 20%; the test split is never read for the choice. Prints mean +- std validation accuracy over
the seeds, the rate each mode would default to, and writes the runs' results to JSON.

    .venv/bin/python benchmarks/choose_lr.py [--modes reuse frozen] [--lrs 1e-3 3e-3] [--seeds 0 1 2] [--epochs 30]

Needs the source model (`xfer pretrain && xfer convert`, or `make demo`). Exits non-zero if a run fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from xfer import train
from xfer.config import TrainConfig
from xfer.errors import XferError
from xfer.io import write_text
from xfer.train import TrainResult


def run(mode: str, lr: float, seed: int, a) -> TrainResult:
    ns = argparse.Namespace(mode=mode, data=a.data, source=a.source, epochs=a.epochs, batch_size=64, lr=lr,
                            weight_decay=0.0, seed=seed, split="random", device="cpu", augment=True, resume=False,
                            name=f"{mode}-lr{lr:g}-s{seed}", out=a.out, input_size=[32], channels=1,
                            head=[1000, 500, 200], train_all=False, model="lenet", label_scheme="clean", alpha=0.0,
                            beta=1.0, width=0.25, val=a.val)
    return train.train_or_reuse(TrainConfig.from_object(ns))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["reuse", "scratch", "frozen", "finetune"])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--val", type=float, default=0.2, help="validation fraction of the training split (default: 0.2)")
    p.add_argument("--data", default=None, help="target data (default: the synthetic FERG-DB)")
    p.add_argument("--source", default="models/lenet5.onnx")
    p.add_argument("--out", default="reports/choose_lr", help="runs and results.json go here")
    a = p.parse_args()
    rows = []
    t0 = time.time()
    try:
        for mode in a.modes:
            for lr in a.lrs:
                accs = [run(mode, lr, s, a).val_accuracy for s in a.seeds]
                rows.append({"mode": mode, "lr": lr, "val_accuracy": accs, "mean": statistics.mean(accs),
                             "std": statistics.stdev(accs) if len(accs) > 1 else 0.0})
                print(f"{mode:9s} lr {lr:g}: val accuracy {rows[-1]['mean']:.4f} +- {rows[-1]['std']:.4f} "
                      f"({', '.join(f'{v:.3f}' for v in accs)})  [{time.time() - t0:.0f} s]", flush=True)
    except XferError as e:
        print(f"choose_lr: {e}", file=sys.stderr)
        return 1
    best = {m: max((r for r in rows if r["mode"] == m), key=lambda r: r["mean"])["lr"] for m in a.modes}
    print("\nchosen on the validation split:", ", ".join(f"{m} {lr:g}" for m, lr in best.items()))
    write_text(f"{a.out}/results.json", json.dumps({"val": a.val, "epochs": a.epochs, "seeds": a.seeds, "rows": rows,
                                                   "chosen": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
