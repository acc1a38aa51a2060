"""Pre-train a CPU backbone on classes disjoint from every benchmark's: the zoo's offline stand-in for ImageNet.

The papers fine-tune ImageNet-pretrained backbones, which cannot be downloaded here. This script trains
``small_cnn`` with the baseline loss (PML's triplet margin loss over all batch triplets) on the ``pretrain``
split of glyphs (scripts and symbols that are in neither its train nor its test split), reports the
retrieval on glyphs' unseen test classes before and after, and writes the backbone's weights (the layers up
to the global pooling) with their sha256, to be registered in ``zoo.backbones.PRETRAINED_BACKBONES``:

    python training_scripts/pretrain_backbone.py --out zoo/pretrained/backbones/small_cnn_glyphs.weights.h5
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import keras

from zoo.backbones import backbone_part, build_embedding_net
from zoo.data import eval_pipeline, load_dataset
from zoo.evaluation import embed_dataset
from zoo.methods import MetricModel
from zoo.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--split", default="pretrain", help="classes of neither the train nor the test split")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the backbone weights file (.weights.h5)")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    pretrain, test = load_dataset(args.dataset, args.split), load_dataset(args.dataset, "test")
    model = MetricModel(build_embedding_net(args.backbone, args.embedding_dim, args.image_size, None))
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    test_data = eval_pipeline(test, args.image_size, 256)

    def test_map_r() -> float:
        return evaluate(*embed_dataset(model, test_data), metrics=("map@r",))["map@r"]

    before = test_map_r()
    model.fit(model.make_train_dataset(pretrain, args.image_size, 16, 4, seed=args.seed, augmentation="resize_crop"),
              steps_per_epoch=args.steps, epochs=1, callbacks=model.training_callbacks(), verbose=2)
    print(f"{args.dataset} test MAP@R with the backbone trained on {pretrain.num_classes} {args.split} classes: "
          f"{before:.4f} -> {test_map_r():.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone_part(model.embedding_net).save_weights(out)
    print(f"wrote {out}, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
