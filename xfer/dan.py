"""The Emotional DAN line: a multi-task network (landmarks + emotion) and training from crowd votes (FER+).

The network is built as ONNX (so it goes through the same import -> train ->
write-back path as every transferred model): a VGG-like backbone of blocks of
two 3x3 convs and a 2x2 pool (widths 64-128-256-512 times ``width``, as many
blocks as the input size allows), a shared FC 256, then a landmark head (2K
outputs, coordinates in [0, 1]) and an emotion head. Its outputs are
``logits`` (first, so any classifier pass reads it) and ``landmarks``.

Loss: ``alpha * NME(S, S*) + beta * CE(E*, E)``, NME being the mean landmark
distance over the inter-ocular distance. Label schemes (FER+ paper):
``majority`` (argmax of votes), ``multilabel`` (any emotion with at least
``MULTILABEL_SHARE`` of the votes counts: loss -log sum p over those),
``probability`` (a label drawn from the vote distribution each epoch) and
``crossentropy`` (cross-entropy against the vote distribution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xfer.align import Nodes, connect, corrected
from xfer.augment import Moves
from xfer.config import DEFAULT_STAGES, DEFAULT_WIDTH, MAX_STAGES
from xfer.data.sidecars import LANDMARK_NAMES, scheme_of
from xfer.errors import XferError
from xfer.graph import finalize
from xfer.meta import read_meta, write_meta
from xfer.surgery import init

SCHEMES = ("majority", "multilabel", "probability", "crossentropy")
MULTILABEL_SHARE = 0.3
BASE_WIDTHS = (64, 128, 256, 512)
SHARED = 256  # each stage's dense layer


def build_dan(input_shape: tuple[int, int, int], classes: list[str], n_landmarks: int, width: float = DEFAULT_WIDTH,
              seed: int = 0, stages: int = DEFAULT_STAGES, mean_shape: np.ndarray | None = None):
    """The DAN network as an ``onnx.ModelProto`` with fresh seeded weights: ``stages`` stages refining landmarks
    from ``mean_shape`` ((K, 2) in [0, 1]; a centred ellipse of points when none is given), and an emotion head on the
    last stage's dense layer. Every landmark regressor starts at zero, so each stage starts from its input shape."""
    import onnx
    from onnx import TensorProto, helper

    c, h, w = input_shape
    if stages not in range(1, MAX_STAGES + 1):
        raise XferError(f"--stages {stages}: expected 1 to {MAX_STAGES}")
    widths = _widths(h, w, width)
    if stages > 1 and (h % 2 or w % 2):
        raise XferError(f"--input-size {h}x{w}: a DAN of {stages} stages needs an even height and width "
                        "(its feature image is upsampled 2x)")
    s0 = np.asarray(default_mean_shape(n_landmarks) if mean_shape is None else mean_shape, np.float32)
    if s0.shape != (n_landmarks, 2):
        raise XferError(f"mean shape: expected ({n_landmarks}, 2), got {tuple(s0.shape)}")
    g = Nodes("")
    k2 = g.const("landmark_shape", np.array([-1, n_landmarks, 2]))
    flat = g.const("landmark_flat", np.array([-1, 2 * n_landmarks]))
    shape = g.op("Add", g.const("mean_shape", s0[None]), _zeros_like_batch(g, "input"), name="stage0_shape")
    image, outputs, feat = "input", [], ""
    for t in range(1, stages + 1):
        st = Nodes(f"stage{t}_")
        if t == 1:
            x, cin = image, c
        else:
            conn = connect(st, image, shape, s0, (h, w))
            x, cin = st.op("Concat", conn.warped, conn.heat, _feature_image(st, feat, h, w, seed), axis=1), c + 2
        feat = _backbone(st, x, cin, widths, h, w, seed)
        delta = st.op("Reshape", _dense(st, feat, "landmark_fc", 2 * n_landmarks, seed, zero=True), k2)
        shape = st.op("Add", shape, delta) if t == 1 else corrected(st, shape, delta, conn)
        outputs.append(st.op("Reshape", shape, flat, name="landmarks" if t == stages else f"landmarks_stage{t}"))
        g.nodes += st.nodes
        g.inits += st.inits
        g.consts += st.consts
    _dense(g, feat, "emotion_fc", len(classes), seed, out_name="logits")
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(classes)])]
    outs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", 2 * n_landmarks])
             for o in [outputs[-1], *outputs[:-1]]]
    graph = helper.make_graph(g.nodes, "dan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
                              outs, g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="xfer")
    m.ir_version = 8
    m = finalize(m)
    write_meta(m, mode="dan", classes=list(classes), input_shape=[c, h, w], frozen=g.consts, source="xfer.dan",
               landmarks=n_landmarks, widths=widths, init_seed=seed, stages=stages)
    onnx.checker.check_model(m)
    return m


def init_from(model, source, where: str):
    """``model`` (a fresh DAN) with every weight of ``source`` (another DAN, e.g. trained on other faces) whose name
    and shape match: the backbones, dense layers and landmark regressors carry over; an emotion head over other
    classes, or stages the source lacks, stay fresh. Constants (mean shape, grids) stay the new data's."""
    meta = read_meta(source)
    if meta.mode != "dan":
        raise XferError(f"{where}: not a DAN (its mode is {meta.mode or 'unknown'}); --source with --model dan starts "
                        "from a model `xfer train --model dan` wrote")
    consts = set(read_meta(model).frozen or [])
    theirs = {t.name: t for t in source.graph.initializer}
    carried = 0
    for t in model.graph.initializer:
        src = theirs.get(t.name)
        if t.name not in consts and src is not None and list(src.dims) == list(t.dims):
            t.CopyFrom(src)
            carried += 1
    if carried == 0:
        raise XferError(f"{where}: no weight of this DAN fits the new one (other widths, input size or landmarks?)")
    write_meta(model, transfer_from=where)
    return model


@dataclass
class StageViews:
    """What each stage of a DAN saw and said for a few images: its landmarks (first to last, (N, K, 2) in [0, 1]),
    and for every stage after the first the image warped to the canonical pose and its heatmap ((N, H, W) each)."""

    landmarks: list[np.ndarray]
    warped: list[np.ndarray]
    heatmaps: list[np.ndarray]


def stage_views(model, x: np.ndarray) -> StageViews:
    """Run ``model`` (a DAN) on ``x`` with its connection layers' images as extra outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    k = int(read_meta(model).stages or 1)
    extra = [n for t in range(2, k + 1) for n in _stage_images(model, t)]  # warped, heatmap of each stage
    own = len(m.graph.output)
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra)
    out = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    images = [a[:, 0] for a in out[own:]]
    return StageViews([s.reshape(len(x), -1, 2) for s in stage_landmarks(out[:own])], images[0::2], images[1::2])


def _stage_images(model, t: int) -> tuple[str, str]:
    """Stage ``t``'s warped image and heatmap: the first two inputs of the Concat that feeds its backbone."""
    warp = next((n.output[0] for n in model.graph.node if n.op_type == "GridSample" and n.name.startswith(f"stage{t}_")),
                None)
    cat = next((n for n in model.graph.node if n.op_type == "Concat" and warp is not None and n.input[:1] == [warp]), None)
    if cat is None:
        raise XferError(f"stage {t} of this DAN has no canonical-pose connection (GridSample + Concat)")
    return cat.input[0], cat.input[1]


def default_mean_shape(k: int) -> np.ndarray:
    """A neutral start where no training shapes are given: K points on a centred ellipse."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([0.5 + 0.25 * np.cos(t), 0.5 + 0.3 * np.sin(t)], 1).astype(np.float32)


def _widths(h: int, w: int, width: float) -> list[int]:
    blocks = 0
    while blocks < len(BASE_WIDTHS) and min(h, w) // (2 ** (blocks + 1)) >= 2:
        blocks += 1
    if blocks == 0:
        raise XferError(f"--input-size {h}x{w} is too small for the DAN backbone (needs at least 4x4)")
    return [max(4, int(round(b * width))) for b in BASE_WIDTHS[:blocks]]


def _zeros_like_batch(g: Nodes, image: str) -> str:
    """(N, 1, 1) zeros, so the mean shape broadcasts to the batch (every stage's shape is per image)."""
    pooled = g.op("ReduceMean", image, axes=[1, 2, 3], keepdims=1, name="stage0_pool")   # (N, 1, 1, 1)
    zero = g.op("Mul", pooled, g.const("zero", np.float32(0.0)), name="stage0_zero")
    return g.op("Reshape", zero, g.const("n11", np.array([-1, 1, 1])), name="stage0_batch")


def _param(g: Nodes, name: str, shape: tuple[int, ...], fan_in: int, fan_out: int, act: str, seed: int,
           zero: bool = False) -> list[str]:
    from onnx import numpy_helper

    full = g.prefix + name
    wgt = np.zeros(shape, np.float32) if zero else init.weight(shape, fan_in, fan_out, act, init.rng_for(seed, full))
    g.inits.append(numpy_helper.from_array(wgt, full + "_weight"))
    g.inits.append(numpy_helper.from_array(np.zeros(shape[0], np.float32), full + "_bias"))
    return [full + "_weight", full + "_bias"]


def _dense(g: Nodes, x: str, name: str, out: int, seed: int, act: str = "Identity", zero: bool = False,
           out_name: str | None = None) -> str:
    """A dense layer on a stage's 256 shared features."""
    return g.op("Gemm", x, *_param(g, name, (out, SHARED), SHARED, out, act, seed, zero), transB=1,
                name=out_name or g.prefix + name)


def _backbone(g: Nodes, x: str, cin: int, widths: list[int], h: int, w: int, seed: int) -> str:
    """VGG-like blocks (two 3x3 convs + ReLU, then a 2x2 pool), flatten, the shared dense layer (256, ReLU)."""
    for b, cout in enumerate(widths, start=1):
        for k in (1, 2):
            name = f"block{b}_conv{k}"
            conv = g.op("Conv", x, *_param(g, name, (cout, cin, 3, 3), cin * 9, cout * 9, "Relu", seed),
                        kernel_shape=[3, 3], pads=[1, 1, 1, 1], name=g.prefix + name)
            x, cin = g.op("Relu", conv, name=g.prefix + name + "_relu"), cout
        x = g.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], name=f"{g.prefix}block{b}_pool")
    flat = cin * (h // 2 ** len(widths)) * (w // 2 ** len(widths))
    x = g.op("Flatten", x, name=g.prefix + "flatten")
    shared = g.op("Gemm", x, *_param(g, "shared_fc", (SHARED, flat), flat, SHARED, "Relu", seed), transB=1,
                  name=g.prefix + "shared_fc")
    return g.op("Relu", shared, name=g.prefix + "shared_relu")


def _feature_image(g: Nodes, feat: str, h: int, w: int, seed: int) -> str:
    """The previous stage's dense layer as an image: a dense layer to (H/2)x(W/2), ReLU, upsampled 2x (N, 1, H, W)."""
    small = g.op("Relu", _dense(g, feat, "feature_fc", (h // 2) * (w // 2), seed, act="Relu"))
    img = g.op("Reshape", small, g.const("feature_shape", np.array([-1, 1, h // 2, w // 2])))
    return g.op("Resize", img, "", g.const("feature_scales", np.array([1.0, 1.0, 2.0, 2.0], np.float32)),
                mode="linear", coordinate_transformation_mode="half_pixel")


def landmark_nme(pred: torch.Tensor, true: torch.Tensor, eyes: tuple[list[int], list[int]]) -> torch.Tensor:
    """Per-image mean landmark distance over the inter-ocular distance (pred, true: (N, K, 2))."""
    left = true[:, eyes[0]].mean(1)
    right = true[:, eyes[1]].mean(1)
    d = (left - right).norm(dim=1).clamp_min(1e-6)
    return (pred - true).norm(dim=2).mean(1) / d


def scheme_targets(votes: np.ndarray, scheme: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Training targets of one scheme for vote counts (N, C): class ids (majority, probability) or (N, C) floats."""
    votes = np.asarray(votes, np.float64)
    if votes.ndim != 2 or (votes < 0).any() or (votes.sum(1) <= 0).any():
        raise XferError("vote counts must be non-negative with at least one vote per image")
    if scheme == "majority":
        return votes.argmax(1)
    if scheme == "probability":
        rng = rng or np.random.default_rng(0)
        p = votes / votes.sum(1, keepdims=True)
        return (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    if scheme == "crossentropy":
        return (votes / votes.sum(1, keepdims=True)).astype(np.float32)
    if scheme == "multilabel":
        share = votes / votes.sum(1, keepdims=True)
        mask = share >= MULTILABEL_SHARE
        mask[np.arange(len(votes)), votes.argmax(1)] = True
        return mask.astype(np.float32)
    raise XferError(f"--label-scheme: expected one of {', '.join(SCHEMES)}, got '{scheme}'")


def emotion_losses(logits: torch.Tensor, target: torch.Tensor, scheme: str) -> torch.Tensor:
    """Per-sample losses: cross-entropy for class ids; soft CE for distributions; -log sum p over accepted
    labels for multilabel."""
    logp = F.log_softmax(logits, dim=1)
    if scheme in ("majority", "probability", "clean"):
        return F.nll_loss(logp, target, reduction="none")
    if scheme == "crossentropy":
        return -(target * logp).sum(1)
    if scheme == "multilabel":
        return -torch.logsumexp(logp.masked_fill(target <= 0, float("-inf")), dim=1)
    raise XferError(f"unknown label scheme '{scheme}'")


def emotion_loss(logits: torch.Tensor, target: torch.Tensor, scheme: str) -> torch.Tensor:
    """The mean of ``emotion_losses``."""
    return emotion_losses(logits, target, scheme).mean()


def stage_landmarks(out: object) -> list[Any]:
    """A DAN's landmark outputs in stage order (the graph lists the final one first, after the logits): tensors of
    the imported module, or arrays of ONNX Runtime."""
    if not isinstance(out, (tuple, list)) or len(out) < 2:
        return []
    return [*out[2:], out[1]]


class TaskLoss:
    """The loss of one training setup, as the study writes it for each stage t: ``alpha * NME(S_t) + beta * CE``.

    ``stage`` None (joint training) sums the landmark term over every stage's estimate; a stage number (stagewise
    training) scores that stage's landmarks alone, and the emotion term only once the last stage trains (the emotion
    head reads it). Landmarks move with the augmented images (``moves``).
    """

    def __init__(self, labels: np.ndarray, votes: np.ndarray | None = None, landmarks: np.ndarray | None = None,
                 scheme: str = "clean", alpha: float = 0.0, beta: float = 1.0,
                 eyes: tuple[list[int], list[int]] | None = None, mirror: list[int] | None = None,
                 stages: int = 1) -> None:
        if scheme != "clean" and votes is None:
            raise XferError(f"--label-scheme {scheme} needs annotator votes (votes.csv from `xfer data synth`)")
        if alpha > 0 and landmarks is None:
            raise XferError("--alpha > 0 needs landmarks (landmarks.csv from `xfer data synth`, or .pts files)")
        self.labels, self.votes, self.landmarks = labels, votes, landmarks
        self.scheme, self.alpha, self.beta, self.eyes = scheme, alpha, beta, eyes
        self.mirror = mirror if mirror is not None else list(range(0 if landmarks is None else landmarks.shape[1]))
        self.stages = stages
        self.stage: int | None = None  # the stage a stagewise run trains now; None: every stage (joint)

    def targets(self, idx: torch.Tensor, epoch_rng: np.random.Generator) -> torch.Tensor:
        """Emotion targets of the samples ``idx``, drawn for the whole global batch at once.

        Drawn before the batch is split across ranks, so a random scheme
        (probability) gives each sample the same draw under N ranks as in one
        process.
        """
        ids = idx.numpy()
        if self.scheme == "clean" or self.votes is None:
            return torch.from_numpy(self.labels[ids])
        return torch.from_numpy(scheme_targets(self.votes[ids], self.scheme, epoch_rng))

    def sample_losses(self, out, idx: torch.Tensor, target: torch.Tensor, moves: Moves | None = None) -> torch.Tensor:
        """The loss of each sample: beta x emotion term + alpha x landmark NME of the stage(s) trained."""
        logits = out[0] if isinstance(out, (tuple, list)) else out
        emotion = self.stage is None or self.stage == self.stages
        loss = self.beta * emotion_losses(logits, target.to(logits.device), self.scheme) * float(emotion)
        stages = stage_landmarks(out)
        if self.alpha > 0 and stages and self.landmarks is not None and self.eyes is not None:
            true = torch.from_numpy(self.landmarks[idx.numpy()]).to(logits.device)
            if moves is not None:
                true = moves.points(true, self.mirror)
            scored = stages if self.stage is None else [stages[self.stage - 1]]
            for lm in scored:
                loss = loss + self.alpha * landmark_nme(lm.reshape(true.shape), true, self.eyes)
        return loss

    def __call__(self, out, idx: torch.Tensor, epoch_rng: np.random.Generator):
        """The mean loss over the batch ``idx``."""
        return self.sample_losses(out, idx, self.targets(idx, epoch_rng)).mean()


def eye_indices(count: int = len(LANDMARK_NAMES)) -> tuple[list[int], list[int]]:
    """Positions of the left and right eye landmarks of a ``count``-point scheme (inter-ocular distance)."""
    s = scheme_of(count)
    return list(s.left_eye), list(s.right_eye)


class LandmarkMetric:
    """Mean landmark NME over an evaluation pass, final and per stage, fed batch by batch by ``xfer.loop.evaluate``."""

    def __init__(self, landmarks: np.ndarray) -> None:
        self.landmarks, self.eyes = landmarks, eye_indices(landmarks.shape[1])
        self.nme: list[list[np.ndarray]] = []

    def update(self, out: object, start: int, stop: int) -> None:
        stages = stage_landmarks(out)
        if stages:
            true = torch.from_numpy(self.landmarks[start:stop])
            self.nme.append([landmark_nme(s.cpu().reshape(true.shape), true, self.eyes).numpy() for s in stages])

    def result(self) -> dict[str, float]:
        if not self.nme:
            return {}
        per = [float(np.concatenate([b[t] for b in self.nme]).mean()) for t in range(len(self.nme[0]))]
        out = {"landmark_nme": per[-1]}
        if len(per) > 1:
            out |= {f"landmark_nme_stage{t}": v for t, v in enumerate(per, start=1)}
        return out
