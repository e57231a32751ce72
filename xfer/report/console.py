"""Records as text for the terminal: what the CLI prints after a stage returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xfer.bench.report import is_end_to_end, known_paths, label_of
from xfer.bench.runner import streamed_lead
from xfer.bench.stream import pages_note
from xfer.config import RECIPES
from xfer.tables import format_table, spread

if TYPE_CHECKING:  # the records are only read here: the CLI prints without loading torch for it
    from xfer.bench.report import BenchReport
    from xfer.convert import ConvertResult
    from xfer.inspect_model import ModelSummary, Shape
    from xfer.optimize import OptimizeResult
    from xfer.pretrain import PretrainResult
    from xfer.report.results import DanStudyResult, StudyResult, StudyValue
    from xfer.train import TrainResult


def bench_text(rep: BenchReport) -> str:
    """The bench report: settings, one row per timed path (xfer's first), the ratios, the accuracy check."""
    o = rep.ort
    lines = [f"{rep.model}: {rep.images} images ({rep.data}), input {rep.input_shape}, device {rep.device} "
             f"({rep.device_note})",
             f"ONNX Runtime {o.version}: {o.threads} intra-op thread(s), chunks of {o.batch}, "
             f"{'overlapped with' if o.overlap else 'in turn with'} the kernel, spinning {'on' if o.spinning else 'off'}"
             + (" (chosen by measurement)" if o.trials else ""),
             f"xfer's path: {label_of(rep.xfer)} -- {rep.xfer_note}"]
    base = rep.lead.median_s
    floor = rep.floor.seconds if rep.floor else None
    rows = []
    for k in list(known_paths()) + [k for k in rep.paths if k not in known_paths()]:
        p = rep.paths.get(k)
        if p is None:
            continue
        rows.append([label_of(k), f"{p.median_s:.3f}", f"{p.min_s:.3f}", f"{p.max_s:.3f}", f"{p.images_per_s:,.0f}",
                     "" if p.accuracy is None else f"{p.accuracy:.4f}",
                     "" if p.peak_rss_mb is None else f"{p.peak_rss_mb:,.0f}",
                     f"{p.median_s / base:.2f}x" if is_end_to_end(k) else "",
                     f"{p.median_s / floor:.2f}x" if floor and is_end_to_end(k) else ""])
    lines.append(format_table(["path", "median s", "min s", "max s", "images/s", "accuracy", "peak RSS MB", "vs xfer",
                               "vs floor"], rows))
    if rep.floor:
        f = rep.floor
        lines.append(f"  binding floor: {label_of(f.binding)}, {f.seconds:.3f} s; xfer's path is {f.xfer_vs_floor:.2f}x it "
                     f"(measured on {rep.env.label}, kernel dispatch {rep.env.kernel_target or '?'})")
    streamed = streamed_lead(rep)
    pages = pages_note(rep.paths[streamed]) if streamed in rep.paths else None
    if pages:
        lines.append(f"  pages ({label_of(streamed)}): {pages}")
    lines += [f"  {k.replace('_', ' ')}: {v:.2f}x" for k, v in rep.ratios.items()]
    if rep.materialised_note:
        lines.append(f"  {rep.materialised_note}")
    if rep.accuracy_matches_train is not None and rep.train_accuracy is not None:
        verdict = "matches" if rep.accuracy_matches_train else "DIFFERS FROM"
        lines.append(f"  streamed accuracy {rep.paths['stream'].accuracy:.4f} {verdict} xfer train's "
                     f"{rep.train_accuracy:.4f}")
    return "\n".join(lines)


def train_text(r: TrainResult) -> str:
    """A finished training run: the test accuracy, parameters, time, and the accuracy per class."""
    head = (f"{r.name}: test accuracy {r.test_accuracy:.4f} on {r.test_size} images "
            f"({r.trainable_params:,} trainable / {r.frozen_params:,} frozen parameters, "
            f"{r.timings.train_s:.1f}s training)")
    rows = [[k, "-" if v is None else f"{v:.3f}"] for k, v in r.per_class.items()]
    return head + "\n" + format_table([r.class_word, "accuracy"], rows)


def study_text(results: StudyResult) -> str:
    """Table 1 per protocol (xfer beside the study's numbers), and by pretraining source when two were compared."""
    out = []
    for protocol, modes in results.summary.items():
        rows = []
        for i, (mode, r) in enumerate(RECIPES.items(), start=1):
            if mode not in modes:
                continue
            s = modes[mode]
            rows.append([i, mode, s.n, spread(s.acc_mean, s.acc_std, s.n), spread(s.time_mean, s.time_std, s.n),
                         s.test_size, f"{r.study[0]:.3f}" if r.study else "-", f"{r.study[1]:.2f}" if r.study else "-"])
        out += [f"Table 1 ({protocol} split): mode, test accuracy, mean test time (xfer vs the study)",
                format_table(["#", "mode", "seeds", "accuracy", "test time s", "test images", "study acc",
                              "study time s"], rows), ""]
    if results.summary_compare:
        out += ["Table 1 by pretraining source (test accuracy):", format_table(*source_table(results)), ""]
    return "\n".join(out).rstrip()


def dan_text(results: DanStudyResult) -> str:
    """The DAN study: accuracy on the clean test labels and landmark NME, per variant."""
    return format_table(DAN_HEADER, dan_rows(results))


def pretrain_text(r: PretrainResult, out: str) -> str:
    return (f"LeNet-5 on {r.source}, {r.train_size:,} training digits: test accuracy {r.test_accuracy:.4f} "
            f"({r.test_size:,} test digits) in {r.seconds:.1f}s\nwrote {', '.join(r.files(out))}")


def convert_text(r: ConvertResult) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (r.versions or {}).items())
    return (f"wrote {r.out}: {r.nodes} nodes, opset {r.opset}, input {r.input_shape}, {r.framework}"
            + (f" ({versions})" if versions else "")
            + f" vs ONNX Runtime max |diff| {r.max_abs_diff:.2e} on {r.parity_inputs} inputs")


def optimize_text(r: OptimizeResult) -> str:
    lines = []
    if r.folded:
        lines.append(f"wrote {r.folded}: normalisation folded into the first convolution")
    if r.int8:
        lines.append(f"wrote {r.int8}: int8 (QDQ, per-channel), calibrated on {r.calibration_images} training images")
    return "\n".join(lines)


def shape_text(s: Shape) -> str:
    return "?" if s is None else "(" + ", ".join("N" if d is None else str(d) for d in s) + ")"


def inspect_text(d: ModelSummary, model: str) -> str:
    """The layer table with shapes, parameters and frozen flags, the totals, then xfer's metadata."""
    rows = [[i, L.op, L.name, shape_text(L.output_shape), f"{L.params:,}" if L.params else "",
             "frozen" if L.frozen else ""] for i, L in enumerate(d.layers)]
    lines = [f"{model}: opset {d.opset}, " + ", ".join(f"{k} {shape_text(v)}" for k, v in d.inputs.items()),
             format_table(["#", "op", "name", "output", "params", ""], rows),
             f"parameters: {d.params:,} ({d.trainable_params:,} trainable, {d.frozen_params:,} frozen)"]
    lines += [f"  {k}: {f'{len(v)} initializers' if k == 'xfer.frozen' else v}" for k, v in d.metadata.items()]
    return "\n".join(lines)


def study_cell(study: dict[str, StudyValue], mode: str, key: str, digits: int) -> str:
    """The study's Table 1 value, or "-" for a mode the study did not run."""
    return f"{getattr(study[mode], key):.{digits}f}" if mode in study else "-"


def source_table(results: StudyResult) -> tuple[list[str], list[list]]:
    """Table 1 for each pretraining source, side by side: protocol, mode, accuracy per source, the study's."""
    summaries = results.by_source
    header = ["protocol", "#", "mode", *(s.title for s in results.sources[:len(summaries)]), "study acc"]
    rows = []
    for protocol in results.summary:
        per_source = [s.get(protocol, {}) for s in summaries]
        for i, mode in enumerate(RECIPES, start=1):
            if all(mode in modes for modes in per_source):
                cells = [spread(m[mode].acc_mean, m[mode].acc_std, m[mode].n) for m in per_source]
                rows.append([protocol, str(i), mode, *cells, study_cell(results.study, mode, "accuracy", 3)])
    return header, rows


DAN_HEADER = ["variant", "stages", "accuracy (clean test labels)", "landmark NME (last stage)", "NME per stage"]


def dan_rows(results: DanStudyResult) -> list[list[str]]:
    """variant, stages, accuracy, landmark NME, NME of each stage: one row per variant (mean ± std over seeds)."""
    return [[k, str(v.stages), "-" if v.acc_mean is None else spread(v.acc_mean, v.acc_std or 0.0, v.n),
             "-" if v.nme_mean is None else spread(v.nme_mean, v.nme_std or 0.0, v.n, 4),
             (" → ".join(f"{x:.4f}" for x in v.nme_stages) if v.nme_stages and len(v.nme_stages) > 1 else "")
             + (f"; hand-annotated: {' → '.join(f'{x:.3f}' for x in v.manual_nme_stages)}" if v.manual_nme_stages else "")]
            for k, v in results.summary.items()]
