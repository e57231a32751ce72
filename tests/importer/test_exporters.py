"""Each modern family, exported by both of PyTorch's exporters, imports, survives surgery in every mode and trains.

The default exporter (dynamo, opset 18 and up: ``ReduceMean`` pools, ``Split``,
native ``LayerNormalization``/``Gelu``) and the old one (``dynamo=False``,
opset 17: ``GlobalAveragePool``, ``Erf``-built GELU, shape arithmetic with
``Where``/``Equal``/``Mod``) write different graphs of the same network; both
must come out of xfer's importer within 1e-5 of ONNX Runtime and of PyTorch.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from families import FAMILIES, SIZE, export
from xfer.errors import XferError
from xfer.importer import to_torch, write_back
from xfer.surgery import MODES, apply

pytest.importorskip("onnxscript")  # the dynamo exporter needs it
EXPORTERS = ("dynamo", "legacy")
PARAMS = [(f, e) for f in FAMILIES for e in EXPORTERS]
CLASSES = [str(i) for i in range(4)]
_CACHE: dict = {}


def exported(family: str, exporter: str):
    if (family, exporter) not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[family, exporter] = export(family, exporter)
    return _CACHE[family, exporter]


def ort_run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: x})[0]


@pytest.mark.parametrize("family,exporter", PARAMS, ids=[f"{f}-{e}" for f, e in PARAMS])
def test_import_matches_onnxruntime_and_pytorch(family, exporter):
    m, net = exported(family, exporter)
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    ref = ort_run(m, x)
    with torch.no_grad():
        got = to_torch(m).eval()(torch.from_numpy(x)).numpy()
        native = net(torch.from_numpy(x)).numpy()
    scale = float(ref.max() - ref.min())
    assert np.abs(got - ref).max() <= 1e-5 * scale
    assert np.abs(got - native).max() <= 1e-5 * scale


@pytest.mark.parametrize("family,exporter", PARAMS, ids=[f"{f}-{e}" for f, e in PARAMS])
def test_every_mode_rewrites_and_trains(family, exporter):
    m, _ = exported(family, exporter)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32))
    for mode in MODES:
        tuned = apply(mode, m, CLASSES, 3, (SIZE, SIZE))  # checked in ORT and by one step in the importer
        net = to_torch(tuned)
        trainable = [p for p in net.parameters() if p.requires_grad]
        assert trainable
        opt = torch.optim.SGD(trainable, lr=0.01)
        loss = torch.nn.functional.cross_entropy(net.train()(x), torch.arange(4))
        loss.backward()
        opt.step()
        back = write_back(net, tuned)
        with torch.no_grad():
            np.testing.assert_allclose(ort_run(back, x.numpy()), net.eval()(x).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_cnn_families_take_another_input_size(exporter):
    for family in ("mobilenet_v3", "efficientnet", "convnext", "shufflenet_v2"):
        m, _ = exported(family, exporter)
        assert apply("finetune", m, CLASSES, 1, (48, 40)).graph.input[0].type.tensor_type.shape.dim[3].dim_value == 40


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_vit_at_a_size_its_position_embedding_cannot_take_is_one_line(exporter):
    m, _ = exported("vit", exporter)
    with pytest.raises(XferError) as e:
        apply("frozen", m, CLASSES, 3, (48, 48))
    assert "\n" not in str(e.value) and "48x48" in str(e.value)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_heads_are_found_where_each_family_keeps_them(exporter):
    from xfer.surgery import dense_layers, find_boundary
    from xfer.surgery.canon import canonical_head

    for family, dense in (("mobilenet_v3", 2), ("efficientnet", 1), ("shufflenet_v2", 1), ("vit", 1)):
        m, _ = exported(family, exporter)
        m = copy.deepcopy(m)
        canonical_head(m)
        b = find_boundary(m)
        assert len(dense_layers(m, b)) == dense, family


@pytest.mark.parametrize("family,mode", [("mobilenet_v3", "finetune"), ("vit", "frozen")])
def test_train_and_bench_a_dynamo_export_from_the_command_line(family, mode, tmp_path):
    import onnx

    from test_errors import xfer

    src = tmp_path / f"{family}.onnx"
    onnx.save(exported(family, "dynamo")[0], str(src))
    data = tmp_path / "set"
    rng = np.random.default_rng(0)
    from PIL import Image

    for c, name in enumerate(["red", "green", "blue"]):
        (data / name).mkdir(parents=True)
        for i in range(6):
            a = (rng.random((40, 40, 3)) * 80).astype(np.uint8)
            a[..., c] += 150
            Image.fromarray(a).save(data / name / f"{i}.png")
    out = tmp_path / "out"
    r = xfer("train", "--source", src, "--mode", mode, "--input-size", SIZE, "--channels", 3, "--data", data,
             "--epochs", 1, "--batch-size", 6, "--out", out)
    assert r.returncode == 0, r.stderr
    r = xfer("bench", out / f"{mode}.onnx", "--data", data, "--repeat", 1, "--no-baselines")
    assert r.returncode == 0, r.stderr
    assert (out / f"{mode}.bench.json").is_file()
    if family == "vit":
        r = xfer("train", "--source", src, "--mode", mode, "--input-size", 48, "--channels", 3, "--data", data,
                 "--epochs", 1, "--out", tmp_path / "no")
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "48x48" in r.stderr, r.stderr
