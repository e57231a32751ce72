"""The ``xfer`` command: parse arguments, run one stage, print one line for anything the user can fix."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from xfer.errors import XferError

DEFAULT_SOURCE_PREFIX = "models/lenet5"
DEFAULT_SOURCE = "models/lenet5.onnx"
DEFAULT_SYNTH = "data/ferg-synth"
DEFAULT_PACK = "data/ferg-synth.xpack"


def _number(cast, ok, what: str):
    """An argparse type: ``cast`` the text, then require ``ok`` (NaN and infinity never pass)."""
    def parse(s: str):
        try:
            v = cast(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{s}'") from None
        if v != v or v in (float("inf"), float("-inf")) or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s}")
        return v

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")


def _lazy(module: str) -> Callable[[argparse.Namespace], object]:
    def run(args: argparse.Namespace) -> object:
        import importlib

        return importlib.import_module(module).main(args)

    return run


def _data_synth(args: argparse.Namespace) -> None:
    from xfer.data.synth import generate

    out = generate(args.out, per_class=args.per_class, seed=args.seed, workers=args.workers)
    n = sum(1 for _ in out.rglob("*.png"))
    print(f"wrote {n} images to {out} (FERG-DB layout, landmarks in {out / 'landmarks.csv'})")


def _data_pack(args: argparse.Namespace) -> None:
    from xfer.data.pack import load_pack, pack_folder

    out = args.out or str(args.src).rstrip("/") + ".xpack"
    pack_folder(args.src, out, tuple(args.size) if args.size else None)
    p = load_pack(out)
    extra = ", landmarks" if p.landmarks is not None else ""
    print(f"wrote {out}: {len(p)} images {tuple(p.images.shape[1:])}, {len(p.classes)} classes, "
          f"{len(p.group_names)} groups{extra}")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=positive_int, nargs="+", default=[32, 32], metavar="S",
                   help="input H W (or one number for square)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 = gray, 3 = RGB input")
    p.add_argument("--head", type=positive_int, nargs="+", default=[1000, 500, 200],
                   help="hidden widths of the new head (frozen, finetune)")
    p.add_argument("--train-all", action="store_true", help="reuse: train every layer, not only the re-created ones")


def parse_input_size(values) -> tuple[int, int]:
    """``--input-size S`` or ``--input-size H W``."""
    s = list(values)
    if len(s) not in (1, 2):
        raise XferError(f"--input-size: expected S or H W, got {len(s)} numbers")
    if min(s) < 1:
        raise XferError(f"--input-size: expected positive sizes, got {s}")
    return (s[0], s[0]) if len(s) == 1 else (s[0], s[1])


def _surgery(args: argparse.Namespace) -> None:
    from xfer.graph import load_model, save_model
    from xfer.inspect_model import describe
    from xfer.surgery import apply

    size = parse_input_size(args.input_size)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    model = apply(args.mode, load_model(args.source), classes, args.channels, size, tuple(args.head), args.train_all)
    out = args.out or f"models/{args.mode}.init.onnx"
    save_model(model, out)
    d = describe(model)
    print(f"wrote {out}: mode {args.mode}, input {[args.channels, *size]}, {len(classes)} classes, "
          f"{d['trainable_params']:,} trainable / {d['frozen_params']:,} frozen parameters")


def _zoo(args: argparse.Namespace) -> None:
    from xfer.graph import save_model
    from xfer.zoo import ZOO, load_zoo

    if not args.name:
        print("model-zoo CNNs shipped in the onnx wheel (weights seeded at random): " + ", ".join(ZOO))
        return
    out = args.out or f"models/zoo/{args.name}.onnx"
    model = load_zoo(args.name, args.seed)
    save_model(model, out)
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    print(f"wrote {out}: {args.name}, input {dims}, {len(model.graph.node)} nodes")


def _experiments(args: argparse.Namespace) -> object:
    if args.study == "dan":
        from xfer.report import dan_study
        from xfer.train import default_data

        args.data = args.data or str(default_data())
        return dan_study.main(args)
    from xfer.report import experiments

    return experiments.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer", description="Move a trained network across frameworks and tasks through ONNX.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("data", help="make or pack data sets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = dsub.add_parser("synth", help="render a synthetic FERG-DB (same layout, 256x256 RGB, landmarks)")
    s.add_argument("--out", default=DEFAULT_SYNTH)
    s.add_argument("--per-class", type=positive_int, default=150, help="images per (character, emotion)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=nonneg_int, default=0, help="processes (0: one per core)")
    s.set_defaults(func=_data_synth)
    k = dsub.add_parser("pack", help="decode an image tree once into memory-mappable arrays")
    k.add_argument("src", help="FERG-DB or class-per-folder tree")
    k.add_argument("--out", help="pack folder (default: SRC.xpack)")
    k.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), help="resize every image to H x W")
    k.set_defaults(func=_data_pack)

    t = sub.add_parser("pretrain", help="train LeNet-5 on digits in MXNet")
    t.add_argument("--mnist", help="folder with MNIST IDX files (default: embedded scikit-learn digits)")
    t.add_argument("--epochs", type=positive_int, default=15)
    t.add_argument("--batch-size", type=positive_int, default=64)
    t.add_argument("--lr", type=positive_float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--activation", choices=["relu", "tanh", "sigmoid"], default="relu")
    t.add_argument("--out", default=DEFAULT_SOURCE_PREFIX, help="output prefix (PREFIX-symbol.json, PREFIX-0000.params)")
    t.set_defaults(func=_lazy("xfer.pretrain"))

    c = sub.add_parser("convert", help="export the MXNet model to ONNX and check parity")
    c.add_argument("--model", default=DEFAULT_SOURCE_PREFIX, help="MXNet prefix")
    c.add_argument("--out", default=DEFAULT_SOURCE)
    c.add_argument("--tolerance", type=positive_float, default=1e-5)
    c.set_defaults(func=_lazy("xfer.convert"))

    sg = sub.add_parser("surgery", help="rewrite an ONNX model for a transfer mode")
    sg.add_argument("--mode", required=True, choices=["scratch", "reuse", "frozen", "finetune"])
    sg.add_argument("--source", default=DEFAULT_SOURCE)
    sg.add_argument("--classes", default=",".join(["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]),
                    help="comma-separated class names (default: the 7 FERG-DB emotions)")
    _model_options(sg)
    sg.add_argument("--out", help="output ONNX (default: models/<mode>.init.onnx)")
    sg.set_defaults(func=_surgery)

    tr = sub.add_parser("train", help="train a transfer mode in PyTorch and write the weights back to ONNX")
    tr.add_argument("--mode", choices=["scratch", "reuse", "frozen", "finetune"],
                    help="transfer mode (required unless --model dan)")
    tr.add_argument("--model", choices=["lenet", "dan"], default="lenet",
                    help="lenet: transfer the source model; dan: the multi-task landmark + emotion network")
    tr.add_argument("--label-scheme", choices=["clean", "majority", "multilabel", "probability", "crossentropy"],
                    default="clean", help="emotion targets: the folder labels, or a FER+ scheme over annotator votes")
    tr.add_argument("--alpha", type=float, default=1.0, help="dan: weight of the landmark loss (0 = single-task)")
    tr.add_argument("--beta", type=float, default=1.0, help="weight of the emotion loss")
    tr.add_argument("--width", type=positive_float, default=0.25, help="dan: backbone width multiplier of 64-128-256-512")
    tr.add_argument("--data", help="FERG-DB tree, class-per-folder tree or .xpack (default: the synthetic FERG-DB)")
    tr.add_argument("--source", help=f"ONNX model to transfer from (default: {DEFAULT_SOURCE})")
    tr.add_argument("--epochs", type=positive_int, default=30)
    tr.add_argument("--batch-size", type=positive_int, default=64)
    tr.add_argument("--lr", type=positive_float, help="default: 3e-3 for reuse, 1e-3 otherwise")
    tr.add_argument("--weight-decay", type=float, default=0.0)
    tr.add_argument("--val", type=_number(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)"), default=0.0,
                    help="carve this stratified fraction of the training split as a validation set, reported as "
                         "val_accuracy (the split hyperparameters are chosen on; default: 0, none)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--split", default="random", help="random (stratified 80/20) or loco:<character>")
    tr.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    tr.add_argument("--no-augment", dest="augment", action="store_false", help="no random flips and shifts")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the same run")
    tr.add_argument("--name", help="output stem (default: the mode)")
    tr.add_argument("--out", default="models", help="output folder")
    _model_options(tr)
    tr.set_defaults(func=_lazy("xfer.train"))

    b = sub.add_parser("bench", help="the timed test pass: C++ kernel + ONNX Runtime beside the baselines")
    b.add_argument("model", nargs="?", help="trained ONNX model (default: models/frozen.onnx)")
    b.add_argument("--data", help="the data the model was trained on (default: the synthetic FERG-DB)")
    b.add_argument("--images", type=positive_int, help="cycle the test split to this many images (FERG-DB's is 11153)")
    b.add_argument("--repeat", type=positive_int, default=5, help="timed runs per path (after one warm-up)")
    b.add_argument("--per-image-limit", type=positive_int, default=2000,
                   help="images timed on the naive one-at-a-time path (scaled to the full count)")
    b.add_argument("--threads", type=positive_int, nargs="+", help="ONNX Runtime intra-op thread counts to try")
    b.add_argument("--batch", type=positive_int, nargs="+", help="inference batch sizes to try")
    b.add_argument("--no-baselines", action="store_true", help="time only xfer's own path")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    b.add_argument("--workers", type=positive_int, default=1, help="shard the test pass over N processes")
    b.add_argument("--out", help="report JSON (default: MODEL.bench.json)")
    b.set_defaults(func=_lazy("xfer.bench"))

    o = sub.add_parser("optimize", help="fold the normalisation into the first conv and/or quantise to int8")
    o.add_argument("model")
    o.add_argument("--fold", action="store_true", help="move (x - mean) / std into the first convolution")
    o.add_argument("--int8", action="store_true", help="static int8 quantisation calibrated on training images")
    o.add_argument("--data", help="the data the model was trained on (for calibration)")
    o.add_argument("--calibration", type=positive_int, default=512, help="calibration images")
    o.add_argument("--int8-convs", action="store_true", help="quantise the convolutions too (costs accuracy here)")
    o.set_defaults(func=_lazy("xfer.optimize"))

    e = sub.add_parser("experiments", help="the full study: modes x seeds x protocols -> train -> bench -> report")
    e.add_argument("--name", default="study", help="report folder name under --out")
    e.add_argument("--data", help="target data (default: the synthetic FERG-DB)")
    e.add_argument("--source", help=f"ONNX model to transfer from (default: {DEFAULT_SOURCE})")
    e.add_argument("--modes", nargs="+", choices=["reuse", "scratch", "frozen", "finetune"],
                   default=["reuse", "scratch", "frozen", "finetune"])
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--protocols", nargs="+", choices=["random", "loco"], default=["random", "loco"])
    e.add_argument("--epochs", type=positive_int, default=30)
    e.add_argument("--batch-size", type=positive_int, default=64)
    e.add_argument("--lr", type=positive_float, help="default: each mode's own (see xfer train --help)")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    e.add_argument("--bench-images", type=positive_int, help="cycle the baseline comparison to this many images")
    e.add_argument("--per-image-limit", type=positive_int, default=2000)
    e.add_argument("--bench-threads", type=positive_int, nargs="+")
    e.add_argument("--out", default="reports")
    e.add_argument("--study", choices=["transfer", "dan"], default="transfer",
                   help="transfer: the four modes (Table 1); dan: single/multi-task DAN and the FER+ label schemes")
    e.add_argument("--alpha", type=float, default=1.0, help="dan study: landmark loss weight of the multi-task runs")
    e.add_argument("--width", type=positive_float, default=0.25, help="dan study: backbone width multiplier")
    _model_options(e)
    e.set_defaults(func=_experiments)

    dm = sub.add_parser("demo", help="from nothing to a finished report on the embedded default data")
    dm.add_argument("--name", default="demo")
    dm.add_argument("--mnist", help="real MNIST IDX folder for pretraining (default: embedded digits)")
    dm.add_argument("--seeds", type=int, nargs="+", default=[0])
    dm.add_argument("--epochs", type=positive_int, default=20)
    dm.add_argument("--bench-images", type=positive_int, default=11153,
                    help="images in the baseline comparison (FERG-DB's test split is 11153)")
    dm.set_defaults(func=_lazy("xfer.demo"))

    z = sub.add_parser("zoo", help="write one of the nine model-zoo CNNs shipped in the onnx wheel, runnable",
                       description="The onnx wheel ships nine classic CNNs (AlexNet ... SqueezeNet) whose weights are "
                                   "ConstantOfShape generators; this writes one with seeded random weights, ready for "
                                   "xfer surgery / train --source. Example: xfer zoo squeezenet")
    z.add_argument("name", nargs="?", help="model name (omit to list them)")
    z.add_argument("--out", help="output ONNX (default: models/zoo/NAME.onnx)")
    z.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    z.set_defaults(func=_zoo)

    i = sub.add_parser("inspect", help="layers, shapes, parameters and metadata of an ONNX model")
    i.add_argument("model")
    i.set_defaults(func=_lazy("xfer.inspect_model"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except XferError as e:
        if args.debug:
            raise
        print(f"xfer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xfer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
