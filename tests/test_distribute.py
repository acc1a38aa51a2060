"""tf.distribute: a step on 2 replicas (one process, or two worker processes) equals a step on 1 replica; two
`zoo train` workers write one run folder (the chief's) and resume it after a kill."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.callbacks import TrainingBackup, read_epoch_log
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


def _zoo_train_workers(run_dir: Path, *flags: str) -> list[subprocess.Popen]:
    """Two ``zoo train --strategy multiworker`` workers on localhost, both given the same run folder."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    command = [sys.executable, "-m", "zoo", "train", "--strategy", "multiworker", "--dataset", "digits",
               "--steps-per-epoch", "2", "--run-dir", str(run_dir), *flags]
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={
        **os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})})
        for i in range(2)]


def _finish(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=400)
        assert process.returncode == 0, stderr[-3000:]


@pytest.mark.slow
def test_two_workers_write_one_run_and_a_killed_cluster_resumes(tmp_path):
    run_dir = tmp_path / "run"
    _finish(_zoo_train_workers(run_dir, "--epochs", "2", "--eval-every", "2"))
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "backup", "config.json", "history.jsonl", "logs", "metrics.json", "metrics_raw_pixels.json",
        "metrics_untrained.json", "model.keras"]  # written once, by the chief: no lock, no other worker's files
    assert [row["epoch"] for row in read_epoch_log(run_dir / "history.jsonl")] == [0, 1]
    assert [path.name for path in TrainingBackup(run_dir / "backup").backups()] == [
        "epoch-00002.weights.h5", "epoch-00001.weights.h5"]

    processes = _zoo_train_workers(run_dir, "--epochs", "6", "--eval-every", "6", "--resume")
    newest = run_dir / "backup" / "epoch-00003.weights.h5"
    while not newest.exists() and all(process.poll() is None for process in processes):
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)  # a worker dies mid-run; the cluster is restarted, as tf.distribute asks
    processes[0].send_signal(signal.SIGKILL)
    for process in processes:
        process.communicate(timeout=60)
    _finish(_zoo_train_workers(run_dir, "--epochs", "6", "--eval-every", "6", "--resume"))
    assert [row["epoch"] for row in read_epoch_log(run_dir / "history.jsonl")] == [0, 1, 2, 3, 4, 5]
    assert TrainingBackup(run_dir / "backup").backups()[0].name == "epoch-00006.weights.h5"
    assert not (run_dir / "lock").exists() and (run_dir / "model.keras").is_file()
