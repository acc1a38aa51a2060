"""Train the baseline: triplet loss (or contrastive / margin / ...) with a pluggable miner.

    python training_scripts/triplet.py --dataset digits                      # quick CPU check
    python training_scripts/triplet.py --dataset cub200 --data-dir DATA      # preset triplet_cub200
    python training_scripts/triplet.py --dataset cars196 --data-dir DATA --miner distance-weighted --loss margin
"""

import argparse

from zoo.cli import metrics_table
from zoo.training import add_train_arguments, config_from_args, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, method="triplet")
    result = train(config_from_args(parser.parse_args(), method="triplet"))
    print(metrics_table({"untrained": result["metrics_untrained"], "trained": result["metrics"]}))


if __name__ == "__main__":
    main()
