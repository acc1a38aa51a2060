"""Small image folders for the tests: one subfolder per class, PNG and JPEG mixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# One colour per class: images of a class are its colour plus noise, so even an untrained net groups them.
COLOURS = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 40), (200, 40, 200), (40, 210, 210),
           (120, 120, 120), (250, 150, 60))


def make_class_folder(
    root: Path, classes: int = 4, per_class: int = 5, size: int = 20, seed: int = 0, names: tuple[str, ...] = ()
) -> Path:
    """Write ``root/<class>/img_<i>.png|jpg`` (even i PNG, odd i JPEG); classes ``names`` or ``class_<c>``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / (names[c] if names else f"class_{c}")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(COLOURS[c]) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.{'png' if i % 2 == 0 else 'jpg'}")
    return root
