"""The PaddlePaddle worker: an inference model -> ONNX with paddle2onnx, and Paddle's own outputs for parity.

Run as ``python -I paddle_worker.py JOB.json`` by ``xfer.envs`` in the paddle environment
(paddlepaddle + paddle2onnx); it imports nothing of xfer. The source is the folder
``paddle.jit.save`` writes (``NAME.json`` or ``NAME.pdmodel``, and ``NAME.pdiparams``);
Paddle's images are NCHW, like the core's.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import JobError, first_line, main, need, parity_inputs  # noqa: E402

os.environ.setdefault("GLOG_minloglevel", "3")  # Paddle's C++ logging


def _files(folder: str) -> tuple[str, str]:
    """(program file, parameters file) of the one inference model in ``folder``."""
    if not os.path.isdir(folder):
        raise JobError(f"{folder}: expected the folder paddle.jit.save wrote (NAME.json or NAME.pdmodel + NAME.pdiparams)")
    params = sorted(f for f in os.listdir(folder) if f.endswith(".pdiparams"))
    if len(params) != 1:
        raise JobError(f"{folder}: expected one .pdiparams file, found {len(params)}")
    stem = params[0][: -len(".pdiparams")]
    program = next((f"{stem}{ext}" for ext in (".json", ".pdmodel") if os.path.isfile(os.path.join(folder, stem + ext))),
                   None)
    if program is None:
        raise JobError(f"{folder}: {params[0]} has no {stem}.json or {stem}.pdmodel beside it")
    return os.path.join(folder, program), os.path.join(folder, params[0])


def _predictor(paddle, program: str, params: str):
    try:
        config = paddle.inference.Config(program, params)
        config.disable_glog_info()
        return paddle.inference.create_predictor(config)
    except Exception as e:  # noqa: BLE001 -- Paddle raises its own kinds for a file it cannot read
        raise JobError(f"{program}: Paddle cannot load it ({type(e).__name__}: {first_line(e)})") from None


def export(job: dict) -> dict:
    np = need("numpy")
    paddle = need("paddle")
    paddle2onnx = need("paddle2onnx")
    program, params = _files(job["source"])
    predictor = _predictor(paddle, program, params)
    names = predictor.get_input_names()
    if len(names) != 1:
        raise JobError(f"{job['source']}: the model has {len(names)} inputs; xfer converts image models with one")
    if not job.get("input_shape"):
        raise JobError(f"{job['source']}: give --input-shape C H W (a Paddle program does not always record it)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # paddle2onnx prints its passes
            paddle2onnx.export(program, params, job["onnx"], opset_version=job["opset"], enable_onnx_checker=True)
    except Exception as e:  # noqa: BLE001 -- paddle2onnx's failures are the model's: say which
        raise JobError(f"{job['source']}: paddle2onnx cannot convert it ({type(e).__name__}: {first_line(e)})") from None
    x = parity_inputs(job, tuple(job["input_shape"]))
    handle = predictor.get_input_handle(names[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    y = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.save(job["outputs"], np.asarray(y, dtype=np.float32))
    return {"input_shape": list(job["input_shape"]),
            "versions": {"paddle": paddle.__version__, "paddle2onnx": paddle2onnx.__version__},
            "name": os.path.basename(os.path.normpath(job["source"]))}


if __name__ == "__main__":
    sys.exit(main(sys.argv, {"export": export}))
