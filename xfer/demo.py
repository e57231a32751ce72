"""``xfer demo``: from nothing to a finished report on the embedded default data.

digits -> MXNet LeNet-5 -> ONNX -> synthetic FERG-DB -> the four modes (random
and leave-one-character-out splits) -> timed test pass -> report. Stages whose
outputs already exist are reused, so a second run only redoes what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

from xfer.config import (
    DEFAULT_REPORTS,
    DEFAULT_SOURCE,
    DEFAULT_SOURCE_PREFIX,
    ConvertConfig,
    DemoConfig,
    PretrainConfig,
    StudyConfig,
)


def main(args: DemoConfig) -> dict:
    from xfer import convert, pretrain
    from xfer.data.split import default_data
    from xfer.report import experiments

    t0 = time.time()
    prefix = DEFAULT_SOURCE_PREFIX
    if not Path(f"{prefix}-0000.params").is_file():
        print(f"[1/4] pretraining LeNet-5 on {args.mnist or args.digits} digits (MXNet)", flush=True)
        pretrain.main(PretrainConfig(digits=args.digits, mnist=args.mnist, epochs=args.pretrain_epoch_count, out=prefix))
    else:
        print(f"[1/4] reusing {prefix}-symbol.json / -0000.params", flush=True)
    if not Path(DEFAULT_SOURCE).is_file():
        print("[2/4] converting MXNet -> ONNX", flush=True)
        convert.main(ConvertConfig(model=prefix, out=DEFAULT_SOURCE))
    else:
        print(f"[2/4] reusing {DEFAULT_SOURCE}", flush=True)
    print("[3/4] target data: the synthetic FERG-DB", flush=True)
    data = default_data()
    print("[4/4] the four transfer modes, timed test pass, report", flush=True)
    results = experiments.main(StudyConfig(name=args.name, data=str(data), source=DEFAULT_SOURCE, seeds=args.seeds,
                                           epochs=args.epochs, bench_images=args.bench_images, out=DEFAULT_REPORTS))
    print(f"\ndemo finished in {time.time() - t0:.0f}s: open {DEFAULT_REPORTS}/{args.name}/report.html")
    return results
