"""zoo.Index: embed a folder, search it (exact and approximate), save and reload it; zoo index / zoo search."""

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from image_folders import make_class_folder
from PIL import Image

import zoo
from zoo import cli, registry, viz
from zoo.data import eval_pipeline, load_dataset
from zoo.evaluation import embed_dataset
from zoo.index import Index, Neighbor, _faiss_index


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


def _clustered_gallery(classes: int = 40, per_class: int = 50, dimension: int = 64) -> np.ndarray:
    """Unit embeddings of a gallery that approximate search has to work on: 2,000 of them, in 40 tight classes."""
    rng = np.random.default_rng(0)
    points = np.repeat(rng.normal(size=(classes, dimension)), per_class, axis=0)
    points += 0.5 * rng.normal(size=points.shape)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_search_visits_part_of_a_large_gallery_and_finds_its_exact_neighbours(model, kind):
    embeddings = _clustered_gallery()
    index = Index(model, [f"{i}.png" for i in range(len(embeddings))], [None] * len(embeddings), embeddings,
                  model_name="triplet_digits", kind=kind)
    vectors, queries = index._vectors, embeddings[::20]
    if kind == "ivf":
        assert vectors.nlist > 1 and vectors.nprobe < vectors.nlist  # several lists, a few of them visited
    else:
        assert vectors.hnsw.max_level >= 1  # a graph of several levels
    stats = faiss.cvar.hnsw_stats if kind == "hnsw" else faiss.cvar.indexIVF_stats
    stats.reset()
    _, found = vectors.search(queries, 10)
    assert 0 < stats.ndis < len(queries) * len(embeddings) / 2  # far fewer distances than an exhaustive search
    exact = np.argsort(((queries[:, None] - embeddings[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(row) & set(truth)) / 10 for row, truth in zip(found, exact)])
    assert recall >= 0.95, recall


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


# ---- integrity of a saved index: every file checked, damaged or edited ones refused by name -------------------
@pytest.fixture(scope="module")
def saved_index(model, gallery, tmp_path_factory):
    return Index.from_images(model, gallery, progress=False).save(tmp_path_factory.mktemp("saved") / "photos.index")


def _copy_index(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.index"
    shutil.copytree(saved, copy)
    return copy


def _flip_byte(file: Path, offset: int = -5) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def _resign(folder: Path, **fields) -> None:
    """Edit index.json's fields and record the sha256 of the files as they are now (a crafted index)."""
    meta = json.loads((folder / "index.json").read_text())
    meta.update(fields)
    meta["sha256"] = {**{name: registry.sha256_of(folder / name) for name in ("embeddings.npy", "vectors.faiss")},
                      **{part: hashlib.sha256(json.dumps(meta[part]).encode()).hexdigest() for part in ("files", "labels")}}
    (folder / "index.json").write_text(json.dumps(meta))


def _edit_meta(folder: Path, **fields) -> None:
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, **fields}))


def _random_vectors(folder: Path, count: int, dimension: int) -> None:
    vectors = np.random.default_rng(0).normal(size=(count, dimension)).astype(np.float32)
    faiss.write_index(_faiss_index(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "exact"),
                      str(folder / "vectors.faiss"))


DAMAGES = {
    "flipped vectors": (lambda f: _flip_byte(f / "vectors.faiss"), "vectors.faiss is damaged or was changed"),
    "flipped embeddings": (lambda f: _flip_byte(f / "embeddings.npy"), "embeddings.npy is damaged or was changed"),
    "truncated vectors": (lambda f: (f / "vectors.faiss").write_bytes((f / "vectors.faiss").read_bytes()[:200]),
                          "vectors.faiss is damaged or was changed"),
    "3 random vectors": (lambda f: _random_vectors(f, 3, 64), "vectors.faiss is damaged or was changed"),
    "3 random vectors, re-signed": (lambda f: (_random_vectors(f, 3, 64), _resign(f)),
                                    "vectors.faiss holds 3 vectors of dimension 64, index.json records 20"),
    "wrong dimension, re-signed": (lambda f: (_random_vectors(f, 20, 8), _resign(f)),
                                   "vectors.faiss holds 20 vectors of dimension 8, index.json records 20 of dimension 64"),
    "embeddings of another shape": (lambda f: (np.save(f / "embeddings.npy", np.zeros((3, 64), np.float32)), _resign(f)),
                                    r"embeddings.npy holds float32 \(3, 64\), index.json records float32 \(20, 64\)"),
    "edited labels": (lambda f: _edit_meta(f, labels=["class_1"] * 20), "its labels list was changed"),
    "edited files": (lambda f: _edit_meta(f, files=sorted(json.loads((f / "index.json").read_text())["files"])[::-1]),
                     "its files list was changed"),
    "a list for index.json": (lambda f: (f / "index.json").write_text("[1, 2]"), "index.json holds a list"),
    "not JSON": (lambda f: (f / "index.json").write_text("{"), "index.json cannot be read"),
    "no sha256 (format 1)": (lambda f: _edit_meta(f, format=1), "index.json is of format 1"),
    "a count that is not a number": (lambda f: _edit_meta(f, count="20"), "mistypes the fields count"),
    "fewer labels, re-signed": (lambda f: _resign(f, labels=[None] * 19), "lists 20 files and 19 labels"),
    "hnsw file for an exact index, re-signed": (
        lambda f: (faiss.write_index(_faiss_index(np.load(f / "embeddings.npy"), "hnsw"), str(f / "vectors.faiss")),
                   _resign(f)),
        "holds a faiss IndexHNSWFlat over IndexFlatL2, not the L2 exact index"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_load_refuses_a_damaged_or_edited_index_naming_the_file(model, saved_index, tmp_path, damage):
    folder = _copy_index(saved_index, tmp_path)
    assert len(Index.load(folder, model=model)) == 20
    change, message = DAMAGES[damage]
    change(folder)
    with pytest.raises(ValueError, match=message):
        Index.load(folder, model=model)


def test_load_refuses_on_disk_inverted_lists_without_mapping_the_file_they_name(model, saved_index, tmp_path):
    folder = _copy_index(saved_index, tmp_path)
    victim = tmp_path / "notes.txt"  # a writable file of the user's that a crafted IVF index names
    embeddings = np.load(folder / "embeddings.npy")
    ivf = _faiss_index(np.tile(embeddings, (4, 1)), "ivf")
    on_disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(victim))
    ivf.replace_invlists(on_disk, False)  # on_disk stays owned by Python
    faiss.write_index(ivf, str(folder / "vectors.faiss"))
    victim.write_bytes(b"my notes\n" * 1000)
    _resign(folder, kind="ivf", count=80, files=[f"f{i}.png" for i in range(80)], labels=[None] * 80)
    np.save(folder / "embeddings.npy", np.tile(embeddings, (4, 1)))
    _resign(folder)
    before = victim.read_bytes()
    with pytest.raises(ValueError, match="vectors.faiss holds on-disk inverted lists"):
        Index.load(folder, model=model)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated vectors", "a list for index.json", "wrong dimension, re-signed"])
def test_cli_search_on_a_damaged_index_says_so_in_one_line_naming_the_file(saved_index, gallery, tmp_path, capsys,
                                                                          damage):
    folder = _copy_index(saved_index, tmp_path)
    change, message = DAMAGES[damage]
    change(folder)
    query = str(gallery / "class_0" / "img_0.png")
    assert cli.main(["search", "--index", str(folder), "--query", query, "-k", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("zoo search: error: ") and str(folder) in error
    assert re.search(message, error)


def test_cli_commands_on_a_damaged_keras_file_say_so_in_one_line(gallery, tmp_path, capsys):
    damaged = tmp_path / "model.keras"
    damaged.write_bytes(b"PK\x03\x04 not a zip")
    for argv in (["evaluate", "--model", str(damaged)], ["export", "--model", str(damaged), "--out", str(tmp_path / "x")],
                 ["index", "--model", str(damaged), "--images", str(gallery), "--out", str(tmp_path / "i")]):
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert f"model file {damaged} cannot be loaded (damaged, or not a Keras model)" in error
        assert len(error.splitlines()) == 1


def test_an_index_moved_with_its_images_and_model_works_from_any_directory(model, tmp_path, monkeypatch, capsys):
    before, after, elsewhere = tmp_path / "before", tmp_path / "after", tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_class_folder(before / "photos", classes=2, per_class=3)
    model.save(before / "model.keras")
    monkeypatch.chdir(before)  # relative paths, as a user types them
    index = Index.from_images("model.keras", "photos", progress=False)
    index.save("photos.index")
    meta = json.loads((before / "photos.index" / "index.json").read_text())
    assert meta["model"] == "../model.keras" and meta["files"][0] == "../photos/class_0/img_0.png"
    shutil.move(before, after)
    monkeypatch.chdir(elsewhere)
    moved = Index.load(after / "photos.index")
    assert moved.model_name == str(after / "model.keras")
    assert moved.files == [str(after / file) for file in index.files] and all(map(Path.is_file, map(Path, moved.files)))
    query = after / "photos" / "class_1" / "img_2.png"
    assert moved.search(query, 2)[0] == Neighbor(str(query), "class_1", pytest.approx(0.0, abs=1e-3))
    # the model moved apart from the index: named when missing, and --model gives it
    shutil.move(after / "model.keras", elsewhere / "net.keras")
    assert cli.main(["search", "--index", str(after / "photos.index"), "--query", str(query), "-k", "2"]) == 2
    assert f"built with the model '{after / 'model.keras'}', which is neither" in capsys.readouterr().err
    assert cli.main(["search", "--index", str(after / "photos.index"), "--query", str(query), "-k", "2",
                     "--model", "net.keras"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split("\t")[0] == str(query)


def test_cli_search_keeps_one_line_per_neighbour_for_file_names_with_newlines_and_json_for_programs(
        model, tmp_path, capsys):
    photos = make_class_folder(tmp_path / "photos", classes=2, per_class=2)
    odd = photos / "class_0" / "two\nlines\tand a tab.png"
    (photos / "class_0" / "img_0.png").rename(odd)
    Index.from_images(model, photos, progress=False).save(tmp_path / "idx")
    argv = ["search", "--index", str(tmp_path / "idx"), "--query", str(odd), "-k", "4"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 4 and lines[0].split("\t")[0] == str(odd).replace("\n", "\\n").replace("\t", "\\t")
    assert cli.main([*argv, "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [set(row) for row in found] == [{"file", "label", "distance"}] * 4
    assert found[0]["file"] == str(odd) and found[0]["label"] == "class_0"
