"""``icons``: a many-class set of real artwork built from Debian's icon themes, the zoo's real-image benchmark.

A class is one freedesktop icon name (``accessories-calculator``, ``folder-music``, ...); its images are that icon
as drawn by different icon-theme families, each the work of other designers (one theme per family: recoloured
variants such as ``Papirus-Dark`` are left out, they would put near copies on both sides of a query). Classes drawn by
at least ``MIN_FAMILIES`` families are kept, numbered in a seeded order, and the first half are the training classes,
the second half the unseen test classes (as Stanford Online Products splits). The result is a ``folder`` dataset
(``<class>/<family>.png`` and ``split.csv``) in ``<Keras home>/datasets/zoo_icons``, which ``--dataset icons`` reads
(and ``--dataset folder --data-dir DIR`` too).

    apt-get install librsvg2-bin $(python -m zoo.data.icons --packages)
    python -m zoo.data.icons            # about 2 minutes on 2 cores: 9,496 images of 1,638 classes

Images: the largest PNG of at least 48 px, else the SVG rendered by ``rsvg-convert``, composited on white and
resized to 128 x 128.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data import ImageSet
from zoo.data.folder import load_folder

ICONS = Path("/usr/share/icons")
# One theme per family, with the Debian package that installs it.
FAMILIES = {
    "Adwaita": "adwaita-icon-theme", "breeze": "breeze-icon-theme", "bloom": "deepin-icon-theme",
    "elementary-xfce": "elementary-xfce-icon-theme", "Faba": "faba-icon-theme", "Faenza": "faenza-icon-theme",
    "gartoon": "gnome-icon-theme-gartoon", "gnome": "gnome-icon-theme", "nuoveXT2": "lxde-icon-theme",
    "mate": "mate-icon-theme", "Moka": "moka-icon-theme", "Numix": "numix-icon-theme",
    "Nuovo": "gnome-icon-theme-nuovo", "Obsidian": "obsidian-icon-theme", "oxygen": "oxygen-icon-theme",
    "Paper": "paper-icon-theme", "Papirus": "papirus-icon-theme", "Suede": "gnome-icon-theme-suede",
    "sugar": "sugar-icon-theme", "suru": "suru-icon-theme", "Tango": "tango-icon-theme",
    "yasis": "gnome-icon-theme-yasis",
}
MIN_FAMILIES = 4
SIZE = 128
SEED = 0


def default_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets" / "zoo_icons"


def load_icons(split: str = "train", data_dir: str | None = None, allow_flip: bool = True) -> ImageSet:
    """One split of the built set (``data_dir``, default ``<Keras home>/datasets/zoo_icons``); ``allow_flip``: whether
    training may mirror an icon (some classes are mirror images of others: ``go-next``, ``go-previous``).

    Raises:
        FileNotFoundError: the set is not built (names the commands that build it).
    """
    folder = Path(data_dir) if data_dir else default_dir()
    if not (folder / "split.csv").is_file():
        raise FileNotFoundError(
            f"the icons set is not built in {folder}: apt-get install librsvg2-bin $(python -m zoo.data.icons "
            f"--packages) && python -m zoo.data.icons --out {folder}")
    return dataclasses.replace(load_folder(split, str(folder)), name="icons", allow_flip=allow_flip)


def icon_files(theme: Path) -> dict[str, Path]:
    """The file of each icon name of a theme: its largest PNG of >= 48 px, else an SVG; no symlinks, no symbolic icons,
    and no two names that are the same file's bytes (aliases would be one image under two classes)."""
    best: dict[str, tuple[int, Path]] = {}
    for path in theme.rglob("*"):
        if path.is_symlink() or path.suffix not in (".png", ".svg") or path.stem.endswith("-symbolic"):
            continue
        if path.suffix == ".svg":
            rank = 10_000
        else:
            with Image.open(path) as image:
                rank = min(image.size)
            if rank < 48:
                continue
        if rank > best.get(path.stem, (-1, None))[0]:
            best[path.stem] = (rank, path)
    digests: dict[str, list[str]] = {}
    for name, (_, path) in best.items():
        digests.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(name)
    aliases = {name for names in digests.values() if len(names) > 1 for name in names}
    return {name: path for name, (_, path) in best.items() if name not in aliases}


def render(path: Path) -> Image.Image | None:
    """The icon as a SIZE x SIZE RGB image on white; None for an SVG that rsvg-convert cannot draw."""
    if path.suffix == ".svg":
        drawn = subprocess.run(["rsvg-convert", "-w", str(SIZE), "-h", str(SIZE), "--keep-aspect-ratio", str(path)],
                               capture_output=True)
        if drawn.returncode != 0:
            return None
        image = Image.open(io.BytesIO(drawn.stdout))
    else:
        image = Image.open(path)
    image = image.convert("RGBA")
    image.thumbnail((SIZE, SIZE), Image.LANCZOS)
    canvas = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    canvas.alpha_composite(image, ((SIZE - image.width) // 2, (SIZE - image.height) // 2))
    return canvas.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=default_dir())
    parser.add_argument("--packages", action="store_true", help="print the Debian packages and stop")
    args = parser.parse_args()
    if args.packages:
        print(" ".join(sorted(FAMILIES.values())))
        return
    missing = [family for family in FAMILIES if not (ICONS / family).is_dir()]
    if missing:
        sys.exit(f"missing icon themes {missing}: apt-get install {' '.join(FAMILIES[f] for f in missing)}")
    files = {family: icon_files(ICONS / family) for family in FAMILIES}
    names = sorted({name for per_family in files.values() for name in per_family})
    candidates = [name for name in names if sum(name in per_family for per_family in files.values()) >= MIN_FAMILIES]
    jobs = [(name, family) for name in candidates for family in FAMILIES if name in files[family]]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        images = dict(zip(jobs, pool.map(lambda job: render(files[job[1]][job[0]]), jobs)))
    drawn = {name: [family for family in FAMILIES if images.get((name, family)) is not None] for name in candidates}
    kept = [name for name in candidates if len(drawn[name]) >= MIN_FAMILIES]
    order = np.random.default_rng(SEED).permutation(len(kept))
    classes = [kept[i] for i in order]
    train = set(classes[: len(classes) // 2])
    for name in classes:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        for family in drawn[name]:
            images[name, family].save(args.out / name / f"{family}.png")
    count = sum(len(drawn[name]) for name in classes)
    (args.out / "split.csv").write_text(
        "label,split\n" + "".join(f"{name},{'train' if name in train else 'test'}\n" for name in sorted(classes)))
    print(f"{args.out}: {count} images of {len(classes)} classes ({len(train)} train, "
          f"{len(classes) - len(train)} test) from {len(FAMILIES)} icon-theme families")


if __name__ == "__main__":
    main()
