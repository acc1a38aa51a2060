"""The zoo and pytorch-metric-learning (PML) side by side: same data, network, batches and budget.

Both libraries train the same four-block CNN (``small_cnn``: 32-64-128-256 filters, BatchNorm, ReLU,
max-pool after the first three blocks, global average pooling, linear to D, L2 norm, per-channel
standardised inputs) from scratch on the same batches: every batch is drawn once by the zoo's P x K
pipeline (same sampler, same augmentation, same seed) and fed to both. Adam at the same rate, the same
number of steps. Retrieval on the unseen test classes is measured by ``zoo.metrics.evaluate`` (PML's
conventions) on the center-cropped test images. Reports MAP@R (and P@1) as mean +- population standard
deviation (ddof 0) over the seeds, and the training seconds per epoch of each library (the batches are prepared
before the clock starts).

Needs the optional peer environment: ``pip install -e ".[peer]"`` (CPU torch and pytorch-metric-learning).

    python benchmarks/peer/compare_training.py --dataset glyphs --seeds 0 1 2
    python benchmarks/peer/compare_training.py --dataset synthetic --losses triplet --seeds 0 --epochs 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import keras
from zoo import losses as zoo_losses
from zoo.backbones import build_embedding_net
from zoo.data import eval_pipeline, load_dataset, train_pipeline
from zoo.evaluation import embed_dataset
from zoo.methods import MetricModel
from zoo.metrics import evaluate


@dataclass(frozen=True)
class LossSetup:
    """One loss in both libraries: PML's loss (and miner) and the zoo loss with the same definition."""

    pml_loss: Callable[[], Any]
    pml_miner: Callable[[], Any] | None
    zoo_loss: Callable[[], zoo_losses.MetricLoss]


# The configurations measured beside PML in ../shared/MEASURED.md (margins as there).
LOSS_SETUPS: dict[str, LossSetup] = {
    "triplet": LossSetup(
        lambda: pml_losses.TripletMarginLoss(margin=0.2), None,
        lambda: zoo_losses.TripletLoss(margin=0.2),
    ),
    "contrastive": LossSetup(
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5), None,
        lambda: zoo_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5),
    ),
    "multi-similarity": LossSetup(
        pml_losses.MultiSimilarityLoss, pml_miners.MultiSimilarityMiner,
        lambda: zoo_losses.MultiSimilarityLoss(miner="multi-similarity"),
    ),
}

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the standardisation of zoo's small_cnn


class TorchSmallCNN(torch.nn.Module):
    """PML's side of ``small_cnn``: the same layers, torch's default initialisation."""

    def __init__(self, embedding_dim: int):
        super().__init__()
        blocks, width_in = [], 3
        for block, width in enumerate((32, 64, 128, 256)):
            blocks += [torch.nn.Conv2d(width_in, width, 3, padding=1, bias=False), torch.nn.BatchNorm2d(width),
                       torch.nn.ReLU()]
            if block < 3:
                blocks.append(torch.nn.MaxPool2d(2))
            width_in = width
        self.features = torch.nn.Sequential(*blocks)
        self.embedding = torch.nn.Linear(256, embedding_dim)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, S, S, 3) in [0, 255]
        x = (images.permute(0, 3, 1, 2) / 255.0 - self.mean) / self.std
        x = self.features(x).mean(dim=(2, 3))
        return torch.nn.functional.normalize(self.embedding(x), dim=1)


def train_pml(setup: LossSetup, batches: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray],
              embedding_dim: int, learning_rate: float, seed: int) -> tuple[dict[str, float], float]:
    torch.manual_seed(seed)
    model = TorchSmallCNN(embedding_dim)
    loss_fn, miner = setup.pml_loss(), setup.pml_miner() if setup.pml_miner else None
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    start = time.perf_counter()
    for images, labels in batches:
        images, labels = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
        embeddings = model(images)
        loss = loss_fn(embeddings, labels, miner(embeddings, labels) if miner else None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        embeddings = np.concatenate([model(torch.from_numpy(x)).numpy() for x in np.array_split(test[0], 16)])
    return retrieval(embeddings, test[1]), seconds


def train_zoo(setup: LossSetup, batches: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray],
              embedding_dim: int, learning_rate: float, seed: int, jit_compile: bool) -> tuple[dict[str, float], float]:
    keras.utils.set_random_seed(seed)
    image_size = batches[0][0].shape[1]
    model = MetricModel(build_embedding_net("small_cnn", embedding_dim, image_size, None), loss=setup.zoo_loss())
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    data = tf.data.Dataset.from_tensor_slices(
        (np.stack([x for x, _ in batches]), np.stack([y for _, y in batches]))
    ).prefetch(2)
    model.fit(data.take(1), verbose=0)  # trace the step outside the clock, as torch needs no tracing
    start = time.perf_counter()
    model.fit(data.skip(1), verbose=0)
    seconds = (time.perf_counter() - start) * len(batches) / (len(batches) - 1)
    embeddings = np.asarray(model.predict(test[0], batch_size=256, verbose=0))
    return retrieval(embeddings, test[1]), seconds


def retrieval(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return evaluate(embeddings, labels, metrics=("map@r", "precision"), precision_ks=(1,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="glyphs", help="a many-class dataset: glyphs or synthetic")
    parser.add_argument("--losses", nargs="+", default=list(LOSS_SETUPS), choices=list(LOSS_SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of len(train) / batch size steps")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--batch-classes", type=int, default=16)
    parser.add_argument("--batch-images", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augmentation", default="random_resized_crop")
    parser.add_argument("--jit-compile", action="store_true", help="compile the zoo's train step with XLA")
    args = parser.parse_args()

    train_set, test_set = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    batch_size = args.batch_classes * args.batch_images
    steps_per_epoch = len(train_set) // batch_size
    test_images, test_labels = (np.concatenate(a) for a in zip(*((x.numpy(), y.numpy()) for x, y in
                                                                 eval_pipeline(test_set, args.image_size, 256))))
    print(f"{args.dataset}: {train_set.num_classes} training classes ({len(train_set)} images), "
          f"{test_set.num_classes} unseen test classes ({len(test_set)} images); small_cnn {args.image_size} px, "
          f"{args.embedding_dim}-d, P{args.batch_classes} x K{args.batch_images}, Adam {args.lr:g}, "
          f"{args.epochs} epochs x {steps_per_epoch} steps, {args.augmentation}, seeds {args.seeds}")
    untrained = retrieval(embed_dataset(MetricModel(build_embedding_net("small_cnn", args.embedding_dim,
                                                                        args.image_size, None)),
                                        eval_pipeline(test_set, args.image_size, 256))[0], test_labels)
    pixels = retrieval(test_images.reshape(len(test_images), -1), test_labels)
    print(f"untrained small_cnn MAP@R {untrained['map@r']:.4f}; raw pixels MAP@R {pixels['map@r']:.4f}")

    rows = []
    for name in args.losses:
        results: dict[str, list[tuple[dict[str, float], float]]] = {"PML": [], "zoo": []}
        for seed in args.seeds:
            stream = train_pipeline(train_set, args.image_size, args.batch_classes, args.batch_images, seed=seed,
                                    augmentation=args.augmentation)
            batches = [(x.numpy(), y.numpy()) for x, y in stream.take(args.epochs * steps_per_epoch)]
            results["PML"].append(train_pml(LOSS_SETUPS[name], batches, (test_images, test_labels),
                                            args.embedding_dim, args.lr, seed))
            results["zoo"].append(train_zoo(LOSS_SETUPS[name], batches, (test_images, test_labels),
                                            args.embedding_dim, args.lr, seed, args.jit_compile))
            print(f"{name} seed {seed}: " + ", ".join(
                f"{lib} MAP@R {r[-1][0]['map@r']:.4f} ({r[-1][1] / args.epochs:.1f} s/epoch)" for lib, r in results.items()))
        rows.append((name, results))

    print("\n| loss | library | MAP@R | P@1 | s / epoch |\n|---|---|--:|--:|--:|")
    for name, results in rows:
        for lib, runs in results.items():
            map_r = np.array([m["map@r"] for m, _ in runs])
            p1 = np.array([m["precision@1"] for m, _ in runs])
            seconds = np.array([s for _, s in runs]) / args.epochs
            print(f"| {name} | {lib} | {map_r.mean():.3f} +- {map_r.std():.3f} | {p1.mean():.3f} | {seconds.mean():.1f} |")


if __name__ == "__main__":
    main()
