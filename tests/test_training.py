"""The training loop and the CLI end to end on digits: metrics table, learning, checkpoints, resume."""

import argparse
import json
import warnings

import keras
import pytest

from zoo import cli
from zoo.callbacks import read_epoch_log
from zoo.methods.metric_model import MetricModel
from zoo.monitor import NoLearningWarning
from zoo.training import TrainConfig, add_train_arguments, config_from_args, train

from learning import CrashAtStep


def _history_epochs(run_dir) -> list[int]:
    return [int(row["epoch"]) for row in read_epoch_log(run_dir / "history.jsonl")]


def test_cli_train_prints_untrained_and_trained_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--steps-per-epoch", "2",
                     "--run-dir", str(run_dir), "--eval-every", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "untrained" in out and "trained" in out and "map@r" in out and "recall@1" in out
    assert (run_dir / "model.keras").is_file()
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
    assert _history_epochs(run_dir) == [0]


def test_training_improves_map_at_r_and_nmi_on_unseen_classes(tmp_path):
    # Synthetic: 10 training classes transfer to the 10 unseen ones (digits' 5 classes barely do).
    config = TrainConfig(dataset="synthetic", epochs=4, steps_per_epoch=15, eval_every=4, freeze_batchnorm=True,
                         hyperparameters={"loss": "facenet-triplet", "miner": "random"}, run_dir=str(tmp_path / "run"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLearningWarning)  # a run that learns does not warn
        result = train(config)
    before, after = result["metrics_untrained"], result["metrics"]
    assert after["map@r"] > before["map@r"] + 0.05, (before, after)
    assert after["nmi"] > before["nmi"], (before, after)
    history = read_epoch_log(tmp_path / "run" / "history.jsonl")  # random triplets: the loss falls
    assert history[-1]["loss"] < history[0]["loss"]
    assert "val_map@r" in history[-1]  # RetrievalEvaluation put its metrics in the epoch logs


def test_resume_continues_from_the_last_finished_epoch(tmp_path, monkeypatch):
    config = TrainConfig(dataset="digits", epochs=3, steps_per_epoch=2, eval_every=3, run_dir=str(tmp_path / "run"))
    monkeypatch.setattr(MetricModel, "training_callbacks", lambda self: [CrashAtStep(5)])
    with pytest.raises(KeyboardInterrupt):
        train(config)  # epochs 0 and 1 finished (4 steps), killed during epoch 2
    assert _history_epochs(tmp_path / "run") == [0, 1]
    with pytest.raises(FileExistsError, match="--resume"):
        train(config)  # a new run would silently overwrite the backup
    monkeypatch.setattr(MetricModel, "training_callbacks", lambda self: [])
    config.resume = True
    train(config)
    assert _history_epochs(tmp_path / "run") == [0, 1, 2]
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert int(model.optimizer.iterations) == 6  # 3 epochs x 2 steps: nothing repeated, nothing lost


def test_cli_reports_bad_names_clearly(capsys):
    assert cli.main(["train", "--dataset", "mnist", "--epochs", "1"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", "triplet_digitz"]) == 2
    assert "Did you mean 'triplet_digits'" in capsys.readouterr().err


def test_recall_ks_follow_the_benchmark_protocol():
    assert TrainConfig(dataset="digits").recall_ks == (1, 2, 4, 8)
    assert TrainConfig(dataset="sop").recall_ks == (1, 10, 100, 1000)
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = config_from_args(parser.parse_args(["--method", "triplet", "--dataset", "inshop"]))
    assert config.recall_ks == (1, 10, 20, 30, 40, 50)


def test_a_preset_alone_trains_on_its_own_dataset():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = config_from_args(parser.parse_args(["--preset", "triplet_digits"]))
    assert (config.dataset, config.epochs, config.learning_rate) == ("digits", 2, 3e-4)  # not glyphs, silently
    assert config_from_args(parser.parse_args(["--preset", "triplet_digits", "--dataset", "glyphs"])).dataset == "glyphs"
    assert config_from_args(parser.parse_args([])).dataset == "glyphs"  # the default job


def test_the_recorded_command_names_no_machines_path():
    from pathlib import Path

    from zoo.training import command_line

    assert command_line(["/home/me/.venv/bin/zoo", "train", "--publish", "a b"]) == "zoo train --publish 'a b'"
    script = str(Path.cwd() / "training_scripts" / "thsg.py")
    assert command_line([script, "--dataset", "digits"]) == "python training_scripts/thsg.py --dataset digits"
    assert command_line(["zoo", "train", "--run-dir", "/tmp/run", "--seed", "1", "--run-dir=/tmp/b"]) == "zoo train --seed 1"

