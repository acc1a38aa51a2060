"""The zoo's Keras classes registered as soon as Keras can load them, without ``import zoo`` importing TensorFlow.

``keras.models.load_model("runs/x/model.keras")`` finds a class saved by the zoo (``zoo>MetricModel``,
its losses, ``PaperAdam``...) only once the module defining it has run ``register_keras_serializable``.
``import zoo`` stays light (it loads no TensorFlow), so it calls :func:`install`: the classes are
registered at once when Keras and TensorFlow are already loaded, else right after both have finished
loading (an import hook on ``keras`` and ``tensorflow``, removed once it has fired; each imports the
other while it loads, so registering earlier would see half-loaded modules).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Sequence

WATCHED = ("keras", "tensorflow")  # both must be loaded before the zoo's classes can be
MODULES = ("zoo.methods", "zoo.optimizers")  # importing them registers every serializable class of the zoo


def _loaded(name: str) -> bool:
    """Whether module ``name`` is imported and has finished running."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``keras`` and ``tensorflow`` as usual, and registers the zoo's classes once both have loaded."""

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None):
        if name not in WATCHED:
            return None
        sys.meta_path.remove(self)  # the spec that the other finders give
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            module.__spec__._initializing = False  # importlib clears it only after this returns
            register_when_loaded()

        spec.loader.exec_module = exec_module
        return spec


_HOOK = _RegisterAfterImport()


def register_when_loaded() -> bool:
    """Register the zoo's Keras classes if Keras and TensorFlow have loaded; returns whether they are registered.

    A failure warns (naming the module to import by hand) rather than breaking the user's import of Keras.
    """
    if not all(map(_loaded, WATCHED)):
        return False
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
    try:
        for module in MODULES:
            importlib.import_module(module)
    except Exception as error:  # never let the zoo break `import keras`
        warnings.warn(f"the zoo's Keras classes could not be registered ({type(error).__name__}: {error}): "
                      f"import {', '.join(MODULES)} before keras.models.load_model", stacklevel=2)
        return False
    return True


def install() -> None:
    """Register the zoo's Keras classes now if Keras and TensorFlow are loaded, else once they are."""
    if not register_when_loaded() and _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
