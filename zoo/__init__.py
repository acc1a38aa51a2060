"""zoo: a Keras 3 / TensorFlow model zoo for deep metric learning.

    import zoo
    zoo.list_models()                      # every registry entry
    model = zoo.load("triplet_digits")     # published weights, sha256-verified
    embeddings = model(images)             # images: float32 [0, 255], (B, S, S, 3)
    print(zoo.card("triplet_digits"))      # method, data, hyperparameters, measured metrics, sha256
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.cards import card  # noqa: E402
from zoo.registry import get_entry, list_models, load  # noqa: E402

__version__ = "0.1.0"
__all__ = ["card", "get_entry", "list_models", "load"]
