"""Regenerate the README's "See it" section: the pictures of triplet_digits and the registry table.

    python docs/make_images.py
    python docs/make_images.py --remeasure     # first measure every published card again (after a metrics change)

Runs the ``zoo show`` command the README quotes (retrieval grid and embedding map into
``docs/images/``), then replaces the README's table between the registry-table markers with
``zoo list --markdown`` (:func:`zoo.cards.markdown_table`). Run it after publishing weights.
"""

import os
import sys
from pathlib import Path

from zoo import cards, cli

ROOT = Path(__file__).resolve().parent.parent
SHOW = ["show", "--model", "triplet_digits", "--dataset", "digits",
        "--out", "docs/images/triplet_digits_grid.png", "--map", "docs/images/triplet_digits_map.png"]
START, END = "<!-- registry-table:start -->", "<!-- registry-table:end -->"


def main() -> int:
    os.chdir(ROOT)  # the paths of SHOW are the README's, relative to the repository
    if "--remeasure" in sys.argv[1:]:
        from zoo import registry
        from zoo.training import remeasure_published

        for name in registry.list_models(pretrained=True):
            print(name, "MAP@R", remeasure_published(name)["metrics"]["map@r"])
    code = cli.main(SHOW)
    if code:
        return code
    readme = ROOT / "README.md"
    head, rest = readme.read_text().split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{cards.markdown_table()}\n{END}{tail}")
    print(f"registry table of {readme} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
