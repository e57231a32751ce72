"""Stage 5, the timed test pass: ``run`` / ``main`` (one process), ``sharded`` (``--workers N``), ``scaling``.

Modules: ``session`` (ONNX Runtime sessions, tuning, CUDA), ``inputs`` (the
model's test split in the pack), ``stream`` (the streamed pass), ``gathered``
(the old materialised pass), ``floors`` (read and FLOP floors), ``baselines``
(the compared paths as records), ``timing`` (the one timing helper and
``PathResult``), ``report`` (``BenchReport`` and the path table), ``memory``
(peak RSS, mapped pages).
"""

from __future__ import annotations

from xfer.bench.baselines import BASELINES, Baseline, opencv_preprocess, pil_preprocess_one
from xfer.bench.floors import model_macs, peak_flops
from xfer.bench.inputs import TestSplit, gather, load_test_images, test_split
from xfer.bench.report import BenchReport, environment, known_paths, ratios
from xfer.bench.runner import STREAMED, ScalingPoint, main, run, scaling, streamed_lead
from xfer.bench.session import cuda_session, infer, session
from xfer.bench.timing import PathResult, timed

__all__ = ["BASELINES", "STREAMED", "Baseline", "BenchReport", "PathResult", "ScalingPoint", "TestSplit", "cuda_session",
           "environment", "gather", "infer", "known_paths", "load_test_images", "main", "model_macs", "opencv_preprocess",
           "peak_flops", "pil_preprocess_one", "ratios", "run", "scaling", "session", "streamed_lead", "test_split",
           "timed"]
