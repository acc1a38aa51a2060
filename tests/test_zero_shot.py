"""Zero-shot ImageNet features: ``zoo index --backbone`` / ``zoo evaluate --backbone`` and ``BACKBONE@SIZE`` models."""

import numpy as np
import pytest
from image_folders import make_class_folder

from zoo import cli, registry
from zoo.backbones import build_feature_net
from zoo.index import Index


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("zero_shot") / "photos", classes=6, per_class=6, size=40)


def test_backbone_at_size_is_its_imagenet_features(photos):
    model = registry.load_model("efficientnet_lite0@64")
    assert model.zoo_name == "efficientnet_lite0@64" and registry.model_input_size(model) == 64
    assert registry.weights_sha256(model) == registry.weights_sha256(build_feature_net("efficientnet_lite0", 64))
    index = Index.from_images(model, photos, progress=False)
    assert index.embeddings.shape == (36, 1280)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # ImageNet features group the colour classes: every image's nearest other image is of its class
    neighbours = index.search(index.files, k=2)
    assert all(found[1].label == index.labels[i] for i, found in enumerate(neighbours))


@pytest.mark.parametrize("spec, message", [("efficientnet_lite0@big", "named BACKBONE@SIZE, e.g. efficientnet_lite0@224"),
                                           ("small_cnn@64", "small_cnn has no ImageNet weights")])
def test_bad_zero_shot_names_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        registry.load_model(spec)


def test_cli_index_and_evaluate_with_a_backbone(photos, tmp_path, capsys):
    out = tmp_path / "photos.index"
    assert cli.main(["index", "--backbone", "efficientnet_lite0", "--image-size", "64", "--images", str(photos),
                     "--out", str(out)]) == 0
    assert "36 images (36 labelled) indexed with efficientnet_lite0@64" in capsys.readouterr().out
    reloaded = Index.load(out)  # rebuilt from its name, the same weights
    assert reloaded.model_name == "efficientnet_lite0@64" and len(reloaded) == 36
    assert cli.main(["search", "--index", str(out), "--query", reloaded.files[7], "-k", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split("\t")
    assert first[0] == reloaded.files[7] and first[2] == "class_1"
    assert cli.main(["evaluate", "--backbone", "efficientnet_lite0", "--image-size", "64", "--dataset", "folder",
                     "--data-dir", str(photos)]) == 0
    table = capsys.readouterr().out.splitlines()
    header, row = table[0].split(), table[1].split()
    assert row[0] == "efficientnet_lite0@64" and float(row[1 + header.index("map@r")]) > 0.6  # random: about 0.2
    with pytest.raises(SystemExit):
        cli.main(["index", "--model", "triplet_digits", "--backbone", "efficientnet_lite0", "--images", str(photos),
                  "--out", str(out)])
