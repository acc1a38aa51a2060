"""The fixed inputs of the EfficientNet-Lite fixture (``benchmarks/peer/efficientnet_lite_reference.py`` writes
their PyTorch logits; ``tests/test_efficientnet_lite.py`` compares the Keras network's with them)."""

from __future__ import annotations

import numpy as np

SIZE = 224
# ImageNet class ids a person accepts for scikit-learn's two photos: a Chinese temple by a lake (bell cote,
# boathouse, monastery, palace, castle, lakeside, pagoda) and a daisy (daisy, bee).
PLAUSIBLE_CLASSES = ({442, 449, 663, 698, 483, 975, 500}, {985, 309})


def fixture_inputs() -> np.ndarray:
    """(4, 224, 224, 3) uint8: two seeded noise images, then scikit-learn's china.jpg and flower.jpg resized."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    noise = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    photos = [np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR))
              for image in load_sample_images().images]
    return np.concatenate([noise, np.stack(photos)])
