import json

import numpy as np
import onnx
import pytest

from xfer import train
from xfer.config import TrainConfig
from xfer.errors import XferError
from xfer.graph import initializers
from xfer.meta import read_meta
from xfer.report.console import train_text
from xfer.tasks import task_of


def args(tmp_path, pack, source, **kw):
    a = dict(mode="frozen", data=str(pack), source=str(source), epochs=2, batch_size=32, lr=1e-3, out=str(tmp_path),
             input_size=(32,), head=(64, 32))
    a.update(kw)
    return TrainConfig(**a)


@pytest.mark.parametrize("mode", ["frozen", "reuse"])
def test_frozen_bit_identical_trainable_changed(tmp_path, synth_pack, lenet_onnx, mode):
    a = args(tmp_path, synth_pack, lenet_onnx, mode=mode)
    train.main(a)
    cfg = args(tmp_path, synth_pack, lenet_onnx, mode=mode)
    init_graph = task_of(cfg).build(cfg, train.load_split(str(synth_pack), "random", (32, 32), 1, seed=0, progress=False))
    before = initializers(init_graph)
    trained = onnx.load(tmp_path / f"{mode}.onnx")
    after = initializers(trained)
    frozen = set(read_meta(trained).frozen)
    assert frozen
    for k, v in before.items():
        if k in frozen:
            assert np.array_equal(v, after[k]), k
        else:
            assert not np.array_equal(v, after[k]), k
    m = json.loads((tmp_path / f"{mode}.metrics.json").read_text())
    assert m["test_size"] == len(m["predictions"]) and len(m["confusion"]) == 7
    assert 0.0 <= m["test_accuracy"] <= 1.0 and len(m["history"]) == 2
    assert m["test_accuracy"] == read_meta(trained).test_accuracy


def test_resume_after_interrupt_matches_unbroken_run(tmp_path, synth_pack, lenet_onnx, monkeypatch):
    full = train.main(args(tmp_path / "full", synth_pack, lenet_onnx, mode="finetune", epochs=3))
    real = train.train_one_epoch
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed mid-run, after epoch 1's checkpoint
        return real(*a, **kw)

    monkeypatch.setattr(train, "train_one_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train.main(args(tmp_path / "resumed", synth_pack, lenet_onnx, mode="finetune", epochs=3))
    assert not (tmp_path / "resumed" / "finetune.onnx").exists()
    monkeypatch.setattr(train, "train_one_epoch", real)
    resumed = train.main(args(tmp_path / "resumed", synth_pack, lenet_onnx, mode="finetune", epochs=3, resume=True))
    a = initializers(onnx.load(tmp_path / "full" / "finetune.onnx"))
    b = initializers(onnx.load(tmp_path / "resumed" / "finetune.onnx"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed.test_accuracy == full.test_accuracy


def test_resume_with_other_settings_refused(tmp_path, synth_pack, lenet_onnx):
    train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1))
    with pytest.raises(XferError, match="other settings"):
        train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1, lr=0.5, resume=True))


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, synth_pack, lenet_onnx, monkeypatch):
    train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1))
    ck = (tmp_path / "frozen.ckpt").read_bytes()
    from xfer import dan

    real = dan.emotion_losses
    monkeypatch.setattr(dan, "emotion_losses", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(XferError, match="training diverged: loss is nan"):
        train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=2, resume=False, name="frozen"))
    assert (tmp_path / "frozen.ckpt").read_bytes() == ck


def test_untrusted_checkpoint_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "x.ckpt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(XferError, match="not a valid xfer checkpoint"):
        train.load_checkpoint(p)


def test_loco_split_and_cli(tmp_path, synth_pack, lenet_onnx):
    from xfer.cli import main

    assert main(["train", "--mode", "scratch", "--data", str(synth_pack), "--source", str(lenet_onnx), "--epochs", "1",
                 "--split", "loco:ray", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "scratch.metrics.json").read_text())
    assert m["test_size"] == 21 and m["split"] == "loco:ray"


def test_missing_source(tmp_path, synth_pack):
    with pytest.raises(XferError, match="source model not found"):
        train.main(args(tmp_path, synth_pack, tmp_path / "none.onnx"))


def test_resume_with_other_weight_decay_refused(tmp_path, synth_pack, lenet_onnx):
    train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1))
    with pytest.raises(XferError, match="other settings"):
        train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1, weight_decay=1e-4, resume=True))


def test_validation_part_is_carved_from_the_training_split(tmp_path, synth_pack, lenet_onnx):
    whole = train.load_split(str(synth_pack), "random", (32, 32), 1, seed=0, progress=False)
    part = train.load_split(str(synth_pack), "random", (32, 32), 1, seed=0, progress=False, val=0.25)
    np.testing.assert_array_equal(part.test_index, whole.test_index)
    assert len(part.y_train) + len(part.y_val) == len(whole.y_train)
    assert not set(part.val_index) & set(part.train_index)
    assert not set(part.val_index) & set(part.test_index)
    assert set(part.y_val.tolist()) == set(whole.y_train.tolist())  # stratified: every class is there
    m = train.main(args(tmp_path, synth_pack, lenet_onnx, epochs=1, val=0.25))
    assert m.val_size == len(part.y_val) and 0.0 <= m.val_accuracy <= 1.0
    assert "val_acc" in m.history[0]
    with pytest.raises(XferError, match="--val"):
        train.load_split(str(synth_pack), "random", (32, 32), 1, seed=0, progress=False, val=1.5)


def test_a_one_sample_batch_and_an_empty_slice_weigh_samples_equally():
    """The loss each rank back-propagates is its share of the global batch mean, whatever the slice sizes."""
    import torch

    from xfer.dan import TaskLoss
    from xfer.parallel import Dist

    y = np.arange(5) % 3
    criterion = TaskLoss(y)
    logits = torch.randn(5, 3)
    idx = torch.arange(5)
    target = criterion.targets(idx, np.random.default_rng(0))
    mean = criterion.sample_losses(logits, idx, target).mean()
    world = 3
    shares = [criterion.sample_losses(logits[r::world], idx[r::world], target[r::world]).sum() * (world / 5)
              for r in range(world)]
    assert float(sum(shares) / world) == pytest.approx(float(mean), rel=1e-6)
    empty = criterion.sample_losses(logits[:0], idx[:0], target[:0]).sum()
    assert float(empty) == 0.0 and Dist(0, world).enabled


def test_collective_timeout_is_a_clear_error(monkeypatch):
    from xfer.parallel import Dist, collective_failed, collective_timeout

    monkeypatch.setenv("XFER_DIST_TIMEOUT", "12")
    assert collective_timeout() == 12.0
    err = collective_failed(RuntimeError("[gloo] Timed out waiting 12000ms for recv operation"), Dist(1, 2))
    assert isinstance(err, XferError) and "rank 1/2" in str(err) and "12 s" in str(err)
    assert collective_failed(RuntimeError("shape mismatch"), Dist(1, 2)) is None
    monkeypatch.setenv("XFER_DIST_TIMEOUT", "-3")
    with pytest.raises(XferError, match="XFER_DIST_TIMEOUT"):
        collective_timeout()


def _photo_folder(root):
    """A class-per-folder set (not FERG-DB): 3 classes of coloured 40x40 RGB images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "owl"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            a = (rng.random((40, 40, 3)) * 80).astype(np.uint8)
            a[..., c] += 150
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_class_per_folder_data_is_labelled_as_classes(tmp_path, lenet_onnx):
    data = _photo_folder(tmp_path / "photos")
    m = train.main(TrainConfig(mode="frozen", data=str(data), source=str(lenet_onnx), epochs=1, batch_size=8,
                               out=str(tmp_path / "out"), head=(16,)))
    assert m.class_word == "class" and m.classes == ["cat", "dog", "owl"]
    out = train_text(m)
    import re

    assert re.search(r"^class\s+accuracy$", out, re.M), out
    assert "emotion" not in out
    with pytest.raises(XferError, match="needs FERG-DB data"):
        train.main(TrainConfig(mode="frozen", data=str(data), source=str(lenet_onnx), epochs=1, split="loco:aia",
                               out=str(tmp_path / "out")))


@pytest.mark.parametrize("content,expected", [
    (b"", "not a valid xfer checkpoint"),                      # 0 bytes: torch's error has no message line
    ("list", "expected a dict"),
    ("no-model", "'model' missing"),
    ("negative", "epoch -1 < 0"),
    ("bad-state", "not a state_dict of named tensors"),
])
def test_hostile_checkpoints_are_one_line(tmp_path, content, expected):
    import torch

    from xfer.loop import load_checkpoint

    p = tmp_path / "x.ckpt"
    good = {"version": 1, "fingerprint": {}, "epoch": 1, "model": {"w": torch.zeros(2)}, "optimizer": {},
            "scheduler": {}, "history": []}
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        state = {"list": [1, 2], "no-model": {k: v for k, v in good.items() if k != "model"},
                 "negative": good | {"epoch": -1}, "bad-state": good | {"model": {"w": [1, 2]}}}[content]
        torch.save(state, p)
    with pytest.raises(XferError, match=expected) as e:
        load_checkpoint(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_a_checkpoint_path_that_is_a_directory_is_refused_before_training(tmp_path):
    from xfer.loop import load_checkpoint

    with pytest.raises(XferError, match="a directory where a checkpoint file was expected"):
        load_checkpoint(tmp_path)


def test_a_directory_in_the_checkpoints_place_is_refused_before_an_epoch(tmp_path, synth_pack, lenet_onnx):
    (tmp_path / "frozen.ckpt").mkdir()
    cfg = TrainConfig(mode="frozen", data=str(synth_pack), source=str(lenet_onnx), epochs=1, batch_size=32,
                      head=(16,), out=str(tmp_path))
    with pytest.raises(XferError, match="frozen.ckpt: a directory where xfer train writes a file"):
        train.main(cfg)
    assert not (tmp_path / "frozen.onnx").exists()
