"""Turn ``results.json`` into ``report.md`` (figures beside it) and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from xfer.bench import known_paths
from xfer.bench.report import BenchReport, label_of
from xfer.bench.runner import ScalingPoint
from xfer.config import DEFAULT_LR, RECIPES
from xfer.data.split import class_word
from xfer.io import write_bytes, write_text
from xfer.report import plots
from xfer.report.console import DAN_HEADER, dan_rows, source_table, study_cell
from xfer.report.results import DanStudyResult, SourceInfo, StudyResult
from xfer.tables import markdown_table, spread

PROTOCOL_TITLES = {"random": "random stratified 80/20 split (the study's protocol)",
                   "loco": "leave one character out (the test character is never seen in training)"}


def _default_lrs() -> str:
    return ", ".join(f"{r.lr:g} for {m}" for m, r in RECIPES.items()) + f" ({DEFAULT_LR:g} for the DAN network)"


def _figures(results: StudyResult, pack) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, png bytes)."""
    figs: dict[str, tuple[str, bytes]] = {}
    runs = results.runs
    for protocol in results.summary:
        by_mode: dict[str, list] = {}
        for r in runs:
            if r.protocol == protocol:
                by_mode.setdefault(r.mode, []).append(r.history)
        figs[f"curves_{protocol}"] = (f"Training curves, {protocol} split (mean over seeds)", plots.curves(by_mode))
        for mode in RECIPES:
            rs = [r for r in runs if r.protocol == protocol and r.mode == mode]
            if rs:
                cm = np.sum([r.confusion for r in rs], axis=0)
                figs[f"confusion_{protocol}_{mode}"] = (f"Confusion matrix, {mode}, {protocol} split (all seeds)",
                                                        plots.confusion(cm, rs[0].classes, f"{mode} ({protocol})"))
    figs["bench"] = ("Test-pass throughput of each path (same model, same images); dashed: the floors",
                     plots.bench_chart(results.bench.paths, results.bench.xfer))
    if results.scaling:
        figs["scaling"] = ("The streamed pass as the number of images grows (the test split cycled): images/s and "
                           "peak RSS", plots.scaling_chart(results.scaling))
    show = results.showcase
    idx = np.asarray(show.test_index)
    pred = np.asarray(show.predictions)
    true = np.asarray(pack.labels)[idx]
    order = np.concatenate([np.flatnonzero(pred != true), np.flatnonzero(pred == true)])[:32]
    classes = show.classes
    figs["grid"] = (f"Test images of {show.mode} (seed {show.seed}), mistakes first (red)",
                    plots.image_grid(np.asarray(pack.images[idx[order]]), [classes[t] for t in true[order]],
                                     [classes[p] for p in pred[order]]))
    return figs


def _table1(results: StudyResult, protocol: str) -> tuple[list[str], list[list[str]]]:
    study = results.study
    several = any(s.n > 1 for s in results.summary[protocol].values())
    spread_of = " (mean ± std)" if several else ""
    header = ["#", "mode", "seeds", f"test accuracy{spread_of}", f"test time, s{spread_of}", "images/s",
              "study accuracy", "study time, s"]
    rows = []
    for i, mode in enumerate(RECIPES, start=1):
        s = results.summary[protocol].get(mode)
        if s is None:
            continue
        rows.append([str(i), mode, str(s.n), spread(s.acc_mean, s.acc_std, s.n), spread(s.time_mean, s.time_std, s.n),
                     f"{s.images_per_s:,.0f}", study_cell(study, mode, "accuracy", 3),
                     study_cell(study, mode, "test_time_s", 2)])
    return header, rows


def _per_class(results: StudyResult, protocol: str) -> tuple[list[str], list[list[str]]]:
    summary = results.summary[protocol]
    modes = [m for m in RECIPES if m in summary]
    classes = list(summary[modes[0]].per_class)
    return ([class_word(results.data.layout)] + modes,
            [[c] + [f"{summary[m].per_class[c]:.3f}" for m in modes] for c in classes])


def _bench_table(bench: BenchReport) -> tuple[list[str], list[list[str]]]:
    rows = []
    for k, label in ((k, p.label) for k, p in known_paths().items()):
        p = bench.paths.get(k)
        if p:
            rows.append([label + (" (xfer)" if k == bench.xfer else ""), f"{p.median_s:.3f}", f"{p.min_s:.3f}",
                         f"{p.max_s:.3f}", f"{p.images_per_s:,.0f}", "" if p.accuracy is None else f"{p.accuracy:.4f}",
                         "" if p.peak_rss_mb is None else f"{p.peak_rss_mb:,.0f}"])
    return ["path", "median s", "min s", "max s", "images/s", "accuracy", "peak RSS MB"], rows


def _scaling_rows(points: list[ScalingPoint]) -> list[list[str]]:
    return [[f"{q.images:,}", f"{q.gb_read:.1f}", f"{q.seconds:.2f}", f"{q.images_per_s:,.0f}", f"{q.peak_rss_mb:,.0f}"]
            for q in points]


def _env_rows(results: StudyResult) -> list[list[str]]:
    env = results.env.to_json()
    env["ort_threads"] = results.bench.ort.threads
    env["ort_batch"] = results.bench.ort.batch
    return [[k, str(v)] for k, v in env.items()]


def _html_table(header, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}
figcaption{font-size:13px;color:#555}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{flex:0 0 48%;margin:0}
table{display:block;max-width:100%;overflow-x:auto}
@media (max-width:600px){.grid figure{flex:0 0 100%}body{margin:1em auto}}"""


class _Doc:
    """One report written twice at once: Markdown (figures as files) and self-contained HTML (figures inline)."""

    def __init__(self, title: str, figs: dict):
        self.figs = figs
        self.md = [f"# {title}", ""]
        self.body = [f"<h1>{html.escape(title)}</h1>"]

    def para(self, text: str) -> None:
        self.md += [text, ""]
        self.body.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: list, rows: list, title: str | None = None) -> None:
        if title:
            self.md += [f"## {title}", ""]
            self.body.append(f"<h2>{html.escape(title)}</h2>")
        self.md += [markdown_table(header, rows), ""]
        self.body.append(_html_table(header, rows))

    def fig(self, name: str) -> None:
        cap, png = self.figs[name]
        self.md.append(f"![{cap}](figures/{name}.png)\n\n*{cap}*\n")
        b64 = base64.b64encode(png).decode()
        self.body.append(f'<figure><img alt="{html.escape(cap)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{html.escape(cap)}</figcaption></figure>")

    def write(self, root: Path, title: str) -> tuple[Path, Path]:
        md_path = write_text(root / "report.md", "\n".join(self.md))
        page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{CSS}</style></head><body>{''.join(self.body)}</body></html>\n")
        return write_text(root / "report.html", page), md_path


def _intro(results: StudyResult) -> str:
    s, d = results.settings, results.data
    src = (results.sources or [SourceInfo("", "digits", None)])[0]
    pre = src.dataset + (f", {src.dataset_size:,} training digits" if src.dataset_size else "")
    return (f"LeNet-5 trained in MXNet on {pre}, converted to ONNX, rewritten for each transfer mode and trained in "
            f"PyTorch on {d.images} images ({d.layout} layout, source {d.source}); {len(s.seeds)} seed(s) {s.seeds}, "
            f"{s.epochs} epochs, learning rate {s.lr or _default_lrs()} (chosen on a validation split carved from the "
            f"training data), input {s.channels}x{s.input_size[0]}x{s.input_size[-1]}. Test time is the timed test pass "
            f"(C++ kernel preprocess + ONNX Runtime) over the whole test split, decode excluded.")


def write_report(results: StudyResult, root: Path, pack) -> tuple[Path, Path]:
    figs = _figures(results, pack)
    for name, (_, png) in figs.items():
        write_bytes(root / "figures" / f"{name}.png", png)
    title = f"xfer experiments: {results.name}"
    doc = _Doc(title, figs)
    doc.para(_intro(results))
    if results.summary_compare:
        doc.table(*source_table(results), title="Table 1 by pretraining source (test accuracy, mean ± std over seeds)")
    for protocol in results.summary:
        doc.table(*_table1(results, protocol), title=f"Table 1 — {PROTOCOL_TITLES.get(protocol, protocol)}")
        doc.para(f"Per-{class_word(results.data.layout)} test accuracy (mean over seeds):")
        doc.table(*_per_class(results, protocol))
        doc.fig(f"curves_{protocol}")
        doc.body.append('<div class="grid">')
        for mode in RECIPES:
            if f"confusion_{protocol}_{mode}" in figs:
                doc.fig(f"confusion_{protocol}_{mode}")
        doc.body.append("</div>")
    doc.md += ["## Test images", ""]
    doc.body.append("<h2>Test images</h2>")
    doc.fig("grid")
    b = results.bench
    doc.table(*_bench_table(b), title=f"The timed test pass and its baselines ({b.images} images, {b.device})")
    doc.table(["ratio", "value"], [[k.replace("_", " "), f"{v:.2f}x"] for k, v in b.ratios.items()])
    doc.fig("bench")
    st = b.paths.get("stream")
    if st is not None and st.peak_rss_mb is not None:
        doc.para(f"Peak RSS is this process's: the study had {st.details.get('rss_before_mb', 0):,.0f} MB resident before the "
                 f"streamed pass began (training, data, libraries); the scaling runs below each ran in a fresh process, "
                 f"as `xfer bench --images N` would.")
    if results.scaling:
        doc.table(["images", "GB read", "seconds", "images/s", "peak RSS MB"], _scaling_rows(results.scaling),
                  title=f"The streamed pass ({label_of(results.scaling[0].path)}) at 1x, 5x and 10x the FERG-DB test "
                        "split")
        doc.fig("scaling")
    doc.table(["", ""], _env_rows(results), title="Environment")
    doc.para(f"Wall time: {results.wall_s:.0f} s.")
    return doc.write(root, title)


def write_dan_report(results: DanStudyResult, root: Path) -> tuple[Path, Path]:
    """The DAN study's report: single vs multi-task and the label schemes, with curves."""
    header = [*DAN_HEADER, "seeds"]
    rows = [r + [str(v.n)] for r, v in zip(dan_rows(results), results.summary.values())]
    by_variant: dict[str, list] = {}
    for r in results.runs:
        by_variant.setdefault(r.variant, []).append(r.history)
    png = plots.curves(by_variant)
    write_bytes(root / "figures" / "curves_dan.png", png)
    st = results.settings
    intro = (f"The Deep Alignment Network (stages refining the landmarks through the canonical pose: similarity "
             f"transform to the mean shape, warped image, landmark heatmap, feature image; VGG-like backbone per "
             f"stage, emotion head on the last) on {st.data}: {st.epochs} epochs ({st.schedule} training), input "
             f"{st.input_size}, width x{st.width}, alpha {st.alpha}, seeds {st.seeds}. 'landmarks only' trains "
             f"without the emotion term (beta 0), 'emotion only' without the landmark term (alpha 0). Scheme runs "
             f"({st.scheme_stages or 1} stages, the best multi-task count) train on ten simulated annotators' votes; "
             f"every run is scored on the clean test labels. NME: mean landmark distance over the inter-ocular "
             f"distance.")
    md = f"# xfer DAN study: {results.name}\n\n{intro}\n\n{markdown_table(header, rows)}\n\n![curves](figures/curves_dan.png)\n"
    b64 = base64.b64encode(png).decode()
    stages_png = root / "figures" / "dan_stages.png"
    pictures = ""
    if stages_png.is_file():
        caption = ("Each stage on test faces (the best multi-task DAN, first seed): landmarks before (blue) and after "
                   "(red) the stage's correction over the true ones (green); from stage 2 on, the image warped to the "
                   "canonical pose and the heatmap the stage saw")
        md += f"\n![stages](figures/dan_stages.png)\n\n{caption}.\n"
        pictures = (f"<figure><img alt=\"DAN stages\" src=\"data:image/png;base64,"
                    f"{base64.b64encode(stages_png.read_bytes()).decode()}\"><figcaption>{html.escape(caption)}"
                    "</figcaption></figure>")
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>xfer DAN study</title><style>{CSS}</style>"
            f"</head><body><h1>xfer DAN study: {html.escape(results.name)}</h1><p>{html.escape(intro)}</p>"
            f"{_html_table(header, rows)}<figure><img alt=\"training curves\" src=\"data:image/png;base64,{b64}\">"
            f"<figcaption>Training curves (mean over seeds)</figcaption></figure>{pictures}</body></html>\n")
    return write_text(root / "report.html", page), write_text(root / "report.md", md)
