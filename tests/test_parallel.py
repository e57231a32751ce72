"""Data-parallel training under torchrun, and the sharded test pass."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from xfer.bench import sharded
from xfer.config import BenchConfig
from xfer.graph import initializers


def one_process_and_two_ranks(tmp_path, args: list[str], **env: str):
    """Run ``xfer train ARGS`` in one process and under torchrun with 2 CPU ranks; returns both results and weights."""
    env = dict(os.environ, XFER_PROGRESS="0", OMP_NUM_THREADS="1", **env)
    one = subprocess.run([sys.executable, "-m", "xfer", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "xfer", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    a = initializers(onnx.load(tmp_path / "one" / "finetune.onnx"))
    b = initializers(onnx.load(tmp_path / "two" / "finetune.onnx"))
    return two, a, b


def test_torchrun_two_ranks_match_one_process(tmp_path, synth_pack, lenet_onnx):
    two, a, b = one_process_and_two_ranks(tmp_path, ["train", "--mode", "finetune", "--data", str(synth_pack), "--source",
                                                     str(lenet_onnx), "--epochs", "2", "--batch-size", "16", "--head", "64", "32"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".finetune.lock", "finetune.ckpt", "finetune.metrics.json",
                                                                   "finetune.onnx"]  # the lock stays; no temporary does
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    # Same global batch, same augmentation: equal up to the order of floating-point reductions.
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
    m = json.loads((tmp_path / "two" / "finetune.metrics.json").read_text())
    assert m["world_size"] == 2


@pytest.mark.parametrize("scheme", ["clean", "probability"])
def test_torchrun_with_a_one_sample_last_batch_matches_one_process(tmp_path, synth_pack, lenet_onnx, scheme):
    """Odd training-set size, a global batch of n-1: the last batch has 1 sample, so rank 1 gets none."""
    from xfer import train

    n = len(train.load_split(str(synth_pack), "random", (32, 32), 1, seed=0, progress=False).y_train)
    _, a, b = one_process_and_two_ranks(tmp_path, ["train", "--mode", "finetune", "--data", str(synth_pack), "--source",
                                                   str(lenet_onnx), "--epochs", "2", "--batch-size", str(n - 1), "--head",
                                                   "16", "--label-scheme", scheme], XFER_DIST_TIMEOUT="60")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
    source = initializers(onnx.load(lenet_onnx))
    assert any(not np.array_equal(a[k], source[k]) for k in a if k in source)  # it trained


def test_bench_workers(trained_frozen, synth_pack):
    rep = sharded.main(BenchConfig(model=str(trained_frozen), data=str(synth_pack), images=200, repeat=2,
                                   per_image_limit=5, batch=(64,), no_baselines=True, device="cpu", workers=2))
    one, two = rep.paths["kernel+ort"], rep.paths["kernel+ort x2"]
    assert one.accuracy == two.accuracy
    assert two.details["workers"] == 2
    assert rep.ratios["scaling_1_to_2"] == pytest.approx(one.median_s / two.median_s)
