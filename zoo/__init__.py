"""zoo: a Keras 3 / TensorFlow model zoo for deep metric learning.

    import zoo
    zoo.list_models()                      # every registry entry
    model = zoo.load("triplet_digits")     # published weights, sha256-verified
    embeddings = model(images)             # images: float32 [0, 255], (B, S, S, 3)
    print(zoo.card("triplet_digits"))      # method, data, hyperparameters, measured metrics, sha256
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
__all__ = ["card", "get_entry", "list_models", "load"]

# Imported on first use, so that `from zoo import metrics` does not load TensorFlow.
_LAZY_ATTRIBUTES = {"card": "zoo.cards", "get_entry": "zoo.registry", "list_models": "zoo.registry", "load": "zoo.registry"}


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
