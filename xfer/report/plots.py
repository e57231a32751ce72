"""Figures for the report, as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np


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


def bench_chart(paths: dict) -> bytes:
    """Images per second of each test-pass path (higher is better)."""
    plt = _plt()
    labels = {"kernel+ort": "kernel + ORT (xfer)", "cuda_kernel+ort_cuda": "CUDA kernel + ORT CUDA",
              "opencv+ort": "OpenCV + ORT", "naive_batched": "PIL + PyTorch (batch 256)",
              "naive_per_image": "PIL + PyTorch (per image)"}
    items = [(labels[k], paths[k]["images_per_s"]) for k in labels if k in paths]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(items)))
    names, rates = zip(*items)
    bars = ax.barh(names, rates, color=["#2b7bba"] + ["#999999"] * (len(items) - 1))
    ax.invert_yaxis()
    for b, r in zip(bars, rates):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r:,.0f}", va="center", fontsize=8)
    ax.set(xlabel="images per second", title="test pass throughput")
    ax.set_xlim(0, max(rates) * 1.2)
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
