"""zoo.export: the SavedModel's signatures name their output, refuse a wrong size, preprocess, keep NaN."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data import preprocess_for_embedding
from zoo.export import export_saved_model, load_saved_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = zoo.load("triplet_digits")
    return model, load_saved_model(export_saved_model(model, tmp_path_factory.mktemp("export") / "triplet_digits"))


def test_serve_returns_named_embeddings_equal_to_the_keras_model(exported):
    model, saved = exported
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    signature = saved.signatures["serve"]
    assert list(signature.structured_outputs) == ["embeddings"]
    served = signature(images=tf.constant(images))["embeddings"]
    np.testing.assert_allclose(served.numpy(), np.asarray(model(images)), atol=1e-5)
    np.testing.assert_allclose(saved.serve(tf.constant(images))["embeddings"].numpy(), served.numpy(), atol=1e-6)


def test_a_wrong_image_size_is_refused_by_serve_and_preprocessed_by_serve_images(exported):
    model, saved = exported
    large = np.random.default_rng(1).uniform(0, 255, (2, 64, 48, 3)).astype("float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be \(batch, 32, 32, 3\)"):
        saved.signatures["serve"](images=tf.constant(large))
    served = saved.signatures["serve_images"](images=tf.constant(large))["embeddings"].numpy()
    expected = np.asarray(model(preprocess_for_embedding(large, 32)))
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_an_image_with_a_nan_pixel_gets_a_nan_embedding(exported):
    _, saved = exported
    images = np.full((2, 32, 32, 3), 100.0, "float32")
    images[1, 5, 5, 1] = np.nan
    served = saved.serve(tf.constant(images))["embeddings"].numpy()
    assert np.isfinite(served[0]).all() and np.isnan(served[1]).all()
    larger = np.full((2, 64, 64, 3), 100.0, "float32")
    larger[1, 0, 0, 0] = np.inf  # a corner pixel that the centre crop of serve_images leaves out
    served = saved.signatures["serve_images"](images=tf.constant(larger))["embeddings"].numpy()
    assert np.isfinite(served[0]).all() and np.isnan(served[1]).all()


@pytest.mark.parametrize("signature", ["serve", "serve_images"])
@pytest.mark.parametrize("shape", [(0, 32, 32, 3), (1, 0, 0, 3)])
def test_an_empty_batch_or_image_is_refused_clearly(exported, signature, shape):
    _, saved = exported
    refused = f"the signature {signature} needs a batch of at least one image|" r"images must be \(batch, 32, 32, 3\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        saved.signatures[signature](images=tf.zeros(shape))
