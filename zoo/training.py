"""The one training loop behind ``zoo train`` and every script in ``training_scripts/``.

``train(config)`` loads the data, builds the method's model inside the chosen ``tf.distribute``
strategy, measures the untrained model, fits with a retrieval evaluation every few epochs,
TensorBoard logs and a backup every epoch (``resume=True`` continues from the last finished
epoch after a kill), and optionally publishes the weights with their measured card into
``zoo/pretrained/``.

What a run keeps when it is killed or fails:

- the run folder is locked while it trains (``lock``, holding the pid): a second run into it is
  refused at once; a lock whose process is gone is taken over;
- before writing anything, a new run refuses a folder that holds a run, and a resumed run refuses
  a configuration that differs from the run's ``config.json`` (the message names the fields);
- ``backup/`` keeps the two newest epoch backups (:class:`zoo.callbacks.TrainingBackup`, written
  atomically: a kill while writing loses nothing; an unreadable backup falls back to the older one);
- a resumed run continues the batch stream at the step it stopped (the pipelines' ``first_step``),
  so it ends where the uninterrupted run ends;
- at the first NaN or infinite loss training stops (:class:`zoo.monitor.TrainingDiverged`) with the
  backup of the last finite epoch kept; nothing non-finite is backed up or published, and a model whose
  MAP@R is below the untrained model's is published only with ``force`` (``--force``);
- a run whose held-out MAP@R ends less than 0.01 above the untrained model's warns
  (:class:`zoo.monitor.NoLearningWarning`): it trained without learning;
- under ``MultiWorkerMirroredStrategy`` only the chief (:func:`is_chief`) locks and writes the run folder and
  publishes; the other workers write into temporary folders (Keras's convention) and resume from the chief's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import tensorflow as tf

from zoo import efficientnet_lite, registry
from zoo.backbones import build_feature_net, resolved_weights
from zoo.callbacks import EpochLog, RetrievalEvaluation, TrainingBackup, read_epoch_log, weights_are_finite
from zoo.cli import metrics_table
from zoo.data import DATASETS, load_dataset
from zoo.evaluation import evaluation_pipelines, evaluation_sets, measure, own_references, raw_pixel_model
from zoo.methods import build_model, check_hyperparameters
from zoo.names import METHOD_NAMES
from zoo.monitor import TrainingDiverged, warn_if_not_learned
from zoo.optimizers import PaperAdam

STRATEGIES = ("default", "mirrored", "multiworker")
# Recall@K reported by the papers per benchmark (CUB/Cars: 1, 2, 4, 8; SOP: powers of 10; In-Shop: 1-50).
RECALL_KS = {"sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30, 40, 50)}
DEFAULT_RECALL_KS = (1, 2, 4, 8)
# What a run folder holds once a run has started in it.
RUN_FILES = ("config.json", "metrics_untrained.json", "metrics_raw_pixels.json", "history.jsonl", "backup")
# TrainConfig fields a resumed run may change: they change neither the model nor its training (run_dir: where the
# run folder is now, after a copy or a move).
RESUMABLE_FIELDS = ("epochs", "resume", "command", "publish_as", "force", "data_dir", "eval_every", "eval_batch_size",
                    "run_dir")


@dataclass
class TrainConfig:
    """Everything one training run needs; presets in the registry fill it for the papers' protocols."""

    method: str = "triplet"
    dataset: str = "glyphs"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the loader's options (zoo.data.load_dataset)
    backbone: str = "tiny_cnn"
    backbone_weights: str | None = "default"
    freeze_batchnorm: bool = False
    train_blocks: int | None = None  # EfficientNet-Lite: only its last N blocks train (0: the embedding layer only)
    embedding_dim: int = 64
    input_size: int = 32
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    epochs: int = 15
    steps_per_epoch: int | None = None
    classes_per_batch: int = 5
    images_per_class: int = 16
    augmentation: str = "resize_crop"  # or "random_resized_crop" (zoo.data.pipeline.AUGMENTATIONS)
    crop_scale: tuple[float, float] = (0.16, 1.0)
    learning_rate: float = 1e-3
    weight_decay: float | None = None  # Keras's decoupled decay (AdamW)
    optimizer: dict[str, Any] = field(default_factory=dict)  # more PaperAdam options: l2_weight_decay, beta_2, ...
    eval_every: int = 5
    eval_batch_size: int = 128
    recall_ks: tuple[int, ...] | None = None  # None: the dataset's usual Ks (RECALL_KS)
    precision_ks: tuple[int, ...] = (1, 3, 5, 10)
    run_dir: str = "runs/default"
    resume: bool = False
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    publish_as: str | None = None
    force: bool = False  # publish even when MAP@R is below the untrained model's
    command: str | None = None
    measure_raw_pixels: bool = True  # the raw-pixel baseline of the evaluation set (off in benchmarks: the same per run)
    measure_zero_shot: bool = True  # an ImageNet backbone's features without training (off in benchmarks: the same)

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHOD_NAMES)}")
        check_hyperparameters(self.method, self.hyperparameters)  # before a run folder is written
        if self.recall_ks is None:
            self.recall_ks = RECALL_KS.get(self.dataset, DEFAULT_RECALL_KS)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        for name in ("epochs", "classes_per_batch", "images_per_class", "eval_every", "embedding_dim", "input_size",
                     "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate (--lr) must be a positive number, got {self.learning_rate}")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0 (None: none), got {self.weight_decay}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {tuple(self.crop_scale)}")
        if any(k < 1 for k in (*self.recall_ks, *self.precision_ks)):
            raise ValueError(f"recall_ks and precision_ks must be >= 1, got {self.recall_ks} and {self.precision_ks}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 (None: one pass over the set), got {self.steps_per_epoch}")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs) or ``multiworker`` (reads ``TF_CONFIG``)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def build_and_compile(config: TrainConfig, num_classes: int) -> keras.Model:
    """The method's model and F's Adam optimizer (call inside the strategy's scope)."""
    model = build_model(
        config.method,
        backbone=config.backbone,
        embedding_dim=config.embedding_dim,
        input_size=config.input_size,
        backbone_weights=config.backbone_weights,
        freeze_batchnorm=config.freeze_batchnorm,
        train_blocks=config.train_blocks,
        num_classes=num_classes,
        **config.hyperparameters,
    )
    model.compile(optimizer=PaperAdam(config.learning_rate, weight_decay=config.weight_decay, **config.optimizer))
    return model


class RunFolderLocked(FileExistsError):
    """Another live process trains into the run folder."""


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/lock`` (it holds this process's pid) for the block; creates ``run_dir``.

    Raises:
        RunFolderLocked: the lock is held by a process that is still running. A lock whose
            process is gone (a killed run) is taken over. A folder this call created is removed
            again if the block leaves it empty.
    """
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / "lock"
    with tempfile.NamedTemporaryFile("w", dir=run_dir, prefix=".lock-", delete=False) as stream:
        stream.write(f"{os.getpid()}\n")
    try:
        while True:
            try:
                os.link(stream.name, lock)  # atomic: fails when a lock exists, never leaves a half-written one
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None and _process_is_running(holder):
                    raise RunFolderLocked(
                        f"{run_dir} is in use by another zoo train (pid {holder}, lock file {lock}): wait for it "
                        "to finish or choose another --run-dir"
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
    finally:
        os.unlink(stream.name)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _lock_holder(lock: Path) -> int | None:
    """The pid written in a lock file (None when it is unreadable or gone)."""
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_is_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_run_folder(config: TrainConfig, run_dir: Path) -> None:
    """Refuse, before anything is written, a new run into a used folder or a resume with other settings.

    Raises:
        FileExistsError: ``run_dir`` holds a run and ``config.resume`` is False.
        ValueError: ``config`` differs from the run's ``config.json`` in a field outside
            :data:`RESUMABLE_FIELDS` (the message names each difference), or that file is unreadable.
    """
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not config.resume:
        if existing:
            raise FileExistsError(
                f"{run_dir} already holds a run ({', '.join(existing)}): pass resume=True (--resume) to continue "
                "it, or choose another run_dir"
            )
        return
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        return
    saved = read_json(saved_path, "the run's configuration")
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    differences = [
        f"{name}: {saved[name]!r} in the run, {value!r} now"
        for name, value in current.items()
        if name not in RESUMABLE_FIELDS and name in saved and saved[name] != value
    ]
    if differences:
        raise ValueError(
            f"cannot resume {run_dir} with another configuration than the one it was started with ({saved_path}): "
            + "; ".join(differences)
            + f". Resume with the run's settings (it was started by: {saved.get('command')}) or choose another run_dir"
        )


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` it holds, for the error).

    Raises:
        ValueError: the file cannot be read or holds no JSON object; the message names it.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {what} {path}: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"cannot read {what} {path}: it holds a {type(value).__name__}, not a JSON object")
    return value


def check_publishable(model: keras.Model, metrics: dict[str, float], untrained: dict[str, float], force: bool) -> None:
    """Refuse to publish a non-finite model, or one below the untrained model's MAP@R unless ``force``."""
    if not weights_are_finite(model) or not math.isfinite(metrics["map@r"]):
        raise ValueError("not publishing: the model's weights or metrics are not finite")
    if metrics["map@r"] < untrained["map@r"] and not force:
        raise ValueError(
            f"not publishing: the trained model's MAP@R {metrics['map@r']:.4f} is below the untrained model's "
            f"{untrained['map@r']:.4f}; pass force=True (--force) to publish it anyway"
        )


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)`` then rename it to ``path``: a kill never leaves ``path`` half written."""
    partial = path.with_name(f"partial-{path.name}")
    write(partial)
    os.replace(partial, path)


def _write_json(path: Path, data: Any) -> None:
    _write_atomically(path, lambda partial: partial.write_text(json.dumps(data, indent=2)))


# TrainConfig fields that say where and how a run is kept, not how the weights were trained.
_RUN_FIELDS = ("data_dir", "run_dir", "resume", "publish_as", "force", "command", "measure_raw_pixels",
               "measure_zero_shot")


def training_record(config: TrainConfig) -> dict[str, Any]:
    """The resolved training configuration a published card records (every field that shapes the weights)."""
    return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k not in _RUN_FIELDS}))


def train(config: TrainConfig) -> dict[str, Any]:
    """Train one model as ``config`` says; returns ``{"metrics", "metrics_untrained", "metrics_raw_pixels",
    "metrics_zero_shot", "run_dir"}`` (zero-shot: the backbone's pooled ImageNet features, None without them).

    Raises:
        RunFolderLocked: another process trains into ``config.run_dir``.
        FileExistsError, ValueError: the run folder or configuration is refused (:func:`check_run_folder`),
            no backup can be read, or publishing is refused (:func:`check_publishable`).
        TrainingDiverged: the loss became NaN or infinite.
    """
    run_dir = Path(config.run_dir)
    strategy = make_strategy(config.strategy)  # first: a multi-worker cluster is set up before any other op
    if not is_chief(strategy):  # Keras's convention: another worker writes into a folder of its own, deleted after
        if config.resume:
            check_run_folder(config, run_dir)  # reads only: the chief locks and writes the run folder
        with tempfile.TemporaryDirectory(prefix="zoo-worker-") as scratch:
            return {**_train_in(Path(scratch), config, strategy, read_dir=run_dir), "run_dir": str(run_dir)}
    with run_folder_lock(run_dir):
        check_run_folder(config, run_dir)
        return _train_in(run_dir, config, strategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: always on one machine; in a cluster, its chief, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def _train_in(run_dir: Path, config: TrainConfig, strategy: tf.distribute.Strategy,
              read_dir: Path | None = None) -> dict[str, Any]:
    """The run, written into ``run_dir``; a resumed one read from ``read_dir`` (the chief's run folder, for the
    other workers of a cluster; None: ``run_dir``). Only the process that writes the run folder publishes."""
    chief, read_dir = read_dir is None, read_dir or run_dir
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(config.seed)
    train_set = load_dataset(config.dataset, "train", config.data_dir, **config.dataset_options)
    queries, gallery = evaluation_sets(config)
    _write_json(run_dir / "config.json", dataclasses.asdict(config))
    with strategy.scope():
        model = build_and_compile(config, train_set.num_classes)

    baselines = {}  # measured once per run, kept for a resumed run
    measured = [("untrained", model)]
    if config.measure_raw_pixels:
        measured.append(("raw_pixels", raw_pixel_model(config.input_size)))
    if config.measure_zero_shot and resolved_weights(config.backbone, config.backbone_weights) == "imagenet":  # what the ImageNet features give without training
        measured.append(("zero_shot", build_feature_net(config.backbone, config.input_size, "imagenet")))
    for name, baseline in measured:
        path = read_dir / f"metrics_{name}.json"
        if config.resume and path.exists():
            baselines[name] = read_json(path, f"the run's {name} metrics")
        else:
            baselines[name] = measure(baseline, queries, gallery, config)
        _write_json(run_dir / path.name, baselines[name])
    untrained = baselines["untrained"]

    backup = TrainingBackup(run_dir / "backup")
    initial_epoch = 0
    if config.resume:
        with model.distribute_strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            initial_epoch = TrainingBackup(read_dir / "backup").restore(model)
    history_path, read_history = run_dir / "history.jsonl", read_dir / "history.jsonl"
    kept = [row for row in read_epoch_log(read_history) if row["epoch"] < initial_epoch] if read_history.exists() else []
    _write_atomically(history_path, lambda partial: partial.write_text("".join(json.dumps(row) + "\n" for row in kept)))

    batch_size = model.train_batch_size(config.classes_per_batch, config.images_per_class)
    train_data = model.make_train_dataset(
        train_set, config.input_size, config.classes_per_batch, config.images_per_class, seed=config.seed,
        augmentation=config.augmentation, crop_scale=tuple(config.crop_scale),
    )
    eval_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    evaluation = RetrievalEvaluation(eval_data, every_n_epochs=config.eval_every, log_dir=str(run_dir / "logs"),
                                     log_images=True, reference_dataset=gallery_data, recall_ks=config.recall_ks,
                                     precision_ks=config.precision_ks, seed=config.seed,
                                     own_reference=own_references(queries, gallery))
    callbacks = [
        *model.training_callbacks(),
        evaluation,
        EpochLog(str(history_path)),
        backup,
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
    ]
    steps = train_set.steps_per_epoch(batch_size) if config.steps_per_epoch is None else config.steps_per_epoch
    try:
        model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                  callbacks=callbacks, verbose=2 if not sys.stdout.isatty() else 1)
    except TrainingDiverged as error:
        backups = backup.backups()
        kept_state = f"{backups[0]} keeps the last finite state" if backups else "no epoch had finished"
        raise TrainingDiverged(f"{error} {kept_state}; nothing else was saved or published") from None
    last = evaluation.history[-1] if evaluation.history else None  # the callback measured the final weights
    metrics = last["metrics"] if last and last["epoch"] == config.epochs - 1 else measure(model, queries, gallery, config)
    _write_json(run_dir / "metrics.json", metrics)
    warn_if_not_learned(metrics["map@r"], untrained["map@r"])
    _write_atomically(run_dir / "model.keras", model.save)
    if config.publish_as and chief:
        check_publishable(model, metrics, untrained, config.force)
        registry.publish(config.publish_as, model, metrics, untrained, command=config.command,
                         trained_with=training_record(config))
    return {"metrics": metrics, "metrics_untrained": untrained, "metrics_raw_pixels": baselines.get("raw_pixels"),
            "metrics_zero_shot": baselines.get("zero_shot"), "run_dir": str(run_dir)}


def measure_published(name: str) -> dict[str, dict[str, float]]:
    """The ``metrics`` and ``metrics_untrained`` of published entry ``name``, measured now by the current code.

    The untrained model is the one :func:`train` measured: the preset's configuration built right after the
    same seed and data loading, before anything else draws random numbers (the published weights' model too).
    """
    config = config_from_preset(name)
    keras.utils.set_random_seed(config.seed)
    train_set = load_dataset(config.dataset, "train", config.data_dir, **config.dataset_options)
    queries, gallery = evaluation_sets(config)
    untrained = build_and_compile(config, train_set.num_classes)
    return {"metrics": measure(registry.load(name), queries, gallery, config),
            "metrics_untrained": measure(untrained, queries, gallery, config)}


def remeasure_published(name: str) -> dict[str, dict[str, float]]:
    """Measure published entry ``name`` again with the current evaluation code, its weights unchanged, and rewrite
    the metrics of its card (after a change to ``zoo.metrics``); returns :func:`measure_published`'s metrics."""
    measured = measure_published(name)
    card_file = registry.card_path(name)
    card = json.loads(card_file.read_text())
    card.update({key: {k: round(float(v), 4) for k, v in values.items()} for key, values in measured.items()})
    _write_atomically(card_file, lambda partial: partial.write_text(json.dumps(card, indent=2) + "\n"))
    return measured


# ---- presets and command lines ---------------------------------------------------------------
_PRESET_FIELDS = ("method", "dataset", "backbone", "backbone_weights", "freeze_batchnorm", "train_blocks", "embedding_dim",
                  "input_size")


def config_from_preset(name: str, **overrides: Any) -> TrainConfig:
    """A TrainConfig reproducing registry entry ``name`` (its ``training`` block included)."""
    entry = registry.get_entry(name)
    values: dict[str, Any] = {key: entry[key] for key in _PRESET_FIELDS if key in entry}
    values["hyperparameters"] = dict(entry.get("hyperparameters", {}))
    values.update(entry.get("training", {}))
    values["run_dir"] = f"runs/{name}"
    values.update(overrides)
    return TrainConfig(**values)


def add_train_arguments(parser: argparse.ArgumentParser, *, method: str | None = None) -> None:
    """The training flags shared by ``zoo train`` and the training scripts (None = keep the preset's); a script
    passes its ``method``, which replaces the ``--method`` flag."""
    if method is None:
        parser.add_argument("--method", default="triplet", choices=METHOD_NAMES, help="training method")
    else:
        parser.set_defaults(method=method)
    parser.add_argument("--dataset", help=f"training and test data: {', '.join(DATASETS)} (default: the preset's, "
                        "else glyphs)")
    parser.add_argument("--data-dir", help="folder holding the benchmark's official files; for folder: your images")
    parser.add_argument("--preset", help="registry entry to start from (default: <method>_<dataset> if it exists)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--loss", help="metric loss of the baseline: triplet (default: PML's, all triplets), "
                        "contrastive, multi-similarity, margin, circle, supcon, proxy-anchor, ... (zoo.losses.LOSSES)")
    parser.add_argument("--miner", help="all (default: every pair/triplet), multi-similarity, random, semi-hard "
                        "(collapses from scratch), soft-hard, hard, distance-weighted")
    parser.add_argument("--backbone", help="small_cnn, tiny_cnn, efficientnet_lite0/1/2 (ImageNet weights from pip), "
                        "resnet50, inception_v3")
    parser.add_argument("--train-blocks", type=int, help="EfficientNet-Lite: train only its last N blocks "
                        "(0: the embedding layer on frozen ImageNet features)")
    parser.add_argument("--backbone-weights", help="'imagenet', 'none' or a local weights file")
    parser.add_argument("--embedding-dim", type=int)
    parser.add_argument("--image-size", type=int, dest="input_size")
    parser.add_argument("--batch-classes", type=int, dest="classes_per_batch", help="P classes per batch")
    parser.add_argument("--batch-images", type=int, dest="images_per_class", help="K images per class")
    parser.add_argument("--augmentation", choices=("resize_crop", "random_resized_crop"),
                        help="training crops: resize 256/224 + random crop, or random resized crop")
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--run-dir")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last finished epoch")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--strategy", choices=STRATEGIES)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--publish", dest="publish_as", help="write zoo/pretrained/<NAME>.weights.h5 and its card")
    parser.add_argument("--force", action="store_true",
                        help="with --publish: publish even when MAP@R is below the untrained model's")


def command_line(argv: list[str]) -> str:
    """The command as a user would type it again: the console script by name, a script relative to the current
    folder, without ``--run-dir`` (where a run is kept does not shape its weights; no machine's path in a card)."""
    program = Path(argv[0])
    if program.name in ("zoo", "__main__.py"):
        program = Path("zoo")
    elif program.is_absolute() and program.is_relative_to(Path.cwd()):
        program = program.relative_to(Path.cwd())
    words = ["python", str(program)] if program.suffix == ".py" else [str(program)]
    arguments, words_left = [], iter(argv[1:])
    for word in words_left:
        if word == "--run-dir":
            next(words_left, None)  # and its value
        elif not word.startswith("--run-dir="):
            arguments.append(word)
    return " ".join(map(shlex.quote, [*words, *arguments]))


# Datasets of real images: without --backbone they train from ImageNet (the <method>_lite0_icons protocol).
REAL_IMAGE_DATASETS = ("folder", "icons")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Preset overridden by the flags that were given. The preset: ``--preset``; for an EfficientNet-Lite
    ``--backbone`` or a real-image dataset (your ``folder``, ``icons``) the ImageNet protocol ``<method>_lite0_icons``;
    else ``<method>_<dataset>``."""
    method = args.method
    named = args.dataset or TrainConfig.dataset
    imagenet = args.backbone in efficientnet_lite.VARIANTS or (args.backbone is None and named in REAL_IMAGE_DATASETS)
    preset = args.preset or (f"{method}_lite0_icons" if imagenet else f"{method}_{named}")
    has_preset = preset in registry.list_models()
    if args.preset and not has_preset:
        registry.get_entry(args.preset)  # raises with close-name suggestions
    config = config_from_preset(preset) if has_preset else TrainConfig(method=method, run_dir=f"runs/{preset}")
    dataset = config.dataset if args.preset and not args.dataset else named  # --preset alone: the preset's dataset
    overrides: dict[str, Any] = {"dataset": dataset, "command": command_line(sys.argv)}
    if dataset != config.dataset:
        overrides["recall_ks"] = None  # the new dataset's usual Ks
        overrides["run_dir"] = f"runs/{method}_{dataset}"
    for name in ("data_dir", "epochs", "steps_per_epoch", "backbone", "train_blocks", "embedding_dim", "input_size",
                 "classes_per_batch", "images_per_class", "augmentation", "learning_rate", "eval_every", "run_dir", "seed",
                 "strategy", "publish_as"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if args.backbone_weights is not None:
        overrides["backbone_weights"] = None if args.backbone_weights.lower() == "none" else args.backbone_weights
    overrides["resume"] = args.resume
    overrides["force"] = args.force
    overrides["mixed_precision"] = args.mixed_precision or config.mixed_precision
    hyperparameters = dict(config.hyperparameters)
    if args.loss is not None and args.miner is None:
        hyperparameters.pop("miner", None)  # the preset's miner belongs to the preset's loss
    for name in ("loss", "miner"):
        if getattr(args, name, None) is not None:
            hyperparameters[name] = getattr(args, name)
    overrides["hyperparameters"] = hyperparameters
    return dataclasses.replace(config, **overrides)


def script_parser(method: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``training_scripts/<method>.py``: the script's docstring as its help, the training flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, method=method)
    return parser


def run_script(
    parser: argparse.ArgumentParser, *, hyperparameters: Sequence[str] = (), refused: Sequence[str] = (),
    refusal: str = "",
) -> tuple[TrainConfig, dict[str, Any]]:
    """A training script's run: parse its flags, train, print the untrained and trained metrics.

    Args:
        parser: :func:`script_parser`'s, with the script's own flags added.
        hyperparameters: the script's flags that, when given, set the method hyperparameter of their name.
        refused: flags (``"loss"``, ``"miner"``) the method does not take; giving one exits with ``refusal``.

    Returns:
        The configuration trained and :func:`train`'s result.
    """
    args = parser.parse_args()
    if any(getattr(args, name) is not None for name in refused):
        parser.error(refusal)
    config = config_from_args(args)
    config.hyperparameters.update({name: getattr(args, name) for name in hyperparameters
                                   if getattr(args, name) is not None})
    result = train(config)
    print(metrics_table({"untrained": result["metrics_untrained"], "trained": result["metrics"]}))
    return config, result
