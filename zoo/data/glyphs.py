"""Glyphs: an offline many-class benchmark of the Omniglot kind, rendered from the fonts pip installs.

Every class is one Unicode character, drawn by every font of matplotlib's font folder
(``matplotlib/mpl-data/fonts/ttf``: DejaVu Sans, Sans Mono and Serif in four styles each, STIX,
Computer Modern) that has a real glyph for it, then augmented with seeded small affine changes,
stroke weight, blur and noise to :data:`IMAGES_PER_CLASS` images (the fonts play the drawers of
Omniglot). Images are white glyphs on black, :data:`IMAGE_SIZE` px, uint8 RGB (grey repeated).

Which characters. Those of the :data:`BLOCKS` with a general category of a letter, number,
symbol or punctuation, without a Unicode decomposition (no precomposed accented letters, no
compatibility variants such as mathematical bold A), that at least :data:`MIN_FONTS` fonts draw
differently and whose ink spans at least :data:`MIN_INK_EXTENT` of the image. A font draws a
character when its cmap maps it to a glyph whose name means that character (Adobe Glyph List,
``fontTools.agl``; this drops Computer Modern's TeX-encoded slots and the LastResort font's
boxes) and the rendering has ink and differs from the font's .notdef box. Identical renderings
of one character by two fonts count once; a character that some font draws exactly like an
earlier one (a homoglyph, e.g. Cyrillic a = Latin a) is left out, so no shape is in two classes.

Zero-shot split by Unicode block, as Omniglot splits by alphabet: each block of :data:`BLOCKS`
belongs to the train or the test split, and both splits hold letters of several scripts and
symbols (see :data:`BLOCKS`). The build is deterministic for given package versions (matplotlib's
font files, Pillow and FreeType, numpy, Python's Unicode database); it runs once into a cache folder
(``$ZOO_CACHE/glyphs`` or ``~/.keras/datasets/zoo_glyphs``), in a file named after a hash of the
build parameters, the library versions and the font files, and later loads read that file.

Size (matplotlib 3.11's fonts, Pillow 13 / FreeType 2.14): 352 train and 308 test classes of 24
images (15,840 in all, an 8 MB cache file), built in about 20 s (21 s of CPU, one core), loaded in
under a second. Raw pixels (L2-normalised) retrieve the test classes at MAP@R 0.035, R@1 0.32;
tiny_cnn trained 600 steps with the contrastive loss reaches MAP@R 0.18, R@1 0.56.
Known limit: near-homoglyphs that no font draws pixel-identically stay apart as classes (e.g.
Greek Delta, train, and the increment sign, test; colon and the Armenian full stop).
"""

from __future__ import annotations

import hashlib
import json
import os
import types
import unicodedata
import warnings
from pathlib import Path

import keras
import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from zoo.data import ImageSet, build_image_set

FONT_PACKAGE = "matplotlib"
BUILD_VERSION = 1  # bump when the rendering or the augmentation changes

IMAGE_SIZE = 32
RENDER_SCALE = 2  # glyphs are drawn and augmented at RENDER_SCALE x IMAGE_SIZE, then downsampled
FONT_SIZE = 0.55  # font size (em) as a fraction of the image size
MAX_EXTENT = 0.8  # glyphs larger than this fraction of the image are scaled down to it
IMAGES_PER_CLASS = 24
MIN_FONTS = 8
MIN_INK_EXTENT = 0.22  # least larger side of a rendering's ink box, as a fraction of the image
CATEGORIES = ("L", "N", "S", "P")  # first letter of the Unicode general category

# Augmentation of each image, sampled uniformly in these ranges.
ROTATION_DEGREES = 10.0
SCALE_RANGE = (0.8, 1.1)
ASPECT_RANGE = (0.9, 1.1)
SHEAR = 0.2
SHIFT = 0.08  # of the image size, in each direction
STROKE_WEIGHT = (-0.6, 1.0)  # w < 0 thins, w > 0 thickens: |w| of a 3x3 erosion / dilation at the render scale
BLUR_RADIUS = (0.0, 1.0)  # Gaussian blur at the render scale, in px
NOISE_STD = (0.0, 12.0)  # Gaussian pixel noise on 0..255, after stretching the ink to 255

# (first code point, last code point + 1, block, split). Train: Latin, Greek, Armenian, arrows,
# currency. Test: Cyrillic, IPA, mathematical operators, technical and letterlike symbols, general
# punctuation.
BLOCKS: tuple[tuple[int, int, str, str], ...] = (
    (0x0020, 0x0080, "Basic Latin", "train"),
    (0x00A0, 0x0100, "Latin-1 Supplement", "train"),
    (0x0100, 0x0180, "Latin Extended-A", "train"),
    (0x0250, 0x02B0, "IPA Extensions", "test"),
    (0x0370, 0x0400, "Greek and Coptic", "train"),
    (0x0400, 0x0500, "Cyrillic", "test"),
    (0x0530, 0x0590, "Armenian", "train"),
    (0x2000, 0x2070, "General Punctuation", "test"),
    (0x20A0, 0x20D0, "Currency Symbols", "train"),
    (0x2100, 0x2150, "Letterlike Symbols", "test"),
    (0x2190, 0x2200, "Arrows", "train"),
    (0x2200, 0x2300, "Mathematical Operators", "test"),
    (0x2300, 0x2400, "Miscellaneous Technical", "test"),
    # Pretrain: scripts and symbols of neither split, for the zoo's pretrained CPU backbones
    # (``backbone_weights="glyphs"``), the offline stand-in for ImageNet pre-training. Their classes are
    # selected after train and test, so adding them changes neither, and no pretrain class has a rendering
    # of a train or test class. With matplotlib's fonts 174 classes pass: 92 of Latin Extended-B and 82
    # Georgian letters (Hebrew and the symbol blocks have fewer than MIN_FONTS distinct renderings).
    (0x0180, 0x0250, "Latin Extended-B", "pretrain"),
    (0x0590, 0x0600, "Hebrew", "pretrain"),
    (0x10A0, 0x1100, "Georgian", "pretrain"),
    (0x2500, 0x2600, "Box Drawing, Block Elements, Geometric Shapes", "pretrain"),
    (0x2600, 0x27C0, "Miscellaneous Symbols, Dingbats", "pretrain"),
    (0x2800, 0x2900, "Braille Patterns", "pretrain"),
)
SPLITS: tuple[str, ...] = ("train", "test", "pretrain")
_NOTDEF_PROBE = 0x10FFFD  # a private-use code point no font maps: rendering it draws the .notdef glyph


def font_dir() -> Path:
    """The folder of the fonts that matplotlib ships (``matplotlib/mpl-data/fonts/ttf``).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        FileNotFoundError: its font folder is missing or holds no .ttf file.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ModuleNotFoundError(
            f"the glyphs dataset renders the fonts of the {FONT_PACKAGE!r} package, which is not installed: "
            f"pip install {FONT_PACKAGE}"
        ) from error
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    if not folder.is_dir() or not any(folder.glob("*.ttf")):
        raise FileNotFoundError(
            f"the glyphs dataset renders the fonts of the {FONT_PACKAGE!r} package, but its font folder {folder} "
            f"is missing or holds no .ttf file: reinstall it (pip install --force-reinstall {FONT_PACKAGE})"
        )
    return folder


def font_files() -> list[Path]:
    """matplotlib's .ttf fonts, sorted by file name."""
    return sorted(font_dir().glob("*.ttf"))


def block_split(code: int) -> str | None:
    """The split (one of :data:`SPLITS`) of the :data:`BLOCKS` block of a code point, None outside them."""
    for first, end, _, split in BLOCKS:
        if first <= code < end:
            return split
    return None


def candidate_characters() -> list[int]:
    """Code points of :data:`BLOCKS` in :data:`CATEGORIES` without a Unicode decomposition, ascending."""
    return [
        code
        for first, end, _, _ in BLOCKS
        for code in range(first, end)
        if unicodedata.category(chr(code))[0] in CATEGORIES and not unicodedata.decomposition(chr(code))
    ]


def _names_character(glyph_name: str, code: int) -> bool:
    """Whether a glyph name means the character ``code`` (Adobe Glyph List, up to canonical equivalence)."""
    from fontTools import agl

    return unicodedata.normalize("NFC", agl.toUnicode(glyph_name)) == unicodedata.normalize("NFC", chr(code))


def _mapped_characters(path: Path, candidates: list[int]) -> list[int]:
    """The candidates that a font's cmap maps to a glyph named after them."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        cmap = font.getBestCmap() or {}
    return [code for code in candidates if code in cmap and _names_character(cmap[code], code)]


def _render(font: ImageFont.FreeTypeFont, code: int, size: int) -> np.ndarray | None:
    """One character, white on black, its ink box centred in a ``size`` square (scaled down to
    :data:`MAX_EXTENT` of it when larger); None when it has no ink or too little extent."""
    canvas = Image.new("L", (4 * size, 4 * size), 0)
    ImageDraw.Draw(canvas).text((2 * size, 2 * size), chr(code), fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    extent = max(glyph.size)
    if extent < MIN_INK_EXTENT * size:
        return None
    if extent > MAX_EXTENT * size:
        scale = MAX_EXTENT * size / extent
        glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                             Image.Resampling.LANCZOS)
    image = Image.new("L", (size, size), 0)
    image.paste(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
    return np.asarray(image)


def render_fonts(image_size: int = IMAGE_SIZE, progress: bool = True) -> dict[int, list[np.ndarray]]:
    """Every candidate character drawn by every font that has a real glyph for it.

    Args:
        image_size: size of the images; glyphs are drawn at :data:`RENDER_SCALE` times it.
        progress: show a progress bar over the fonts.

    Returns:
        Code point -> its distinct renderings (uint8 squares of ``RENDER_SCALE * image_size``), in
        font file order; renderings identical to an earlier font's, or to the font's .notdef, are
        left out.
    """
    size = RENDER_SCALE * image_size
    candidates = candidate_characters()
    paths = font_files()
    bar = keras.utils.Progbar(len(paths), unit_name="font") if progress else None
    renderings: dict[int, dict[bytes, np.ndarray]] = {}
    for path in paths:
        font = ImageFont.truetype(str(path), size=round(FONT_SIZE * size))
        notdef = _render(font, _NOTDEF_PROBE, size)
        for code in _mapped_characters(path, candidates):
            image = _render(font, code, size)
            if image is None or (notdef is not None and np.array_equal(image, notdef)):
                continue
            renderings.setdefault(code, {}).setdefault(hashlib.sha1(image.tobytes()).digest(), image)
        if bar is not None:
            bar.add(1)
    return {code: list(by_hash.values()) for code, by_hash in sorted(renderings.items())}


def select_classes(renderings: dict[int, list[np.ndarray]]) -> list[int]:
    """The characters that become classes: drawn differently by at least :data:`MIN_FONTS` fonts, and
    no rendering identical to one of an earlier class; train and test ascending, then pretrain ascending."""
    claimed: set[bytes] = set()
    classes = []
    for code, images in sorted(renderings.items(), key=lambda item: (block_split(item[0]) == "pretrain", item[0])):
        hashes = {hashlib.sha1(image.tobytes()).digest() for image in images}
        if len(images) < MIN_FONTS or hashes & claimed:
            continue
        claimed |= hashes
        classes.append(code)
    return classes


def augment(glyph: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One augmented image of a rendering: stroke weight, affine change, blur, downsampling, ink
    stretched to 255, noise.

    Args:
        glyph: uint8 square rendering (white on black) at ``RENDER_SCALE * image_size``.
        image_size: size of the output.
        rng: the source of the random changes.

    Returns:
        A uint8 (image_size, image_size) image.
    """
    image = Image.fromarray(glyph)
    weight = rng.uniform(*STROKE_WEIGHT)
    image = Image.blend(image, image.filter(ImageFilter.MaxFilter(3) if weight > 0 else ImageFilter.MinFilter(3)),
                        abs(weight))
    size = glyph.shape[0]
    angle = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    scale, aspect = rng.uniform(*SCALE_RANGE), rng.uniform(*ASPECT_RANGE)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, rng.uniform(-SHEAR, SHEAR)], [0.0, 1.0]]) @ np.diag(
        [scale * aspect, scale / aspect])
    centre = np.full(2, size / 2.0)
    shift = rng.uniform(-SHIFT, SHIFT, size=2) * size
    inverse = np.linalg.inv(forward)  # PIL maps each output pixel back to the input
    offset = centre - inverse @ (centre + shift)
    image = image.transform((size, size), Image.Transform.AFFINE,
                            (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1]),
                            resample=Image.Resampling.BILINEAR)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RADIUS)))
    image = np.asarray(image.resize((image_size, image_size), Image.Resampling.BOX), np.float64)
    noisy = image * (255.0 / max(1.0, image.max())) + rng.normal(0.0, rng.uniform(*NOISE_STD), image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def build_glyphs(image_size: int = IMAGE_SIZE, images_per_class: int = IMAGES_PER_CLASS, seed: int = 0,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Build the whole dataset (both splits), with progress bars over the fonts and the classes.

    Class ``c`` gets ``images_per_class`` images: image ``i`` augments its ``i mod R``-th of R
    distinct renderings, with a generator seeded by ``(seed, c)`` alone.

    Args:
        image_size: S, height and width of the images (at least 8).
        images_per_class: images of each class (at least 2).
        seed: seed of the augmentation.
        progress: show the progress bars.

    Returns:
        ``images``: uint8 (N, S, S) grey images, class by class; ``codes``: int32 (N,) code point
        of each image.

    Raises:
        ValueError: an argument out of range.
        ModuleNotFoundError, FileNotFoundError: matplotlib or its fonts are missing (see :func:`font_dir`).
    """
    if images_per_class < 2 or image_size < 8:
        raise ValueError(f"glyphs: need images_per_class >= 2 and image_size >= 8, got {images_per_class} "
                         f"and {image_size}")
    renderings = render_fonts(image_size, progress)
    classes = select_classes(renderings)
    bar = keras.utils.Progbar(len(classes), unit_name="class") if progress else None
    images = np.empty((len(classes) * images_per_class, image_size, image_size), np.uint8)
    for index, code in enumerate(classes):
        rng = np.random.default_rng([seed, code])
        glyphs = renderings[code]
        for i in range(images_per_class):
            images[index * images_per_class + i] = augment(glyphs[i % len(glyphs)], image_size, rng)
        if bar is not None:
            bar.add(1)
    return {"images": images, "codes": np.repeat(np.array(classes, np.int32), images_per_class)}


def default_cache_dir() -> Path:
    """``$ZOO_CACHE/glyphs`` when ZOO_CACHE is set, else ``~/.keras/datasets/zoo_glyphs``."""
    root = os.environ.get("ZOO_CACHE")
    return Path(root) / "glyphs" if root else Path.home() / ".keras" / "datasets" / "zoo_glyphs"


def cache_path(cache_dir: str | os.PathLike | None = None, **build_options) -> Path:
    """The cache file of a build: named after a hash of its options, of the settings of this module
    (its upper-case constants), of the versions of Pillow, FreeType, numpy and the Unicode database,
    and of the font files' bytes."""
    settings = {name: value for name, value in globals().items()  # not the PIL module: its repr names the venv
                if name.isupper() and not name.startswith("_") and not isinstance(value, types.ModuleType)}
    digest = hashlib.sha256(json.dumps(
        [build_options, settings, PIL.__version__, features.version("freetype2"), np.__version__,
         unicodedata.unidata_version],
        sort_keys=True, default=str).encode())
    for path in font_files():
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return Path(cache_dir or default_cache_dir()) / f"glyphs-{digest.hexdigest()[:16]}.npz"


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The images and codes of the cache file ``path``; None, with a warning naming it, when it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["images"], data["codes"]
    except Exception as error:  # zipfile, zlib and numpy raise many kinds for a truncated or damaged file
        warnings.warn(f"the glyphs cache {path} cannot be read ({type(error).__name__}: {error}): building it "
                      "again", stacklevel=3)
        return None


def load_glyphs(split: str = "train", *, image_size: int = IMAGE_SIZE, images_per_class: int = IMAGES_PER_CLASS,
                seed: int = 0, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> ImageSet:
    """Load a split of glyphs, building the dataset into the cache first when it is not there.

    Args:
        split: ``"train"``, ``"test"`` or ``"pretrain"`` (see :data:`BLOCKS`).
        image_size: height and width of the images.
        images_per_class: images of each class.
        seed: seed of the augmentation.
        cache_dir: folder of the cache file (default :func:`default_cache_dir`).
        progress: show a progress bar while building.

    Returns:
        An in-memory ImageSet of uint8 (N, S, S, 3) images; ``class_names`` are the characters.

    Raises:
        ModuleNotFoundError, FileNotFoundError: matplotlib or its fonts are missing (see :func:`font_dir`).
    """
    options = {"image_size": image_size, "images_per_class": images_per_class, "seed": seed}
    path = cache_path(cache_dir, **options)
    cached = _read_cache(path) if path.is_file() else None
    if cached is None:
        print(f"Building the glyphs dataset once into {path}")
        data = build_glyphs(progress=progress, **options)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial.npz")
        np.savez_compressed(partial, **data)
        os.replace(partial, path)
        cached = _read_cache(path)
    images, codes = cached
    return build_image_set(
        "glyphs",
        split,
        codes,
        np.array([block_split(code) == split for code in codes.tolist()]),
        images=np.repeat(images[..., None], 3, axis=-1),
        class_names={code: chr(code) for code in np.unique(codes).tolist()},
        allow_flip=False,
    )
