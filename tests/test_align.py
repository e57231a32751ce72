"""DAN's connection layers: the similarity transform, the warp, the heatmap, the stage chain, landmark-aware
augmentation and the landmark files and schemes."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from xfer import align, dan
from xfer.augment import augment
from xfer.data.sidecars import IBUG_68, SYNTHETIC_26, ibug_to_synthetic, read_pts, scheme_of
from xfer.errors import XferError
from xfer.importer import to_torch

MEAN = dan.default_mean_shape(26)


def _similar(mean, angle, scale, shift):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    centre = mean.mean(0)
    return (mean - centre) @ np.array([[c, s], [-s, c]]) + centre + shift


def test_a_known_similarity_is_recovered_and_inverted():
    src = np.stack([_similar(MEAN, 0.35, 1.3, [0.05, -0.02]), _similar(MEAN, -0.2, 0.8, [0, 0.04])])
    t = align.similarity(src, MEAN)
    np.testing.assert_allclose(t.apply(src), np.broadcast_to(MEAN, src.shape), atol=1e-9)
    np.testing.assert_allclose(t.invert(t.apply(src)), src, atol=1e-12)
    np.testing.assert_allclose(np.hypot(t.a, t.b), [1 / 1.3, 1 / 0.8], rtol=1e-9)  # T undoes the scale
    np.testing.assert_allclose(np.arctan2(t.b, t.a), [-0.35, 0.2], atol=1e-9)       # and the rotation


def test_heatmap_is_one_on_a_landmark_and_falls_with_distance():
    pts = np.array([[[0.5 / 8, 0.5 / 8], [6.5 / 8, 2.5 / 8]]])   # pixel centres (0, 0) and (6, 2) of an 8x8 map
    h = align.heatmap(pts, (8, 8))[0]
    assert h[0, 0] == 1.0 and h[2, 6] == 1.0
    assert h[0, 3] == pytest.approx(1 / (1 + 3)) and h[7, 7] == pytest.approx(1 / (1 + np.hypot(1, 5)))


def _connection_graph(size, channels, k):
    import onnx
    from onnx import TensorProto, helper

    g = align.Nodes("t_")
    c = align.connect(g, "image", "shape", MEAN[:k], size)
    h, w = size
    graph = helper.make_graph(g.nodes, "connect", [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, h, w]),
        helper.make_tensor_value_info("shape", TensorProto.FLOAT, ["N", k, 2])],
        [helper.make_tensor_value_info(c.warped, TensorProto.FLOAT, ["N", channels, h, w]),
         helper.make_tensor_value_info(c.heat, TensorProto.FLOAT, ["N", 1, h, w])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def test_the_onnx_connection_layer_matches_the_numpy_spec():
    """Warp to the canonical pose and heatmap, as ONNX nodes (ORT and the imported module) vs numpy."""
    rng = np.random.default_rng(0)
    shape = np.stack([_similar(MEAN, a, s, d) for a, s, d in ((0.3, 1.2, [0.03, 0.01]), (-0.1, 0.9, [-0.02, 0.05]))])
    image = rng.normal(size=(2, 3, 16, 12)).astype(np.float32)
    m = _connection_graph((16, 12), 3, 26)
    feeds = {"image": image, "shape": shape.astype(np.float32)}
    warped, heat = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    t = align.similarity(shape, MEAN)
    np.testing.assert_allclose(warped, align.warp(image.astype(np.float64), t), atol=1e-4)
    np.testing.assert_allclose(heat[:, 0], align.heatmap(t.apply(shape), (16, 12)), atol=1e-5)
    with torch.no_grad():
        tw, th = to_torch(m)(*(torch.from_numpy(v) for v in feeds.values()))
    np.testing.assert_allclose(tw.numpy(), warped, atol=1e-5)
    np.testing.assert_allclose(th.numpy(), heat, atol=1e-5)


def test_a_face_already_in_the_mean_pose_is_not_moved():
    image = np.random.default_rng(1).normal(size=(1, 1, 16, 16)).astype(np.float32)
    m = _connection_graph((16, 16), 1, 26)
    warped, _ = ort.InferenceSession(m.SerializeToString()).run(None, {"image": image, "shape": MEAN[None]})
    np.testing.assert_allclose(warped, image, atol=1e-5)


@pytest.mark.parametrize("stages", [2, 3])
def test_the_stage_chain_agrees_with_onnx_runtime(stages):
    """Every stage's landmarks and the logits: the imported module vs ONNX Runtime, with corrections that move."""
    from onnx import numpy_helper

    m = dan.build_dan((1, 32, 32), [str(i) for i in range(7)], 26, width=0.125, seed=1, stages=stages, mean_shape=MEAN)
    rng = np.random.default_rng(2)
    for t in m.graph.initializer:  # the landmark regressors start at zero: give them weights so every stage moves
        if "landmark_fc_weight" in t.name:
            t.CopyFrom(numpy_helper.from_array((rng.normal(size=tuple(t.dims)) * 0.02).astype(np.float32), t.name))
    x = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert [o.name for o in m.graph.output] == ["logits", "landmarks", *[f"landmarks_stage{t}" for t in range(1, stages)]]
    with torch.no_grad():
        got = to_torch(m)(torch.from_numpy(x))
    for name, a, b in zip([o.name for o in m.graph.output], want, got):
        err = np.abs(a - b.numpy()).max() / max(1.0, float(np.ptp(a)))
        assert err <= 1e-5, (name, err)
    stages_out = dan.stage_landmarks(got)
    assert len(stages_out) == stages and not torch.allclose(stages_out[0], stages_out[-1])


def test_stages_are_checked():
    with pytest.raises(XferError, match="--stages 4"):
        dan.build_dan((1, 32, 32), ["a", "b"], 26, stages=4)
    with pytest.raises(XferError, match="even height"):
        dan.build_dan((1, 33, 32), ["a", "b"], 26, stages=2)


def test_augmentation_moves_the_landmarks_with_the_image():
    """Each landmark drawn as one bright pixel: after flips and shifts, the bright pixel is where the moved landmark
    says (a flip also swaps left and right points, so the mirror of a point names the moved one)."""
    n, h, w = 64, 20, 24
    rng = np.random.default_rng(0)
    pix = np.stack([rng.integers(3, w - 3, n), rng.integers(3, h - 3, n)], 1)       # one point per image, kept inside
    x = torch.zeros(n, 1, h, w)
    x[torch.arange(n), 0, torch.from_numpy(pix[:, 1]), torch.from_numpy(pix[:, 0])] = 1.0
    pts = torch.from_numpy((pix + 0.5) / [w, h]).float()[:, None]                      # (N, 1, 2) in [0, 1]
    out, moves = augment(x, torch.Generator().manual_seed(0))
    moved = moves.points(pts, [0])[:, 0] * torch.tensor([w, h]) - 0.5
    found = torch.stack([torch.argmax(out[i, 0].flatten()) % w for i in range(n)]), \
        torch.stack([torch.argmax(out[i, 0].flatten()) // w for i in range(n)])
    np.testing.assert_allclose(moved.numpy(), torch.stack(found, 1).numpy(), atol=1e-4)
    assert moves.flip.any() and (~moves.flip).any()
    two = torch.tensor([[[0.2, 0.5], [0.7, 0.5]]]).repeat(n, 1, 1)                    # a left and a right point
    swapped = moves.points(two, [1, 0])
    flipped = moves.flip.numpy()
    assert (swapped[flipped, 0, 0] < swapped[flipped, 1, 0]).all()                     # left stays left of right


def test_landmark_schemes_mirror_and_map():
    for s in (SYNTHETIC_26, IBUG_68):
        assert sorted(s.mirror) == list(range(s.count)) and all(s.mirror[s.mirror[i]] == i for i in range(s.count))
        assert {s.mirror[i] for i in s.left_eye} == set(s.right_eye)
    assert scheme_of(68) is IBUG_68
    with pytest.raises(XferError, match="17 landmarks"):
        scheme_of(17)
    ibug = np.random.default_rng(0).random((2, 68, 2))
    syn = ibug_to_synthetic(ibug)
    assert syn.shape == (2, 26, 2) and np.allclose(syn[:, 22], ibug[:, 8])  # the chin


def test_pts_files_load_and_bad_ones_are_one_line(tmp_path):
    pts = np.random.default_rng(0).random((68, 2)) * 100 + 1
    f = tmp_path / "a.pts"
    f.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts) + "\n}\n")
    np.testing.assert_allclose(read_pts(f), pts - 1, atol=1e-3)  # 1-based pixels -> 0-based
    for text, match in (("n_points: 2\n{\n1 2\n}\n", "expected 2 finite"), ("junk", "not a .pts file"),
                        ("n_points: 1\n{\n1 x\n}\n", "non-numeric")):
        f.write_text(text)
        with pytest.raises(XferError, match=match):
            read_pts(f)


def test_a_tree_with_pts_files_packs_its_landmarks(tmp_path):
    import cv2

    from xfer.data.formats import scan
    from xfer.data.pack import decode_index

    def pack_tree(root):
        return decode_index(scan(root), workers=1, progress=False)

    rng = np.random.default_rng(0)
    for cls in ("happy", "sad"):
        (tmp_path / "t" / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "t" / cls / f"{i}.png"), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
            pts = rng.random((68, 2)) * [30, 40] + 1
            (tmp_path / "t" / cls / f"{i}.pts").write_text(
                "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in pts) + "\n}\n")
    p = pack_tree(tmp_path / "t")
    assert p.landmarks is not None and p.landmarks.shape == (6, 68, 2) and p.intensity is None
    (tmp_path / "t" / "sad" / "2.pts").unlink()
    with pytest.raises(XferError, match=r"2\.pts: missing \(1 of 6"):
        pack_tree(tmp_path / "t")
