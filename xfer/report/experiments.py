"""``xfer experiments``: the study's four modes x seeds x protocols -> train -> bench -> a report.

Protocols: ``random`` (the study's stratified 80/20 split) and ``loco``
(leave one character out: seed k holds out the k-th character, so the test
character was never seen). Finished runs are kept and reused, so an
interrupted study resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, replace
from pathlib import Path

from xfer import bench, optimize, train
from xfer.config import FERG_SCALES, FERG_TEST_IMAGES, RECIPES, OptimizeConfig, StudyConfig, TrainConfig, default_lr
from xfer.data.formats import load_dataset
from xfer.data.split import default_data
from xfer.errors import XferError
from xfer.graph import load_model
from xfer.io import write_json
from xfer.meta import read_meta
from xfer.progress import bar, say
from xfer.report.render import write_report
from xfer.report.results import (
    DataInfo,
    SourceInfo,
    StudyResult,
    StudyRun,
    StudySettings,
    StudyValue,
    summarize,
)


@dataclass
class Step:
    protocol: str
    mode: str
    seed: int
    split: str
    source: str = ""         # the source model; "" = the study's --source
    compare: bool = False    # a run of a --compare-source model
    index: int = 0           # which source: 0 the study's, k the k-th --compare-source

    @property
    def name(self) -> str:
        return f"{self.mode}-s{self.seed}"


def make_plan(modes: list[str], seeds: list[int], protocols: list[str], group_names: list[str]) -> list[Step]:
    steps = []
    for protocol in protocols:
        for mode in modes:
            for seed in seeds:
                if protocol == "random":
                    split = "random"
                elif protocol == "loco":
                    if len(group_names) < 2:
                        raise XferError("--protocols loco needs a data set with several characters (FERG-DB layout)")
                    split = f"loco:{group_names[seed % len(group_names)]}"
                else:
                    raise XferError(f"--protocols: expected random or loco, got '{protocol}'")
                steps.append(Step(protocol, mode, seed, split))
    return steps


def _train_config(step: Step, args: StudyConfig, out: Path) -> TrainConfig:
    return TrainConfig(mode=step.mode, data=args.data, source=step.source or args.source_path, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr or default_lr(step.mode), weight_decay=0.0, seed=step.seed,
                       split=step.split, device=args.device, augment=True, resume=True, name=step.name, out=str(out),
                       input_size=args.input_size, channels=args.channels, head=args.head, train_all=args.train_all)


def run_step(step: Step, args: StudyConfig, root: Path) -> StudyRun:
    """Train (or reuse a finished run with the same settings), then time its test pass."""
    out = root / "runs" / ("" if not step.index else "compare" if step.index == 1 else f"compare{step.index}") / step.protocol
    result = train.train_or_reuse(_train_config(step, args, out))
    model_path = out / f"{step.name}.onnx"
    rep = bench.run(model_path, args.data, repeat=3, baselines=False,
                    threads=list(args.bench_threads) if args.bench_threads else None)
    p = rep.lead
    return StudyRun(step.protocol, step.mode, step.seed, step.split, step.compare, str(model_path),
                    result.test_accuracy, p.accuracy, result.per_class, result.confusion, result.history, p.median_s,
                    p.images_per_s, result.test_size, result.timings.train_s, result.trainable_params,
                    result.frozen_params, result.test_index, result.predictions, result.classes, step.index)


def source_info(path: str) -> SourceInfo:
    """What a source model was pretrained on, from its own metadata (which digits, how many, which framework)."""
    meta = read_meta(load_model(path))
    return SourceInfo(str(path), meta.dataset or "unknown", meta.dataset_size, meta.framework)


def study_paths(args: StudyConfig) -> tuple[Path, Path, Path]:
    """(results.json, report.md, report.html) a study named ``args.name`` writes."""
    root = Path(args.out) / args.name
    return root / "results.json", root / "report.md", root / "report.html"


def _settings(args: StudyConfig) -> StudySettings:
    return StudySettings(list(args.modes), list(args.seeds), list(args.protocols), args.epochs, args.batch_size,
                         args.lr, list(args.input_size), args.channels, list(args.head), args.data, args.source,
                         list(args.compare_source))


def _run_all(steps: list[Step], args: StudyConfig, root: Path) -> list[StudyRun]:
    runs: list[StudyRun] = []
    t0 = time.time()
    with bar(len(steps), "experiments", "run", disable=False) as pb:
        for k, step in enumerate(steps, start=1):
            pb.set_description(f"step {k}/{len(steps)}: {step.protocol} {step.mode} seed {step.seed}"
                               + (f" (source {step.index + 1})" if step.compare else ""))
            runs.append(run_step(step, args, root))
            pb.update(1)
            if not pb.disable:
                continue
            r = runs[-1]
            eta = (time.time() - t0) / k * (len(steps) - k)
            say(f"  [{k}/{len(steps)}] {step.protocol:6s} {step.mode:8s} seed {step.seed} ({step.split}): "
                f"accuracy {r.test_accuracy:.4f}, test pass {r.test_time_s:.3f}s  (ETA {eta:.0f}s)")
    return runs


def main(args: StudyConfig) -> StudyResult:
    for src in (args.source_path, *args.compare_source):
        if not Path(src).is_file():
            raise XferError(f"{src}: source model not found (run `xfer pretrain` and `xfer convert` first)")
    args = args.but(data=args.data or str(default_data()), source=args.source_path)
    pack = load_dataset(str(args.data))
    steps = make_plan(list(args.modes), list(args.seeds), list(args.protocols), pack.group_names)
    steps += [replace(s, source=src, compare=True, index=k) for k, src in enumerate(args.compare_source, start=1)
              for s in list(steps)]
    results_path = study_paths(args)[0]
    root = results_path.parent
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    say(f"experiments '{args.name}': {len(steps)} runs ({', '.join(args.modes)} x seeds {list(args.seeds)} x "
        f"{', '.join(args.protocols)}), {args.epochs} epochs each -> {root}")
    runs = _run_all(steps, args, root)
    main_runs = [r for r in runs if not r.compare]
    showcase = next((r for r in main_runs if r.protocol == "random" and r.mode == "frozen"), main_runs[0])
    _int8_head(showcase.model, args.data)
    say("timing the test pass against its baselines ...")
    bench_rep = bench.run(showcase.model, args.data, images=args.bench_images, repeat=3,
                          per_image_limit=args.per_image_limit,
                          threads=list(args.bench_threads) if args.bench_threads else None)
    say("the streamed pass at 1x, 5x and 10x the FERG-DB test split ...")
    scaling = bench.scaling(showcase.model, args.data, [k * FERG_TEST_IMAGES for k in FERG_SCALES],
                            path=bench.streamed_lead(bench_rep))
    results = StudyResult(
        args.name, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), _settings(args),
        [source_info(p) for p in (args.source_path, *args.compare_source)],
        DataInfo(len(pack), pack.classes, pack.group_names, pack.layout, pack.source),
        {m: StudyValue(*r.study) for m, r in RECIPES.items() if r.study}, summarize(main_runs), runs,
        summarize([r for r in runs if r.index == 1]) if args.compare_source else None,
        bench_rep, scaling, bench_rep.env, time.time() - t0,
        [summarize([r for r in runs if r.index == k]) for k in range(1, len(args.compare_source) + 1)])
    write_json(results_path, results.to_json())
    write_report(results, root, pack)
    return results


def _int8_head(model: str, data: str | None) -> None:
    """The showcase model's int8-head variant (``xfer optimize --int8``): bench streams it too, and leads with it
    when it keeps the accuracy."""
    if not optimize.int8_path(model).is_file():
        optimize.main(OptimizeConfig(model=model, int8=True, data=data))
