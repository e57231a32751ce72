import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from xfer import dan
from xfer.config import StudyConfig, TrainConfig
from xfer.data.synth import LANDMARK_NAMES, simulate_votes
from xfer.errors import XferError
from xfer.importer import to_torch


def test_emotion_losses_by_hand():
    logits = torch.tensor([[0.0, math.log(2.0)]])  # p = [1/3, 2/3]
    assert dan.emotion_loss(logits, torch.tensor([1]), "majority").item() == pytest.approx(-math.log(2 / 3))
    soft = torch.tensor([[0.5, 0.5]])
    assert dan.emotion_loss(logits, soft, "crossentropy").item() == pytest.approx(
        -(0.5 * math.log(1 / 3) + 0.5 * math.log(2 / 3)))
    assert dan.emotion_loss(logits, torch.tensor([[1.0, 1.0]]), "multilabel").item() == pytest.approx(0.0, abs=1e-6)
    assert dan.emotion_loss(logits, torch.tensor([[1.0, 0.0]]), "multilabel").item() == pytest.approx(-math.log(1 / 3))


def test_landmark_nme_by_hand():
    k = len(LANDMARK_NAMES)
    true = torch.zeros(1, k, 2)
    left = [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_l")]
    right = [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_r")]
    true[0, right, 0] = 2.0  # inter-ocular distance 2
    pred = true + torch.tensor([0.2, 0.0])
    assert dan.landmark_nme(pred, true, (left, right)).item() == pytest.approx(0.1)


def test_scheme_targets_for_fixed_votes():
    v = np.array([[6, 3, 1, 0, 0, 0, 0]])
    assert dan.scheme_targets(v, "majority").tolist() == [0]
    np.testing.assert_allclose(dan.scheme_targets(v, "crossentropy"), [[0.6, 0.3, 0.1, 0, 0, 0, 0]])
    assert dan.scheme_targets(v, "multilabel").tolist() == [[1, 1, 0, 0, 0, 0, 0]]
    draws = dan.scheme_targets(np.repeat(v, 20000, axis=0), "probability", np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=7) / 20000, [0.6, 0.3, 0.1, 0, 0, 0, 0], atol=0.015)
    with pytest.raises(XferError):
        dan.scheme_targets(np.zeros((1, 7)), "majority")
    with pytest.raises(XferError, match="label-scheme"):
        dan.scheme_targets(v, "vote")


def test_simulated_votes_follow_intensity():
    strong = np.sum([simulate_votes("fear", 1.0, np.random.default_rng(i)) for i in range(200)], axis=0)
    weak = np.sum([simulate_votes("fear", 0.35, np.random.default_rng(i)) for i in range(200)], axis=0)
    assert strong.sum() == weak.sum() == 2000
    assert strong[2] / 2000 > 0.9 and weak[2] / 2000 < 0.7
    assert weak[6] > 0  # confusions go to neighbours (surprise)
    np.testing.assert_array_equal(simulate_votes("joy", 0.5, np.random.default_rng(3)),
                                  simulate_votes("joy", 0.5, np.random.default_rng(3)))


def test_dan_graph_runs_and_imports():
    m = dan.build_dan((1, 32, 32), [str(i) for i in range(7)], 26, width=0.125, seed=0, stages=1)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    logits, lm = ort.InferenceSession(m.SerializeToString()).run(None, {"input": x})
    assert logits.shape == (2, 7) and lm.shape == (2, 52)
    with torch.no_grad():
        t_logits, t_lm = to_torch(m)(torch.from_numpy(x))
    np.testing.assert_allclose(t_logits.numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(t_lm.numpy(), lm, atol=1e-5)
    with pytest.raises(XferError, match="too small"):
        dan.build_dan((1, 3, 3), ["a", "b"], 26)


def test_pack_carries_votes(synth_pack):
    from xfer.data.pack import load_pack

    p = load_pack(synth_pack)
    assert p.votes.shape == (len(p), 7) and (p.votes.sum(1) == 10).all()
    assert (p.votes.argmax(1) == p.labels).mean() > 0.8


def _faces_tree(root, n_people=2, per=4):
    """A tiny tree of 'real' faces: gray photos with a 68-point .pts beside each."""
    import cv2

    rng = np.random.default_rng(0)
    base = np.stack([np.linspace(20, 70, 68), np.linspace(30, 90, 68)], 1)
    for p in range(n_people):
        (root / f"s{p + 1}").mkdir(parents=True)
        for i in range(per):
            cv2.imwrite(str(root / f"s{p + 1}" / f"{i + 1}.png"), rng.integers(0, 256, (112, 92), dtype=np.uint8))
            pts = base + rng.normal(size=(68, 2))
            (root / f"s{p + 1}" / f"{i + 1}.pts").write_text(
                "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x:.2f} {y:.2f}" for x, y in pts) + "\n}\n")
    (root / ".manual").mkdir()  # hand-annotated photos beside the tree, as `xfer data faces` writes them
    for name in ("a", "b"):
        cv2.imwrite(str(root / ".manual" / f"{name}.png"), rng.integers(0, 256, (112, 92), dtype=np.uint8))
        (root / ".manual" / f"{name}.pts").write_text(
            "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x:.2f} {y:.2f}" for x, y in base) + "\n}\n")
    return root


def test_study_end_to_end(synth_pack, tmp_path):
    from xfer.report import dan_study
    from xfer.report.console import dan_text

    faces = _faces_tree(tmp_path / "faces")
    args = StudyConfig(name="dan", study="dan", data=str(synth_pack), seeds=(0,), epochs=2, batch_size=16, lr=1e-3,
                       head=(64,), alpha=1.0, width=0.125, out=str(tmp_path), stages=(1, 2), schedule="stagewise",
                       faces=str(faces), faces_epochs=1)
    res = dan_study.main(args)
    tasks = [f"{k} stage(s): {t}" for k in (1, 2) for t in ("landmarks only", "emotion only", "multi-task")]
    schemes = [f"scheme:{s}" for s in ("majority", "multilabel", "probability", "crossentropy")]
    real = ["real faces: from scratch", "real faces: from the synthetic-face DAN"]
    assert list(res.summary) == tasks + schemes + real
    assert all(res.summary[v].acc_mean is None and res.summary[v].nme_mean > 0 for v in real)
    assert all(len(res.summary[v].manual_nme_stages) == res.settings.scheme_stages for v in real)
    assert "hand-annotated" in dan_text(res)
    assert res.summary["1 stage(s): emotion only"].nme_mean is None
    assert res.summary["2 stage(s): landmarks only"].acc_mean is None  # no emotion term: its accuracy means nothing
    two = res.summary["2 stage(s): multi-task"]
    assert two.nme_mean is not None and two.nme_mean > 0 and len(two.nme_stages) == 2 and two.stages == 2
    assert two.nme_stages[-1] == pytest.approx(two.nme_mean)
    assert res.settings.scheme_stages in (1, 2) and res.summary["scheme:majority"].stages == res.settings.scheme_stages
    saved = json.loads((tmp_path / "dan" / "results.json").read_text())
    assert len(saved["runs"]) == 12
    moved = json.loads((tmp_path / "dan" / "runs" / "realfaces-fromthesynthetic-faceDAN-s0.metrics.json").read_text())
    assert moved["source"].endswith(f"{res.settings.scheme_stages}stage-multi-task-s0.onnx")
    page = (tmp_path / "dan" / "report.html").read_text()
    assert "scheme:crossentropy" in page and "NME per stage" in page and "warped to the canonical pose" in page
    assert (tmp_path / "dan" / "figures" / "dan_stages.png").stat().st_size > 10_000


def test_dan_benches_with_the_same_pass(synth_pack, tmp_path):
    from xfer import bench, train

    a = TrainConfig(model="dan", data=str(synth_pack), epochs=1, batch_size=16, lr=1e-3, out=str(tmp_path),
                    input_size=(32,), head=(64,), label_scheme="majority", alpha=1.0, width=0.125)
    r = train.main(a)
    assert r.mode == "dan" and r.landmark_nme is not None
    rep = bench.run(tmp_path / "dan.onnx", str(synth_pack), repeat=1, per_image_limit=3, threads=[1], batches=[32])
    assert rep.accuracy_matches_train
    assert rep.paths["naive_batched"].accuracy == pytest.approx(rep.paths["kernel+ort"].accuracy, abs=0.1)


def test_stage_views_show_each_stage():
    m = dan.build_dan((1, 32, 32), [str(i) for i in range(7)], 26, width=0.125, seed=0, stages=3)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    v = dan.stage_views(m, x)
    assert [a.shape for a in v.landmarks] == [(2, 26, 2)] * 3
    assert [a.shape for a in v.warped] == [(2, 32, 32)] * 2 and [a.shape for a in v.heatmaps] == [(2, 32, 32)] * 2
    assert (v.heatmaps[0] > 0).all() and (v.heatmaps[0] <= 1).all() and v.heatmaps[0].max() > 0.5
