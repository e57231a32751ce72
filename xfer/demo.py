"""``xfer demo``: from nothing to a finished report on the embedded default data.

digits -> MXNet LeNet-5 -> ONNX -> synthetic FERG-DB -> the four modes (random
and leave-one-character-out splits) -> timed test pass -> report. Stages whose
outputs already exist are reused, so a second run only redoes what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from xfer import convert, pretrain
from xfer.config import (
    DEFAULT_REPORTS,
    DEFAULT_SOURCE,
    DEFAULT_SOURCE_PREFIX,
    ConvertConfig,
    DemoConfig,
    PretrainConfig,
    StudyConfig,
)
from xfer.convert import ConvertResult
from xfer.data.split import default_data
from xfer.pretrain import PretrainResult
from xfer.progress import say
from xfer.records import Record
from xfer.report import experiments
from xfer.report.console import convert_text, pretrain_text
from xfer.report.results import StudyResult


@dataclass
class DemoResult(Record):
    """What the demo made: the source (when it was pretrained and converted now), the study, the time it took."""

    study: StudyResult
    report: str
    seconds: float
    pretrained: PretrainResult | None = None
    converted: ConvertResult | None = None


def main(args: DemoConfig) -> DemoResult:
    t0 = time.time()
    prefix = DEFAULT_SOURCE_PREFIX
    pre = conv = None
    if not Path(f"{prefix}-0000.params").is_file():
        say(f"[1/4] pretraining LeNet-5 on {args.mnist or args.digits} digits (MXNet)")
        pre = pretrain.main(PretrainConfig(digits=args.digits, mnist=args.mnist, epochs=args.pretrain_epoch_count,
                                           out=prefix))
        say(pretrain_text(pre, prefix))
    else:
        say(f"[1/4] reusing {prefix}-symbol.json / -0000.params")
    if not Path(DEFAULT_SOURCE).is_file():
        say("[2/4] converting MXNet -> ONNX")
        conv = convert.main(ConvertConfig(model=prefix, out=DEFAULT_SOURCE))
        say(convert_text(conv))
    else:
        say(f"[2/4] reusing {DEFAULT_SOURCE}")
    say("[3/4] target data: the synthetic FERG-DB")
    data = default_data()
    say("[4/4] the four transfer modes, timed test pass, report")
    cfg = StudyConfig(name=args.name, data=str(data), source=DEFAULT_SOURCE, seeds=args.seeds, epochs=args.epochs,
                      bench_images=args.bench_images, out=DEFAULT_REPORTS)
    study = experiments.main(cfg)
    return DemoResult(study, str(experiments.study_paths(cfg)[2]), time.time() - t0, pre, conv)
