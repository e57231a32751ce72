"""The JAX / Flax worker: a Flax NNX module -> ONNX with jax2onnx, and JAX's own outputs for the parity check.

Run as ``python -I jax_worker.py JOB.json`` by ``xfer.envs`` in the jax environment
(jax + flax + jax2onnx); it imports nothing of xfer. The source is ``module:factory``:
a function of no arguments returning an ``nnx.Module`` that takes an NHWC batch (Flax's
layout); ``--params FILE.npz`` optionally replaces its parameters, one array per
``/``-joined path of ``nnx.state(module, nnx.Param)``. The ONNX model takes NCHW.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import JobError, factory, first_line, main, need, parity_inputs  # noqa: E402

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _load_params(nnx, np, module, path: str) -> None:
    """Every parameter of ``module`` from the npz at ``path``, by path, shapes checked; nothing left over."""
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise JobError(f"{path}: not an npz of parameters ({first_line(e)})") from None
    used = set()
    for key, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name = "/".join(map(str, key))
        if name not in data:
            raise JobError(f"{path}: parameters do not match the module (missing '{name}')")
        want = tuple(var.get_value().shape)
        if tuple(data[name].shape) != want:
            raise JobError(f"{path}: parameters do not match the module ('{name}' is {tuple(data[name].shape)}, "
                           f"the module needs {want})")
        var.set_value(data[name].astype(var.get_value().dtype))
        used.add(name)
    extra = sorted(set(data) - used)
    if extra:
        raise JobError(f"{path}: parameters do not match the module (unused '{extra[0]}')")


def export(job: dict) -> dict:
    np = need("numpy")
    jax = need("jax")
    nnx = need("flax.nnx")
    jax2onnx = need("jax2onnx")
    module = factory(job["source"], job.get("paths", []))()
    if not isinstance(module, nnx.Module):
        raise JobError(f"{job['source']}: expected an nnx.Module, got {type(module).__name__}")
    if job.get("params"):
        _load_params(nnx, np, module, job["params"])
    if not job.get("input_shape"):
        raise JobError(f"{job['source']}: a JAX function has no fixed input size: give --input-shape C H W")
    c, h, w = job["input_shape"]
    try:
        proto = jax2onnx.to_onnx(module, [("N", h, w, c)], opset=job["opset"], inputs_as_nchw=[0],
                                 input_names=["input"], model_name="jax")
    except Exception as e:  # noqa: BLE001 -- jax2onnx's failures are the model's: say which
        raise JobError(f"{job['source']}: jax2onnx cannot convert it ({type(e).__name__}: {first_line(e)})") from None
    with open(job["onnx"], "wb") as f:
        f.write(proto.SerializeToString())
    x = parity_inputs(job, (c, h, w))
    np.save(job["outputs"], np.asarray(module(x.transpose(0, 2, 3, 1)), dtype=np.float32))
    return {"input_shape": [c, h, w], "versions": {"jax": jax.__version__, "jax2onnx": jax2onnx.__version__
                                                   if hasattr(jax2onnx, "__version__") else "?"},
            "name": type(module).__name__}


if __name__ == "__main__":
    sys.exit(main(sys.argv, {"export": export}))
