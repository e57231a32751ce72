"""A synthetic FERG-DB: six cartoon characters showing seven expressions, written in FERG-DB's own layout.

FERG-DB cannot be downloaded here, so this renderer is the stand-in. Characters
differ in head shape, skin, hair, eyes and nose; expressions are built from
facial action cues (brows, eyelids, mouth curve and opening, cheeks) at a
random intensity, so weak expressions drift toward neutral as real ones do.
Every image gets jitter in pose, scale, position, lighting, background and
noise, and its landmark coordinates go to ``landmarks.csv`` at the root.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.data.ferg import CHARACTERS, EMOTIONS
from xfer.data.sidecars import LANDMARK_NAMES
from xfer.errors import XferError
from xfer.io import atomic_dir
from xfer.progress import bar

SIZE = 256
SUPERSAMPLE = 2



@dataclass(frozen=True)
class Character:
    name: str
    head_w: float      # half-width of the head, face units
    head_h: float      # half-height
    jaw: float         # 1 = oval, <1 = pointed chin, >1 = square jaw
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str    # "cap", "bob", "spiky", "bald", "bun", "curly"
    eye_style: str     # "round", "almond", "big"
    eye_color: tuple[int, int, int]
    nose_style: str    # "button", "long", "line"
    eye_gap: float


CHARACTER_STYLES = {
    "aia": Character("aia", 0.95, 1.15, 0.85, (255, 214, 180), (40, 30, 25), "bob", "big", (60, 110, 200), "button", 0.38),
    "bonnie": Character("bonnie", 1.0, 1.05, 0.95, (250, 200, 160), (230, 170, 60), "bun", "round", (90, 160, 80), "button", 0.36),
    "jules": Character("jules", 0.9, 1.25, 1.15, (200, 150, 110), (70, 45, 20), "spiky", "almond", (80, 60, 40), "long", 0.34),
    "malcolm": Character("malcolm", 1.05, 1.2, 1.25, (225, 190, 160), (150, 150, 150), "bald", "round", (60, 60, 60), "long", 0.40),
    "mery": Character("mery", 0.92, 1.12, 0.8, (170, 120, 90), (20, 15, 10), "curly", "almond", (50, 35, 20), "line", 0.35),
    "ray": Character("ray", 1.0, 1.18, 1.05, (240, 225, 200), (190, 60, 30), "cap", "big", (40, 140, 160), "line", 0.37),
}

# Expression deltas from neutral at full intensity (action-unit style cues).
#   brow_y: brow raise (+ up), brow_tilt: inner ends up (+) or down (-), brow_asym: one brow up
#   eye_open: eyelid aperture factor, mouth_curve: corners up (+) or down (-),
#   mouth_open: lip separation, mouth_w: width factor, mouth_asym: one corner up, cheek: raised cheeks
NEUTRAL = dict(brow_y=0.0, brow_tilt=0.0, brow_asym=0.0, eye_open=1.0, mouth_curve=0.0, mouth_open=0.0,
               mouth_w=1.0, mouth_asym=0.0, cheek=0.0)
EXPRESSIONS = {
    "anger": dict(brow_y=-0.07, brow_tilt=-0.16, eye_open=-0.35, mouth_curve=-0.06, mouth_w=-0.25),
    "disgust": dict(brow_y=-0.05, brow_asym=0.08, eye_open=-0.3, mouth_curve=-0.05, mouth_asym=0.14,
                    mouth_open=0.05, cheek=0.4),
    "fear": dict(brow_y=0.11, brow_tilt=0.1, eye_open=0.5, mouth_open=0.1, mouth_w=0.25, mouth_curve=-0.05),
    "joy": dict(mouth_curve=0.17, mouth_w=0.3, eye_open=-0.2, cheek=1.0, mouth_open=0.06),
    "neutral": dict(),
    "sadness": dict(brow_tilt=0.14, brow_y=0.02, eye_open=-0.3, mouth_curve=-0.15, mouth_w=-0.1),
    "surprise": dict(brow_y=0.2, eye_open=0.65, mouth_open=0.3, mouth_w=-0.3),
}


def expression_params(emotion: str, intensity: float) -> dict[str, float]:
    """Neutral plus ``intensity`` times the emotion's action cues."""
    p = dict(NEUTRAL)
    for k, v in EXPRESSIONS[emotion].items():
        p[k] += intensity * v
    return p


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48, a0: float = 0.0, a1: float = 2 * math.pi):
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _quad(p0, p1, p2, n: int = 16) -> np.ndarray:
    """Points on the quadratic Bezier curve p0 -> p2 with control p1."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _head_outline(c: Character) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    x = c.head_w * np.cos(t)
    y = c.head_h * np.sin(t)
    lower = y > 0  # image y grows downward: the jaw is the lower half
    x = np.where(lower, x * (1 + (c.jaw - 1) * np.sin(t).clip(0) ** 0.5 * 0.6), x)
    return np.stack([x, y], 1)


class _Canvas:
    """Draws face-space polygons through one similarity transform, collecting nothing else."""

    def __init__(self, draw, center: np.ndarray, scale: float, angle: float):
        self.draw = draw
        self.center = center
        self.scale = scale
        c, s = math.cos(angle), math.sin(angle)
        self.rot = np.array([[c, -s], [s, c]])

    def map(self, pts) -> np.ndarray:
        pts = np.atleast_2d(np.asarray(pts, float))
        return pts @ self.rot.T * self.scale + self.center

    def poly(self, pts, fill=None, outline=None, width: float = 0.0):
        q = [tuple(p) for p in self.map(pts) * SUPERSAMPLE]
        if fill is not None:
            self.draw.polygon(q, fill=fill)
        if outline is not None and width > 0:
            self.draw.line(q + [q[0]], fill=outline, width=max(1, int(width * self.scale * SUPERSAMPLE)), joint="curve")

    def line(self, pts, fill, width: float):
        q = [tuple(p) for p in self.map(pts) * SUPERSAMPLE]
        self.draw.line(q, fill=fill, width=max(1, int(width * self.scale * SUPERSAMPLE)), joint="curve")


def _shade(color, k: float) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(v * k, 0, 255)) for v in color)
    return r, g, b


def _background(rng: np.random.Generator, side: int):
    """A random colour with a soft vertical gradient, as a PIL image and its drawing context."""
    from PIL import Image, ImageDraw

    bg0 = rng.integers(40, 235, 3)
    bg1 = np.clip(bg0 + rng.integers(-50, 50, 3), 0, 255)
    grad = np.linspace(0, 1, side)[:, None, None]
    bg = (bg0 * (1 - grad) + bg1 * grad).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(bg, (side, side, 3)).copy())
    return img, ImageDraw.Draw(img)


def _hair_back(cv: _Canvas, c: Character) -> None:
    """Hair behind the head."""
    if c.hair_style == "bob":
        cv.poly(_ellipse(0, -0.05, c.head_w * 1.18, c.head_h * 1.08), fill=c.hair)
    elif c.hair_style == "curly":
        for k in range(14):
            a = math.pi + k * math.pi / 13
            cv.poly(_ellipse(1.05 * c.head_w * math.cos(a), -0.1 + 1.0 * c.head_h * math.sin(a), 0.3, 0.3), fill=c.hair)
    elif c.hair_style == "bun":
        cv.poly(_ellipse(0, -c.head_h * 1.12, 0.38, 0.32), fill=c.hair)


def _hair_top(cv: _Canvas, c: Character) -> None:
    """Hair on top of the head."""
    if c.hair_style in ("bob", "bun"):
        cv.poly(_ellipse(0, -c.head_h * 0.62, c.head_w * 1.02, c.head_h * 0.42, a0=math.pi, a1=2 * math.pi), fill=c.hair)
    elif c.hair_style == "spiky":
        pts = [(-c.head_w * 1.02, -c.head_h * 0.45)]
        for k in range(9):
            x = -c.head_w + (k + 0.5) * 2 * c.head_w / 9
            pts += [(x, -c.head_h * (1.25 if k % 2 == 0 else 1.05)), (x + c.head_w / 9, -c.head_h * 0.8)]
        pts += [(c.head_w * 1.02, -c.head_h * 0.45)]
        cv.poly(pts, fill=c.hair)
    elif c.hair_style == "cap":
        cv.poly(_ellipse(0, -c.head_h * 0.55, c.head_w * 1.05, c.head_h * 0.55, a0=math.pi, a1=2 * math.pi), fill=c.hair)
        cv.poly([(-c.head_w * 1.05, -c.head_h * 0.55), (c.head_w * 1.35, -c.head_h * 0.55),
                 (c.head_w * 1.35, -c.head_h * 0.47), (-c.head_w * 1.05, -c.head_h * 0.47)], fill=_shade(c.hair, 0.7))
    elif c.hair_style == "curly":
        for k in range(7):
            cv.poly(_ellipse(-0.75 + k * 0.25, -c.head_h * 0.88 + 0.05 * (k % 2), 0.22, 0.2), fill=c.hair)
    elif c.hair_style == "bald":
        cv.poly(_ellipse(-c.head_w * 0.92, -0.2, 0.14, 0.35), fill=c.hair)
        cv.poly(_ellipse(c.head_w * 0.92, -0.2, 0.14, 0.35), fill=c.hair)


def _cheeks(cv: _Canvas, e: dict, skin) -> None:
    """Raised, rosy cheeks when the cheek cue is on."""
    if e["cheek"] > 0.05:
        blush = tuple(int(v) for v in np.array(skin) * (1 - 0.45 * e["cheek"]) + np.array([235, 90, 90]) * 0.45 * e["cheek"])
        for sx in (-1, 1):
            cv.poly(_ellipse(sx * 0.55, 0.3 - 0.06 * e["cheek"], 0.2, 0.12), fill=blush)


def _eyes_and_brows(cv: _Canvas, c: Character, e: dict, landmarks: dict) -> None:
    """Eyes open by the aperture cue; brows by height, inner-end tilt and one-sided raise."""
    eye_y, gap = -0.1, c.eye_gap
    eye_rx = {"round": 0.17, "almond": 0.2, "big": 0.21}[c.eye_style]
    eye_ry = {"round": 0.15, "almond": 0.1, "big": 0.18}[c.eye_style]
    for side, sx in (("l", -1), ("r", 1)):
        ex = sx * gap
        ry = eye_ry * max(0.12, e["eye_open"])
        cv.poly(_ellipse(ex, eye_y, eye_rx, ry), fill=(250, 250, 250), outline=(20, 20, 20), width=0.02)
        pr = min(eye_ry * 0.7, ry * 0.95)
        cv.poly(_ellipse(ex, eye_y, pr, pr), fill=c.eye_color)
        cv.poly(_ellipse(ex, eye_y, pr * 0.45, pr * 0.45), fill=(10, 10, 10))
        outer, inner = (ex - eye_rx, eye_y), (ex + eye_rx, eye_y)
        if sx > 0:
            outer, inner = inner, outer
        landmarks[f"eye_{side}_outer"] = outer
        landmarks[f"eye_{side}_inner"] = inner
        landmarks[f"eye_{side}_top"] = (ex, eye_y - ry)
        landmarks[f"eye_{side}_bottom"] = (ex, eye_y + ry)
        by = eye_y - eye_ry - 0.14 - e["brow_y"] - (e["brow_asym"] if sx > 0 else 0.0)
        b_outer = (ex + sx * eye_rx * 1.1, by + 0.02 - 0.5 * e["brow_tilt"])
        b_inner = (ex - sx * eye_rx * 1.05, by - e["brow_tilt"])
        b_mid = (ex, by - 0.05 - 0.25 * e["brow_tilt"])
        cv.line(_quad(b_outer, b_mid, b_inner), fill=_shade(c.hair, 0.8) if c.hair_style != "bald" else (90, 90, 90), width=0.07)
        landmarks[f"brow_{side}_outer"] = b_outer
        landmarks[f"brow_{side}_mid"] = (ex, by - 0.025 - 0.125 * e["brow_tilt"])
        landmarks[f"brow_{side}_inner"] = b_inner


def _nose(cv: _Canvas, c: Character, skin, line, landmarks: dict) -> None:
    nose_y = 0.22
    if c.nose_style == "button":
        cv.poly(_ellipse(0, nose_y, 0.09, 0.07), fill=_shade(skin, 0.85), outline=line, width=0.012)
        nl, nr = (-0.07, nose_y + 0.02), (0.07, nose_y + 0.02)
    elif c.nose_style == "long":
        cv.line([(0.0, -0.02), (0.06, nose_y), (-0.05, nose_y + 0.04)], fill=line, width=0.025)
        nl, nr = (-0.06, nose_y + 0.04), (0.07, nose_y + 0.02)
    else:
        cv.line([(-0.06, nose_y + 0.03), (0.0, nose_y + 0.06), (0.06, nose_y + 0.03)], fill=line, width=0.025)
        nl, nr = (-0.06, nose_y + 0.03), (0.06, nose_y + 0.03)
    landmarks["nose_tip"] = (0.0, nose_y + 0.04)
    landmarks["nostril_l"] = nl
    landmarks["nostril_r"] = nr


def _mouth(cv: _Canvas, e: dict, landmarks: dict) -> None:
    """Corners from width, curve and asymmetry; the lips part by the opening cue."""
    my = 0.58
    mw = 0.3 * e["mouth_w"]
    left = (-mw, my - e["mouth_curve"])
    right = (mw, my - e["mouth_curve"] - e["mouth_asym"])
    top_ctrl = (0.0, my + 0.5 * e["mouth_curve"] - e["mouth_open"] * 0.6)
    bot_ctrl = (0.0, my + 0.9 * e["mouth_curve"] + e["mouth_open"] * 1.4)
    upper = _quad(left, top_ctrl, right)
    lower = _quad(right, bot_ctrl, left)
    lip = (150, 50, 60)
    if e["mouth_open"] > 0.03:
        cv.poly(np.vstack([upper, lower]), fill=(70, 20, 25), outline=lip, width=0.03)
        if e["mouth_curve"] > 0.05:
            cv.poly(np.vstack([upper, _quad(right, (0, my + 0.1 * e["mouth_curve"]), left)]), fill=(245, 245, 245))
    else:
        cv.line(_quad(left, (0.0, my + 0.7 * e["mouth_curve"]), right), fill=lip, width=0.04)
    mouth_top = upper[len(upper) // 2]
    mouth_bot = lower[len(lower) // 2] if e["mouth_open"] > 0.03 else mouth_top
    landmarks["mouth_l"] = left
    landmarks["mouth_r"] = right
    landmarks["mouth_top"] = tuple(mouth_top)
    landmarks["mouth_bottom"] = tuple(mouth_bot)


def _outline_landmarks(outline: np.ndarray, c: Character, landmarks: dict) -> None:
    jaw_i = np.argmin(np.abs(outline[:, 1] - c.head_h * 0.55) + (outline[:, 0] > 0) * 10)
    jaw_r = np.argmin(np.abs(outline[:, 1] - c.head_h * 0.55) + (outline[:, 0] < 0) * 10)
    landmarks["jaw_l"] = tuple(outline[jaw_i])
    landmarks["jaw_r"] = tuple(outline[jaw_r])
    landmarks["chin"] = tuple(outline[np.argmax(outline[:, 1])])
    landmarks["temple_l"] = (-c.head_w * 0.95, -0.3)
    landmarks["temple_r"] = (c.head_w * 0.95, -0.3)


def _photograph(img, rng: np.random.Generator) -> np.ndarray:
    """Down to 256x256 (anti-aliased), then lighting, blur and noise in float."""
    from PIL import Image, ImageFilter

    img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    a = np.asarray(img, np.float32)
    gain = rng.uniform(0.75, 1.2)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, SIZE, dtype=np.float32)
    k = rng.uniform(0, 0.25)
    light = gain * (1 + k * (ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta)))
    tint = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    noise = rng.standard_normal(a.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    a = a * light[:, :, None] * tint + noise
    return np.clip(a, 0, 255).round().astype(np.uint8)


def render_face(character: str, emotion: str, rng: np.random.Generator,
                intensity: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Render one 256x256 RGB image; return (image, landmarks (K, 2) in pixels, intensity)."""
    c = CHARACTER_STYLES[character]
    if intensity is None:
        intensity = float(rng.uniform(0.35, 1.0))
    e = expression_params(emotion, intensity)
    img, draw = _background(rng, SIZE * SUPERSAMPLE)
    scale = SIZE * 0.4 * rng.uniform(0.9, 1.06)
    center = np.array([SIZE / 2, SIZE / 2 + 8]) + rng.uniform(-8, 8, 2)
    angle = math.radians(rng.uniform(-10, 10))
    cv = _Canvas(draw, center, scale, angle)
    skin = _shade(c.skin, rng.uniform(0.95, 1.05))
    line = _shade(c.skin, 0.35)
    _hair_back(cv, c)
    outline = _head_outline(c)
    cv.poly(_ellipse(-c.head_w, 0.05, 0.16, 0.26), fill=_shade(skin, 0.9))   # ears
    cv.poly(_ellipse(c.head_w, 0.05, 0.16, 0.26), fill=_shade(skin, 0.9))
    cv.poly(outline, fill=skin, outline=line, width=0.025)
    _hair_top(cv, c)
    _cheeks(cv, e, skin)
    landmarks: dict[str, tuple[float, float]] = {}
    _eyes_and_brows(cv, c, e, landmarks)
    _nose(cv, c, skin, line, landmarks)
    _mouth(cv, e, landmarks)
    _outline_landmarks(outline, c, landmarks)
    out = _photograph(img, rng)
    pts = cv.map([landmarks[n] for n in LANDMARK_NAMES]).astype(np.float32)
    return out, pts, intensity


# Which emotions an annotator mistakes an expression for (FER+-style crowd noise).
NEIGHBOURS = {"anger": ("disgust", "sadness"), "disgust": ("anger", "sadness"), "fear": ("surprise", "sadness"),
              "joy": ("neutral", "surprise"), "neutral": ("sadness", "joy"), "sadness": ("neutral", "fear"),
              "surprise": ("fear", "joy")}
ANNOTATORS = 10


def simulate_votes(emotion: str, intensity: float, rng: np.random.Generator, annotators: int = ANNOTATORS) -> np.ndarray:
    """Vote counts over EMOTIONS from ``annotators`` people; each confuses the expression with a neighbouring
    one (or neutral) with a probability that grows as the intensity falls (5% at full, ~45% at the weakest)."""
    p_confuse = float(np.clip(0.05 + 0.6 * (1.0 - intensity), 0.0, 0.9))
    choices = list(NEIGHBOURS[emotion]) + (["neutral"] if emotion != "neutral" else [])
    votes = np.zeros(len(EMOTIONS), np.int64)
    for _ in range(annotators):
        e = choices[rng.integers(len(choices))] if rng.random() < p_confuse else emotion
        votes[EMOTIONS.index(e)] += 1
    return votes


def _render_job(job: tuple[str, str, int, int, str]) -> tuple[str, list[float], float, list[int]]:
    """Render one image into its FERG-DB path. Seeds derive from (seed, character, emotion, n) alone."""
    from PIL import Image

    character, emotion, n, seed, root = job
    rng = np.random.default_rng([seed, CHARACTERS.index(character), EMOTIONS.index(emotion), n])
    img, pts, intensity = render_face(character, emotion, rng)
    rel = f"{character}/{character}_{emotion}/{character}_{emotion}_{n + 1}.png"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    Path(root, rel).write_bytes(buf.getvalue())
    votes = simulate_votes(emotion, intensity, np.random.default_rng([seed, CHARACTERS.index(character),
                                                                     EMOTIONS.index(emotion), n, 1]))
    return rel, pts.reshape(-1).round(2).tolist(), intensity, votes.tolist()


def generate(out: str | os.PathLike[str], per_class: int = 60, seed: int = 0, workers: int | None = None,
             characters: tuple[str, ...] = CHARACTERS, progress: bool = True, force: bool = False) -> Path:
    """Write a synthetic FERG-DB tree of ``per_class`` images per (character, emotion) to ``out``.

    The tree appears whole or not at all: it is rendered into a temporary
    folder beside ``out`` and renamed at the end.
    """
    if per_class < 1:
        raise XferError(f"--per-class must be >= 1, got {per_class}")
    for ch in characters:
        if ch not in CHARACTERS:
            raise XferError(f"unknown character '{ch}' (expected one of {', '.join(CHARACTERS)})")
    out = Path(out)
    with atomic_dir(out, force) as tmp:
        for ch in characters:
            for emo in EMOTIONS:
                (tmp / ch / f"{ch}_{emo}").mkdir(parents=True)
        jobs = [(ch, emo, n, seed, str(tmp)) for ch in characters for emo in EMOTIONS for n in range(per_class)]
        workers = workers or min(len(jobs) // 64 + 1, os.cpu_count() or 1)
        results = []
        with bar(total=len(jobs), desc="render", unit="img", disable=not progress) as pb:
            if workers > 1:
                import multiprocessing as mp

                with mp.get_context("fork").Pool(workers) as pool:
                    for r in pool.imap(_render_job, jobs, chunksize=16):
                        results.append(r)
                        pb.update(1)
            else:
                for j in jobs:
                    results.append(_render_job(j))
                    pb.update(1)
        with open(tmp / "landmarks.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "intensity"] + [f"{n}_{a}" for n in LANDMARK_NAMES for a in ("x", "y")])
            for rel, pts, intensity, _ in results:
                w.writerow([rel, f"{intensity:.4f}"] + pts)
        with open(tmp / "votes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path"] + list(EMOTIONS))
            for rel, _, _, votes in results:
                w.writerow([rel] + votes)
    return out
