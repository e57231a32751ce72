
import numpy as np
import onnx
import onnxruntime as ort

from xfer import bench, optimize
from xfer.config import OptimizeConfig
from xfer.meta import read_meta
from xfer.preprocess import preprocess


def run(m, x):
    return ort.InferenceSession(m.SerializeToString()).run(None, {"input": x})[0]


def test_fold_is_exact_padding_included(trained_frozen):
    m = onnx.load(trained_frozen)
    meta = read_meta(m)
    folded = optimize.fold_normalization(m)
    assert read_meta(folded).folded is True
    assert "Pad" in [n.op_type for n in folded.graph.node]  # LeNet-5's conv1 pads by 2
    imgs = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    normalised = preprocess(imgs, 32, 1, meta.mean, meta.std)
    raw = preprocess(imgs, 32, 1)  # the folded model takes pixel / 255
    np.testing.assert_allclose(run(folded, raw), run(m, normalised), atol=1e-4, rtol=1e-4)


def test_optimize_cli_and_bench(trained_frozen, synth_pack, tmp_path):
    import shutil

    src = tmp_path / "m.onnx"
    shutil.copy(trained_frozen, src)
    out = optimize.main(OptimizeConfig(model=str(src), fold=True, int8=True, data=str(synth_pack), calibration=32))
    assert out.int8 is not None and out.folded is not None and out.calibration_images == 32
    q = onnx.load(out.int8)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert read_meta(q).folded is True
    base = bench.run(src, str(synth_pack), repeat=1, baselines=False, threads=[1], batches=[64])
    fold = bench.run(out.folded, str(synth_pack), repeat=1, baselines=False, threads=[1], batches=[64])
    quant = bench.run(out.int8, str(synth_pack), repeat=1, baselines=False, threads=[1], batches=[64])
    assert fold.paths["kernel+ort"].accuracy == base.paths["kernel+ort"].accuracy
    assert abs(quant.paths["kernel+ort"].accuracy - base.paths["kernel+ort"].accuracy) <= 0.1
