"""Train AMDAML, adaptive-margin deep adversarial metric learning (papers/002).

    python training_scripts/amdaml.py --dataset digits                      # quick CPU check (amdaml_digits)
    python training_scripts/amdaml.py --dataset digits --publish amdaml_digits
    python training_scripts/amdaml.py --dataset cars196 --data-dir DATA     # Sec. IV.5 protocol (amdaml_cars196)

The loss is the adaptive margin loss of eq. 5 on every pair of the batch plus the generated adversarial
negatives (eq. 8), so --loss and --miner do not apply; alpha, beta, lambda, lambda1, lambda2, eps and
the pre-training length come with the preset, and the readings of eq. 6 and 8 (balance, adversary,
closeness, theta_max, target, mix_space) are the defaults measured in zoo/methods/amdaml.py.
"""

import argparse

from zoo.cli import metrics_table
from zoo.training import add_train_arguments, config_from_args, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, method="amdaml")
    args = parser.parse_args()
    if args.loss is not None or args.miner is not None:
        parser.error("AMDAML's loss is the adaptive margin loss of eq. 5 on all pairs: --loss and --miner do not apply")
    result = train(config_from_args(args, method="amdaml"))
    print(metrics_table({"untrained": result["metrics_untrained"], "trained": result["metrics"]}))


if __name__ == "__main__":
    main()
