"""The bench report as a typed record, the table of path names, and the ratios derived from them."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from xfer.bench import baselines
from xfer.bench.floors import BindingFloor
from xfer.bench.session import OrtTuning
from xfer.bench.stream import StreamTrial
from xfer.bench.timing import PathResult
from xfer.hw import MachineFacts, hardware
from xfer.preprocess import cuda_built, kernel_target, kernel_threads
from xfer.records import Record


@dataclass(frozen=True)
class PathInfo:
    """A path of xfer's own (its passes and the floors): JSON key, table label, whether it is a whole test pass."""

    name: str
    label: str
    end_to_end: bool


OWN_PATHS = [
    PathInfo("read", "read every input byte once (floor)", False),
    PathInfo("read_remapped", "read every input byte once, re-mapped under the RSS bound", False),
    PathInfo("read_pread", "read every input byte once by pread, nothing mapped", False),
    PathInfo("flop", "model arithmetic at peak fp32 FLOP/s (floor)", False),
    PathInfo("flop_int8", "int8 model's arithmetic at peak int8/fp32 rates (floor)", False),
    PathInfo("kernel_stream", "C++ kernel, streamed from the pack", False),
    PathInfo("stream_front_int8", "streamed kernel + kernel's convs + ORT, int8 head", True),
    PathInfo("stream_int8", "streamed kernel + ORT, int8 head", True),
    PathInfo("stream_front", "streamed kernel + kernel's convs + ORT (float)", True),
    PathInfo("stream", "streamed kernel + ORT (float)", True),
    PathInfo("kernel+ort", "old path: gathered, then kernel, then ORT", True),
    PathInfo("kernel+ort_int8", "gathered, then kernel, then ORT, int8 head", True),
    PathInfo("kernel+ort_front_int8", "gathered, then kernel + kernel's convs, then ORT, int8 head", True),
    PathInfo("kernel+ort_front", "gathered, then kernel + kernel's convs, then ORT (float)", True),
    PathInfo("copy", "memory copy of the gathered input", False),
    PathInfo("kernel", "C++ kernel on the gathered input", False),
    PathInfo("ort_inference", "ONNX Runtime inference alone", False),
    PathInfo("cuda_kernel+ort_cuda", "CUDA kernel + ORT CUDA (IO binding)", True),
]
# (ratio key, numerator path, denominator path); "xfer" stands for the report's leading path
FIXED_RATIOS = (("materialised_vs_xfer_speedup", "kernel+ort", "xfer"),
                ("kernel_vs_read_floor_slowdown", "kernel_stream", "read"),
                ("xfer_vs_flop_floor_slowdown", "xfer", "flop"),
                ("kernel_vs_copy_slowdown", "kernel", "copy"))


def known_paths() -> dict[str, PathInfo]:
    """Every path a report may hold, in table order: xfer's own, then the baselines (read when asked, so a
    baseline added to ``BASELINES`` is known at once)."""
    return {p.name: p for p in OWN_PATHS} | {b.name: PathInfo(b.name, b.label, b.end_to_end) for b in baselines.BASELINES}


def label_of(path: str) -> str:
    paths = known_paths()
    return paths[path].label if path in paths else path


def is_end_to_end(path: str) -> bool:
    """Whole test passes (and paths of no known kind, such as the sharded ones) are compared with xfer's."""
    paths = known_paths()
    return paths[path].end_to_end if path in paths else True


def ratios(paths: dict[str, PathResult], xfer: str = "stream") -> dict[str, float]:
    """How each baseline and floor compares with xfer's path, for the paths that ran."""
    def r(a: str, b: str) -> float | None:
        a, b = (xfer if a == "xfer" else a), (xfer if b == "xfer" else b)
        return paths[a].median_s / paths[b].median_s if a in paths and b in paths else None

    pairs = list(FIXED_RATIOS) + [(b.ratio_key(), b.name, "xfer" if b.end_to_end else b.against) for b in baselines.BASELINES]
    out = {key: r(a, b) for key, a, b in pairs}
    return {k: v for k, v in out.items() if v is not None}


@dataclass
class Environment(Record):
    """Where the numbers were measured; ``label`` is what every quoted number carries."""

    python: str
    platform: str
    cpu: str
    cores: int
    numpy: str
    onnxruntime: str
    kernel_threads: int
    cuda_kernel_built: bool
    affinity: int | None = None
    isa: list[str] = field(default_factory=list)
    label: str | None = None
    machine: MachineFacts | None = None
    kernel_target: str | None = None


def environment() -> Environment:
    import numpy
    import onnxruntime

    hw = hardware()
    return Environment(platform.python_version(), platform.platform(), hw.cpu, hw.cores, numpy.__version__,
                       onnxruntime.__version__, kernel_threads(), cuda_built(), hw.affinity, hw.isa, hw.label,
                       hw.facts(), kernel_target())


@dataclass
class OrtChoice(Record):
    """The leading pass's ONNX Runtime settings; ``trials`` lists every schedule measured to choose them."""

    threads: int
    batch: int
    version: str
    trials: list[StreamTrial] = field(default_factory=list)
    spinning: bool | None = None
    overlap: bool | None = None
    graph_optimization: str | None = None


@dataclass
class BenchReport(Record):
    """``xfer bench``'s result, saved as ``MODEL.bench.json``; ``xfer`` names the leading path in ``paths``."""

    model: str
    images: int
    data: str
    input_shape: list[int]
    device: str
    device_note: str
    env: Environment
    ort: OrtChoice
    paths: dict[str, PathResult]
    xfer: str
    xfer_note: str
    ratios: dict[str, float] = field(default_factory=dict)
    train_accuracy: float | None = None
    accuracy_matches_train: bool | None = None
    materialised_note: str | None = None
    ort_materialised: OrtTuning | None = None
    floor: BindingFloor | None = None

    @property
    def lead(self) -> PathResult:
        """xfer's own path: the one the report leads with."""
        return self.paths[self.xfer]
