"""Shared test setup: quiet TensorFlow, the Keras TensorFlow backend, small deterministic helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def pk_batch():
    """A (images, labels) batch of 4 classes x 4 images, 32 px, random pixels in [0, 255]."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 4).astype("int32")
    return images, labels
