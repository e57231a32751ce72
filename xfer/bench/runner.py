"""``xfer bench``: the timed test pass, streamed, beside the old gathered path, the floors and the baselines.

From the packed uint8 test images (no PNG decode inside the timing): the C++
kernel preprocesses, ONNX Runtime infers, in chunks, after a warm-up,
repeated. ``run`` returns a ``BenchReport``; ``main`` also saves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfer.bench.baselines import BaselineInput, run_baselines
from xfer.bench.floors import FRONT_OF, GATHERED_OF, binding_floor, compute_floor, copy_floor, floors
from xfer.bench.front import FrontSplit, split_front
from xfer.bench.gathered import gathered_again, gathered_front, gathered_pass, gpu_pass
from xfer.bench.inputs import TestSplit, gather, test_split
from xfer.bench.report import BenchReport, OrtChoice, environment, is_end_to_end, ratios
from xfer.bench.session import pick_device
from xfer.bench.stream import StreamChoice, streamed_pass, tune_stream
from xfer.bench.timing import PathResult
from xfer.config import INT8_TOLERANCE, MATERIALIZE_LIMIT_BYTES, BenchConfig
from xfer.errors import XferError
from xfer.graph import InputSpec, input_spec, load_model
from xfer.io import write_json
from xfer.meta import read_meta
from xfer.optimize import int8_path
from xfer.records import Record

if TYPE_CHECKING:
    import onnx


@dataclass
class Lead:
    """Which streamed model leads the report, and why; ``int8`` holds the int8 variant's bytes when one ran, ``cut``
    the kernel's front when it runs the lead's convolutions."""

    path: str
    note: str
    int8: bytes | None = None
    cut: FrontSplit | None = None


def _int8_variant(model_path: str | os.PathLike[str], split: TestSplit, spec: InputSpec, choice: StreamChoice,
                  repeat: int, paths: dict[str, PathResult]) -> Lead:
    """Stream ``MODEL.int8.onnx`` (from ``xfer optimize --int8``) too; it leads when it keeps the accuracy."""
    q = int8_path(Path(model_path))
    if not q.is_file():
        return Lead("stream", f"float model (no {q.name}: `xfer optimize --int8` writes one)")
    quantised = load_model(q)
    int8 = quantised.SerializeToString()
    paths["stream_int8"] = streamed_pass(int8, split, spec, choice, repeat)
    paths["flop_int8"] = compute_floor(quantised, split.n)
    drop = (paths["stream"].accuracy or 0.0) - (paths["stream_int8"].accuracy or 0.0)
    if abs(drop) <= INT8_TOLERANCE + 1e-9:
        return Lead("stream_int8", f"int8 head ({q.name}): accuracy {-drop:+.4f} vs float, within {INT8_TOLERANCE:g}",
                    int8)
    return Lead("stream", f"float model: {q.name} changes accuracy by {-drop:+.4f} (over {INT8_TOLERANCE:g})", int8)


def _front_variant(model: onnx.ModelProto, lead: Lead, split: TestSplit, spec: InputSpec, cores: int,
                   repeat: int, paths: dict[str, PathResult]) -> Lead:
    """The leading model again with its leading convolutions run by the kernel (``xfer.bench.front``), on a schedule
    measured for it (the work per chunk is another); it leads when it is faster and its accuracy stays within the
    tolerance."""
    import onnx

    key = FRONT_OF[lead.path]
    cut = split_front(onnx.load_from_string(lead.int8) if lead.path == "stream_int8" and lead.int8 else model)
    if cut is None:
        return lead
    head = cut.head.SerializeToString()
    choice, _ = tune_stream(head, split, spec, cores, cut)
    paths[key] = streamed_pass(head, split, spec, choice, repeat, front=cut)
    t, t_ort = paths[key].median_s, paths[lead.path].median_s
    drop = (paths[lead.path].accuracy or 0.0) - (paths[key].accuracy or 0.0)
    if t < t_ort and abs(drop) <= INT8_TOLERANCE + 1e-9:
        return Lead(key, f"{lead.note}; the kernel ran the convolutions ({cut.describe()}): {t:.3f} s vs {t_ort:.3f} s "
                         f"through ORT, accuracy {-drop:+.4f}", lead.int8, cut)
    return Lead(lead.path, f"{lead.note}; the kernel's convolutions did not lead ({t:.3f} s vs {t_ort:.3f} s, "
                           f"accuracy {-drop:+.4f})", lead.int8)


def _faster_of(paths: dict[str, PathResult], lead: Lead, gathered_bytes: int) -> Lead:
    """The streamed pass leads unless its gathered twin (same model) was faster in this run: then that one does,
    with what it costs in memory."""
    twin = GATHERED_OF.get(lead.path)
    if twin not in paths or paths[twin].median_s >= paths[lead.path].median_s:
        return lead
    return Lead(twin, f"{lead.note}; gathered beat streamed in this run ({paths[twin].median_s:.3f} vs "
                      f"{paths[lead.path].median_s:.3f} s), at the cost of holding {gathered_bytes / 1e9:.2f} GB of "
                      "images in memory")


@dataclass
class GatheredRun:
    """What the gathered paths of one bench run need."""

    model: onnx.ModelProto
    split: TestSplit
    spec: InputSpec
    repeat: int
    threads: list[int]
    batches: list[int] | None
    baselines: bool
    per_image_limit: int
    gpu_session: Any


def _gathered(job: GatheredRun, rep: BenchReport, lead: Lead) -> Lead:
    """The old gathered path (and its int8 twin), the GPU pass, the copy floor and the baselines, into ``rep``;
    returns the path that leads once the streamed passes have been compared with their gathered twins."""
    paths, spec, repeat = rep.paths, job.spec, job.repeat
    g = gather(job.split)
    gp = gathered_pass(job.model.SerializeToString(), g, spec, repeat, job.threads, job.batches)
    paths.update(gp.paths)
    rep.ort_materialised = gp.tuning
    if lead.int8 is not None:
        paths["kernel+ort_int8"] = gathered_again(lead.int8, g, spec, gp.tuning, repeat)
    if lead.cut is not None:  # the front's twin: the same pipeline on gathered images
        paths[GATHERED_OF[lead.path]] = gathered_front(lead.cut, g, spec, gp.tuning, repeat)
    if job.gpu_session is not None:
        paths["cuda_kernel+ort_cuda"] = gpu_pass(job.gpu_session, g, spec, gp.tuning.batch, repeat, gp.predictions)
    paths["copy"] = copy_floor(g, repeat)
    if job.baselines:
        paths.update(run_baselines(BaselineInput(job.model, g, spec, gp.session, gp.tuning.batch, repeat,
                                                 job.per_image_limit)))
    return _faster_of(paths, lead, int(g.images.nbytes))


def run(model_path: str | os.PathLike[str], data: str | None = None, images: int | None = None,
        repeat: int = BenchConfig.repeat, per_image_limit: int = BenchConfig.per_image_limit,
        threads: list[int] | None = None, batches: list[int] | None = None, baselines: bool = True,
        device: str = BenchConfig.device) -> BenchReport:
    """Time the test pass (streamed, beside the old gathered path, the floors and the baselines)."""
    import onnxruntime as ort

    model = load_model(model_path)
    spec = input_spec(model, model_path)
    split = test_split(model, data, images)
    model_bytes = model.SerializeToString()
    dev = pick_device(model_bytes, device)
    cores = os.cpu_count() or 1
    choice, trials = tune_stream(model_bytes, split, spec, cores)
    paths = {"stream": streamed_pass(model_bytes, split, spec, choice, repeat)}
    paths.update(floors(model, split, spec, choice.plan, repeat))
    lead = _int8_variant(model_path, split, spec, choice, repeat, paths)
    lead = _front_variant(model, lead, split, spec, cores, repeat, paths)
    rep = BenchReport(str(model_path), split.n, split.note, [spec.channels, *spec.size], dev.name, dev.note, environment(),
                      OrtChoice(choice.ort_threads, choice.chunk, ort.__version__, trials, choice.spinning, choice.overlap,
                                "ORT_ENABLE_ALL"), paths, lead.path, lead.note)
    if split.n * split.image_bytes <= MATERIALIZE_LIMIT_BYTES:
        lead = _gathered(GatheredRun(model, split, spec, repeat, threads or sorted({1, 2, cores}), batches,
                                     baselines, per_image_limit, dev.session), rep, lead)
        rep.xfer, rep.xfer_note = lead.path, lead.note
    else:
        rep.materialised_note = (f"the old path would gather {split.n * split.image_bytes / 2**30:.1f} GiB of images "
                                 f"(over {MATERIALIZE_LIMIT_BYTES / 2**30:.0f} GiB): only the stream ran")
    rep.ratios = ratios(paths, rep.xfer)
    rep.floor = binding_floor(paths, rep.xfer, [k for k in paths if is_end_to_end(k)])
    rep.train_accuracy = read_meta(model).test_accuracy
    if rep.train_accuracy is not None and not images:
        rep.accuracy_matches_train = abs((paths["stream"].accuracy or 0.0) - float(rep.train_accuracy)) < 1e-9
    return rep


@dataclass
class ScalingPoint(Record):
    """The streamed pass at one size: what must stay flat as the count grows is memory (and throughput)."""

    images: int
    seconds: float
    images_per_s: float
    peak_rss_mb: float
    accuracy: float
    gb_read: float
    path: str = "stream"  # which streamed pass (a key of STREAMED)


@dataclass(frozen=True)
class Streamed(Record):
    """A streamed pass as a row: which model it runs (the float one or ``MODEL.int8.onnx``) and whether the kernel
    runs its leading convolutions."""

    int8: bool
    front: bool


STREAMED = {"stream": Streamed(False, False), "stream_int8": Streamed(True, False),
            "stream_front": Streamed(False, True), "stream_front_int8": Streamed(True, True)}


def streamed_lead(rep: BenchReport) -> str:
    """The streamed pass behind a report's lead: the lead itself, or when a gathered pass led, the faster streamed
    pass of the same model."""
    if rep.xfer in STREAMED:
        return rep.xfer
    int8 = rep.xfer.endswith("_int8")
    same = [k for k, row in STREAMED.items() if row.int8 == int8 and k in rep.paths]
    return min(same, key=lambda k: rep.paths[k].median_s) if same else "stream"


def _streamed_setup(model_path: str | os.PathLike[str], path: str) -> tuple[bytes, FrontSplit | None]:
    """(what ONNX Runtime runs, the kernel's front) for a STREAMED row of the model at ``model_path``."""
    if path not in STREAMED:
        raise XferError(f"unknown streamed pass {path!r} (expected one of: {', '.join(STREAMED)})")
    row = STREAMED[path]
    model = load_model(model_path)
    if row.int8:
        q = int8_path(Path(model_path))
        if not q.is_file():
            raise XferError(f"{model_path}: {path} streams {q.name}, which is missing (`xfer optimize --int8` writes it)")
        model = load_model(q)
    if not row.front:
        return model.SerializeToString(), None
    cut = split_front(model)
    if cut is None:
        raise XferError(f"{model_path}: {path} needs leading convolutions the kernel runs, and this model has none")
    return cut.head.SerializeToString(), cut


def scaling(model_path: str | os.PathLike[str], data: str | None, sizes: list[int], repeat: int = 1,
            path: str = "stream") -> list[ScalingPoint]:
    """The streamed pass ``path`` (a key of STREAMED) at each of ``sizes`` images (the test split cycled), with one
    schedule.

    Each size runs in a fresh process, so its peak RSS is what ``xfer bench --images N`` would show, not whatever
    the calling process already holds.
    """
    runs, cut = _streamed_setup(model_path, path)
    model = load_model(model_path)
    choice, _ = tune_stream(runs, test_split(model, data, min(sizes)), input_spec(model, model_path),
                            os.cpu_count() or 1, cut)
    points = []
    for n in sizes:
        job = json.dumps({"model": str(model_path), "data": data, "n": n, "repeat": repeat, "path": path,
                          "schedule": choice.to_json()})
        code = ("import json, sys; from xfer.bench.runner import scaling_point; "
                "print(json.dumps(scaling_point(json.loads(sys.argv[1])).to_json()))")
        out = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise XferError(f"{model_path}: the streamed pass at {n:,} images failed "
                            f"({(out.stderr.strip().splitlines() or ['no output'])[-1][:200]})")
        points.append(ScalingPoint.from_json(json.loads(out.stdout.strip().splitlines()[-1])))
    return points


def scaling_point(job: dict[str, Any]) -> ScalingPoint:
    """One size of ``scaling``, in this (fresh) process."""
    runs, cut = _streamed_setup(job["model"], job["path"])
    model = load_model(job["model"])
    split = test_split(model, job["data"], job["n"])
    p = streamed_pass(runs, split, input_spec(model, job["model"]), StreamChoice.from_json(job["schedule"]),
                      job["repeat"], front=cut)
    return ScalingPoint(split.n, p.median_s, p.images_per_s, p.peak_rss_mb or 0.0, p.accuracy or 0.0,
                        split.n * split.image_bytes / 1e9, job["path"])


def check_model_path(path: str) -> None:
    if not Path(path).is_file():
        raise XferError(f"{path}: model not found (train one with `xfer train --mode frozen`)")


def report_path(cfg: BenchConfig) -> Path:
    """Where the report is saved: ``--out``, or MODEL.bench.json beside the model."""
    return Path(cfg.out or Path(cfg.model_path).with_suffix(".bench.json"))


def main(cfg: BenchConfig) -> BenchReport:
    """``xfer bench`` in one process (``xfer.bench.sharded`` runs ``--workers N``): time, then save the JSON."""
    check_model_path(cfg.model_path)
    rep = run(cfg.model_path, cfg.data, cfg.images, cfg.repeat, cfg.per_image_limit,
              list(cfg.threads) if cfg.threads else None, list(cfg.batch) if cfg.batch else None,
              not cfg.no_baselines, cfg.device)
    write_json(report_path(cfg), rep.to_json())
    return rep
