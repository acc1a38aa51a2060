"""benchmarks/compare_methods.py: its settings, the paired gains of its report and its scaled step counts."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "compare_methods", Path(__file__).parents[1] / "benchmarks" / "compare_methods.py"
)
compare_methods = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(compare_methods)


def row(run: str, seed: int, map_at_r: float, dataset: str = "glyphs") -> dict:
    metrics = {"map@r": map_at_r, "recall@1": 0.5, "nmi": 0.5}
    return {"dataset": dataset, "protocol": "from scratch", "steps": 100, "run": run, "seed": seed,
            "metrics": metrics, "untrained": {"map@r": 0.01}, "seconds": 1.0}


def test_settings_are_python_literals_or_words():
    assert compare_methods.parse_setting("learning_rate=3e-4") == ("learning_rate", 3e-4)
    assert compare_methods.parse_setting("miner=semi-hard") == ("miner", "semi-hard")
    assert compare_methods.parse_setting("dataset_options={'num_classes': 8}") == ("dataset_options", {"num_classes": 8})
    with pytest.raises(Exception, match="name=value"):
        compare_methods.parse_setting("learning_rate")


def test_report_pairs_each_method_with_its_baselines_on_the_seeds_both_have():
    rows = [row("profs", 0, 0.40), row("profs", 1, 0.30), row("contrastive", 0, 0.35), row("contrastive", 1, 0.33),
            row("contrastive", 2, 0.99), row("triplet", 0, 0.20),
            row("profs", 2, 0.01, dataset="synthetic")]  # another benchmark: not in the glyphs table
    table = compare_methods.report(rows, "from scratch", 100)
    profs_row = next(line for line in table.splitlines() if line.startswith("| profs | 0,1 |"))
    assert "0.350 +- 0.050" in profs_row  # mean +- population std (ddof 0) of 0.40 and 0.30
    assert table.splitlines()[0].endswith("mean +- population standard deviation (ddof 0) over the seeds")
    assert "+0.010 vs contrastive" in profs_row  # ((0.40 - 0.35) + (0.30 - 0.33)) / 2, seed 2 unpaired
    assert "| profs | contrastive +0.010, triplet +0.200 |" in table


def test_step_counts_scale_with_the_run():
    """AMDAML pre-trains 100 of its preset's 300 steps: 33 of a 100-step run; other hyperparameters stay."""
    scaled = compare_methods.scale_step_counts({"pretrain_steps": 100, "alpha": 5.0}, 300, 100)
    assert scaled == {"pretrain_steps": 33, "alpha": 5.0}


def test_report_pairs_topk_with_its_baselines_on_the_same_batches():
    """Sec. 4.4's batches beside the baselines' 6 x 11 runs, and top-k's P16 x K4 run beside the baselines' own."""
    same = " classes_per_batch=6 images_per_class=11"
    rows = [row("topk", 0, 0.38), row("contrastive", 0, 0.40), row("contrastive" + same, 0, 0.34),
            row("topk images_per_class=4", 0, 0.41)]
    table = compare_methods.report(rows, "from scratch", 100)
    assert "| topk | contrastive -0.020 |" in table
    assert "| topk, baselines on the same batches (Sec. 4.4's batches) | contrastive +0.040 |" in table
    assert "| topk images_per_class=4, baselines on the same batches (P16 x K4) | contrastive +0.010 |" in table
