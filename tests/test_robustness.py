"""Runs that lose nothing: atomic backups, resume, divergence, run-folder checks and lock, clear errors."""

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import callbacks, cli, ops, registry, training
from zoo.callbacks import TrainingBackup, read_epoch_log
from zoo.losses import KerasMetricLoss
from zoo.methods import build_model
from zoo.methods.metric_model import MetricModel
from zoo.monitor import TrainingDiverged
from zoo.training import (
    RunFolderLocked,
    TrainConfig,
    add_train_arguments,
    check_publishable,
    check_run_folder,
    config_from_args,
    run_folder_lock,
    train,
)

from learning import AtStep, CrashAtStep

# The run every resume test compares with: the CLI's triplet_digits preset cut to 3 epochs of 3 steps.
RUN_FLAGS = ["--dataset", "digits", "--epochs", "3", "--steps-per-epoch", "3", "--eval-every", "3"]  # small and fast


def _config(run_dir: Path, *flags: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args([*RUN_FLAGS, "--run-dir", str(run_dir), *flags]))


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in read_epoch_log(run_dir / "history.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[float]:
    """The epoch losses of the run, trained without a break."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(_config(run_dir))
    return _losses(run_dir)


class _Poison(AtStep):
    """Turns a weight into NaN after a given optimizer step: the next step's loss is NaN."""

    def act(self) -> None:
        weight = self.model.embedding_net.trainable_variables[0]
        weight.assign(tf.fill(weight.shape, float("nan")))


def _with_callback(monkeypatch, callback: keras.callbacks.Callback) -> None:
    monitor_and_method = MetricModel.training_callbacks
    monkeypatch.setattr(MetricModel, "training_callbacks", lambda self: [*monitor_and_method(self), callback])


# ---- backups ---------------------------------------------------------------------------------------
def _amdaml():
    """A small model with two optimizers (F's Adam, the generator's SGD)."""
    keras.utils.set_random_seed(0)
    model = build_model("amdaml", embedding_dim=8, input_size=32, freeze_batchnorm=True, pretrain_steps=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _state(model) -> list[np.ndarray]:
    return [np.array(v) for v in [*model.weights, *model.optimizer.variables, *model.generator_optimizer.variables]]


def test_a_backup_keeps_every_optimizer_and_survives_a_kill_while_writing(tmp_path, pk_batch):
    model = _amdaml()
    backup = TrainingBackup(tmp_path / "backup")
    backup.set_model(model)
    for epoch in (1, 2, 3):
        model.train_on_batch(*pk_batch)
        backup.save(epoch)
    saved = _state(model)
    assert [p.name for p in backup.backups()] == ["epoch-00003.weights.h5", "epoch-00002.weights.h5"]  # keep=2
    (tmp_path / "backup" / "partial-epoch-00004.weights.h5").write_bytes(b"\x89HDF")  # killed mid-write

    restored = _amdaml()
    assert backup.restore(restored) == 3
    assert int(restored.optimizer.iterations) == 3 and int(restored.generator_optimizer.iterations) == 3
    for got, expected in zip(_state(restored), saved):
        np.testing.assert_array_equal(got, expected)

    newest = tmp_path / "backup" / "epoch-00003.weights.h5"
    newest.write_bytes(b"")  # the 0-byte file a kill left with BackupAndRestore
    with pytest.warns(UserWarning, match="epoch-00003.weights.h5 cannot be read"):
        assert backup.restore(_amdaml()) == 2
    (tmp_path / "backup" / "epoch-00002.weights.h5").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="epoch-00003.*epoch-00002"):
        backup.restore(_amdaml())


def test_a_backup_whose_bytes_changed_but_still_open_falls_back_to_the_older_one(tmp_path, pk_batch):
    model = _amdaml()
    backup = TrainingBackup(tmp_path / "backup")
    backup.set_model(model)
    model.train_on_batch(*pk_batch)
    backup.save(1)
    older = _state(model)
    model.train_on_batch(*pk_batch)
    newest = backup.save(2)
    assert backup.checksum_file(newest).read_text().split() == [registry.sha256_of(newest), newest.name]
    with h5py.File(newest, "r+") as weights:  # one weight changed in place: the HDF5 file still opens
        datasets = []
        weights.visititems(lambda name, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None)
        big = max(datasets, key=lambda dataset: dataset.size)
        big[...] = np.asarray(big) + 1.0
    restored = _amdaml()
    with pytest.warns(UserWarning, match="epoch-00002.weights.h5 cannot be read .its bytes are damaged: sha256"):
        assert backup.restore(restored) == 1
    for got, expected in zip(_state(restored), older):
        np.testing.assert_array_equal(got, expected)
    backup.checksum_file(tmp_path / "backup" / "epoch-00001.weights.h5").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="epoch-00001.weights.h5.sha256 is missing"):
        backup.restore(_amdaml())
    for epoch in (3, 4, 5):  # older backups leave with their checksum files
        backup.save(epoch)
    assert sorted(path.name for path in (tmp_path / "backup").iterdir()) == [
        "epoch-00004.weights.h5", "epoch-00004.weights.h5.sha256", "epoch-00005.weights.h5",
        "epoch-00005.weights.h5.sha256"]


def test_a_non_finite_epoch_is_never_backed_up(tmp_path, pk_batch):
    model = _amdaml()
    model.train_on_batch(*pk_batch)
    backup = TrainingBackup(tmp_path / "backup")
    backup.set_model(model)
    with pytest.warns(UserWarning, match="epoch 1 is not backed up"):
        backup.on_epoch_end(0, {"loss": float("nan")})
    weight = model.embedding_net.trainable_variables[0]
    weight.assign(tf.fill(weight.shape, float("inf")))
    with pytest.warns(UserWarning, match="epoch 2 is not backed up"):
        backup.on_epoch_end(1, {"loss": 0.5})  # a finite loss, but the step's update made the weights infinite
    assert backup.backups() == []


# ---- resume ------------------------------------------------------------------------------------------
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch, uninterrupted):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, CrashAtStep(5))
        with pytest.raises(KeyboardInterrupt):
            train(_config(run_dir))  # epoch 1 finished (3 steps), killed during epoch 2
    assert len(_losses(run_dir)) == 1 and not (run_dir / "lock").exists()
    train(_config(run_dir, "--resume"))
    losses = _losses(run_dir)
    assert len(losses) == 3
    np.testing.assert_allclose(losses, uninterrupted, rtol=0, atol=1e-4)  # the same batches, the same steps


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_where_the_uninterrupted_run_ends(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "zoo.cli", "train", *RUN_FLAGS, "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_backup = run_dir / "backup" / "epoch-00001.weights.h5"
    while not first_backup.exists() and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_dir / "lock").read_text().strip() == str(process.pid)  # left behind by the kill: stale
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(_losses(run_dir), uninterrupted, rtol=0, atol=1e-4)
    assert not (run_dir / "lock").exists()


# ---- divergence and publishing -------------------------------------------------------------------------
def test_divergence_stops_at_the_first_nan_and_keeps_the_last_finite_state(tmp_path, monkeypatch):
    published = []
    monkeypatch.setattr(training.registry, "publish", lambda *args, **kwargs: published.append((args, kwargs)))
    _with_callback(monkeypatch, _Poison(4))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 \(1-based\).*epoch-00001.weights.h5 keeps"):
        train(_config(run_dir, "--publish", "triplet_digits"))
    assert [p.name for p in TrainingBackup(run_dir / "backup").backups()] == ["epoch-00001.weights.h5"]
    with h5py.File(run_dir / "backup" / "epoch-00001.weights.h5") as backup:
        arrays = []
        backup.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays if np.issubdtype(a.dtype, np.floating))
    assert published == [] and not (run_dir / "model.keras").exists()
    assert len(_losses(run_dir)) == 1 and not (run_dir / "lock").exists()


def _publishing_run(tmp_path, monkeypatch, *flags: str) -> list:
    """One step of training whose measured MAP@R falls from 0.30 (untrained) to 0.10; returns the publishes."""
    published = []
    monkeypatch.setattr(training.registry, "publish", lambda *args, **kwargs: published.append((args, kwargs)))
    measured = iter([{"map@r": 0.30}, {"map@r": 0.05}])  # untrained, raw pixels
    monkeypatch.setattr(training, "measure", lambda *args: next(measured))
    monkeypatch.setattr(callbacks, "evaluate", lambda *args, **kwargs: {"map@r": 0.10})  # the last epoch's evaluation
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    train(config_from_args(parser.parse_args(
        ["--dataset", "digits", "--epochs", "1", "--steps-per-epoch", "1", "--run-dir", str(tmp_path / "run"),
         "--publish", "triplet_digits",
         *flags])))
    return published


def test_a_model_worse_than_untrained_is_published_only_with_force(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"MAP@R 0.1000 is below the untrained model's 0.3000.*--force"):
        _publishing_run(tmp_path / "a", monkeypatch)
    assert (tmp_path / "a" / "run" / "model.keras").exists()  # the run itself is kept
    [(_, kwargs)] = _publishing_run(tmp_path / "b", monkeypatch, "--force", "--lr", "0.002")
    trained_with = kwargs["trained_with"]  # the resolved configuration, for the card
    assert (trained_with["dataset"], trained_with["epochs"], trained_with["steps_per_epoch"]) == ("digits", 1, 1)
    assert trained_with["learning_rate"] == 0.002  # the triplet_digits preset's hyperparameters:
    assert trained_with["hyperparameters"] == {"loss": "facenet-triplet", "miner": "random"}
    assert "run_dir" not in trained_with and "force" not in trained_with


def test_a_non_finite_model_is_never_published():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    check_publishable(model, {"map@r": 0.5}, {"map@r": 0.1}, force=False)
    with pytest.raises(ValueError, match="not finite"):
        check_publishable(model, {"map@r": float("nan")}, {"map@r": 0.1}, force=True)
    model.layers[0].kernel.assign(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="not finite"):
        check_publishable(model, {"map@r": 0.5}, {"map@r": 0.1}, force=True)


# ---- the run folder: check first, write after; one run at a time ----------------------------------------
def test_a_new_run_into_a_used_folder_is_refused_before_writing_anything(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.json", "metrics_untrained.json"):
        (run_dir / name).write_text("the previous run's")
    with pytest.raises(FileExistsError, match=r"already holds a run \(config.json, metrics_untrained.json\).*--resume"):
        train(_config(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics_untrained.json"]
    assert all((run_dir / name).read_text() == "the previous run's" for name in ("config.json", "metrics_untrained.json"))


def test_resume_with_another_configuration_is_refused_naming_the_differences(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = _config(run_dir)
    saved = json.dumps(dataclasses.asdict(started))
    (run_dir / "config.json").write_text(saved)
    code = cli.main(["train", *RUN_FLAGS, "--run-dir", str(run_dir), "--resume", "--lr", "0.05", "--method", "thsg"])
    assert code == 2
    error = capsys.readouterr().err
    assert "learning_rate: 0.0003 in the run, 0.05 now" in error and "method: 'triplet' in the run, 'thsg' now" in error
    assert (run_dir / "config.json").read_text() == saved and not (run_dir / "lock").exists()
    check_run_folder(dataclasses.replace(started, resume=True, epochs=10, eval_every=5), run_dir)  # allowed


def test_a_moved_run_folder_resumes_where_it_is(tmp_path):
    started = tmp_path / "runs" / "first"
    started.mkdir(parents=True)
    (started / "config.json").write_text(json.dumps(dataclasses.asdict(_config(started))))
    moved = tmp_path / "elsewhere" / "first"
    moved.parent.mkdir()
    started.rename(moved)
    check_run_folder(_config(moved, "--resume"), moved)  # run_dir is where the folder is, not a setting
    with pytest.raises(ValueError, match="seed: 0 in the run, 1 now"):
        check_run_folder(_config(moved, "--resume", "--seed", "1"), moved)


def test_damaged_run_files_are_refused_in_one_line_naming_the_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("[1, 2]")
    assert cli.main(["train", *RUN_FLAGS, "--run-dir", str(run_dir), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"cannot read the run's configuration {run_dir / 'config.json'}: it holds a list" in error
    (run_dir / "history.jsonl").write_text('{"epoch": 0, "loss": 0.5}\n{"epoch": 1, "lo')  # cut by a full disk
    with pytest.raises(ValueError, match=r"history.jsonl, line 2, is not an epoch's JSON object"):
        read_epoch_log(run_dir / "history.jsonl")


def test_a_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_dir / "lock").write_text(f"{holder.pid}\n")
        assert cli.main(["train", *RUN_FLAGS, "--run-dir", str(run_dir)]) == 2
        assert f"in use by another zoo train (pid {holder.pid}" in capsys.readouterr().err
        assert (run_dir / "lock").read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    with run_folder_lock(run_dir):  # the holder is gone: its lock is stale
        assert (run_dir / "lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunFolderLocked):
            with run_folder_lock(run_dir):
                pass
    assert list(run_dir.iterdir()) == []


# ---- errors that name the problem ----------------------------------------------------------------------
def test_19_labels_for_20_images_say_so(pk_batch):
    images = np.concatenate([pk_batch[0], pk_batch[0][:4]])  # 20 images
    labels = np.concatenate([pk_batch[1], [0, 1, 2]]).astype("int32")  # 19 labels
    with pytest.raises(ValueError, match="20 images and 19 labels"):
        ops.check_batch(images, labels)
    data = tf.data.Dataset.from_tensors((images, labels))
    model = build_model("triplet", backbone="tiny_cnn", embedding_dim=8, input_size=32)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="20 images and 19 labels"):
        model.fit(data, epochs=1, verbose=0)
    net = model.embedding_net
    net.compile(optimizer="adam", loss=KerasMetricLoss("triplet"))
    with pytest.raises(ValueError, match="20 embeddings and 19 labels"):
        net.fit(data, epochs=1, verbose=0)


def test_steps_per_epoch_0_is_refused(capsys):
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        TrainConfig(steps_per_epoch=0)
    assert cli.main(["train", "--steps-per-epoch", "0"]) == 2
    assert "steps_per_epoch must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--lr", "0"], r"learning_rate \(--lr\) must be a positive number, got 0.0"),
    (["--lr", "-0.001"], r"learning_rate \(--lr\) must be a positive number"),
    (["--lr", "nan"], r"learning_rate \(--lr\) must be a positive number, got nan"),
    (["--eval-every", "0"], "eval_every must be >= 1"),
    (["--batch-images", "-2"], "images_per_class must be >= 1"),
])
def test_non_positive_rates_sizes_and_counts_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    assert cli.main(["train", *RUN_FLAGS, "--run-dir", str(run_dir), *flags]) == 2
    assert re.search(message, capsys.readouterr().err) and not run_dir.exists()


def test_non_positive_sizes_and_counts_of_the_other_commands_are_refused(capsys):
    for argv in (["search", "--index", "x", "--query", "q.png", "-k", "0"],
                 ["index", "--model", "m", "--images", "i", "--out", "o", "--batch-size", "-1"],
                 ["show", "--model", "m", "--out", "g.png", "--n-queries", "0"]):
        with pytest.raises(SystemExit) as stopped:
            cli.main(argv)
        assert stopped.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="crop_scale must be"):
        TrainConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="eval_batch_size must be >= 1"):
        TrainConfig(eval_batch_size=0)


def test_images_in_0_1_get_a_warning(pk_batch):
    images, labels = pk_batch
    model = build_model("triplet", backbone="tiny_cnn", embedding_dim=8, input_size=32)
    model.compile(optimizer="adam")
    with pytest.warns(UserWarning, match=r"the images lie in \[0, 1\].*\[0, 255\]"):
        model.fit(images / 255.0, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the images lie")
        model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
