"""tf.distribute: a step on 2 replicas (one process, or two worker processes) equals a step on 1 replica."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.methods import METHODS

SCRIPTS = Path(__file__).parent / "distributed"


# Every registered method; PROFS, whose batches carry representative flags, in tests/test_profs.py.
@pytest.mark.parametrize("method", [m for m in sorted(METHODS) if m != "profs"])
def test_two_replicas_give_the_weights_of_one(method):
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "one_vs_two_replicas.py"), method], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["max_update"] > 1e-4  # the step really moved the weights
    assert result["max_abs_diff"] < 1e-5, result


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _load(path: Path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def test_two_workers_give_the_weights_of_one_device(tmp_path):
    script = str(SCRIPTS / "multiworker.py")
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        processes.append(subprocess.Popen(
            [sys.executable, script, "triplet", str(tmp_path / f"worker{index}.npz"), "--multiworker"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    single = subprocess.run([sys.executable, script, "triplet", str(tmp_path / "single.npz")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    outputs = [single.stdout]
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    for stdout in outputs:  # the steps really moved the weights: equal weights are not equal initial weights
        assert json.loads(stdout.strip().splitlines()[-1])["max_update"] > 1e-4
    reference = _load(tmp_path / "single.npz")
    for index in range(2):
        worker = _load(tmp_path / f"worker{index}.npz")
        assert len(worker) == len(reference)
        for got, want in zip(worker, reference):
            np.testing.assert_allclose(got, want, atol=1e-5)
