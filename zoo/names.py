"""Names of the methods, readable without importing TensorFlow (for ``zoo --help``).

Each method lives in the module ``zoo/methods/<name>.py`` and registers itself under that name. The datasets'
names are :data:`zoo.data.DATASETS` (only ``zoo train`` lists them, and it imports TensorFlow anyway).
"""

METHOD_NAMES: tuple[str, ...] = ("triplet", "thsg", "topk", "profs", "amdaml", "htg")
