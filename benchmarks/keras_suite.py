"""The README's Keras table: keras.applications families through `xfer convert --from keras`, surgery and training.

Each model (weights=None, seeded) is built and saved as ``.keras`` in the keras environment (tensorflow-cpu +
tf2onnx, built on first use by ``xfer.envs``), converted by ``xfer convert --from keras`` (tf2onnx, NCHW input,
parity against Keras's own outputs on 64 inputs), then measured exactly as the torchvision table is
(``torchvision_suite.measure``, in a process of its own): xfer's import parity against ONNX Runtime, surgery in
frozen and finetune modes for 7 classes at 64x64x3 (224 where the model cannot take 64), a training step, the bench.

    .venv/bin/python benchmarks/keras_suite.py [--models MobileNetV2,ResNet50] [--out reports/keras] [--readme]

Writes OUT/suite.json (atomic) and prints the table; with --readme replaces the table between the README's
``<!-- keras -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from torchvision_suite import _measured, cpu_label  # noqa: E402
from xfer import convert, envs  # noqa: E402
from xfer.config import FRAMEWORKS, ConvertConfig  # noqa: E402
from xfer.errors import XferError  # noqa: E402
from xfer.io import write_text  # noqa: E402

MODELS = ("MobileNetV2", "EfficientNetB0", "ResNet50", "DenseNet121")
BUILD = """
import sys, keras
keras.utils.set_random_seed(0)
m = getattr(keras.applications, sys.argv[1])(weights=None, input_shape=(224, 224, 3), classes=1000,
                                           classifier_activation=None)  # logits: a softmax would hide differences
m.save(sys.argv[2])
print(m.count_params())
"""


def build(name: str, folder: Path) -> tuple[Path, int]:
    """``keras.applications.NAME`` saved as a .keras file, made in the keras environment."""
    python, _ = envs.interpreter(envs.spec_for(FRAMEWORKS["keras"]))
    path = folder / f"{name}.keras"
    done = subprocess.run([str(python), "-c", BUILD, name, str(path)], capture_output=True, text=True, check=False,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}, timeout=900)
    if done.returncode != 0:
        raise XferError(f"{name}: keras could not build it ({(done.stderr.strip().splitlines() or ['?'])[-1][:200]})")
    return path, int(done.stdout.strip().splitlines()[-1])


def one(name: str, folder: Path) -> dict:
    rec: dict = {"model": name}
    try:
        path, rec["params"] = build(name, folder)
        t = time.perf_counter()
        r = convert.main(ConvertConfig(model=str(path), framework="keras", out=str(folder / f"{name}.onnx")))
        rec.update(convert_s=time.perf_counter() - t, keras_parity=r.max_abs_diff, opset=r.opset, nodes=r.nodes)
    except XferError as e:
        return {**rec, "error": str(e)}
    rec.update(_measured(folder / f"{name}.onnx", timeout=1200))
    return rec


def _f(rec: dict, key: str, fmt: str) -> str:
    return format(rec[key], fmt) if isinstance(rec.get(key), (int, float)) else "-"


def table(results: list[dict]) -> str:
    lines = ["| model | params (M) | tf2onnx vs Keras | xfer vs ORT | surgery (size) | frozen s/epoch | "
             "finetune s/epoch | bench img/s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {_f(r, 'params', ',')} | failed: {r['error'][:80]} | | | | | |")
            continue
        size = f"ok ({r['size']}x{r['size']})" if r.get("size") else r.get("surgery_error", "-")[:60]
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f} | {_f(r, 'keras_parity', '.1e')} | "
                     f"{_f(r, 'parity', '.1e')} | {size} | {_f(r, 'frozen_s_per_epoch', '.2f')} | "
                     f"{_f(r, 'finetune_s_per_epoch', '.2f')} | {_f(r, 'bench_img_s', ',.0f')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated keras.applications names (default: all)")
    p.add_argument("--out", default="reports/keras", help="output folder (default: reports/keras)")
    p.add_argument("--readme", action="store_true", help="replace the README's table between <!-- keras --> markers")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        results.append(one(name, out))
        print(json.dumps(results[-1]), flush=True)
        write_text(out / "suite.json", json.dumps({"cpu": cpu_label(), "results": results}, indent=1))
    text = f"{table(results)}\n\nMeasured on {cpu_label()}."
    print(text)
    if args.readme:
        readme = HERE.parent / "README.md"
        body = readme.read_text()
        a, b = body.index("<!-- keras -->"), body.index("<!-- /keras -->")
        write_text(readme, body[:a] + "<!-- keras -->\n" + text + "\n" + body[b:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
