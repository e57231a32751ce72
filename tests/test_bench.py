import json

import numpy as np
import pytest

from xfer import bench
from xfer.bench import BenchReport
from xfer.config import BenchConfig
from xfer.errors import XferError
from xfer.report.console import bench_text


def test_bench_report(trained_frozen, synth_pack, tmp_path):
    out = tmp_path / "b.json"
    rep = bench.main(BenchConfig(model=str(trained_frozen), data=str(synth_pack), repeat=1, per_image_limit=5,
                                 threads=(1,), batch=(16, 64), out=str(out)))
    saved = json.loads(out.read_text())
    assert saved["images"] == rep.images == 42
    assert BenchReport.from_json(saved) == rep  # the file is the record
    for path in ("stream", "read", "flop", "kernel_stream", "kernel", "copy", "kernel+ort", "opencv+ort", "naive_batched",
                 "naive_per_image"):
        assert saved["paths"][path]["median_s"] > 0, path
    assert saved["accuracy_matches_train"] is True
    assert saved["paths"]["stream"]["accuracy"] == saved["paths"]["kernel+ort"]["accuracy"]  # same images, same model
    assert saved["xfer"] == "stream" and "xfer optimize --int8" in saved["xfer_note"]  # no int8 variant beside it
    assert saved["ort_materialised"]["threads"] == 1 and saved["ort_materialised"]["batch"] in (16, 64)
    assert saved["ort"]["batch"] in (512, 1024) and len(saved["ort"]["trials"]) == 8
    import onnxruntime as ort

    from xfer.preprocess import cuda_available

    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_available()
    if not gpu:
        assert saved["device"] == "cpu" and saved["device_note"].startswith("CPU")
        assert "cuda_kernel+ort_cuda" not in saved["paths"]
    else:  # CUDA is used, or the report says why ORT's CUDA provider did not load
        assert saved["device"] == "cuda" or "CUDA execution provider" in saved["device_note"]
    assert {"kernel_vs_opencv_speedup", "end_to_end_vs_naive_batched"} <= set(saved["ratios"])
    text = bench_text(rep)
    assert "streamed kernel + ORT (float)" in text and "matches xfer train" in text


def test_bench_cycles_images(trained_frozen, synth_pack):
    rep = bench.run(trained_frozen, str(synth_pack), images=100, repeat=1, baselines=False, threads=[1], batches=[32])
    assert rep.images == 100 and rep.accuracy_matches_train is None


def test_opencv_and_pil_paths_agree_with_kernel():
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    from xfer.preprocess import preprocess

    k = preprocess(x, 16, 1, 0.5, 0.25)
    assert np.abs(bench.opencv_preprocess(x, (16, 16), 1, [0.5], [0.25]) - k).max() < 0.02
    assert np.abs(np.stack([bench.pil_preprocess_one(i, (16, 16), 1, [0.5], [0.25]) for i in x]) - k).max() < 0.03


def test_missing_model(tmp_path):
    with pytest.raises(XferError, match="model not found"):
        bench.main(BenchConfig(model=str(tmp_path / "x.onnx")))


def test_cuda_session_reports_a_provider_that_did_not_load(monkeypatch):
    import onnxruntime as ort

    class CpuOnly:
        def __init__(self, *a, **k):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", CpuOnly)
    sess, why = bench.cuda_session(b"model")
    assert sess is None and "did not load its CUDA execution provider" in why and "CPUExecutionProvider" in why


@pytest.mark.needs_cuda
def test_cuda_pass_matches_cpu_pass_prediction_for_prediction(trained_frozen, synth_pack):
    rep = bench.run(trained_frozen, str(synth_pack), repeat=1, baselines=False, threads=[1], batches=[16],
                    device="cuda")
    assert rep.device == "cuda"
    assert rep.paths["cuda_kernel+ort_cuda"].details["agrees_with_cpu"] == 1.0


def test_a_new_baseline_is_one_record(trained_frozen, synth_pack, monkeypatch):
    """A throw-away baseline registered as one record runs, is labelled, compared with xfer's path and printed."""
    from xfer.bench import baselines
    from xfer.bench.timing import PathResult

    def numpy_copy(b):
        times, _ = bench.timed(lambda: b.gathered.images.astype(np.float32), b.repeat)
        return PathResult.of(times, len(b.gathered.images))

    extra = bench.Baseline("numpy_cast", "numpy astype(float32)", False, numpy_copy)
    monkeypatch.setattr(baselines, "BASELINES", [*baselines.BASELINES, extra])
    rep = bench.run(trained_frozen, str(synth_pack), repeat=1, per_image_limit=3, threads=[1], batches=[32])
    assert rep.paths["numpy_cast"].median_s > 0
    assert rep.ratios["kernel_vs_numpy_cast_speedup"] == rep.paths["numpy_cast"].median_s / rep.paths["kernel"].median_s
    assert "numpy astype(float32)" in bench_text(rep)
    assert list(bench.known_paths())[-1] == "numpy_cast"


def test_machine_facts_are_read_from_cpuinfo():
    from xfer.hw import Hardware, parse_cpuinfo

    name, mhz, flags = parse_cpuinfo("processor : 0\nmodel name : Xeon X\ncpu MHz : 2100.5\nflags : fma avx avx2 "
                                     "avx512f avx512_vnni amx_tile\nprocessor : 1\nmodel name : other\n")
    hw = Hardware(name, "x86_64", 4, 2, mhz, flags)
    assert name == "Xeon X" and mhz == 2100.5
    assert hw.vector_bits == 512 and hw.fp32_flops_per_cycle == 64
    assert hw.label == "Xeon X, 2 cores (AMX, AVX-512 VNNI, AVX-512)"
    avx2 = Hardware("EPYC", "x86_64", 2, 2, 2000.0, frozenset({"avx", "avx2", "fma"}))
    assert avx2.fp32_flops_per_cycle == 32 and avx2.label == "EPYC, 2 cores (AVX2)"
    peak, how = avx2.peak_flops()
    assert peak == 2 * 2000e6 * 32 and "256-bit" in how
