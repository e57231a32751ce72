"""The numbers in the README's performance section: a FERG-size test pass (11,153 images), streamed, beside the old
gathered path, the floors and the baselines, all in one run.

Run after `make demo` (it needs a trained model and the packed synthetic data):
    .venv/bin/python benchmarks/bench_test_pass.py [MODEL] [--images 11153]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xfer import bench
from xfer.bench.floors import GATHERED_OF
from xfer.errors import XferError
from xfer.hw import hardware
from xfer.io import write_bytes, write_json
from xfer.report import plots
from xfer.report.console import bench_text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", nargs="?", default="reports/demo/runs/random/frozen-s0.onnx")
    p.add_argument("--data", default=None)
    p.add_argument("--images", type=int, default=11153)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default="bench_test_pass.json", help="report JSON; the throughput chart goes beside it (.png)")
    a = p.parse_args()
    try:
        rep = bench.run(a.model, a.data, images=a.images, repeat=a.repeat)
    except XferError as e:
        print(f"bench_test_pass: {e}", file=sys.stderr)
        return 1
    print(f"measured on {hardware().label}")
    print(bench_text(rep))
    out = Path(a.out)
    write_json(out, rep.to_json())
    write_bytes(out.with_suffix(".png"), plots.bench_chart(rep.paths, rep.xfer))
    print(f"wrote {out}, {out.with_suffix('.png')}")
    r, x, old = rep.ratios, rep.lead, rep.paths["kernel+ort"]
    # the leading model's gathered pass, and the fastest streamed pass of that model (through ORT or the kernel's convs)
    twin_key = GATHERED_OF.get(rep.xfer, rep.xfer)
    streamed = min((rep.paths[k] for k, g in GATHERED_OF.items() if g == twin_key and k in rep.paths),
                   key=lambda p: p.median_s)
    twin = rep.paths[twin_key]
    floor = rep.floor.xfer_vs_floor if rep.floor else float("inf")
    drop = abs((x.accuracy or 0.0) - (old.accuracy or 0.0))
    rss = streamed.peak_rss_mb or 0.0
    checks = [("whole test pass <= 0.50 s", x.median_s, x.median_s <= 0.50),
              ("whole test pass <= 1.3x its binding floor", floor, floor <= 1.3),
              ("streamed / gathered (same model) <= 1", streamed.median_s / twin.median_s,
               streamed.median_s <= twin.median_s),
              ("accuracy within 0.5 points of the old path", drop, drop <= 0.005 + 1e-9),
              ("streamed peak RSS < 1024 MB", rss, rss < 1024),
              ("kernel >= 2x faster than OpenCV", r["kernel_vs_opencv_speedup"], r["kernel_vs_opencv_speedup"] >= 2),
              ("kernel within 2x of a plain copy", r["kernel_vs_copy_slowdown"], r["kernel_vs_copy_slowdown"] <= 2),
              ("end to end >= 3.5x naive batched", r["end_to_end_vs_naive_batched"], r["end_to_end_vs_naive_batched"] >= 3.5),
              ("end to end >= 9x naive per image", r["end_to_end_vs_naive_per_image"], r["end_to_end_vs_naive_per_image"] >= 9)]
    print()
    for name, value, ok in checks:
        print(f"  {'met ' if ok else 'MISS'}  {name}: {value:.3f}")
    missed = [name for name, _, ok in checks if not ok]
    if missed:
        print(f"bench_test_pass: {len(missed)} check(s) missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
