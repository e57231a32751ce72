"""The Keras / TensorFlow worker: a Keras model -> ONNX with tf2onnx, and Keras's own outputs for the parity check.

Run as ``python -I keras_worker.py JOB.json`` by ``xfer.envs`` in the keras environment
(tensorflow-cpu + tf2onnx); it imports nothing of xfer. Keras images are NHWC: the ONNX
model is written with an NCHW input (tf2onnx's ``inputs_as_nchw``), so it looks like
every other source to the core, and the parity inputs are NCHW on both sides.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import JobError, first_line, main, need, parity_inputs  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is not the user's business


def load(path: str):
    """A Keras model from a .keras / .h5 file, or a SavedModel folder's serving signature, and TensorFlow."""
    tf = need("tensorflow")
    if not os.path.exists(path):
        raise JobError(f"{path}: no such file or folder")
    try:
        if os.path.isdir(path):
            loaded = tf.saved_model.load(path)
            signature = loaded.signatures["serving_default"]
            signature.keep_alive = loaded  # the signature's variables live as long as the loaded object
            return signature, tf
        return tf.keras.models.load_model(path, compile=False), tf
    except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a file it cannot read: all mean the same
        raise JobError(f"{path}: Keras cannot load it ({type(e).__name__}: {first_line(e)})") from None


def _input_shape(shape, path: str) -> tuple[int, int, int]:
    """(C, H, W) of the one NHWC image input."""
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise JobError(f"{path}: expected one image input (N, H, W, C) of fixed size, got {shape}")
    h, w, c = (int(d) for d in shape[1:])
    return c, h, w


def _as_function(model, path: str):
    """(a function of one NHWC batch returning one tensor, the input's NHWC shape) for a Keras model or signature."""
    if hasattr(model, "structured_input_signature"):  # a SavedModel's signature: keyword inputs, a dict out
        inputs = model.structured_input_signature[1]
        if len(inputs) != 1:
            raise JobError(f"{path}: the SavedModel's serving signature has {len(inputs)} inputs; xfer converts one")
        key = next(iter(inputs))
        return (lambda x: next(iter(model(**{key: x}).values()))), tuple(inputs[key].shape)
    shape = model.input_shape
    if isinstance(shape, list):
        raise JobError(f"{path}: the model has {len(shape)} inputs; xfer converts image models with one")
    return (lambda x: model(x, training=False)), tuple(shape)


def export(job: dict) -> dict:
    np = need("numpy")
    model, tf = load(job["source"])
    tf2onnx = need("tf2onnx")
    fn, nhwc = _as_function(model, job["source"])
    shape = tuple(job["input_shape"]) if job.get("input_shape") else _input_shape(nhwc, job["source"])
    c, h, w = shape
    spec = [tf.TensorSpec((None, h, w, c), tf.float32, name="input")]
    traced = tf.function(fn, input_signature=spec)
    try:  # a Keras model through from_keras (it freezes every weight, Normalization's statistics too)
        proto, _ = (tf2onnx.convert.from_function(traced, input_signature=spec, opset=job["opset"],
                                                  inputs_as_nchw=["input"])
                    if hasattr(model, "structured_input_signature") else
                    tf2onnx.convert.from_keras(model, input_signature=spec, opset=job["opset"], inputs_as_nchw=["input"]))
    except Exception as e:  # noqa: BLE001 -- tf2onnx's failures are the model's: say which
        raise JobError(f"{job['source']}: tf2onnx cannot convert it ({type(e).__name__}: {first_line(e)})") from None
    with open(job["onnx"], "wb") as f:
        f.write(proto.SerializeToString())
    x = parity_inputs(job, shape)
    np.save(job["outputs"], np.asarray(traced(x.transpose(0, 2, 3, 1)), dtype=np.float32))
    return {"input_shape": list(shape), "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
            "name": model.name if isinstance(getattr(model, "name", None), str) else os.path.basename(job["source"])}


if __name__ == "__main__":
    sys.exit(main(sys.argv, {"export": export}))
