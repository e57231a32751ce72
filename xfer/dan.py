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

import numpy as np
import torch
import torch.nn.functional as F

from xfer.config import DEFAULT_WIDTH
from xfer.data.sidecars import LANDMARK_NAMES
from xfer.errors import XferError
from xfer.graph import finalize
from xfer.meta import write_meta
from xfer.surgery import init

SCHEMES = ("majority", "multilabel", "probability", "crossentropy")
MULTILABEL_SHARE = 0.3
BASE_WIDTHS = (64, 128, 256, 512)


def build_dan(input_shape: tuple[int, int, int], classes: list[str], n_landmarks: int, width: float = DEFAULT_WIDTH,
              seed: int = 0):
    """The DAN-style network as an ``onnx.ModelProto`` with fresh seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, h, w = input_shape
    blocks = 0
    while blocks < len(BASE_WIDTHS) and min(h, w) // (2 ** (blocks + 1)) >= 2:
        blocks += 1
    if blocks == 0:
        raise XferError(f"--input-size {h}x{w} is too small for the DAN backbone (needs at least 4x4)")
    widths = [max(4, int(round(b * width))) for b in BASE_WIDTHS[:blocks]]
    nodes, inits = [], []

    def param(name, shape, fan_in, fan_out, act="Relu"):
        inits.append(numpy_helper.from_array(init.weight(shape, fan_in, fan_out, act, init.rng_for(seed, name)), name))
        inits.append(numpy_helper.from_array(np.zeros(shape[0], np.float32), name.replace("_weight", "_bias")))
        return [name, name.replace("_weight", "_bias")]

    t, cin = "input", c
    for b, cout in enumerate(widths, start=1):
        for k in (1, 2):
            name = f"block{b}_conv{k}"
            nodes.append(helper.make_node("Conv", [t] + param(f"{name}_weight", (cout, cin, 3, 3), cin * 9, cout * 9),
                                          [name], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [name], [name + "_relu"], name=name + "_relu"))
            t, cin = name + "_relu", cout
        nodes.append(helper.make_node("MaxPool", [t], [f"block{b}_pool"], name=f"block{b}_pool", kernel_shape=[2, 2],
                                      strides=[2, 2]))
        t = f"block{b}_pool"
    flat = cin * (h // 2 ** blocks) * (w // 2 ** blocks)
    nodes.append(helper.make_node("Flatten", [t], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat"] + param("shared_fc_weight", (256, flat), flat, 256), ["shared"],
                                  name="shared_fc", transB=1))
    nodes.append(helper.make_node("Relu", ["shared"], ["shared_relu"], name="shared_relu"))
    nodes.append(helper.make_node("Gemm", ["shared_relu"] + param("emotion_fc_weight", (len(classes), 256), 256,
                                                                   len(classes), "Identity"), ["logits"],
                                  name="emotion_fc", transB=1))
    nodes.append(helper.make_node("Gemm", ["shared_relu"] + param("landmark_fc_weight", (2 * n_landmarks, 256), 256,
                                                                   2 * n_landmarks, "Identity"), ["landmarks_raw"],
                                  name="landmark_fc", transB=1))
    nodes.append(helper.make_node("Sigmoid", ["landmarks_raw"], ["landmarks"], name="landmark_out"))
    g = helper.make_graph(nodes, "dan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(classes)]),
                           helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 2 * n_landmarks])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="xfer")
    m.ir_version = 8
    m = finalize(m)
    write_meta(m, mode="dan", classes=list(classes), input_shape=[c, h, w], frozen=[], source="xfer.dan",
               landmarks=n_landmarks, widths=widths, init_seed=seed)
    onnx.checker.check_model(m)
    return m


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


class TaskLoss:
    """The loss of one training setup: emotion targets by scheme, plus the landmark term when alpha > 0."""

    def __init__(self, labels: np.ndarray, votes: np.ndarray | None = None, landmarks: np.ndarray | None = None,
                 scheme: str = "clean", alpha: float = 0.0, beta: float = 1.0,
                 eyes: tuple[list[int], list[int]] | None = None):
        if scheme != "clean" and votes is None:
            raise XferError(f"--label-scheme {scheme} needs annotator votes (votes.csv from `xfer data synth`)")
        if alpha > 0 and landmarks is None:
            raise XferError("--alpha > 0 needs landmarks (landmarks.csv from `xfer data synth`)")
        self.labels, self.votes, self.landmarks = labels, votes, landmarks
        self.scheme, self.alpha, self.beta, self.eyes = scheme, alpha, beta, eyes

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

    def sample_losses(self, out, idx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of each sample: beta x emotion term (+ alpha x landmark NME)."""
        logits, lm = (out if isinstance(out, (tuple, list)) else (out, None))
        loss = self.beta * emotion_losses(logits, target.to(logits.device), self.scheme)
        if self.alpha > 0 and lm is not None and self.landmarks is not None and self.eyes is not None:
            true = torch.from_numpy(self.landmarks[idx.numpy()]).to(lm.device)
            loss = loss + self.alpha * landmark_nme(lm.reshape(true.shape), true, self.eyes)
        return loss

    def __call__(self, out, idx: torch.Tensor, epoch_rng: np.random.Generator):
        """The mean loss over the batch ``idx``."""
        return self.sample_losses(out, idx, self.targets(idx, epoch_rng)).mean()


def eye_indices() -> tuple[list[int], list[int]]:
    """Positions of the left and right eye landmarks: the inter-ocular distance normalises NME."""
    return ([i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_l")],
            [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_r")])


class LandmarkMetric:
    """Mean landmark NME over an evaluation pass, fed batch by batch by ``xfer.loop.evaluate``."""

    def __init__(self, landmarks: np.ndarray) -> None:
        self.landmarks, self.eyes = landmarks, eye_indices()
        self.nme: list[np.ndarray] = []

    def update(self, out: object, start: int, stop: int) -> None:
        if isinstance(out, (tuple, list)):
            true = torch.from_numpy(self.landmarks[start:stop])
            self.nme.append(landmark_nme(out[1].cpu().reshape(true.shape), true, self.eyes).numpy())

    def result(self) -> dict[str, float]:
        return {"landmark_nme": float(np.concatenate(self.nme).mean())} if self.nme else {}
