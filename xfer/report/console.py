"""Records as text for the terminal: what the CLI prints after a stage returns."""

from __future__ import annotations

from xfer.bench.report import BenchReport, is_end_to_end, known_paths, label_of
from xfer.tables import format_table
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
    rows = []
    for k in list(known_paths()) + [k for k in rep.paths if k not in known_paths()]:
        p = rep.paths.get(k)
        if p is None:
            continue
        rows.append([label_of(k), f"{p.median_s:.3f}", f"{p.min_s:.3f}", f"{p.max_s:.3f}", f"{p.images_per_s:,.0f}",
                     "" if p.accuracy is None else f"{p.accuracy:.4f}",
                     "" if p.peak_rss_mb is None else f"{p.peak_rss_mb:,.0f}",
                     f"{p.median_s / base:.2f}x" if is_end_to_end(k) else ""])
    lines.append(format_table(["path", "median s", "min s", "max s", "images/s", "accuracy", "peak RSS MB", "vs xfer"],
                              rows))
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
