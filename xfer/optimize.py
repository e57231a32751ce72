"""Deployment passes on a trained model, each a new ONNX file the same bench can time.

- ``fold``: the input normalisation moves into the first convolution (weights
  scaled by 1/std, bias shifted, zero padding replaced by an explicit Pad at the
  mean), so the kernel only resizes and converts colour. Exact, padding included.
- ``int8``: static quantisation with ONNX Runtime's tools (QDQ, per-channel
  weights), calibrated on training images preprocessed exactly as at test time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.config import OptimizeConfig
from xfer.data import ferg
from xfer.data.formats import load_dataset
from xfer.data.split import default_data
from xfer.errors import XferError
from xfer.graph import finalize, initializers, input_spec, load_model, save_model, set_initializer
from xfer.meta import read_meta, write_meta
from xfer.preprocess import preprocess
from xfer.records import Record
from xfer.surgery.cut import first_conv


def fold_normalization(model):
    """A copy of ``model`` that takes ``pixel / 255`` and applies the recorded mean/std inside its first conv."""
    from onnx import helper

    m = copy.deepcopy(model)
    if read_meta(m).folded:
        raise XferError("the normalisation is already folded into this model")
    spec = input_spec(m)
    c = spec.channels
    mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (c,))
    std = np.broadcast_to(np.asarray(spec.std, np.float32), (c,))
    conv = first_conv(m)
    if conv.input[0] != m.graph.input[0].name:
        raise XferError(f"node '{conv.name or conv.output[0]}': the first conv does not read the input directly")
    inits = initializers(m)
    w = inits[conv.input[1]].astype(np.float64)
    b = inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] in inits else np.zeros(w.shape[0])
    if w.shape[1] != c:
        raise XferError(f"first conv has {w.shape[1]} input channels, the input {c}")
    w_new = w / std.reshape(1, c, 1, 1)
    b_new = b - (w * (mean / std).reshape(1, c, 1, 1)).sum(axis=(1, 2, 3))
    set_initializer(m, conv.input[1], w_new.astype(np.float32))
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else conv.input[1] + "_folded_bias"
    set_initializer(m, bias_name, b_new.astype(np.float32))
    if len(conv.input) < 3:
        conv.input.append(bias_name)
    pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
    if any(pads):
        # Zero padding in normalised space is the mean in raw space: pad explicitly, per channel.
        if len(set(mean.tolist())) > 1:
            raise XferError("cannot fold per-channel means into a padded first conv (one Pad value per tensor)")
        src = conv.input[0]
        padded = src + "_folded_pad"
        set_initializer(m, "folded_pads", np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64))
        set_initializer(m, "folded_pad_value", np.array(mean[0], np.float32))
        m.graph.node.insert(0, helper.make_node("Pad", [src, "folded_pads", "folded_pad_value"], [padded],
                                                name="folded_pad", mode="constant"))
        conv.input[0] = padded
        for a in conv.attribute:
            if a.name == "pads":
                a.ints[:] = [0] * len(a.ints)
    m = finalize(m)
    write_meta(m, mean=[0.0] * c, std=[1.0] * c, folded=True, folded_from={"mean": mean.tolist(), "std": std.tolist()})
    return m


def quantize_int8(model, calibration: np.ndarray, convs: bool = False):
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``calibration`` (float NCHW inputs).

    Convolutions stay in float unless ``convs``: on the transferred LeNet-5,
    quantising the digit filters' activations cost ~18 accuracy points, while
    the FC head (99.8% of the weights) quantises at a cost of ~0.4.
    """
    import tempfile
    from dataclasses import asdict

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{model.graph.input[0].name: calibration[i:i + 64]} for i in range(0, len(calibration), 64)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        exclude = [] if convs else [n.name for n in model.graph.node if n.op_type == "Conv"]
        import logging

        logging.disable(logging.WARNING)  # its "consider pre-processing" advice is about shape-inference helpers we run
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_exclude=exclude)
        finally:
            logging.disable(logging.NOTSET)
        q = onnx.load(dst)
    meta = read_meta(model)
    del q.metadata_props[:]
    write_meta(q, **asdict(meta))
    write_meta(q, quantized="int8" if convs else "int8 (convolutions in float)", calibration_images=int(len(calibration)))
    return q


def int8_path(model: str | Path) -> Path:
    """Where ``xfer optimize --int8`` writes the int8 variant of ``model`` (``bench`` looks for it there)."""
    return Path(str(Path(model).with_suffix("")) + ".int8.onnx")


@dataclass
class OptimizeResult(Record):
    """The variants written: the normalisation-folded model and/or the int8 one (with its calibration size)."""

    folded: str | None = None
    int8: str | None = None
    calibration_images: int | None = None


def main(args: OptimizeConfig) -> OptimizeResult:
    model = load_model(args.model)
    stem = Path(args.model)
    written = OptimizeResult()
    if args.fold:
        model = fold_normalization(model)
        out = stem.with_suffix(".folded.onnx")
        save_model(model, out)
        written.folded = str(out)
    if args.int8:
        meta = read_meta(model)
        spec = input_spec(model, args.model)
        pack = load_dataset(args.data or default_data())
        tr, _ = ferg.split(meta.split or "random", pack.labels, pack.groups, pack.group_names, meta.split_seed or 0)
        pick = np.random.default_rng(0).choice(tr, size=min(args.calibration, len(tr)), replace=False)
        calib = preprocess(np.ascontiguousarray(pack.images[np.sort(pick)]), spec.size, spec.channels, spec.mean,
                           spec.std)
        q = quantize_int8(finalize(model), calib, args.int8_convs)
        out = int8_path(stem.with_suffix(".folded.onnx") if args.fold else stem)
        save_model(q, out)
        written.int8, written.calibration_images = str(out), len(calib)
    if written.folded is None and written.int8 is None:
        raise XferError("nothing to do: pass --fold and/or --int8")
    return written
