"""``xfer experiments``: the study's four modes x seeds x protocols -> train -> bench -> a report.

Protocols: ``random`` (the study's stratified 80/20 split) and ``loco``
(leave one character out: seed k holds out the k-th character, so the test
character was never seen). Finished runs are kept and reused, so an
interrupted study resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from xfer.config import FERG_SCALES, FERG_TEST_IMAGES, RECIPES, StudyConfig, TrainConfig, default_lr
from xfer.errors import XferError


@dataclass
class Step:
    protocol: str
    mode: str
    seed: int
    split: str
    source: str = ""         # the source model; "" = the study's --source
    compare: bool = False    # a run of the --compare-source model

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


def run_step(step: Step, args: StudyConfig, root: Path) -> dict:
    """Train (or reuse a finished run with the same settings), then time its test pass."""
    from xfer import bench, train

    out = root / "runs" / ("compare" if step.compare else "") / step.protocol
    result = train.train_or_reuse(_train_config(step, args, out))
    model_path = out / f"{step.name}.onnx"
    rep = bench.run(model_path, args.data, repeat=3, baselines=False,
                    threads=list(args.bench_threads) if args.bench_threads else None)
    p = rep.lead
    return {"protocol": step.protocol, "mode": step.mode, "seed": step.seed, "split": step.split, "compare": step.compare,
            "model": str(model_path), "test_accuracy": result.test_accuracy, "bench_accuracy": p.accuracy,
            "per_class": result.per_class, "confusion": result.confusion, "history": result.history,
            "test_time_s": p.median_s, "images_per_s": p.images_per_s, "test_size": result.test_size,
            "train_s": result.timings.train_s, "trainable_params": result.trainable_params,
            "frozen_params": result.frozen_params, "test_index": result.test_index,
            "predictions": result.predictions, "classes": result.classes}


def source_info(path: str) -> dict:
    """What a source model was pretrained on, from its own metadata (which digits, how many)."""
    from xfer.graph import load_model
    from xfer.meta import read_meta

    meta = read_meta(load_model(path))
    return {"path": str(path), "dataset": meta.dataset or "unknown", "dataset_size": meta.dataset_size}


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(r["protocol"], {}).setdefault(r["mode"], []).append(r)
    summary: dict = {}
    for protocol, modes in out.items():
        summary[protocol] = {}
        for mode, rs in modes.items():
            accs = [r["test_accuracy"] for r in rs]
            times = [r["test_time_s"] for r in rs]
            per_class = {c: statistics.mean([r["per_class"][c] for r in rs if r["per_class"][c] is not None] or [0.0])
                         for c in rs[0]["per_class"]}
            summary[protocol][mode] = {
                "n": len(rs), "acc_mean": statistics.mean(accs), "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "time_mean": statistics.mean(times), "time_std": statistics.pstdev(times) if len(times) > 1 else 0.0,
                "images_per_s": statistics.mean(r["images_per_s"] for r in rs), "per_class": per_class,
                "test_size": rs[0]["test_size"], "splits": sorted({r["split"] for r in rs})}
    return summary


def main(args: StudyConfig) -> dict:
    from xfer import bench
    from xfer.data.formats import load_dataset
    from xfer.data.split import default_data
    from xfer.io import write_json
    from xfer.progress import bar
    from xfer.report.render import write_report

    for src in filter(None, (args.source_path, args.compare_source)):
        if not Path(src).is_file():
            raise XferError(f"{src}: source model not found (run `xfer pretrain` and `xfer convert` first)")
    args = args.but(data=args.data or str(default_data()), source=args.source_path)
    pack = load_dataset(str(args.data))
    steps = make_plan(list(args.modes), list(args.seeds), list(args.protocols), pack.group_names)
    if args.compare_source:
        steps += [replace(s, source=args.compare_source, compare=True) for s in steps]
    root = Path(args.out) / args.name
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    t0 = time.time()
    print(f"experiments '{args.name}': {len(steps)} runs ({', '.join(args.modes)} x seeds {list(args.seeds)} x "
          f"{', '.join(args.protocols)}), {args.epochs} epochs each -> {root}")
    with bar(len(steps), "experiments", "run", disable=False) as pb:
        for k, step in enumerate(steps, start=1):
            pb.set_description(f"step {k}/{len(steps)}: {step.protocol} {step.mode} seed {step.seed}"
                               + (" (compare source)" if step.compare else ""))
            runs.append(run_step(step, args, root))
            pb.update(1)
            if not pb.disable:
                continue
            r = runs[-1]
            eta = (time.time() - t0) / k * (len(steps) - k)
            print(f"  [{k}/{len(steps)}] {step.protocol:6s} {step.mode:8s} seed {step.seed} ({step.split}): "
                  f"accuracy {r['test_accuracy']:.4f}, test pass {r['test_time_s']:.3f}s  (ETA {eta:.0f}s)", flush=True)

    main_runs = [r for r in runs if not r["compare"]]
    showcase = next((r for r in main_runs if r["protocol"] == "random" and r["mode"] == "frozen"), main_runs[0])
    _int8_head(showcase["model"], args.data)
    print("timing the test pass against its baselines ...", flush=True)
    bench_rep = bench.run(showcase["model"], args.data, images=args.bench_images, repeat=3,
                          per_image_limit=args.per_image_limit,
                          threads=list(args.bench_threads) if args.bench_threads else None)
    print("the streamed pass at 1x, 5x and 10x the FERG-DB test split ...", flush=True)
    scaling = bench.scaling(showcase["model"], args.data, [k * FERG_TEST_IMAGES for k in FERG_SCALES])
    results = {"name": args.name, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "settings": {"modes": list(args.modes), "seeds": list(args.seeds), "protocols": list(args.protocols),
                            "epochs": args.epochs,
                            "batch_size": args.batch_size, "lr": args.lr, "input_size": list(args.input_size),
                            "channels": args.channels, "head": list(args.head), "data": args.data, "source": args.source,
                            "compare_source": args.compare_source},
               "sources": [source_info(p) for p in filter(None, (args.source, args.compare_source))],
               "data": {"images": len(pack), "classes": pack.classes, "groups": pack.group_names, "layout": pack.layout,
                        "source": pack.source},
               "study": {m: {"accuracy": r.study[0], "test_time_s": r.study[1]} for m, r in RECIPES.items() if r.study},
               "summary": summarize(main_runs), "runs": runs,
               "summary_compare": summarize([r for r in runs if r["compare"]]) if args.compare_source else None,
               "bench": bench_rep.to_json(), "scaling": [p.to_json() for p in scaling], "env": bench_rep.env.to_json(),
               "wall_s": time.time() - t0}
    write_json(root / "results.json", results)
    html, md = write_report(results, root, pack)
    _print_table1(results)
    print(f"wrote {root / 'results.json'}, {md}, {html}")
    return results


def _int8_head(model: str, data: str | None) -> None:
    """The showcase model's int8-head variant (``xfer optimize --int8``): bench streams it too, and leads with it
    when it keeps the accuracy."""
    from xfer import optimize
    from xfer.config import OptimizeConfig

    if not optimize.int8_path(model).is_file():
        optimize.main(OptimizeConfig(model=model, int8=True, data=data))


def _print_table1(results: dict) -> None:
    from xfer.tables import print_table, spread

    for protocol, modes in results["summary"].items():
        print(f"\nTable 1 ({protocol} split): mode, test accuracy, mean test time (xfer vs the study)")
        rows = []
        for i, (mode, r) in enumerate(RECIPES.items(), start=1):
            if mode not in modes:
                continue
            s = modes[mode]
            rows.append([i, mode, s["n"], spread(s["acc_mean"], s["acc_std"], s["n"]),
                         spread(s["time_mean"], s["time_std"], s["n"]), s["test_size"],
                         f"{r.study[0]:.3f}" if r.study else "-", f"{r.study[1]:.2f}" if r.study else "-"])
        print_table(["#", "mode", "seeds", "accuracy", "test time s", "test images", "study acc", "study time s"], rows)
    if results.get("summary_compare"):
        from xfer.report.render import source_table

        header, rows = source_table(results)
        print("\nTable 1 by pretraining source (test accuracy):")
        print_table(header, rows)
