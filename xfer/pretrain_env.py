"""The pretraining environment: MXNet 1.9.1 in an interpreter of its own, reached only through files.

MXNet's last release needs numpy<1.24 and the wheel carrying MNIST pins numpy<2;
the core runs on today's numpy. So ``xfer pretrain`` and ``xfer convert`` hand a
job (JSON plus arrays) to ``mxnet_worker/main.py`` run by another interpreter:
the one ``XFER_MXNET_PYTHON`` names, or a virtual environment xfer builds on
first use under the cache folder (``XFER_CACHE``, else ``$XDG_CACHE_HOME/xfer``,
else ``~/.cache/xfer``). A build happens in a temporary folder that is renamed
into place only after MXNet imports in it, so a killed or failed build is never
trusted later; an environment that stops importing MXNet is rebuilt once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from xfer.config import CACHE_VAR, MXNET_ENV_FREE_BYTES, MXNET_ENV_REQUIREMENTS, MXNET_PYTHON_VAR
from xfer.errors import XferError
from xfer.progress import say
from xfer.records import JSONObject

WORKER = Path(__file__).resolve().with_name("mxnet_worker") / "main.py"
MARKER = "xfer-env.json"
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class EnvSpec:
    """What the environment holds; its folder name carries a hash of it, so changing a pin builds a new one."""

    requirements: tuple[str, ...] = MXNET_ENV_REQUIREMENTS
    name: str = "mxnet"
    modules: tuple[str, ...] = ("numpy", "mxnet", "onnx")  # what must import for the environment to count as working
    free_bytes: int = MXNET_ENV_FREE_BYTES
    label: str = "pretraining environment"  # how messages name it

    @property
    def folder(self) -> str:
        key = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:10]
        return f"{self.name}-py{sys.version_info.major}.{sys.version_info.minor}-{key}"


MXNET = EnvSpec()


def cache_dir() -> Path:
    """Where xfer keeps what it builds for itself (the pretraining environment)."""
    if os.environ.get(CACHE_VAR):
        return Path(os.environ[CACHE_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xfer"


def env_dir(spec: EnvSpec = MXNET) -> Path:
    return cache_dir() / spec.folder


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def ready(folder: Path) -> bool:
    """A finished build: its marker is written last, just before the folder is renamed into place."""
    return (folder / MARKER).is_file() and _python(folder).exists()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One build at a time per environment, across processes."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pip_install(python: Path, requirements: Sequence[str], where: Path) -> None:
    """pip into the new environment, its progress lines passed on; a failure is its last error line."""
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           *requirements]
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_child_env()) as proc:
        for raw in proc.stdout or ():
            line = raw.rstrip()
            tail = (tail + [line])[-40:]
            if line.startswith(("Collecting", "Installing collected", "Successfully installed")):
                say(f"  pip: {line[:150]}")
    if proc.returncode != 0:
        errors = [t for t in tail if t.startswith("ERROR")] or [t for t in tail if t.strip()] or ["no output"]
        raise XferError(f"cannot create the pretraining environment in {where}: pip install failed: {errors[-1][:200]} "
                        f"(is the package registry reachable? Or set {MXNET_PYTHON_VAR} to a Python that has "
                        f"{', '.join(requirements)})")


def _build(spec: EnvSpec, folder: Path) -> None:
    """venv + pip in a temporary folder, checked by importing MXNet there, then renamed into place."""
    parent = folder.parent
    for stale in parent.glob(f".{folder.name}.building-*"):  # a build killed earlier: never trusted, now removed
        shutil.rmtree(stale, ignore_errors=True)
    free = shutil.disk_usage(parent).free
    if free < spec.free_bytes:
        raise XferError(f"cannot create the {spec.label} in {folder}: {free / 1e9:.2f} GB free on that disk, "
                        f"it needs {spec.free_bytes / 1e9:.1f} GB (set {CACHE_VAR} to a folder on a larger disk)")
    tmp = parent / f".{folder.name}.building-{os.getpid()}"
    say(f"creating the {spec.label} {folder} ({', '.join(spec.requirements)}); "
         "a one-time install from the package registry")
    try:
        made = subprocess.run([sys.executable, "-m", "venv", str(tmp)], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            last = (made.stderr.strip().splitlines() or ["no output"])[-1]
            raise XferError(f"cannot create the {spec.label} in {folder}: python -m venv failed: {last[:200]}")
        _pip_install(_python(tmp), spec.requirements, folder)
        found = _run_worker(_python(tmp), {"command": "probe", "modules": list(spec.modules)}, None)
        if "error" in found:
            raise XferError(f"cannot create the {spec.label} in {folder}: {found['error']}")
        (tmp / MARKER).write_text(json.dumps({"requirements": list(spec.requirements), "versions": found}, indent=1))
        old = parent / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise XferError(f"cannot create the {spec.label} in {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"{spec.label} ready: " + ", ".join(f"{k} {v}" for k, v in found.items() if k != "python"))


def ensure(spec: EnvSpec = MXNET, rebuild: bool = False) -> Path:
    """The environment's interpreter, building the environment first if it is missing (or ``rebuild``)."""
    folder = env_dir(spec)
    if not rebuild and ready(folder):
        return _python(folder)
    with _locked(folder):
        if rebuild or not ready(folder):  # another process may have finished it while this one waited
            _build(spec, folder)
    return _python(folder)


def interpreter(spec: EnvSpec = MXNET) -> tuple[Path, bool]:
    """(interpreter, whether xfer manages it): ``XFER_MXNET_PYTHON`` when set, else the cached environment."""
    named = os.environ.get(MXNET_PYTHON_VAR)
    if named:
        path = Path(named)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise XferError(f"{MXNET_PYTHON_VAR}={named}: no such interpreter (unset it to let xfer build its own)")
        return path, False
    return ensure(spec), True


def _child_env() -> dict[str, str]:
    """The caller's environment without what would point the other interpreter at this one's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}


def _failure(returncode: int, log: Path) -> str:
    import signal

    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return lines[-1].strip()[:200] if lines else f"exit status {returncode}, no output"


def _run_worker(python: Path, job: dict, progress: Progress | None) -> dict:
    """Run one job; its stdout progress lines go to ``progress``; return its result (which may hold ``error``)."""
    with tempfile.TemporaryDirectory(prefix="xfer-mxnet-") as tmp:
        job_path, result_path, log_path = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "stderr.log")
        job_path.write_text(json.dumps({**job, "result": str(result_path)}))
        try:
            with open(log_path, "w") as log, subprocess.Popen([str(python), "-I", "-u", str(WORKER), str(job_path)],
                                                              stdout=subprocess.PIPE, stderr=log, text=True,
                                                              env=_child_env()) as proc:
                try:
                    for line in proc.stdout or ():
                        with contextlib.suppress(ValueError):
                            fields = json.loads(line)
                            if progress is not None and isinstance(fields, dict):
                                progress(fields)
                finally:
                    if proc.poll() is None and sys.exc_info()[0] is not None:
                        proc.kill()
        except OSError as e:
            return {"error": f"cannot run {python} ({e.strerror})", "kind": "environment"}
        if result_path.is_file():
            return json.loads(result_path.read_text())
        return {"error": f"the MXNet worker ({python}) failed: {_failure(proc.returncode, log_path)}",
                "kind": "crash"}


def run(command: str, payload: JSONObject, progress: Progress | None = None, spec: EnvSpec = MXNET) -> JSONObject:
    """Run ``command`` in the pretraining environment; a broken managed environment is rebuilt and the job rerun."""
    python, managed = interpreter(spec)
    job = {**payload, "command": command}
    result = _run_worker(python, job, progress)
    if result.get("kind") == "environment" and managed:
        say(f"the pretraining environment {python.parents[1]} is broken ({result['error']}); rebuilding it")
        python = ensure(spec, rebuild=True)
        result = _run_worker(python, job, progress)
    if result.get("kind") == "environment" and not managed:
        raise XferError(f"{MXNET_PYTHON_VAR}={python}: {result['error']} (it needs {', '.join(spec.requirements)}; "
                        "unset it to let xfer build its own environment)")
    if "error" in result:
        raise XferError(result["error"])
    return result


def locate(dist: str, file: str) -> Path | None:
    """A file of a distribution installed in the pretraining environment (the MNIST pickle), or ``None``."""
    found = run("locate", {"dist": dist, "file": file})
    return Path(found["path"]) if found.get("path") else None
