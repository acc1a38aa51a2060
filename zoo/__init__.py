"""zoo: a Keras 3 / TensorFlow model zoo for deep metric learning.

    import zoo
    zoo.list_models()                      # every registry entry
    model = zoo.load("triplet_digits")     # published weights, sha256- and provenance-checked
    embeddings = model(zoo.data.preprocess_for_embedding(images, 32))   # images: RGB in [0, 255]
    print(zoo.card("triplet_digits"))      # method, data, hyperparameters, measured metrics, sha256
    index = zoo.Index.from_images(model, "photos/")                     # search your own images

Everything is imported on first use (module ``__getattr__``): ``import zoo`` alone does not load
TensorFlow, and ``zoo.metrics``, ``zoo.data``, ``zoo.losses``, ``zoo.viz`` ... load when first touched.
The zoo's Keras classes are registered as soon as Keras has loaded (:mod:`zoo.keras_registration`), so
``keras.models.load_model("runs/x/model.keras")`` works after a plain ``import zoo``.
"""

import importlib
import os

from zoo import keras_registration

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras_registration.install()

__version__ = "0.1.0"

# Public name -> the module defining it.
_LAZY_ATTRIBUTES = {
    "Index": "zoo.index",
    "WeightsError": "zoo.registry",
    "build": "zoo.registry",
    "card": "zoo.cards",
    "get_entry": "zoo.registry",
    "list_models": "zoo.registry",
    "load": "zoo.registry",
}
SUBMODULES = ("backbones", "calibration", "callbacks", "cards", "cli", "data", "evaluation", "export", "index", "losses",
              "methods", "metrics", "miners", "registry", "training", "viz")
__all__ = [*_LAZY_ATTRIBUTES, *SUBMODULES]


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    if name in SUBMODULES:
        return importlib.import_module(f"zoo.{name}")
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
