import json
import platform

import numpy as np
import pytest

from xfer import bench
from xfer.bench import BenchReport
from xfer.config import BenchConfig
from xfer.errors import XferError
from xfer.graph import load_model
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
    assert "xfer optimize --int8" in saved["xfer_note"]  # no int8 variant beside it
    # LeNet starts with convolutions the kernel runs: the same model streamed that way predicts the same
    t = {k: v["median_s"] for k, v in saved["paths"].items()}
    assert saved["paths"]["stream_front"]["accuracy"] == saved["paths"]["stream"]["accuracy"]
    streamed = "stream_front" if t["stream_front"] < t["stream"] else "stream"
    assert ("the kernel ran the convolutions (conv 1->6 5x5 + relu" in saved["xfer_note"]) == (streamed == "stream_front")
    # the faster streamed pass leads unless its gathered twin (the same pipeline on gathered images) was faster in
    # this run: then the twin leads, saying what it costs
    twin = {"stream": "kernel+ort", "stream_front": "kernel+ort_front"}[streamed]
    assert saved["paths"][twin]["accuracy"] == saved["paths"][streamed]["accuracy"]
    faster = min((streamed, twin), key=lambda k: t[k])
    assert saved["xfer"] == faster and (faster == streamed or "at the cost of holding" in saved["xfer_note"])
    floor = saved["floor"]
    assert floor["binding"] in ("read", "flop") and floor["compute"] == "flop"
    assert floor["seconds"] == max(saved["paths"]["read"]["median_s"], saved["paths"]["flop"]["median_s"])
    assert floor["xfer_vs_floor"] == pytest.approx(saved["paths"][faster]["median_s"] / floor["seconds"])
    machine = saved["env"]["machine"]
    assert machine["peaks"]["fp32"]["ops_per_s"] > 0 and machine["datapath_bits"] in (128, 256, 512)
    assert saved["env"]["kernel_target"] in ("avx512", "avx2", "baseline")
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
    assert "streamed kernel + ORT (float)" in text and "matches xfer train" in text and "binding floor:" in text


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
                                     "avx512f avx512_vnni amx_tile amx_int8 amx_bf16\nprocessor : 1\nmodel name : other\n")
    hw = Hardware(name, "x86_64", 4, 2, mhz, flags, "GenuineIntel", 6, 143)
    assert name == "Xeon X" and mhz == 2100.5
    assert hw.vector_bits == hw.datapath_bits == 512 and hw.fp32_flops_per_cycle == 64
    assert hw.label == "Xeon X, 2 cores (AMX, AVX-512 VNNI, AVX-512)"
    assert hw.int8_ops_per_cycle[0] == 2048 and hw.bf16_flops_per_cycle[0] == 1024  # AMX tiles
    avx2 = Hardware("EPYC", "x86_64", 2, 2, 2000.0, frozenset({"avx", "avx2", "fma"}), "AuthenticAMD", 23, 49)
    assert avx2.fp32_flops_per_cycle == 32 and avx2.label == "EPYC, 2 cores (AVX2)"
    assert avx2.int8_ops_per_cycle[0] == 64 and "no VNNI" in avx2.int8_ops_per_cycle[1]
    peak, how = avx2.peak_flops()
    assert peak == 2 * 2000e6 * 32 and "256-bit" in how


def test_zen4_avx512_runs_on_256_bit_pipes():
    """AMD family 25 (Zen 4) has the AVX-512 flags but 256-bit pipes: no more FLOP/cycle than AVX2; Zen 5 has 512."""
    from xfer.hw import Hardware

    flags = frozenset({"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"})
    zen4 = Hardware("AMD EPYC", "x86_64", 2, 2, 2600.0, flags, "AuthenticAMD", 25, 17)
    assert zen4.vector_bits == 512 and zen4.datapath_bits == 256 and zen4.fp32_flops_per_cycle == 32
    assert zen4.int8_ops_per_cycle[0] == 128 and zen4.bf16_flops_per_cycle[0] == 64
    assert "2x256-bit" in zen4.peak("fp32").how and zen4.peak("int8").ops_per_s == 2 * 2600e6 * 128
    zen5 = Hardware("AMD EPYC", "x86_64", 2, 2, 2600.0, flags, "AuthenticAMD", 26, 2)
    assert zen5.datapath_bits == 512 and zen5.fp32_flops_per_cycle == 64


def test_peaks_use_the_measured_clock_when_the_cores_run_faster_than_cpuinfo_says():
    """A VM's cpuinfo shows the nominal clock; a peak at it would put every compute floor above the machine's."""
    from xfer.hw import Hardware

    flags = frozenset({"avx", "avx2", "fma"})
    boosted = Hardware("EPYC", "x86_64", 2, 2, 2600.0, flags, "AuthenticAMD", 25, 17, measured_mhz=3600.0)
    assert boosted.clock_mhz == 3600.0 and boosted.peak("fp32").ops_per_s == 2 * 3600e6 * 32
    assert "3.60 GHz measured (cpuinfo 2.60)" in boosted.peak("int8").how
    slow = Hardware("EPYC", "x86_64", 2, 2, 2600.0, flags, "AuthenticAMD", 25, 17, measured_mhz=1200.0)
    assert slow.clock_mhz == 2600.0 and "measured" not in slow.peak("fp32").how  # a preempted measurement never lowers it
    assert boosted.facts().measured_mhz == 3600.0 and boosted.facts().mhz == 2600.0


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"), reason="no add chain here")
def test_the_kernel_measures_a_plausible_clock():
    from xfer.preprocess import _C

    assert 300.0 < _C.clock_mhz(trials=3, steps=50_000) < 8000.0
    with pytest.raises(ValueError, match="expected trials >= 1 and steps >= 1, got 0 and 10"):
        _C.clock_mhz(trials=0, steps=10)


def test_a_pinned_isa_narrows_the_facts():
    from xfer.hw import Hardware

    xeon = Hardware("Xeon", "x86_64", 2, 2, 2000.0, frozenset({"avx", "avx2", "fma", "avx512f", "amx_tile", "amx_int8"}),
                    "GenuineIntel", 6, 143)
    avx2 = xeon.pinned_to("avx2")
    assert avx2.vector_bits == 256 and avx2.int8_ops_per_cycle[0] == 64 and avx2.label.endswith("pinned to avx2)")
    assert xeon.pinned_to("baseline").fp32_flops_per_cycle == 8
    with pytest.raises(XferError, match="XFER_ISA=sve: unknown ISA"):
        xeon.pinned_to("sve")
    with pytest.raises(XferError, match="has no AVX-512"):
        avx2.pinned_to("avx512")


def test_caches_are_read_from_sysfs(tmp_path):
    from xfer.hw import hardware, read_caches

    for i, (level, kind, size) in enumerate([("1", "Data", "48K"), ("2", "Unified", "2048K"), ("3", "Unified", "32M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(value + "\n")
    assert [(c.level, c.kind, c.kib) for c in read_caches(tmp_path)] == [(1, "Data", 48), (2, "Unified", 2048),
                                                                           (3, "Unified", 32768)]
    assert read_caches(tmp_path / "absent") == ()
    facts = hardware().facts()
    assert set(facts.peaks) == {"fp32", "int8", "bf16"} and facts.peaks["fp32"].ops_per_s > 1e9


def test_int8_nodes_are_counted_at_the_int8_rate(trained_frozen):
    """A QDQ model's quantised Gemms count as int8 work, its float convs as fp32: the int8 floor is the lower."""
    from xfer import optimize
    from xfer.bench.floors import compute_floor, model_work

    model = load_model(trained_frozen)
    q = optimize.quantize_int8(model, np.random.default_rng(0).normal(size=(64, 1, 32, 32)).astype(np.float32))
    work = model_work(q)
    by = {w.name: w.precision for w in work}
    assert {p for n, p in by.items() if "conv" in n} == {"fp32"} and "int8" in by.values()
    assert sum(w.macs for w in work) == bench.model_macs(model)
    f32, i8 = compute_floor(model, 1000), compute_floor(q, 1000)
    assert i8.median_s < f32.median_s and set(i8.details["macs_by_precision"]) == {"fp32", "int8"}

def test_the_faster_of_streamed_and_gathered_leads():
    """Same model, same run: a gathered twin that beat the streamed pass leads, with its memory cost named."""
    from xfer.bench.floors import binding_floor
    from xfer.bench.runner import Lead, _faster_of
    from xfer.bench.timing import PathResult

    paths = {"stream_int8": PathResult.of([0.40], 100), "kernel+ort_int8": PathResult.of([0.35], 100),
             "stream": PathResult.of([0.30], 100), "read": PathResult.of([0.1], 100),
             "flop_int8": PathResult.estimate(0.2, 100), "flop": PathResult.estimate(0.5, 100)}
    lead = _faster_of(paths, Lead("stream_int8", "int8 head"), 2 * 10**9)
    assert lead.path == "kernel+ort_int8" and "holding 2.00 GB" in lead.note
    assert _faster_of(paths, Lead("stream", "float"), 10**9).path == "stream"  # no gathered float twin ran
    floor = binding_floor(paths, lead.path, ["stream_int8", "kernel+ort_int8"])
    assert floor is not None and floor.binding == "flop_int8" and floor.xfer_vs_floor == pytest.approx(1.75)
    assert floor.paths_vs_floor == {"stream_int8": pytest.approx(2.0), "kernel+ort_int8": pytest.approx(1.75)}
    paths["read"] = PathResult.of([0.3], 100)
    assert binding_floor(paths, "stream", ["stream"]).binding == "flop"  # the float model's compute floor
    assert binding_floor(paths, "stream_int8", []).binding == "read"


def test_bench_times_the_int8_variant_beside_its_gathered_twin(trained_frozen, synth_pack, tmp_path):
    import shutil

    from xfer import optimize

    model = tmp_path / "m.onnx"
    shutil.copy(trained_frozen, model)
    q = optimize.quantize_int8(load_model(model), np.random.default_rng(0).normal(size=(64, 1, 32, 32)).astype(np.float32))
    (tmp_path / "m.int8.onnx").write_bytes(q.SerializeToString())
    rep = bench.run(model, str(synth_pack), repeat=1, baselines=False, threads=[1], batches=[32])
    assert {"stream_int8", "kernel+ort_int8", "flop_int8"} <= set(rep.paths)
    assert rep.paths["flop_int8"].median_s < rep.paths["flop"].median_s
    assert rep.floor is not None and rep.floor.compute == ("flop_int8" if rep.xfer.endswith("int8") else "flop")
