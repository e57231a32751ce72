"""The README's exporters table: every torchvision classification model, from both of PyTorch's ONNX exporters.

torchvision does not import beside the core's torch, so the models are exported in an environment of their
own (torch 2.14.1 + torchvision 0.29.1 + onnxscript, built on first use like the pretraining environment, or
the interpreter ``XFER_TORCHVISION_PYTHON`` names) by ``torchvision_worker.py``; only ONNX files cross. For
each model and exporter (the default dynamo exporter, and ``dynamo=False`` at opset 17), in a process of its
own, this measures:

- import parity: max |xfer - ONNX Runtime| over the range of ORT's output, at 2x3x224x224;
- surgery in frozen and finetune modes for 7 classes at 64x64x3 (224x224 where the model cannot take 64),
  each checked by ORT and by one forward/backward step in xfer's importer;
- one training step: seconds per epoch of 256 images (batch 8, Adam, finetune, timed over 2 steps after 1);
- the bench: the trained, written-back model's ONNX Runtime throughput (images/s, batch 64, 2 threads).

    .venv/bin/python benchmarks/torchvision_suite.py [--models resnet18,vit_b_16] [--out reports/torchvision]
        [--exports DIR] [--keep] [--readme]

Writes OUT/suite.json (atomic) and OUT/suite.md, prints the table, and with --readme replaces the table
between the README's ``<!-- torchvision -->`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xfer.config import TORCHVISION_ENV_REQUIREMENTS, TORCHVISION_PYTHON_VAR
from xfer.hw import hardware
from xfer.io import write_text

HERE = Path(__file__).resolve().parent
WORKER = HERE / "torchvision_worker.py"
EXPORTERS = ("dynamo", "legacy")
CLASSES = [str(i) for i in range(7)]
IMPORT_BAR = 1e-5  # parity counts as an import within 1e-5 of ORT's output range


def interpreter() -> str:
    """The torchvision environment's Python: the one the variable names, else xfer's cached environment."""
    named = os.environ.get(TORCHVISION_PYTHON_VAR)
    if named:
        return named
    from xfer import envs

    spec = envs.EnvSpec(requirements=TORCHVISION_ENV_REQUIREMENTS, name="torchvision",
                                modules=("torch", "torchvision", "onnxscript", "onnx"), free_bytes=8_000_000_000,
                                label="torchvision environment")
    return str(envs.ensure(spec))


def export(python: str, model: str, folder: Path, timeout: int) -> dict:
    record = folder / f"{model}.json"
    if not record.is_file():
        log = folder / f"{model}.export.log"
        with open(log, "w") as f, contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([python, str(WORKER), model, str(folder)], stdout=f, stderr=subprocess.STDOUT,
                           timeout=timeout, check=False)
        if not record.is_file():
            return {"model": model, "exports": {e: {"ok": False, "error": "export crashed or timed out"} for e in EXPORTERS}}
    return json.loads(record.read_text())


def _parity(m, path: Path) -> tuple[float, float]:
    import onnxruntime as ort
    import torch

    from xfer.importer import to_torch

    dims = [d.dim_value or 2 for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: x})[0]
    t = time.perf_counter()
    with torch.no_grad():
        got = to_torch(m).eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(got - ref).max() / max(float(ref.max() - ref.min()), 1e-12)), time.perf_counter() - t


def _train_seconds(model, size: int, batch: int = 8, steps: int = 2) -> tuple[float, object]:
    import torch
    import torch.nn.functional as F

    from xfer.importer import to_torch

    net = to_torch(model).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.arange(batch) % len(CLASSES)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    if not torch.isfinite(loss):
        raise RuntimeError("non-finite loss")
    return float(np.median(times[1:])) * 256 / batch, net


def _bench(model, size: int, batch: int = 64, repeat: int = 3) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    sess.run(None, {sess.get_inputs()[0].name: x[:2]})
    best = min(_timed(lambda: sess.run(None, {sess.get_inputs()[0].name: x})) for _ in range(repeat))
    return batch / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _report(out: dict) -> dict:
    """Print what is measured so far: a run cut short by the time limit still leaves its last complete line."""
    print(json.dumps(out), flush=True)
    return out


def measure(path: Path, sizes: tuple[int, ...] = (64, 224)) -> dict:
    """One exported file through import, surgery, a training step and the bench (at 224, fewer steps and images)."""
    import torch

    from xfer.errors import XferError
    from xfer.graph import load_model
    from xfer.importer import write_back
    from xfer.surgery import apply

    torch.set_num_threads(2)
    out: dict = {}
    try:
        m = load_model(path)
        out["parity"], out["import_s"] = _parity(m, path)
        _report(out)
    except XferError as e:
        return _report({**out, "error": f"import: {e}"})
    for size in sizes:
        try:
            t = time.perf_counter()
            tuned = {mode: apply(mode, m, CLASSES, 3, (size, size)) for mode in ("frozen", "finetune")}
            out["surgery_s"], out["size"] = time.perf_counter() - t, size
            out.pop("surgery_error", None)
            _report(out)
            break
        except XferError as e:
            out["surgery_error"] = str(e)
    else:
        return _report(out)
    small = out["size"] <= 64
    for mode, tm in tuned.items():
        try:
            out[f"{mode}_s_per_epoch"], net = _train_seconds(tm, out["size"], steps=2 if small else 1)
            _report(out)
            if mode == "finetune":
                out["bench_img_s"] = _bench(write_back(net, tm), out["size"], batch=64 if small else 8,
                                            repeat=3 if small else 1)
        except (XferError, RuntimeError) as e:
            out[f"{mode}_error"] = str(e).splitlines()[0][:300]
        _report(out)
    return out


def _measured(f: Path, timeout: int) -> dict:
    """``measure`` in a process of its own (a crash or a model too big for memory ends only that process)."""
    try:
        run = subprocess.run([sys.executable, __file__, "--measure", str(f)], capture_output=True, text=True,
                             timeout=timeout, check=False)
        stdout, note = run.stdout, None if run.returncode == 0 else \
            f"crashed ({(run.stderr.strip().splitlines() or ['no output'])[-1][:200]})"
    except subprocess.TimeoutExpired as e:
        stdout, note = e.stdout or "", f"timed out after {timeout} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {}
    if note:
        out["stopped"] = note
    return out


def _row(model: str, exporter: str, rec: dict, r: dict) -> str:
    ex = rec["exports"].get(exporter, {})
    name = f"{exporter} (opset {ex['opset']})" if ex.get("opset") else exporter
    params = f"{rec['params'] / 1e6:.1f}" if rec.get("params") else "?"
    if not ex.get("ok"):
        return f"| {model} | {name} | {params} | export failed: {ex.get('error', '?')[:60]} | | | | |"
    if "parity" not in r:
        return f"| {model} | {name} | {params} | ✗ {r.get('error', '?')[:80]} | | | | |"
    ok = "✓" if r["parity"] <= IMPORT_BAR else "✗"
    surgery = f"✓ {r['size']}" if "size" in r else f"✗ {r.get('surgery_error', '')[:60]}"
    fmt = lambda k: f"{r[k]:.2f}" if k in r else (f"✗ {r.get(k.split('_')[0] + '_error', '')[:40]}" if "size" in r else "")
    bench = f"{r['bench_img_s']:.0f}" if "bench_img_s" in r else r.get("stopped", "")
    return f"| {model} | {name} | {params} | {ok} {r['parity']:.1e} | {surgery} | {fmt('frozen_s_per_epoch')} | " \
           f"{fmt('finetune_s_per_epoch')} | {bench} |"


def table(results: list[dict]) -> str:
    head = ("| model | exporter | params (M) | import parity (max err / range) | surgery frozen+finetune (input) | "
            "s/epoch frozen | s/epoch finetune | bench (img/s) |\n|---|---|---:|---:|:-:|---:|---:|---:|")
    rows = [_row(r["model"], e, r["record"], r["results"].get(e, {})) for r in results for e in EXPORTERS]
    return head + "\n" + "\n".join(rows)


def summary(results: list[dict]) -> str:
    lines = []
    for e in EXPORTERS:
        done = [r for r in results if r["record"]["exports"].get(e, {}).get("ok")]
        imported = [r for r in done if r["results"].get(e, {}).get("parity", 1.0) <= IMPORT_BAR]
        cut = [r for r in imported if "size" in r["results"][e]]
        trained = [r for r in cut if "finetune_s_per_epoch" in r["results"][e]]
        lines.append(f"- **{e}**: {len(results)} models, {len(done)} exported, {len(imported)} import within "
                     f"{IMPORT_BAR:g} of ORT ({100 * len(imported) / max(len(done), 1):.0f}%), {len(cut)} pass surgery, "
                     f"{len(trained)} train")
    return "\n".join(lines)


def cpu_label() -> str:
    """The CPU every quoted number is labelled with (model name, the cores this process may use, the vector ISA)."""
    return hardware().label


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma-separated model names (default: every classification model)")
    p.add_argument("--out", default="reports/torchvision", help="folder for suite.json and suite.md (default: reports/torchvision)")
    p.add_argument("--exports", default="", help="folder for the exported ONNX files (default: OUT/exports)")
    p.add_argument("--keep", action="store_true", help="keep the ONNX files after measuring (default: delete them)")
    p.add_argument("--readme", action="store_true", help="write the table into README.md (default: off)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per model and step (default: 1800)")
    p.add_argument("--measure", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        measure(Path(args.measure))
        return 0
    out = Path(args.out)
    folder = Path(args.exports) if args.exports else out / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    python = interpreter()
    names = args.models.split(",") if args.models else subprocess.run(
        [python, str(WORKER), "--list"], capture_output=True, text=True, check=True).stdout.split()
    done_path = out / "suite.json"
    old = {r["model"]: r for r in json.loads(done_path.read_text())["models"]} if done_path.is_file() else {}
    results = []
    t0 = time.time()
    for i, name in enumerate(names):
        if name in old and not args.models:
            results.append(old[name])
            continue
        rec = export(python, name, folder, args.timeout)
        res = {}
        for e in EXPORTERS:
            f = folder / f"{name}.{e}.onnx"
            if not rec["exports"].get(e, {}).get("ok") or not f.is_file():
                continue
            res[e] = _measured(f, args.timeout)
        if not args.keep:
            for f in folder.glob(f"{name}.*onnx*"):
                f.unlink()
        results.append({"model": name, "record": rec, "results": res})
        eta = (time.time() - t0) / (i + 1) * (len(names) - i - 1)
        print(f"[{i + 1}/{len(names)}] {name}: " + ", ".join(f"{e} {res.get(e, {}).get('parity', 'n/a')}" for e in EXPORTERS)
              + f"  (ETA {eta / 60:.0f} min)", file=sys.stderr, flush=True)
        doc = {"cpu": cpu_label(), "models": results}
        write_text(done_path, json.dumps(doc, indent=1))
    text = f"Measured on {cpu_label()}.\n\n{summary(results)}\n\n{table(results)}\n"
    write_text(out / "suite.md", text)
    print(text)
    if args.readme:
        readme = HERE.parent / "README.md"
        s = readme.read_text()
        a, b = s.index("<!-- torchvision -->") + len("<!-- torchvision -->"), s.index("<!-- /torchvision -->")
        write_text(readme, s[:a] + "\n" + text + s[b:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
