"""zoo.viz, zoo.cards and their CLI: retrieval grids, embedding maps, TensorBoard images and projector, cards."""

import glob
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

import zoo
from zoo import cards, cli, metrics, registry, viz
from zoo.callbacks import RetrievalEvaluation
from zoo.evaluation import embed_dataset
from zoo.methods import build_model

README = Path(__file__).resolve().parent.parent / "README.md"


def cell_origin(row, column, thumbnail):
    """Top-left pixel of a grid cell's frame, by the layout documented in viz.grid_image."""
    cell = thumbnail + 2 * viz.BORDER
    x = viz.PAD + column * (cell + viz.PAD) + (viz.SEPARATOR if column else 0)
    return viz.PAD + row * (cell + viz.CAPTION + viz.PAD), x


def test_grid_image_has_the_layout_size_and_frames_each_neighbour_by_class():
    thumbnail, border = 24, viz.BORDER
    queries = np.stack([np.full((4, 4, 3), 10.0), np.full((4, 4, 1), 20.0).repeat(3, -1)])
    values = 50.0 + 30.0 * np.arange(6).reshape(2, 3)  # one grey level per neighbour image
    neighbors = np.ones((2, 3, 6, 6, 3)) * values[..., None, None, None]
    grid = viz.grid_image(queries, neighbors, [0, 1], [[0, 1, 0], [1, 1, 2]], np.full((2, 3), 0.5), thumbnail=thumbnail)

    cell = thumbnail + 2 * border
    assert grid.dtype == np.uint8
    height = viz.PAD + 2 * (cell + viz.CAPTION + viz.PAD)
    assert grid.shape == (height, viz.PAD + 4 * (cell + viz.PAD) + viz.SEPARATOR, 3)
    green, red, grey = viz.SAME_CLASS_COLOUR, viz.OTHER_CLASS_COLOUR, viz.QUERY_COLOUR
    assert green[1] > max(green[0], green[2]) and red[0] > max(red[1], red[2])
    expected = [[grey, green, red, green], [grey, green, green, red]]
    ring = np.ones((cell, cell), bool)
    ring[border:-border, border:-border] = False
    for row in range(2):
        for column in range(4):
            y, x = cell_origin(row, column, thumbnail)
            frame = grid[y : y + cell, x : x + cell]
            assert (frame[ring] == expected[row][column]).all(), (row, column)
            inside = queries[row, 0, 0, 0] if column == 0 else values[row, column - 1]
            assert (frame[border:-border, border:-border] == inside).all(), (row, column)
            caption = grid[y + cell : y + cell + viz.CAPTION, x : x + cell]
            assert (caption < 128).any(), "no caption text"
    assert (grid[: viz.PAD] == 255).all() and (grid[:, : viz.PAD] == 255).all()


def test_nearest_neighbors_rank_like_the_metrics_with_the_query_excluded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: ties go to the smaller index
    labels = rng.integers(0, 4, 40)
    queries = np.array([3, 7, 20])
    indices, distances = viz.nearest_neighbors(x, labels, queries, k=6)
    ranking = metrics.compute_ranking(metrics.l2_normalise(x), labels, k=6)
    np.testing.assert_array_equal(indices, ranking.neighbors[queries])
    np.testing.assert_allclose(distances, np.sqrt(np.maximum(2 - 2 * ranking.similarities[queries], 0)), atol=1e-5)
    assert indices[0, 0] == 7 and indices[1, 0] == 3 and distances[0, 0] < 1e-3

    gallery = rng.standard_normal((10, 5)).astype(np.float32)
    indices, _ = viz.nearest_neighbors(x, labels, queries, 4, gallery, np.arange(10) % 4)
    unit = metrics.l2_normalise(gallery)
    np.testing.assert_array_equal(indices, np.argsort(-(metrics.l2_normalise(x[queries]) @ unit.T), axis=1)[:, :4])
    with pytest.raises(ValueError, match="k=40 must be between 1 and the number of references per query"):
        viz.nearest_neighbors(x, labels, queries, k=40)
    # a gallery holding the queries themselves (OML's rows both query and gallery): never their own neighbour
    with_queries = np.concatenate([gallery, x])
    own = np.full(40, -1)
    own[queries] = 10 + queries
    indices, _ = viz.nearest_neighbors(x, labels, queries, 4, with_queries, np.r_[np.arange(10) % 4, labels], own)
    sims = metrics.l2_normalise(x[queries]) @ metrics.l2_normalise(with_queries).T
    sims[np.arange(3), 10 + queries] = -np.inf
    np.testing.assert_array_equal(indices, np.argsort(-sims, axis=1, kind="stable")[:, :4])
    assert indices[0, 0] == 10 + 7 and indices[1, 0] == 10 + 3  # the duplicate, not the query itself


def toy_images(n=30, num_classes=5, seed=0):
    """8x8 images whose bright row is their class, plus noise, in [0, 255]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    images = rng.uniform(0, 60, (n, 8, 8, 3)).astype(np.float32)
    images[np.arange(n), labels] += 190.0
    return images, labels


def batches(images, labels, size=8):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(size)


def read_images(run_dir, tag):
    """{step: decoded image} of an image summary written by tf.summary.image."""
    found = {}
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "images"
                    found[event.step] = tf.io.decode_png(value.tensor.string_val[2]).numpy()
    return found


def test_retrieval_evaluation_writes_the_grid_image_and_the_projector_files(tmp_path):
    images, labels = toy_images()
    eval_data = batches(images, labels)
    evaluation = RetrievalEvaluation(
        eval_data, log_dir=str(tmp_path), log_images=True, grid_queries=3, grid_k=4, metrics=("recall",), recall_ks=(1,)
    )
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    model.fit(images, np.zeros((30, 4)), epochs=2, batch_size=10, verbose=0, callbacks=[evaluation])

    run_dir = tmp_path / "retrieval"
    grids = read_images(str(run_dir), "val_retrieval_grid")
    assert sorted(grids) == [0, 1]
    embeddings, _ = embed_dataset(model, eval_data)
    np.testing.assert_array_equal(grids[1], viz.grid_from_embeddings(embeddings, labels, eval_data, 3, 4))

    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == "val_embeddings (epoch 2)"
    assert list(embedding.tensor_shape) == [30, 4]
    written = np.loadtxt(run_dir / embedding.tensor_path, delimiter="\t")
    np.testing.assert_allclose(written, embeddings, rtol=1e-4, atol=1e-5)
    rows = (run_dir / embedding.metadata_path).read_text().splitlines()
    assert rows == [str(label) for label in labels]
    side = viz.SPRITE_THUMBNAIL
    assert list(embedding.sprite.single_image_dim) == [side, side]
    sprite = np.asarray(Image.open(run_dir / embedding.sprite.image_path))
    assert sprite.shape == (6 * side, 6 * side, 3)  # 30 thumbnails in a 6 x 6 square, row by row
    np.testing.assert_array_equal(sprite[side : 2 * side, :side], viz.thumbnails(images[6:7], side)[0])


def test_images_are_fetched_only_from_a_dataset_in_the_embedded_order():
    images, labels = toy_images()
    dataset = batches(images, labels)
    np.testing.assert_array_equal(viz.images_at(dataset, [29, 2, 2], labels), images[[29, 2, 2]])
    with pytest.raises(ValueError, match="fixed order"):
        viz.images_at(dataset, [1, 2], labels[::-1])
    vectors = batches(images.reshape(30, -1), labels)
    with pytest.raises(ValueError, match="needs a dataset of images"):
        viz.images_at(vectors, [1], labels)


def test_grid_retrieves_from_a_gallery_when_given_one():
    images, labels = toy_images()
    embeddings = images.reshape(30, -1)
    queries, gallery = np.arange(10), np.arange(10, 30)
    grid = viz.grid_from_embeddings(
        embeddings[queries], labels[queries], batches(images[queries], labels[queries]), 3, 2,
        reference_embeddings=embeddings[gallery], reference_labels=labels[gallery],
        reference_dataset=batches(images[gallery], labels[gallery]), seed=1,
    )
    rows = viz.seeded_sample(10, 3, seed=1)
    neighbors, distances = viz.nearest_neighbors(
        embeddings[queries], labels[queries], rows, 2, embeddings[gallery], labels[gallery]
    )
    gallery_images, gallery_labels = images[gallery][neighbors], labels[gallery][neighbors]
    expected = viz.grid_image(images[rows], gallery_images, labels[rows], gallery_labels, distances)
    np.testing.assert_array_equal(grid, expected)
    with pytest.raises(ValueError, match="together"):
        viz.grid_from_embeddings(embeddings, labels, batches(images, labels), reference_dataset=batches(images, labels))


def test_show_cli_writes_a_grid_of_the_expected_size(tmp_path, capsys):
    model = build_model("triplet", backbone="tiny_cnn", embedding_dim=8, input_size=16)
    model.save(tmp_path / "tiny.keras")
    out = tmp_path / "grid.png"
    argv = ["show", "--model", str(tmp_path / "tiny.keras"), "--dataset", "digits", "--out", str(out)]
    assert cli.main([*argv, "--n-queries", "3", "--k", "5"]) == 0
    assert str(out) in capsys.readouterr().out
    y, x = cell_origin(3, 6, viz.THUMBNAIL)  # the cell after the last one
    assert Image.open(out).size == (x, y) and Image.open(out).mode == "RGB"

    assert cli.main(["show", "--model", "triplet_digitz", "--out", str(out)]) == 2
    assert "Did you mean 'triplet_digits'" in capsys.readouterr().err


def test_embedding_map_writes_a_png_and_asks_for_matplotlib_when_missing(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    embeddings = np.eye(4, dtype=np.float32)[labels] + 0.1 * rng.standard_normal((40, 4)).astype(np.float32)
    assert viz.projection_method("auto", viz.TSNE_MAX_POINTS) == "tsne"
    assert viz.projection_method("auto", viz.TSNE_MAX_POINTS + 1) == "pca"
    points = viz.project_2d(embeddings, "tsne")
    assert points.shape == (40, 2) and np.isfinite(points).all()
    out = tmp_path / "maps" / "map.png"
    path = viz.map_from_embeddings(embeddings, labels, out, class_names=list("abcd"), method="pca")
    assert Image.open(path).size == (700, 700)
    identity = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    data = tf.data.Dataset.from_tensor_slices((embeddings, labels)).batch(16)
    assert Image.open(viz.embedding_map(identity, data, tmp_path / "model.png", method="pca")).size == (700, 700)

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "zoo\[viz\]"'):
        viz.map_from_embeddings(embeddings, labels, tmp_path / "map2.png")


@pytest.fixture
def hand_made_card(tmp_path, monkeypatch):
    """A card for triplet_digits with hand-made numbers, in a fresh pretrained folder."""
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    card = {
        "weights": "triplet_digits.weights.h5",
        "sha256": "ab" * 32,
        "metrics": {
            "recall@1": 0.9123, "recall@4": 0.9876, "map@r": 0.4321, "r_precision": 0.5432, "nmi": 0.6543, "f1": 0.7654
        },
        "metrics_untrained": {"recall@1": 0.8111, "map@r": 0.3222},
        "command": "zoo train --method triplet --dataset digits --publish triplet_digits",
        "date": "2026-01-02",
    }
    (tmp_path / "triplet_digits.json").write_text(json.dumps(card))
    return card


def test_card_shows_the_numbers_stored_in_the_registry(hand_made_card, capsys):
    text = zoo.card("triplet_digits")
    table = {line.split()[0]: line.split()[1:] for line in text.split("metric ", 1)[1].splitlines()[1:]}
    assert {name: float(row[0]) for name, row in table.items()} == hand_made_card["metrics"]
    assert {name: float(row[1]) for name, row in table.items() if row[1] != "-"} == hand_made_card["metrics_untrained"]
    entry = registry.get_entry("triplet_digits")
    miner = f"miner={entry['hyperparameters']['miner']}"
    for fact in (hand_made_card["sha256"], hand_made_card["command"], entry["paper"], miner, "tiny_cnn", "64-d"):
        assert fact in text

    assert cli.main(["card", "triplet_digits"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert cli.main(["list", "triplet_*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("triplet_cars196") and lines[0].endswith("no published weights")
    assert "MAP@R 0.432  R@1 0.912" in next(line for line in lines if line.startswith("triplet_digits"))
    assert cli.main(["card", "triplet_digitz"]) == 2
    assert "Did you mean 'triplet_digits'" in capsys.readouterr().err


def test_card_of_an_unpublished_entry_names_the_command_to_produce_it(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tmp_path)
    text = zoo.card("thsg_sop")
    assert "none published yet" in text and "training_scripts/thsg.py --dataset sop" in text
    assert "recall@1" not in text


def test_markdown_table_has_every_entry_with_its_stored_metrics(hand_made_card):
    lines = cards.markdown_table().splitlines()
    assert len(lines) == 2 + len(registry.list_models())
    row = next(line for line in lines if line.startswith("| `triplet_digits`"))
    assert row == "| `triplet_digits` | triplet | tiny_cnn | digits | 0.912 | 0.988 | 0.432 | 0.543 | 0.654 | 0.765 |"
    assert next(line for line in lines if line.startswith("| `triplet_sop`")).endswith("| - | - | - | - | - | - |")


def test_readme_table_is_the_generated_one():
    text = README.read_text()
    start, end = "<!-- registry-table:start -->", "<!-- registry-table:end -->"
    assert start in text and end in text, "README lacks the registry table markers"
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == cards.markdown_table(), "README's registry table is stale: run python docs/make_images.py"


def test_failures_grid_draws_only_the_queries_whose_nearest_neighbour_is_of_another_class(capsys, tmp_path):
    images, labels = toy_images(n=10, num_classes=2)
    angles = np.where(labels == 0, 0.0, np.pi / 2) + np.linspace(0, 0.05, 10)
    angles[2], angles[7] = np.pi / 2 + 0.3, -0.3  # beside the other class: their nearest neighbours fail
    embeddings = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    grid = viz.grid_from_embeddings(embeddings, labels, batches(images, labels), 8, 3, failures=True)
    rows = np.array([2, 7])
    neighbors, distances = viz.nearest_neighbors(embeddings, labels, rows, 3)
    assert (labels[neighbors[:, 0]] != labels[rows]).all()
    np.testing.assert_array_equal(grid, viz.grid_image(images[rows], images[neighbors], labels[rows],
                                                       labels[neighbors], distances))
    with pytest.raises(ValueError, match="no query's nearest neighbour is of another class"):
        viz.grid_from_embeddings(embeddings[[0, 1, 3, 5, 6, 8]], labels[[0, 1, 3, 5, 6, 8]],
                                 batches(images[[0, 1, 3, 5, 6, 8]], labels[[0, 1, 3, 5, 6, 8]]), failures=True, k=2)
    model = zoo.load("triplet_digits")
    out = tmp_path / "failures.png"
    assert cli.main(["show", "--model", "triplet_digits", "--out", str(out), "--failures", "--n-queries", "4"]) == 0
    assert "failed queries" in capsys.readouterr().out
    y, x = cell_origin(4, 9, viz.THUMBNAIL)
    assert Image.open(out).size == (x, y)
    first = np.asarray(Image.open(out))[cell_origin(0, 1, viz.THUMBNAIL)]  # top-left pixel of the 1st neighbour
    assert tuple(first) == viz.OTHER_CLASS_COLOUR and model.embedding_dim == 64


def test_retrieval_evaluation_takes_the_metric_names_its_logs_use():
    images, labels = toy_images()
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
    evaluation = RetrievalEvaluation(batches(images, labels), every_n_epochs=1,
                                     metrics=("recall@1", "recall@4", "map@r", "nmi"))
    evaluation.set_model(model)
    evaluation.set_params({"epochs": 1})
    logs = {}
    evaluation.on_epoch_end(0, logs)
    results = {name.removeprefix("val_"): value for name, value in logs.items()}
    assert sorted(logs) == ["val_map@r", "val_nmi", "val_recall@1", "val_recall@4"]
    expected = metrics.evaluate(images.reshape(30, -1), labels, metrics=("recall", "map@r", "nmi"), recall_ks=(1, 4))
    assert results == pytest.approx(expected)
