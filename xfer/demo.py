"""``xfer demo``: from nothing to a finished report on the embedded default data.

digits -> MXNet LeNet-5 -> ONNX -> synthetic FERG-DB -> the four modes (random
and leave-one-character-out splits) -> timed test pass -> report. Stages whose
outputs already exist are reused, so a second run only redoes what is missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(args: argparse.Namespace) -> dict:
    from xfer import convert, pretrain
    from xfer.cli import DEFAULT_SOURCE, DEFAULT_SOURCE_PREFIX
    from xfer.report import experiments
    from xfer.train import default_data

    t0 = time.time()
    prefix = DEFAULT_SOURCE_PREFIX
    if not Path(f"{prefix}-0000.params").is_file():
        print("[1/4] pretraining LeNet-5 on the embedded digits (MXNet)", flush=True)
        pretrain.main(argparse.Namespace(mnist=args.mnist, epochs=15, batch_size=64, lr=2e-3, seed=0,
                                         activation="relu", out=prefix))
    else:
        print(f"[1/4] reusing {prefix}-symbol.json / -0000.params", flush=True)
    if not Path(DEFAULT_SOURCE).is_file():
        print("[2/4] converting MXNet -> ONNX", flush=True)
        convert.main(argparse.Namespace(model=prefix, out=DEFAULT_SOURCE, tolerance=1e-5))
    else:
        print(f"[2/4] reusing {DEFAULT_SOURCE}", flush=True)
    print("[3/4] target data: the synthetic FERG-DB", flush=True)
    data = default_data()
    print("[4/4] the four transfer modes, timed test pass, report", flush=True)
    ex = argparse.Namespace(name=args.name, data=str(data), source=DEFAULT_SOURCE, modes=["reuse", "scratch", "frozen", "finetune"],
                            seeds=args.seeds, protocols=["random", "loco"], epochs=args.epochs, batch_size=64, lr=None,
                            input_size=[32, 32], channels=1, head=[1000, 500, 200], device="cpu",
                            bench_images=args.bench_images, per_image_limit=2000, bench_threads=None, out="reports")
    results = experiments.main(ex)
    print(f"\ndemo finished in {time.time() - t0:.0f}s: open reports/{args.name}/report.html")
    return results
