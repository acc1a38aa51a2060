"""Query/gallery evaluation: PML's numbers with a reference set, OML's CSV columns, zoo evaluate --queries --gallery."""

import json
from pathlib import Path

import numpy as np
import pytest
from image_folders import make_class_folder

import zoo
from zoo import cli, metrics, registry
from zoo.data import eval_pipeline
from zoo.data.folder import load_query_gallery
from zoo.evaluation import embed_dataset, evaluation_sets, measure, own_references
from zoo.training import TrainConfig

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


# ---- OML's CSV columns and zoo evaluate --queries --gallery -------------------------------------------------

def oml_csv(root: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """A CSV with Open Metric Learning's header (label first, an extra column) of rows (label, path, split, q, g)."""
    lines = ["label,path,split,is_query,is_gallery,category"] + [",".join([*row, "any"]) for row in rows]
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return root / "data.csv"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("qg") / "photos", classes=5, per_class=4)


def every_row(photos: Path, split_of=lambda c: "validation") -> list[tuple]:
    return [(f"class_{c}", f"photos/class_{c}/img_{i}.{'png' if i % 2 == 0 else 'jpg'}", split_of(c), "true", "true")
            for c in range(5) for i in range(4)]


def test_a_csv_of_rows_both_query_and_gallery_measures_what_the_test_split_does(photos):
    # rows of classes 0-1 train (not evaluated), 2-4 validation, every one query and gallery
    csv_file = oml_csv(photos.parent, every_row(photos, lambda c: "train" if c < 2 else "validation"))
    queries, gallery = load_query_gallery(csv_file)
    assert (len(queries), len(gallery)) == (12, 12) and queries.class_names == ("class_2", "class_3", "class_4")
    np.testing.assert_array_equal(own_references(queries, gallery), np.arange(12))
    model = zoo.load("triplet_digits")
    config = TrainConfig(dataset="folder", data_dir=str(csv_file), input_size=32)
    # a query never retrieves itself: the same numbers as each test image retrieved from the others
    csv_file.with_name("plain.csv").write_text("\n".join(f"{path},{label},{'train' if label < 'class_2' else 'test'}"
                                                         for label, path, *_ in every_row(photos)) + "\n")
    same_set = TrainConfig(dataset="folder", data_dir=str(csv_file.with_name("plain.csv")), input_size=32)
    assert evaluation_sets(config)[1] is not None and evaluation_sets(same_set)[1] is None
    expected = measure(model, *evaluation_sets(same_set), same_set)
    assert measure(model, *evaluation_sets(config), config) == pytest.approx(expected, abs=1e-6)


def test_zoo_evaluate_queries_against_a_gallery_of_folders_or_csv(photos, tmp_path, capsys):
    queries = make_class_folder(tmp_path / "queries", classes=5, per_class=2, seed=3)
    assert cli.main(["evaluate", "--model", "triplet_digits", "--queries", str(queries), "--gallery", str(photos)]) == 0
    captured = capsys.readouterr()
    assert "10 queries against a gallery of 20 images" in captured.err
    header, row = captured.out.strip().splitlines()
    printed = dict(zip(header.split(), map(float, row.split()[1:])))
    query_set, gallery_set = load_query_gallery(queries, photos)
    model = registry.load_model("triplet_digits")
    q, q_labels = embed_dataset(model, eval_pipeline(query_set, 32))
    g, g_labels = embed_dataset(model, eval_pipeline(gallery_set, 32))
    direct = metrics.evaluate(q, q_labels, reference_embeddings=g, reference_labels=g_labels, recall_ks=(1, 2, 4, 8))
    assert printed == pytest.approx({key: direct[key] for key in printed}, abs=5e-5)  # printed to 4 decimals
    assert cli.main(["evaluate", "--model", "triplet_digits", "--gallery", str(photos)]) == 2
    assert "--gallery needs --queries" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (("false", "true"), "has no query image"),
    (("true", "0"), "has no gallery image"),
    (("maybe", "true"), "column is_query must be true or false"),
])
def test_a_query_gallery_csv_without_queries_or_gallery_is_refused(photos, flags, message):
    rows = [(label, path, split, *flags) for label, path, split, _, _ in every_row(photos)]
    with pytest.raises(ValueError, match=message):
        load_query_gallery(oml_csv(photos.parent, rows))
    with pytest.raises(ValueError, match="is not a CSV with is_query and is_gallery columns"):
        load_query_gallery(photos)
