"""Names of the methods and datasets, readable without importing TensorFlow (for ``zoo --help``).

Each method lives in the module ``zoo/methods/<name>.py`` and registers itself under that name.
"""

METHOD_NAMES: tuple[str, ...] = ("triplet", "thsg", "topk", "profs", "amdaml", "htg")
