"""Python and command-line habits: python -m zoo, a light zoo --help, defaults in help, lazy submodules."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import cli
from zoo.names import METHOD_NAMES

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_python_m_zoo_help_lists_every_command_without_importing_tensorflow():
    done = subprocess.run([sys.executable, "-m", "zoo", "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for command in cli.HANDLERS:
        assert command in done.stdout
    loaded = run_python(
        "import sys\nfrom zoo import cli\n"
        "for argv in (['--help'], ['search', '--help'], ['index', '--help']):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'faiss') if m in sys.modules))"
    )
    assert loaded.strip().splitlines()[-1] == "[]"


def test_every_help_text_shows_its_default():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.help and action.default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
                assert f"(default: {action.default})" in text, (name, action.dest)
    assert "(default: 10)" in " ".join(commands["search"].format_help().split())


def test_method_choices_are_the_registered_methods(capsys):
    from zoo.methods import METHODS, METHOD_MODULES

    assert set(METHOD_NAMES) == set(METHODS) and METHOD_MODULES == METHOD_NAMES
    with pytest.raises(SystemExit):
        cli.main(["train", "--method", "tripplet"])
    error = capsys.readouterr().err
    assert "invalid choice: 'tripplet'" in error and all(name in error for name in METHOD_NAMES)


def test_submodules_are_reachable_from_import_zoo_and_loaded_lazily():
    out = run_python(
        "import sys, zoo\n"
        "print(sorted(m for m in ('zoo.metrics', 'zoo.data', 'zoo.losses', 'zoo.viz', 'tensorflow') if m in sys.modules))\n"
        "print(callable(zoo.metrics.evaluate), callable(zoo.data.preprocess_for_embedding), "
        "zoo.losses.TripletLoss.__name__, callable(zoo.viz.grid_image), zoo.Index.__module__, "
        "issubclass(zoo.WeightsError, ValueError), callable(zoo.build))"
    )
    before, after = out.strip().splitlines()[-2:]
    assert before == "[]"
    assert after == "True True TripletLoss True zoo.index True True"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import zoo

        zoo.nope


def test_keras_load_model_finds_the_zoo_classes_after_a_plain_import_zoo(tmp_path):
    from zoo.methods import build_model
    from zoo.optimizers import PaperAdam

    model = build_model("triplet", embedding_dim=8, input_size=32)
    model.compile(optimizer=PaperAdam(1e-3))  # a run's model.keras: the zoo's model, loss and optimizer classes
    model.save(tmp_path / "model.keras")
    load = f"load_model({str(tmp_path / 'model.keras')!r})"
    for imports, loader in (("import zoo\nimport keras", "keras.models"), ("import keras\nimport zoo", "keras.models"),
                            ("import zoo\nimport tensorflow as tf", "tf.keras.models")):
        out = run_python(f"{imports}\nmodel = {loader}.{load}\n"
                         "print(type(model).__name__, type(model.optimizer).__name__)")
        assert out.strip().splitlines()[-1] == "MetricModel PaperAdam", imports
