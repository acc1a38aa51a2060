"""zoo.calibration and Index.calibrate / match: thresholds on hand-made sets with known distances."""

import json
import math
import shlex
import shutil

import keras
import numpy as np
import pytest
from image_folders import make_class_folder
from PIL import Image
from test_index import readme_blocks

import zoo
from zoo import calibration, cli
from zoo import index as zoo_index
from zoo.calibration import choose_cutpoints, resolve_threshold, threshold_sweep
from zoo.index import Index, embed_files

# Six queries by nearest-neighbour distance: right, right, wrong, right (known classes), two of unseen classes.
DISTANCES = [0.5, 0.1, 0.3, 0.2, 0.6, 0.4]
CORRECT = [False, True, False, True, False, True]
KNOWN = [False, True, True, True, False, True]


def test_sweep_counts_precision_recall_f1_and_rejection_at_every_distance():
    sweep = threshold_sweep(DISTANCES, CORRECT, KNOWN)
    np.testing.assert_allclose(sweep.thresholds, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    np.testing.assert_array_equal(sweep.matched, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(sweep.precision, [1, 1, 2 / 3, 3 / 4, 3 / 5, 3 / 6])
    np.testing.assert_allclose(sweep.recall, [1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 3 / 4])
    np.testing.assert_allclose(sweep.f1, [0.4, 2 / 3, 4 / 7, 0.75, 2 / 3, 0.6])
    np.testing.assert_allclose(sweep.rejection, [1, 1, 1, 1, 0.5, 0])
    assert (sweep.num_queries, sweep.num_unseen) == (6, 2)


def test_equal_distances_share_one_threshold():
    sweep = threshold_sweep([0.1, 0.1, 0.2], [True, False, True], [True, True, True])
    np.testing.assert_allclose(sweep.thresholds, [0.1, 0.2])
    np.testing.assert_allclose(sweep.precision, [0.5, 2 / 3])
    assert np.isnan(sweep.rejection).all()  # no unseen class


def test_cutpoints_optimal_and_targets():
    sweep = threshold_sweep(DISTANCES, CORRECT, KNOWN)
    cutpoints = choose_cutpoints(sweep, {"precision": 0.7, "recall": 0.5, "rejection": 0.5}, metric="f1")
    assert list(cutpoints) == ["optimal", "0.7", "recall=0.5", "rejection=0.5"]
    assert cutpoints["optimal"] == {"distance": pytest.approx(0.4), "precision": 0.75, "recall": 0.75, "f1": 0.75,
                                    "rejection": 1.0, "metric": "f1"}
    assert cutpoints["0.7"]["distance"] == pytest.approx(0.4)  # largest with precision >= 0.7 (0.3 has 2/3)
    assert cutpoints["0.7"]["target"] == 0.7 and cutpoints["0.7"]["metric"] == "precision"
    assert cutpoints["recall=0.5"]["distance"] == pytest.approx(0.2)  # the smallest that reaches it
    assert cutpoints["rejection=0.5"]["distance"] == pytest.approx(0.5)
    assert choose_cutpoints(sweep, {"precision": 1.0})["1"]["distance"] == pytest.approx(0.2)
    assert list(choose_cutpoints(sweep, {"precision": [0.7, 1.0], "recall": (0.5,)})) == ["optimal", "0.7", "1",
                                                                                          "recall=0.5"]
    assert choose_cutpoints(sweep, metric="precision")["optimal"]["distance"] == pytest.approx(0.1)
    table = calibration.cutpoints_table(cutpoints).splitlines()
    assert table[0].split() == ["cutpoint", "distance", "precision", "recall", "f1", "rejection"]
    assert table[1].split() == ["optimal", "0.4000", "0.7500", "0.7500", "0.7500", "1.0000"]


@pytest.mark.parametrize("call, message", [
    (lambda s: choose_cutpoints(threshold_sweep([0.1, 0.2], [False, True], [True, True]), {"precision": 0.9}),
     r"no threshold reaches precision 0.9 on this calibration set of 2 queries: the best is 0.5000"),
    (lambda s: choose_cutpoints(s, {"precision": 1.5}), "the precision target must be between 0 and 1"),
    (lambda s: choose_cutpoints(s, {"accuracy": 0.5}), "unknown calibration metric 'accuracy'"),
    (lambda s: choose_cutpoints(threshold_sweep([0.1], [True], [True]), metric="rejection"),
     "needs calibration queries of classes that are not in the gallery"),
    (lambda s: threshold_sweep([0.1], [False], [False]), "no calibration query has its class in the gallery"),
    (lambda s: threshold_sweep([], [], []), "no calibration query"),
    (lambda s: threshold_sweep([np.nan], [True], [True]), "NaN or inf"),
    (lambda s: calibration.nearest_outcomes(["a", "a"], ["a", "b"], ["a", "b"]),
     r"the calibration set has one class \('a'\)"),
    (lambda s: calibration.nearest_outcomes(["a", "b"], [None, None], [None, None]), "the gallery has no labels"),
    (lambda s: calibration.nearest_outcomes(["a", None], ["a", "b"], ["a", "b"]), "needs a label"),
])
def test_bad_calibrations_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(threshold_sweep(DISTANCES, CORRECT, KNOWN))


def test_thresholds_resolve_by_name_or_distance():
    cutpoints = {"optimal": {"distance": 0.4}, "0.95": {"distance": 0.2}}
    assert resolve_threshold(cutpoints, "optimal") == 0.4 and resolve_threshold(cutpoints, "0.95") == 0.2
    assert resolve_threshold(cutpoints, "0.3") == 0.3 and resolve_threshold(None, 0.25) == 0.25
    with pytest.raises(ValueError, match="threshold 'optimal' needs a calibrated index"):
        resolve_threshold(None, "optimal")
    with pytest.raises(ValueError, match=r"unknown threshold '0.9x'; the calibrated ones are \['0.95', 'optimal'\]"):
        resolve_threshold(cutpoints, "0.9x")
    with pytest.raises(ValueError, match="must be a number >= 0"):
        resolve_threshold(cutpoints, -1.0)


# ---- Index.calibrate / match: a model whose embedding is an image's mean colour, normalised ----------------

def colour_model() -> keras.Model:
    """Images (8, 8, 3) -> their mean RGB as a unit vector: a uniform image's embedding is its colour's direction."""
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.GlobalAveragePooling2D()(inputs)))


def at_angles(degrees) -> np.ndarray:
    """Uniform 8 x 8 images of colour 200 (cos a, sin a, 0): unit embeddings (cos a, sin a, 0)."""
    radians = np.radians(np.asarray(degrees, np.float64))
    colours = 200 * np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)
    return np.broadcast_to(colours[:, None, None, :], (len(colours), 8, 8, 3)).astype(np.float32)


def chord(degrees: float) -> float:
    """L2 distance between unit vectors ``degrees`` apart."""
    return 2 * math.sin(math.radians(degrees) / 2)


GALLERY_ANGLES, GALLERY_LABELS = [0, 60], ["a", "b"]
# query angle, label: nearest gallery angle and whether it is right
QUERIES = [(4, "a"), (52, "b"), (25, "a"), (38, "a"), (80, "c"), (12, "c")]
NEAREST = [(4, True), (8, True), (25, True), (22, False), (20, False), (12, False)]


@pytest.fixture()
def index():
    model = colour_model()
    embeddings = model.predict(at_angles(GALLERY_ANGLES), verbose=0)
    return Index(model, ["a.png", "b.png"], GALLERY_LABELS, embeddings, model_name="colours")


def test_calibrate_sweeps_the_nearest_gallery_distances_and_keeps_cutpoints(index):
    angles, labels = zip(*QUERIES)
    sweep = index.calibrate(at_angles(angles), labels, targets={"precision": 0.75})
    distances = [chord(degrees) for degrees, _ in NEAREST]
    expected = threshold_sweep(distances, [right for _, right in NEAREST], [label != "c" for label in labels])
    np.testing.assert_allclose(sweep.thresholds, expected.thresholds, atol=1e-5)
    # sorted: 4 right, 8 right, 12 unseen, 20 unseen, 22 wrong, 25 right (degrees; 4 queries of known classes)
    np.testing.assert_allclose(sweep.precision, [1, 1, 2 / 3, 2 / 4, 2 / 5, 3 / 6])
    np.testing.assert_allclose(sweep.recall, [1 / 4, 2 / 4, 2 / 4, 2 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(sweep.rejection, [1, 1, 0.5, 0, 0, 0])
    cutpoints = index.calibration["cutpoints"]
    assert cutpoints["optimal"]["distance"] == pytest.approx(chord(8), abs=1e-5)  # F1 2/3, the best
    assert cutpoints["optimal"]["f1"] == pytest.approx(2 / 3)
    assert cutpoints["0.75"]["distance"] == pytest.approx(chord(8), abs=1e-5)  # from 12 degrees on: below 0.75
    assert index.calibration["queries"] == 6 and index.calibration["unseen"] == 2
    # match: the nearest gallery image within the threshold, else None
    found = index.match(at_angles([3, 59, 30, 85]), threshold="optimal")
    assert [None if n is None else n.label for n in found] == ["a", "b", None, None]
    assert found[0].distance == pytest.approx(chord(3), abs=1e-5) and found[0].file == "a.png"
    assert index.match(at_angles([28])[0], threshold=chord(29)).label == "a"
    assert index.match(at_angles([28])[0], threshold=chord(27)) is None


def test_calibration_is_saved_with_the_index_and_refused_for_another_gallery(index, tmp_path):
    angles, labels = zip(*QUERIES)
    index.calibrate(at_angles(angles), labels)
    path = index.save(tmp_path / "colours.index")
    reloaded = Index.load(path, model=index.model)
    assert reloaded.calibration == json.loads(json.dumps(index.calibration))
    assert reloaded.match(at_angles([3])[0]).label == "a"
    meta = json.loads((path / "index.json").read_text())
    meta["labels"] = ["b", "a"]
    (path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="its labels list was changed after the index was saved"):
        Index.load(path, model=index.model)  # the index's own integrity check comes first
    meta["sha256"]["labels"] = zoo_index._json_sha256(meta["labels"])  # a consistent index of another gallery
    (path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="was measured on another gallery"):
        Index.load(path, model=index.model)


def test_an_uncalibrated_index_asked_for_a_threshold_says_so(index):
    with pytest.raises(ValueError, match="threshold 'optimal' needs a calibrated index"):
        index.match(at_angles([3])[0])
    with pytest.raises(ValueError, match="the calibration set has one class"):
        index.calibrate(at_angles([3, 5]), ["a", "a"])
    with pytest.raises(ValueError, match="no threshold reaches precision 0.99"):
        index.calibrate(at_angles([38, 4]), ["a", "b"], targets={"precision": 0.99})


def test_plot_writes_a_png(tmp_path):
    sweep = threshold_sweep(DISTANCES, CORRECT, KNOWN)
    path = calibration.plot_sweep(sweep, choose_cutpoints(sweep, {"precision": 0.7}), tmp_path / "calibration.png")
    assert Image.open(path).size == (700, 450)


# ---- zoo calibrate / zoo search --threshold on image folders ---------------------------------------------

def test_cli_calibrate_saves_the_thresholds_and_search_answers_no_match(tmp_path, capsys):
    gallery = make_class_folder(tmp_path / "gallery", classes=4, per_class=4)
    queries = make_class_folder(tmp_path / "queries", classes=6, per_class=3, seed=1)  # class_4, class_5 unseen
    out = str(tmp_path / "photos.index")
    assert cli.main(["index", "--model", "triplet_digits", "--images", str(gallery), "--out", out]) == 0
    query = str(queries / "class_1" / "img_0.png")
    assert cli.main(["search", "--index", out, "--query", query, "--threshold", "optimal"]) == 2
    assert "threshold 'optimal' needs a calibrated index" in capsys.readouterr().err
    assert cli.main(["search", "--index", out, "--query", query, "--threshold", "2", "-k", "2"]) == 0
    captured = capsys.readouterr()  # every neighbour is within 2 (unit vectors); a number is a distance
    assert len(captured.out.splitlines()) == 2 and "(a distance: the index is not calibrated)" in captured.err
    plot = tmp_path / "calibration.png"
    argv = ["calibrate", "--index", out, "--images", str(queries), "--target-precision", "0.9", "0.5", "--plot",
            str(plot)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("calibrated on 18 images of") and "(6 of classes not in the index)" in printed[0]
    assert [line.split()[0] for line in printed[1:]] == ["cutpoint", "optimal", "0.9", "0.5"] and plot.is_file()
    # the same thresholds from the embeddings: each query's nearest gallery image, brute force
    index = Index.load(out)
    files, labels = zip(*[(str(f), f.parent.name) for f in sorted(queries.rglob("*.*"))])
    distances = np.linalg.norm(embed_files(index.model, files)[:, None] - index.embeddings[None], axis=2)
    nearest = distances.argmin(axis=1)
    sweep = threshold_sweep(distances.min(axis=1), [index.labels[n] == label for n, label in zip(nearest, labels)],
                            [label in index.labels for label in labels])
    expected = choose_cutpoints(sweep, {"precision": [0.9, 0.5]})
    for name in ("optimal", "0.9", "0.5"):
        assert index.calibration["cutpoints"][name] == pytest.approx(expected[name], abs=1e-5)
    # zoo search --threshold: the neighbours within it, or "no match"
    assert cli.main(["search", "--index", out, "--query", query, "--threshold", "0", "-k", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("no match (the nearest, ") and "threshold: distance 0.0000" in captured.err
    assert cli.main(["search", "--index", out, "--query", query, "--threshold", "0.9", "-k", "16"]) == 0
    captured = capsys.readouterr()
    shown = [float(line.split("\t")[1]) for line in captured.out.splitlines()]
    limit = index.calibration["cutpoints"]["0.9"]["distance"]
    assert "cutpoint '0.9'" in captured.err and all(d <= limit for d in shown)
    assert len(shown) == int((distances[files.index(query)] <= limit + 1e-6).sum())


def test_calibrating_on_the_gallery_itself_leaves_each_image_out(tmp_path):
    gallery = make_class_folder(tmp_path / "gallery", classes=3, per_class=3)
    index = Index.from_images(zoo.load("triplet_digits"), gallery, progress=False)
    nearest = index.nearest_others(index.files)
    assert all(n.file != file and n.distance > 0 for n, file in zip(nearest, index.files))
    assert index.calibrate(gallery).num_unseen == 0
    assert index.calibration["cutpoints"]["optimal"]["rejection"] is None  # no unseen class: none, not NaN
    assert calibration.cutpoints_table(index.calibration["cutpoints"]).splitlines()[1].endswith(" -")


def test_readme_match_commands_and_python_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_class_folder(tmp_path / "gallery", classes=4, per_class=4)
    make_class_folder(tmp_path / "calibration", classes=6, per_class=3, seed=1)  # class_4, class_5: not indexed
    make_class_folder(tmp_path / "queries", classes=4, per_class=2, seed=2)
    shutil.copy(tmp_path / "queries" / "class_1" / "img_0.png", tmp_path / "query.png")
    section = "Is this a match? Thresholds, query/gallery evaluation, export"
    (command_block,) = readme_blocks(section, "bash")
    for line in command_block.strip().splitlines():
        argv = shlex.split(line.split("#")[0])
        assert argv[0] == "zoo" and cli.main(argv[1:]) == 0, argv
    printed = capsys.readouterr().out
    assert "cutpoint  distance precision" in printed and "0.9 " in printed
    assert (tmp_path / "calibration.png").is_file() and (tmp_path / "triplet_digits.tflite").is_file()
    assert (tmp_path / "exported" / "saved_model").is_dir()
    zoo_block, server_block = readme_blocks(section, "python")
    exec(zoo_block, {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[0] == "cutpoint" and [line.split()[0] for line in lines[1:4]] == ["optimal", "0.8", "0.9"]
    assert lines[-1] == "no match" or lines[-1].startswith("class_1 at ")
    exec(server_block, {})
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[0] == lines[-1].split()[0]
