"""`lenet sweep --ray` on a two-node Ray cluster on loopback (Ray's own test utilities), with a node killed mid-run.

The nodes are 127.0.0.1 (the head, where the sweep's driver attaches) and 127.0.0.2 (a worker): two raylets,
two object stores, no shared folders as far as lenet knows (its tasks train in their own temporary folders
and ship files back). RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray from rewriting 127.0.0.1 into the
machine's network address, so nothing leaves loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from safetensors.torch import load_file

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray reads it: one machine, loopback only
import ray  # noqa: E402
from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import lenet  # noqa: E402

EPOCHS = 10  # each run ~0.5 s an epoch on one core: long enough to be caught in the middle


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A generated MNIST ten times the default size, so that a run lasts a few seconds."""
    return write_dataset(tmp_path_factory.mktemp("ray-data"), "mnist", n_train=6000, n_test=1000)


@pytest.fixture
def cluster(monkeypatch):
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case Ray was imported before us
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1, node_ip_address="127.0.0.2")
    c.wait_for_nodes()
    yield c, worker
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def mid_run(out: Path) -> list[Path]:
    """Run folders that hold a checkpoint shipped back (an epoch done) and no summary yet."""
    return [p for p in out.glob("seed=*") if (p / "checkpoint.pt").is_file() and not (p / "summary.json").is_file()]


def test_a_sweep_on_two_nodes_survives_a_node_killed_mid_run(cluster, data_root, tmp_path):
    c, worker = cluster
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "lenet", "sweep", "fast", "--seeds", "3", "--set", f"epochs={EPOCHS}",
               "--root", str(data_root), "--no-verify", "--device", "cpu", "--out", str(out), "--ray", c.address,
               "--json"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        # With one CPU a node and one a run, two runs under way at once means one on each node.
        while len(mid_run(out)) < 2:
            assert proc.poll() is None, f"the sweep ended before two runs were under way: {proc.communicate()}"
            assert time.monotonic() < deadline, "never saw two runs under way at once"
            time.sleep(0.05)
        c.remove_node(worker, allow_graceful=False)  # the 127.0.0.2 node dies, with the run it held
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    # the last line is the sweep's JSON; Ray's C++ core may have logged lines of its own before it
    results = json.loads([line for line in stdout.splitlines() if line.startswith("[{")][-1])
    assert [r["status"] for r in results] == ["done"] * 3
    resumed = [r for r in results if r["resumed"]]
    assert resumed, f"no run was retried from a shipped checkpoint: {results}"

    # Every run's files came back into the sweep folder, naming the driver's data, and the retried run
    # ended bit-identical to an uninterrupted one trained here.
    for r in results:
        folder = Path(r["folder"])
        assert {"summary.json", "model.safetensors", "checkpoint.pt", "metrics.csv"} <= {
            p.name for p in folder.iterdir()
        }
        assert json.loads((folder / "run.json").read_text())["data_root"] == str(data_root.resolve())
        assert len((folder / "metrics.csv").read_text().strip().splitlines()) == EPOCHS + 1
    seed = resumed[0]["summary"]["seed"]
    reference = lenet.train("fast", seed=seed, epochs=EPOCHS, root=data_root, verify=False, device="cpu",
                            out=tmp_path / "reference", verbose=False, progress=False)  # fmt: skip
    mine = load_file(str(Path(resumed[0]["folder"]) / "model.safetensors"))
    theirs = load_file(str(reference.path / "model.safetensors"))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert resumed[0]["summary"]["test_acc"] == reference.summary["test_acc"]
