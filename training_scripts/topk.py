"""Train the top-k precision embedding ("sampling wisely", loss l_k) with the paper's Sec. 4.4 protocol.

    python training_scripts/topk.py --dataset digits                     # quick CPU check (preset topk_digits)
    python training_scripts/topk.py --dataset digits --publish topk_digits
    python training_scripts/topk.py --dataset cub200 --data-dir DATA     # preset topk_cub200: k = 5, gamma = 0.1,
    python training_scripts/topk.py --dataset cars196 --data-dir DATA    # 64 images per batch, <= 11 per class
    python training_scripts/topk.py --dataset sop --data-dir DATA        # 512-d embedding

Prints the metrics before and after training, then the trained model's row of the paper's Table 1
(P@1, P@3, P@5, P@10, R@3, R@5, R@10, NMI, mAP, F1).
"""

import dataclasses
from pathlib import Path

import keras

from zoo.cli import metrics_table
from zoo.evaluation import evaluation_sets, measure
from zoo.training import TrainConfig, run_script, script_parser

TABLE_1 = ("precision@1", "precision@3", "precision@5", "precision@10", "recall@3", "recall@5", "recall@10",
           "nmi", "map", "f1")


def table_1_metrics(config: TrainConfig, run_dir: str) -> dict[str, float]:
    """The trained model's test metrics with Table 1's cut-offs (1, 3, 5, 10)."""
    model = keras.models.load_model(Path(run_dir) / "model.keras")
    table_config = dataclasses.replace(config, recall_ks=(1, 3, 5, 10), precision_ks=(1, 3, 5, 10))
    return measure(model, *evaluation_sets(table_config), table_config)


if __name__ == "__main__":
    config, result = run_script(script_parser("topk", __doc__))
    print(metrics_table({"Table 1": table_1_metrics(config, result["run_dir"])}, columns=TABLE_1))
