"""The streamed test pass at 1x, 5x and 10x the FERG-DB test split (11,153 -> 111,530 images; pass --full for
55,767 -> 557,670, i.e. 1x/5x/10x the whole FERG-DB): images/s and peak RSS must stay flat as the count grows.

Run after `make demo` (it needs a trained model and the packed synthetic data; the test split is cycled):
    .venv/bin/python benchmarks/stream_scale.py [MODEL] [--full] [--out stream_scale.json]
Prints a table, writes the JSON and a plot (PNG) beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xfer import bench
from xfer.bench.report import label_of
from xfer.config import FERG_SCALES, FERG_TEST_IMAGES
from xfer.errors import XferError
from xfer.hw import hardware
from xfer.io import write_bytes, write_json
from xfer.report import plots
from xfer.tables import format_table

FERG_IMAGES = 55767


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="reports/demo/runs/random/frozen-s0.onnx")
    p.add_argument("--data", default=None)
    p.add_argument("--full", action="store_true", help="scale the whole FERG-DB (55,767) instead of its test split")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--path", choices=list(bench.STREAMED), default="stream_front_int8",
                   help="which streamed pass: the float model or MODEL.int8.onnx, through ONNX Runtime alone or with "
                        "the kernel running the leading convolutions (default: stream_front_int8, xfer's lead)")
    p.add_argument("--out", default="stream_scale.json")
    a = p.parse_args()
    base = FERG_IMAGES if a.full else FERG_TEST_IMAGES
    try:
        points = bench.scaling(a.model, a.data, [k * base for k in FERG_SCALES], a.repeat, a.path)
    except XferError as e:
        print(f"stream_scale: {e}", file=sys.stderr)
        return 1
    print(f"measured on {hardware().label}; {a.path}: {label_of(a.path)}")
    print(format_table(["images", "x FERG", "GB read", "seconds", "images/s", "peak RSS MB", "accuracy"],
                       [[f"{q.images:,}", f"{q.images / base:g}", f"{q.gb_read:.1f}", f"{q.seconds:.2f}",
                         f"{q.images_per_s:,.0f}", f"{q.peak_rss_mb:,.0f}", f"{q.accuracy:.4f}"] for q in points]))
    rates = [q.images_per_s for q in points]
    rss = [q.peak_rss_mb for q in points]
    print(f"images/s spread {min(rates) / max(rates):.2f} (min/max); peak RSS {min(rss):,.0f}..{max(rss):,.0f} MB")
    out = Path(a.out)
    write_json(out, {"model": a.model, "base": base, "path": a.path, "cpu": hardware().label,
                     "points": [q.to_json() for q in points]})
    write_bytes(out.with_suffix(".png"), plots.scaling_chart(points))
    print(f"wrote {out}, {out.with_suffix('.png')}")
    return 0 if max(rss) < 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
