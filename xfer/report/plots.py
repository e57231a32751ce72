"""Figures for the report, as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np

from xfer.bench.report import known_paths
from xfer.bench.runner import ScalingPoint
from xfer.bench.timing import PathResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def curves(runs: dict[str, list[list[dict]]]) -> bytes:
    """Test accuracy and training loss per epoch, one line per mode (mean over seeds)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for mode, histories in runs.items():
        n = min(len(h) for h in histories)
        acc = np.mean([[r["test_acc"] for r in h[:n]] for h in histories], axis=0)
        loss = np.mean([[r["loss"] for r in h[:n]] for h in histories], axis=0)
        ep = np.arange(1, n + 1)
        a1.plot(ep, acc, label=mode)
        a2.plot(ep, loss, label=mode)
    a1.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="test accuracy")
    a2.set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    return _png(fig)


def confusion(cm: np.ndarray, classes: list[str], title: str) -> bytes:
    plt = _plt()
    cm = np.asarray(cm, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _png(fig)


def bench_chart(paths: dict[str, PathResult], xfer: str = "stream") -> bytes:
    """Images per second of each test-pass path (higher is better), with the floors as the limits no pass can pass.

    Dashed lines: reading every input byte once, and the model's arithmetic at the cores' peak FLOP/s.
    """
    plt = _plt()
    labels = {k: p.label for k, p in known_paths().items() if p.end_to_end or k == "kernel_stream"}
    keys = [k for k in labels if k in paths]
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.5 * len(keys)))
    rates = [paths[k].images_per_s for k in keys]
    colors = ["#2b7bba" if k == xfer else "#8fb8dc" if k.startswith("stream") or k == "kernel_stream" else "#999999"
              for k in keys]
    bars = ax.barh([labels[k] for k in keys], rates, color=colors)
    ax.invert_yaxis()
    for bar, r in zip(bars, rates):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r:,.0f}", va="center", fontsize=8)
    top = max(rates)
    for key, name, style in (("read", "read-only pass", "--"), ("flop", "FLOP floor", ":")):
        if key in paths:
            v = paths[key].images_per_s
            ax.axvline(v, color="#c0392b", linestyle=style, linewidth=1.2)
            ax.text(v, 1.01, f"{name}\n{v:,.0f}/s", color="#c0392b", fontsize=7, ha="center", va="bottom",
                    transform=ax.get_xaxis_transform())
            top = max(top, v)
    ax.set(xlabel="images per second (red: reading the bytes once bounds every pass; the FLOP floor every pass that infers)")
    ax.set_title("test pass throughput", pad=26)
    ax.set_xlim(0, top * 1.15)
    return _png(fig)


def scaling_chart(points: list[ScalingPoint]) -> bytes:
    """Images/s and peak RSS of the streamed pass against the number of images: both should stay flat."""
    plt = _plt()
    n = [q.images for q in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(n, [q.images_per_s for q in points], "o-", color="#2b7bba")
    a.set(xlabel="images in the pass", ylabel="images per second", title="throughput", ylim=(0, None))
    b.plot(n, [q.peak_rss_mb for q in points], "o-", color="#c0392b")
    b.axhline(1024, color="#999999", linestyle="--", linewidth=1)
    b.text(n[0], 1024, " 1 GB bound", va="bottom", fontsize=8, color="#666666")
    top = max(1100, max(q.peak_rss_mb for q in points) * 1.1)
    b.set(xlabel="images in the pass", ylabel="peak RSS (MB)", title="memory", ylim=(0, top))
    for ax in (a, b):
        ax.ticklabel_format(axis="x", style="plain")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    fig.tight_layout()
    return _png(fig)


def image_grid(images: np.ndarray, true: list[str], pred: list[str], cols: int = 8) -> bytes:
    """Test images with predicted vs true labels; red titles are mistakes."""
    plt = _plt()
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for i, ax in enumerate(np.atleast_1d(axes).ravel()[:n]):
        ax.imshow(images[i])
        ok = true[i] == pred[i]
        ax.set_title(f"{pred[i]}\n(true {true[i]})" if not ok else pred[i], fontsize=7, color="black" if ok else "red")
    return _png(fig)


def dan_stages(images: np.ndarray, truth: np.ndarray, landmarks: list[np.ndarray], warped: list[np.ndarray],
               heatmaps: list[np.ndarray]) -> bytes:
    """One row per face: each stage's landmarks before (blue) and after (red) its correction over the true ones
    (green), and for every stage after the first the image it saw, warped to the canonical pose, and its heatmap."""
    plt = _plt()
    n, k = len(images), len(landmarks)
    cols = k + 2 * (k - 1)
    fig, axes = plt.subplots(n, cols, figsize=(cols * 1.6, n * 1.7), squeeze=False)
    h, w = images.shape[1:3]
    for i in range(n):
        col = 0
        for t in range(k):
            if t > 0:
                for img, name in ((warped[t - 1][i], "warped"), (heatmaps[t - 1][i], "heatmap")):
                    axes[i, col].imshow(img, cmap="gray" if name == "warped" else "magma")
                    axes[i, col].set_title(f"stage {t + 1} {name}", fontsize=7)
                    col += 1
            ax = axes[i, col]
            ax.imshow(images[i], cmap="gray")
            for pts, colour in ((truth[i], "lime"), *(((landmarks[t - 1][i], "deepskyblue"),) if t else ()),
                                (landmarks[t][i], "red")):
                ax.scatter(pts[:, 0] * w - 0.5, pts[:, 1] * h - 0.5, s=4, c=colour)
            ax.set_title(f"stage {t + 1}", fontsize=7)
            col += 1
    for ax in axes.ravel():
        ax.axis("off")
    return _png(fig)
