"""Does a calibrated threshold keep its promise on new queries? Calibration measured on unseen classes.

    python benchmarks/calibration_heldout.py                       # triplet_glyphs on glyphs' test classes, 3 seeds
    python benchmarks/calibration_heldout.py --report              # the table of benchmarks/RESULTS.md

All classes are the model's unseen test classes (glyphs: 308 characters of 24 images that training never saw).
Per seed, they are drawn into three groups: half are the gallery's classes, a quarter are "unknown" classes
of the calibration set and a quarter "unknown" classes of the held-out queries (so the held-out unknowns are
new to the calibration too). Each gallery class's 24 images are drawn into 8 indexed, 8 calibration queries and
8 held-out queries; each unknown class gives 8 queries. ``Index.calibrate`` on the calibration queries keeps the
optimal (F1) threshold and one per target precision; ``Index.match`` then answers the held-out queries, and
the precision, recall and rejection of unknowns it delivers are set beside those the calibration promised.
One JSON line per seed and cutpoint goes to ``--results``, with the configuration and the command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.calibration import choose_cutpoints
from zoo.data import load_dataset
from zoo.index import Index, embed_images

RESULTS = Path("benchmarks/results/calibration_heldout.jsonl")


def split(labels: np.ndarray, seed: int, per_class: int) -> dict[str, np.ndarray]:
    """Row indices of the gallery, calibration and held-out queries (module docstring)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    half, quarter = len(classes) // 2, len(classes) // 4
    known, unknown_calibration, unknown_heldout = classes[:half], classes[half : half + quarter], classes[half + quarter :]
    rows = {"gallery": [], "calibration": [], "heldout": []}
    for label in known:
        members = rng.permutation(np.flatnonzero(labels == label))
        for i, name in enumerate(rows):
            rows[name].extend(members[i * per_class : (i + 1) * per_class])
    for name, group in (("calibration", unknown_calibration), ("heldout", unknown_heldout)):
        for label in group:
            rows[name].extend(rng.permutation(np.flatnonzero(labels == label))[:per_class])
    return {name: np.array(indices) for name, indices in rows.items()}


def delivered(answers: list, labels: list[str], gallery_labels: set[str]) -> dict[str, float]:
    """Precision, recall and rejection of unknowns of ``Index.match``'s answers to labelled queries."""
    known = np.array([label in gallery_labels for label in labels])
    matched = np.array([answer is not None for answer in answers])
    correct = np.array([answer is not None and answer.label == label for answer, label in zip(answers, labels)])
    return {"precision": float(correct.sum() / max(matched.sum(), 1)), "recall": float(correct[known].mean()),
            "rejection": float((~matched[~known]).mean()), "matched": int(matched.sum()), "queries": len(labels),
            "unknown": int((~known).sum())}


def run(args: argparse.Namespace) -> list[dict]:
    model = zoo.load(args.model)
    test = load_dataset(args.dataset, "test")
    names = np.array(test.class_names)[test.labels]
    start = time.perf_counter()
    embeddings = embed_images(model, test.images)
    records = []
    for seed in args.seeds:
        rows = split(test.labels, seed, args.per_class)
        g = rows["gallery"]
        index = Index(model, [f"{args.dataset}/test/{i}" for i in g], names[g].tolist(), embeddings[g],
                      model_name=args.model)
        calibration_images, calibration_labels = test.images[rows["calibration"]], names[rows["calibration"]].tolist()
        sweep = index.calibrate(calibration_images, calibration_labels)
        reachable = []
        for target in args.targets:  # a target no threshold reaches is an error: recorded, then left out
            try:
                choose_cutpoints(sweep, {"precision": target})
                reachable.append(target)
            except ValueError as error:
                records.append({"model": args.model, "dataset": args.dataset, "seed": seed, "cutpoint": f"{target:g}",
                                "unreachable": str(error), "command": "python " + shlex.join(sys.argv)})
                print(json.dumps(records[-1]))
        index.calibrate(calibration_images, calibration_labels, targets={"precision": reachable})
        heldout = rows["heldout"]
        for name, cutpoint in index.calibration["cutpoints"].items():
            answers = index.match(test.images[heldout], threshold=name)
            records.append({
                "model": args.model, "dataset": args.dataset, "seed": seed, "cutpoint": name,
                "distance": cutpoint["distance"],
                "promised": {key: cutpoint[key] for key in ("precision", "recall", "f1", "rejection")},
                "delivered": delivered(answers, names[heldout].tolist(), set(index.labels)),
                "config": {"per_class": args.per_class, "targets": args.targets, "gallery": len(g),
                           "calibration_queries": len(rows["calibration"]), "calibration_unknown":
                           index.calibration["unseen"], "heldout_queries": len(heldout)},
                "command": "python " + shlex.join(sys.argv),
            })
            print(json.dumps(records[-1]))
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return records


def report(path: Path) -> str:
    """Markdown table: per cutpoint, promised and delivered precision, recall and rejection (mean +- sd over seeds)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_cutpoint: dict[str, list[dict]] = {}
    unreachable: dict[str, int] = {}
    for record in records:
        if "unreachable" in record:
            unreachable[record["cutpoint"]] = unreachable.get(record["cutpoint"], 0) + 1
        else:
            by_cutpoint.setdefault(record["cutpoint"], []).append(record)

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    lines = ["| cutpoint | distance | precision promised | precision delivered | delivered, worst seed | recall promised "
             "| recall delivered | rejection promised | rejection delivered | seeds |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, rows in by_cutpoint.items():
        get = lambda side, key: [row[side][key] for row in rows]  # noqa: E731
        lines.append(f"| {name} | {cell([row['distance'] for row in rows])} | {cell(get('promised', 'precision'))} | "
                     f"{cell(get('delivered', 'precision'))} | {min(get('delivered', 'precision')):.3f} | "
                     f"{cell(get('promised', 'recall'))} | "
                     f"{cell(get('delivered', 'recall'))} | {cell(get('promised', 'rejection'))} | "
                     f"{cell(get('delivered', 'rejection'))} | {len(rows)} |")
    seeds = len({record["seed"] for record in records})
    lines += [f"\nTarget {name}: no threshold reaches it on {count} of {seeds} seeds." for name, count in unreachable.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="triplet_glyphs")
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    parser.add_argument("--per-class", type=int, default=8, help="images per class in each role")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="print the table of --results")
    args = parser.parse_args()
    if not args.report:
        records = run(args)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as stream:
            stream.writelines(json.dumps(record) + "\n" for record in records)
    print(report(args.results))


if __name__ == "__main__":
    main()
