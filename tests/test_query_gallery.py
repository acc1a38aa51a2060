"""Query/gallery evaluation: PML's numbers with a reference set, OML's CSV columns, zoo evaluate --queries --gallery."""

import json
from pathlib import Path

import numpy as np
import pytest

from zoo import metrics

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pml_query_gallery.json").read_text())
# PML's AccuracyCalculator names -> zoo.metrics.evaluate's
PML_NAMES = {"precision_at_1": "recall@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r",
             "mean_average_precision": "map"}


@pytest.mark.parametrize("name", sorted(FIXTURE["cases"]))
def test_query_gallery_metrics_equal_pml_accuracy_calculator_with_a_reference_set(name):
    case = FIXTURE["cases"][name]
    queries, gallery = np.array(case["queries"], np.float32), np.array(case["gallery"], np.float32)
    # ref_includes_query: the gallery starts with the queries themselves, which they never retrieve
    own = np.arange(len(queries)) if case["includes_queries"] else None
    ours = metrics.evaluate(queries, case["labels"], reference_embeddings=gallery, reference_labels=case["gallery_labels"],
                            own_reference=own, recall_ks=(1,), metrics=("recall", "map", "map@r", "r_precision"))
    assert {PML_NAMES[key]: value for key, value in case["pml"].items()} == pytest.approx(ours, abs=1e-4)
    assert 0.2 < ours["map@r"] < 0.9  # neither trivial nor random
