"""Train THSG, two-stage hard sample generation (papers/000), with the paper's protocols.

    python training_scripts/thsg.py --dataset digits                        # quick CPU check (thsg_digits)
    python training_scripts/thsg.py --dataset cub200 --data-dir DATA        # Sec. 6.2: InceptionV3, 512-d, 227 px
    python training_scripts/thsg.py --dataset cars196 --data-dir DATA --preset thsg_cars196_resnet50 \\
        --miner distance-weighted                                           # Sec. 6.5: THSG(D), ResNet50, 128-d
    python training_scripts/thsg.py --dataset sop --data-dir DATA --epochs 100

``--miner`` picks the triplets of L_org (random = THSG; semi-hard, soft-hard, distance-weighted =
THSG(Semi/Soft/D), eq. 25). The Table 2 hyperparameters come with each dataset's preset.
"""

import argparse

from zoo.cli import metrics_table
from zoo.training import add_train_arguments, config_from_args, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, method="thsg")
    args = parser.parse_args()
    if args.loss is not None:
        parser.error("THSG's metric loss is the triplet loss of eq. (6): choose its triplets with --miner")
    result = train(config_from_args(args, method="thsg"))
    print(metrics_table({"untrained": result["metrics_untrained"], "trained": result["metrics"]}))


if __name__ == "__main__":
    main()
