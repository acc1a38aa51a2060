"""The embedding net: shapes, L2 normalisation, preprocessing values, frozen BN, weight loading."""

import keras
import numpy as np
import pytest

from zoo import backbones
from zoo.backbones import ImagePreprocessing, build_embedding_net


def test_tiny_cnn_embeddings_are_unit_vectors():
    net = build_embedding_net("tiny_cnn", embedding_dim=16, input_size=32)
    out = np.asarray(net(np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")))
    assert out.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_small_cnn_is_the_four_block_network_of_the_peer_benchmark():
    net = build_embedding_net("small_cnn", embedding_dim=64, input_size=64)
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (3, 3)), (128, (3, 3)), (256, (3, 3))]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in net.layers) == 4
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in net.layers) == 3
    assert net.get_layer("pool").output.shape == (None, 256)
    assert net.get_layer("preprocessing").mode == "standardize"
    # 3x3 convs without bias, 4 values per BN channel (scale, offset, moving mean and variance), 256 -> 64 head
    assert net.count_params() == 9 * (3 * 32 + 32 * 64 + 64 * 128 + 128 * 256) + 4 * (32 + 64 + 128 + 256) + 256 * 64 + 64
    out = np.asarray(net(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_preprocessing_modes_map_pixels_as_the_backbones_expect():
    pixel = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")  # R, G, B
    np.testing.assert_allclose(np.asarray(ImagePreprocessing("tf")(pixel))[0, 0, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(np.asarray(ImagePreprocessing("unit")(pixel))[0, 0, 0], [0.0, 0.5, 1.0])
    # standardize: (x / 255 - ImageNet mean) / ImageNet std per channel
    np.testing.assert_allclose(
        np.asarray(ImagePreprocessing("standardize")(pixel))[0, 0, 0],
        [(0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5,
    )
    # caffe: RGB -> BGR, minus the ImageNet mean (103.939, 116.779, 123.68)
    np.testing.assert_allclose(
        np.asarray(ImagePreprocessing("caffe")(pixel))[0, 0, 0], [255 - 103.939, 127.5 - 116.779, 0 - 123.68], rtol=1e-5
    )


def test_resnet50_freeze_batchnorm_freezes_every_bn_layer():
    net = build_embedding_net("resnet50", embedding_dim=8, input_size=32, weights=None, freeze_batchnorm=True)
    bn = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 53  # ResNet50 has 53 BatchNormalization layers
    assert not any(layer.trainable for layer in bn)
    assert net.get_layer("embedding").trainable
    assert net.output_shape == (None, 8)


def test_local_backbone_weights_file_is_loaded(tmp_path):
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "resnet50_notop.weights.h5")
    source.save_weights(path)
    net = build_embedding_net("resnet50", embedding_dim=8, input_size=32, weights=path)
    np.testing.assert_array_equal(net.get_layer("conv1_conv").get_weights()[0], source.get_layer("conv1_conv").get_weights()[0])


def test_offline_imagenet_download_fails_fast_with_instructions(monkeypatch):
    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", no_network)
    with pytest.raises(RuntimeError, match=r"could not load the ImageNet weights of 'resnet50'.*weights='/path/to/file.h5'"):
        build_embedding_net("resnet50", input_size=32, weights="imagenet")


def test_bad_backbone_arguments_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_embedding_net("vgg")
    with pytest.raises(ValueError, match="tiny_cnn has no pretrained"):
        build_embedding_net("tiny_cnn", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        build_embedding_net("resnet50", input_size=32, weights="missing.h5")
    assert set(backbones.BACKBONES) == {"inception_v3", "resnet50", "small_cnn", "tiny_cnn", "efficientnet_lite0",
                                        "efficientnet_lite1", "efficientnet_lite2"}


def test_small_cnn_takes_the_zoos_pretrained_glyphs_backbone(tmp_path, monkeypatch):
    pretrained = build_embedding_net("small_cnn", embedding_dim=16, input_size=32, weights="glyphs")
    scratch = build_embedding_net("small_cnn", embedding_dim=16, input_size=32, weights=None)
    loaded = backbones.backbone_part(pretrained).get_weights()
    assert len(loaded) == 4 + 4 * 4  # 4 conv kernels, 4 BN x (scale, offset, moving mean, moving variance)
    assert not any(np.array_equal(a, b) for a, b in zip(loaded, backbones.backbone_part(scratch).get_weights())
                   if a.ndim == 4)
    # the file's values, whatever the head: load it into a fresh backbone by hand
    fresh = backbones.backbone_part(build_embedding_net("small_cnn", embedding_dim=8, input_size=32, weights=None))
    fresh.load_weights(backbones.pretrained_backbone_file("small_cnn", "glyphs"))
    for a, b in zip(fresh.get_weights(), loaded):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"small_cnn has no pretrained weights 'imagenet'; available: \['glyphs'\]"):
        build_embedding_net("small_cnn", weights="imagenet")
    corrupt = tmp_path / "small_cnn_glyphs.weights.h5"
    corrupt.write_bytes(b"not weights")
    monkeypatch.setattr(backbones, "BACKBONE_WEIGHTS_DIR", tmp_path)
    with pytest.raises(OSError, match="small_cnn_glyphs.weights.h5 has sha256 .* the file is corrupt"):
        build_embedding_net("small_cnn", weights="glyphs")

