"""scikit-learn's bundled handwritten digits (1797 images of 8x8, offline): the default dataset.

Zero-shot split: digits 0-4 train, 5-9 test. Images keep their native 8x8 size as uint8
RGB (grey repeated on 3 channels, 0..16 scaled to 0..255); the pipelines upscale them.
Mirrored digits are not digits, so ``allow_flip`` is False.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as _sklearn_digits

from zoo.data import ImageSet, build_image_set, zero_shot_mask

LAST_TRAIN_DIGIT = 4


def load_digits(split: str = "train") -> ImageSet:
    """Load the ``"train"`` (digits 0-4) or ``"test"`` (digits 5-9) split.

    Returns:
        An in-memory ImageSet of uint8 (N, 8, 8, 3) images; ``class_names`` are the digits.
    """
    digits = _sklearn_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    return build_image_set(
        "digits",
        split,
        digits.target,
        zero_shot_mask(digits.target, split, LAST_TRAIN_DIGIT),
        images=images,
        allow_flip=False,
    )
