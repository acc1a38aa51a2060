"""zoo.Index: embed a folder, search it (exact and approximate), save and reload it; zoo index / zoo search."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from image_folders import make_class_folder
from PIL import Image

import zoo
from zoo import cli, registry, viz
from zoo.data import eval_pipeline, load_dataset
from zoo.evaluation import embed_dataset
from zoo.index import Index, Neighbor


@pytest.fixture(scope="module")
def model():
    return zoo.load("triplet_digits")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("gallery") / "photos", classes=4, per_class=5)


def test_search_returns_the_nearest_files_with_labels_and_l2_distances(model, gallery):
    index = Index.from_images(model, gallery, batch_size=7, progress=False)
    assert len(index) == 20 and index.labels[:5] == ["class_0"] * 5
    # the embeddings are those of the evaluation pipeline over the same files
    expected, _ = embed_dataset(model, eval_pipeline(load_dataset("folder", "train", str(gallery), test_fraction=0.5), 32))
    train_rows = [index.files.index(path) for path in load_dataset("folder", "train", str(gallery),
                                                                    test_fraction=0.5).paths]
    np.testing.assert_allclose(index.embeddings[train_rows], expected, atol=1e-5)
    query = index.files[7]
    neighbors = index.search(query, k=4)
    assert neighbors[0] == Neighbor(query, "class_1", pytest.approx(0.0, abs=1e-3))
    brute = np.linalg.norm(index.embeddings - index.embeddings[7], axis=1)
    order = np.argsort(brute, kind="stable")[:4]
    assert [n.file for n in neighbors[1:]] == [index.files[i] for i in order[1:]]
    np.testing.assert_allclose([n.distance for n in neighbors[1:]], brute[order[1:]], atol=1e-3)
    assert all(n.label == "class_1" for n in neighbors)  # colours plus noise: same class nearest
    # an image array, and a batch of files, give the same neighbours as the file
    pixels = np.asarray(Image.open(query).convert("RGB"))
    by_array = index.search(pixels, k=4)
    assert [n.file for n in by_array] == [n.file for n in neighbors]
    batch = index.search([query, index.files[0]], k=3)
    assert len(batch) == 2 and batch[1][0].file == index.files[0]
    with pytest.raises(ValueError, match="k=21 must be between 1 and the number of indexed images"):
        index.search(query, k=21)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_search_finds_the_exact_neighbours_of_a_small_gallery(model, gallery, kind):
    exact = Index.from_images(model, gallery, progress=False)
    approximate = Index(model, exact.files, exact.labels, exact.embeddings, model_name="triplet_digits", kind=kind)
    for file in exact.files[::3]:
        assert {n.file for n in approximate.search(file, 3)} == {n.file for n in exact.search(file, 3)}


def test_saved_index_reloads_and_refuses_another_model(model, gallery, tmp_path):
    index = Index.from_images("triplet_digits", sorted(map(str, gallery.rglob("*.png"))), progress=False)
    assert index.labels == [None] * 12 and index.model_name == "triplet_digits"
    path = index.save(tmp_path / "photos.index")
    reloaded = Index.load(path)
    assert reloaded.files == index.files and reloaded.weights_sha256 == registry.weights_sha256(model)
    assert reloaded.search(index.files[2], 5) == index.search(index.files[2], 5)
    assert isinstance(index.search(index.files[2], 5)[0], Neighbor)
    with pytest.raises(ValueError, match="was embedded with 'triplet_digits'"):
        Index.load(path, model=zoo.load("topk_digits"))
    with pytest.raises(FileNotFoundError, match="is not a saved index"):
        Index.load(tmp_path)
    unnamed = Index(model, index.files, index.labels, index.embeddings, model_name="my_net")
    with pytest.raises(ValueError, match="built with the model 'my_net', which is neither a registry name"):
        Index.load(unnamed.save(tmp_path / "unnamed.index"))
    assert len(Index.load(tmp_path / "unnamed.index", model=model)) == 12


def test_cli_index_and_search_print_one_line_per_neighbour_own_file_first(gallery, tmp_path, capsys):
    out = tmp_path / "idx"
    assert cli.main(["index", "--model", "triplet_digits", "--images", str(gallery), "--out", str(out)]) == 0
    assert "20 images (20 labelled) indexed with triplet_digits (exact search)" in capsys.readouterr().out
    query = gallery / "class_2" / "img_3.jpg"
    grid = tmp_path / "grid.png"
    assert cli.main(["search", "--index", str(out), "--query", str(query), "-k", "5", "--grid", str(grid)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    file, distance, label = lines[0].split("\t")
    assert (file, float(distance), label) == (str(query), 0.0, "class_2")
    assert all(float(line.split("\t")[1]) >= 0 for line in lines)
    height, width, _ = np.asarray(Image.open(grid)).shape
    cell = viz.THUMBNAIL + 2 * viz.BORDER
    assert (height, width) == (viz.PAD + cell + viz.CAPTION + viz.PAD, viz.PAD + 6 * (cell + viz.PAD) + viz.SEPARATOR)
    assert cli.main(["search", "--index", str(tmp_path / "none"), "--query", str(query)]) == 2
    assert "is not a saved index" in capsys.readouterr().err


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section titled ``section``."""
    text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in text.split(f"```{language}\n")[1:]]


def test_readme_your_own_images_commands_and_python_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_class_folder(tmp_path / "photos", classes=8, per_class=4, names=("cats", "dogs", "owls", "cows", "bats",
                                                                          "eels", "yaks", "emus"))
    (command_block,) = readme_blocks("Your own images", "bash")
    commands = [shlex.split(line.split("#")[0]) for line in command_block.strip().splitlines()]
    assert [argv[:2] for argv in commands] == [["zoo", "index"], ["zoo", "train"], ["zoo", "index"], ["zoo", "search"]]
    assert cli.main(commands[0][1:]) == 0  # ImageNet features, no training
    assert Index.load("photos-imagenet.index").model_name == "efficientnet_lite0@96"
    fast = ["--epochs", "1", "--steps-per-epoch", "2"]  # the README's command, shortened for the test
    assert cli.main([*commands[1][1:], *fast]) == 0
    assert (tmp_path / "runs" / "photos" / "model.keras").is_file()
    config = json.loads((tmp_path / "runs" / "photos" / "config.json").read_text())
    assert (config["backbone"], config["backbone_weights"]) == ("efficientnet_lite0", "imagenet")  # the ImageNet start
    for argv in commands[2:]:
        assert cli.main(argv[1:]) == 0, argv
    lines = capsys.readouterr().out.strip().splitlines()[-5:]
    assert lines[0].split("\t")[0] == "photos/cats/img_1.jpg" and lines[0].endswith("\tcats")
    assert Image.open(tmp_path / "result.png").mode == "RGB"
    (python_block,) = readme_blocks("Your own images", "python")
    exec(python_block, {})
    printed = [line for line in capsys.readouterr().out.strip().splitlines() if "batch" not in line]  # progress
    assert len(printed) == 5 and printed[0].split() == ["photos/cats/img_1.jpg", "0.0", "cats"]
    assert Index.load("photos.index").model_name == "triplet_digits"
