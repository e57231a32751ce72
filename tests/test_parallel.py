"""Data-parallel training under torchrun, and the sharded test pass."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


class TwoHosts:
    """Two network namespaces joined by a veth pair: two hosts with addresses of their own on this machine."""

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.ns = (f"xfer-a-{tag}", f"xfer-b-{tag}")
        self.addr = (f"10.231.{tag % 250}.1", f"10.231.{tag % 250}.2")
        self.veth = (f"xa{tag}", f"xb{tag}")
        self.port = 29400 + tag % 500

    def _ip(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)

    def up(self) -> str | None:
        """Make the hosts; the reason they cannot be made, or None."""
        if not shutil.which("ip"):
            return "no ip command"
        for ns in self.ns:
            made = self._ip("netns", "add", ns)
            if made.returncode != 0:
                return f"ip netns add: {made.stderr.strip()}"
        steps = [("link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])]
        for ns, veth, addr in zip(self.ns, self.veth, self.addr, strict=True):
            steps += [("link", "set", veth, "netns", ns), ("-n", ns, "addr", "add", f"{addr}/24", "dev", veth),
                      ("-n", ns, "link", "set", veth, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            done = self._ip(*step)
            if done.returncode != 0:
                return f"ip {' '.join(step)}: {done.stderr.strip()}"
        return None

    def down(self) -> None:
        for ns in self.ns:
            self._ip("netns", "del", ns)

    def torchrun(self, host: int, args: list[str], logs: Path, env: dict[str, str]) -> subprocess.Popen:
        """``xfer ARGS`` as one rank on host ``host`` (0 or 1), found through c10d rendezvous on host 0's address."""
        cmd = ["ip", "netns", "exec", self.ns[host], sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{self.addr[0]}:{self.port}",
               "--rdzv_id", f"xfer-test-{self.port}", "--rdzv_conf", f"is_host={int(host == 0)}",
               "--local_addr", self.addr[host], "--log-dir", str(logs), "--redirects", "3", "-m", "xfer", *args]
        env = dict(env, GLOO_SOCKET_IFNAME=self.veth[host])  # gloo would take the address the host name resolves to
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


@pytest.fixture
def two_hosts():
    hosts = TwoHosts()
    why = hosts.up() if os.geteuid() == 0 else "not root"
    if why:
        hosts.down()
        pytest.skip(f"cannot make two network namespaces here ({why})")
    yield hosts
    hosts.down()


def _kill_host(out: Path) -> None:
    """SIGKILL every process of one host's run (the agent and its rank, which torchrun puts in a session of its own)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


def _rank_stderr(logs: Path) -> str:
    return "".join(p.read_text() for p in logs.rglob("stderr.log"))


def test_torchrun_across_two_hosts(tmp_path, synth_pack, lenet_onnx, two_hosts):
    """Two hosts (network namespaces) train as one process does; killing one host's rank ends the other with one
    line within XFER_DIST_TIMEOUT."""
    args = ["train", "--mode", "finetune", "--data", str(synth_pack), "--source", str(lenet_onnx), "--batch-size",
            "16", "--head", "64", "32"]
    env = dict(os.environ, XFER_PROGRESS="0", OMP_NUM_THREADS="1", XFER_DIST_TIMEOUT="20")
    one = subprocess.run([sys.executable, "-m", "xfer", *args, "--epochs", "2", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert one.returncode == 0, one.stderr
    runs = [two_hosts.torchrun(h, [*args, "--epochs", "2", "--out", str(tmp_path / f"host{h}")], tmp_path / f"logs{h}",
                               env) for h in (0, 1)]
    for r in runs:
        r.communicate(timeout=300)
    assert [r.returncode for r in runs] == [0, 0], _rank_stderr(tmp_path)[-3000:]
    assert not (tmp_path / "host1" / "finetune.onnx").exists()  # only rank 0 writes
    a = initializers(onnx.load(tmp_path / "one" / "finetune.onnx"))
    b = initializers(onnx.load(tmp_path / "host0" / "finetune.onnx"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
    assert json.loads((tmp_path / "host0" / "finetune.metrics.json").read_text())["world_size"] == 2

    # Now a long run, and host 1 dies (SIGKILL to its whole process group) once host 0 has finished an epoch.
    long_args = [*args, "--epochs", "200"]
    runs = [two_hosts.torchrun(h, [*long_args, "--out", str(tmp_path / f"long{h}")], tmp_path / f"longlogs{h}", env)
            for h in (0, 1)]
    ckpt = tmp_path / "long0" / "finetune.ckpt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and time.monotonic() < deadline and runs[0].poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "host 0 never finished an epoch"
    _kill_host(tmp_path / "long1")
    killed = time.monotonic()
    runs[0].communicate(timeout=120)
    assert runs[0].returncode != 0
    assert time.monotonic() - killed < 20 + 30  # the collective timeout, plus the agent's own shutdown
    err = _rank_stderr(tmp_path / "longlogs0")
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("xfer:")]
    assert len(lines) == 1 and lines[0].startswith("xfer: error: rank 0/2: waited for the other ranks"), err[-3000:]
    runs[1].communicate(timeout=60)
