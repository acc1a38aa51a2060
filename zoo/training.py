"""The one training loop behind ``zoo train`` and every script in ``training_scripts/``.

``train(config)`` loads the data, builds the method's model inside the chosen ``tf.distribute``
strategy, measures the untrained model, fits with a retrieval evaluation every few epochs,
TensorBoard logs and a backup every epoch (``resume=True`` continues from the last finished
epoch after a kill), and optionally publishes the weights with their measured card into
``pretrained/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from zoo import registry
from zoo.callbacks import EpochLog, RetrievalEvaluation, embed_for_retrieval
from zoo.data import ImageSet, eval_pipeline, load_dataset
from zoo.methods import build_model
from zoo.metrics import evaluate
from zoo.optimizers import PaperAdam

STRATEGIES = ("default", "mirrored", "multiworker")
# Recall@K reported by the papers per benchmark (CUB/Cars: 1, 2, 4, 8; SOP: powers of 10; In-Shop: 1-50).
RECALL_KS = {"sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30, 40, 50)}
DEFAULT_RECALL_KS = (1, 2, 4, 8)


@dataclass
class TrainConfig:
    """Everything one training run needs; presets in the registry fill it for the papers' protocols."""

    method: str = "triplet"
    dataset: str = "digits"
    data_dir: str | None = None
    backbone: str = "tiny_cnn"
    backbone_weights: str | None = "default"
    freeze_batchnorm: bool = False
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
    command: str | None = None

    def __post_init__(self) -> None:
        if self.recall_ks is None:
            self.recall_ks = RECALL_KS.get(self.dataset, DEFAULT_RECALL_KS)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        for name in ("epochs", "classes_per_batch", "images_per_class", "eval_every", "embedding_dim", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs) or ``multiworker`` (reads ``TF_CONFIG``)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def evaluation_sets(config: TrainConfig) -> tuple[ImageSet, ImageSet | None]:
    """The held-out queries and, for query/gallery benchmarks (In-Shop), the gallery."""
    if config.dataset == "inshop":
        return (load_dataset("inshop", "query", config.data_dir), load_dataset("inshop", "gallery", config.data_dir))
    return load_dataset(config.dataset, "test", config.data_dir), None


def measure(model: keras.Model, queries: ImageSet, gallery: ImageSet | None, config: TrainConfig) -> dict[str, float]:
    """All retrieval metrics of ``model`` on the evaluation split(s)."""
    query_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    embeddings, labels, reference = embed_for_retrieval(model, query_data, gallery_data)
    return evaluate(embeddings, labels, **reference, recall_ks=config.recall_ks, precision_ks=config.precision_ks,
                    seed=config.seed)


def evaluation_pipelines(
    queries: ImageSet, gallery: ImageSet | None, config: TrainConfig
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The center-cropped batches of the queries and, if any, of the gallery."""
    gallery_data = None if gallery is None else eval_pipeline(gallery, config.input_size, config.eval_batch_size)
    return eval_pipeline(queries, config.input_size, config.eval_batch_size), gallery_data


def build_and_compile(config: TrainConfig, num_classes: int) -> keras.Model:
    """The method's model and F's Adam optimizer (call inside the strategy's scope)."""
    model = build_model(
        config.method,
        backbone=config.backbone,
        embedding_dim=config.embedding_dim,
        input_size=config.input_size,
        backbone_weights=config.backbone_weights,
        freeze_batchnorm=config.freeze_batchnorm,
        num_classes=num_classes,
        **config.hyperparameters,
    )
    model.compile(optimizer=PaperAdam(config.learning_rate, weight_decay=config.weight_decay, **config.optimizer))
    return model


def train(config: TrainConfig) -> dict[str, Any]:
    """Train one model as ``config`` says; returns ``{"metrics", "metrics_untrained", "run_dir"}``."""
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    train_set = load_dataset(config.dataset, "train", config.data_dir)
    queries, gallery = evaluation_sets(config)
    with make_strategy(config.strategy).scope():
        model = build_and_compile(config, train_set.num_classes)

    untrained_path = run_dir / "metrics_untrained.json"
    if config.resume and untrained_path.exists():
        untrained = json.loads(untrained_path.read_text())
    else:
        untrained = measure(model, queries, gallery, config)
        untrained_path.write_text(json.dumps(untrained, indent=2))

    batch_size = config.classes_per_batch * config.images_per_class
    train_data = model.make_train_dataset(
        train_set, config.input_size, config.classes_per_batch, config.images_per_class, seed=config.seed,
        augmentation=config.augmentation, crop_scale=tuple(config.crop_scale),
    )
    eval_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    callbacks = [
        *model.training_callbacks(),
        RetrievalEvaluation(eval_data, every_n_epochs=config.eval_every, log_dir=str(run_dir / "logs"), log_images=True,
                            reference_dataset=gallery_data, recall_ks=config.recall_ks,
                            precision_ks=config.precision_ks),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        EpochLog(str(run_dir / "history.jsonl")),
    ]
    if not config.resume and (run_dir / "backup").exists():
        raise FileExistsError(
            f"{run_dir} already holds a training backup: pass resume=True (--resume) to continue it, "
            "or choose another run_dir"
        )
    if not config.resume:
        (run_dir / "history.jsonl").unlink(missing_ok=True)
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch or train_set.steps_per_epoch(batch_size),
        callbacks=callbacks,
        verbose=2 if not sys.stdout.isatty() else 1,
    )
    metrics = measure(model, queries, gallery, config)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    model.save(run_dir / "model.keras")
    if config.publish_as:
        registry.publish(config.publish_as, model, metrics, untrained, command=config.command)
    return {"metrics": metrics, "metrics_untrained": untrained, "run_dir": str(run_dir)}


# ---- presets and command lines ---------------------------------------------------------------
_PRESET_FIELDS = ("method", "dataset", "backbone", "backbone_weights", "freeze_batchnorm", "embedding_dim", "input_size")


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
    """The training flags shared by ``zoo train`` and the training scripts (None = keep the preset's)."""
    if method is None:
        parser.add_argument("--method", default="triplet", help="training method (see `zoo list`)")
    parser.add_argument("--dataset", default="digits", help="digits, synthetic, cub200, cars196, sop, inshop")
    parser.add_argument("--data-dir", help="folder holding the benchmark's official files")
    parser.add_argument("--preset", help="registry entry to start from (default: <method>_<dataset> if it exists)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--loss", help="metric loss of the baseline (triplet, contrastive, margin, ...)")
    parser.add_argument("--miner", help="random, semi-hard, soft-hard, hard, distance-weighted")
    parser.add_argument("--backbone", help="tiny_cnn, resnet50, inception_v3")
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
    parser.add_argument("--publish", dest="publish_as", help="write pretrained/<NAME>.weights.h5 and its card")


def config_from_args(args: argparse.Namespace, *, method: str | None = None) -> TrainConfig:
    """Preset (``--preset`` or ``<method>_<dataset>``) overridden by the flags that were given."""
    method = method or args.method
    preset = args.preset or f"{method}_{args.dataset}"
    has_preset = preset in registry.list_models()
    if args.preset and not has_preset:
        registry.get_entry(args.preset)  # raises with close-name suggestions
    config = config_from_preset(preset) if has_preset else TrainConfig(method=method, run_dir=f"runs/{preset}")
    overrides: dict[str, Any] = {"dataset": args.dataset, "command": " ".join(map(shlex.quote, sys.argv))}
    if args.dataset != config.dataset:
        overrides["recall_ks"] = None  # the new dataset's usual Ks
    for name in ("data_dir", "epochs", "steps_per_epoch", "backbone", "embedding_dim", "input_size",
                 "classes_per_batch", "images_per_class", "augmentation", "learning_rate", "eval_every", "run_dir", "seed",
                 "strategy", "publish_as"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if args.backbone_weights is not None:
        overrides["backbone_weights"] = None if args.backbone_weights.lower() == "none" else args.backbone_weights
    overrides["resume"] = args.resume
    overrides["mixed_precision"] = args.mixed_precision or config.mixed_precision
    hyperparameters = dict(config.hyperparameters)
    for name in ("loss", "miner"):
        if getattr(args, name, None) is not None:
            hyperparameters[name] = getattr(args, name)
    overrides["hyperparameters"] = hyperparameters
    return dataclasses.replace(config, **overrides)
