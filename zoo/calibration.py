"""Is this a match? Distance thresholds calibrated on labelled queries, as TensorFlow Similarity's ``calibrate``.

    sweep = threshold_sweep(distances, correct, known)       # one row per distinct nearest-neighbour distance
    cutpoints = choose_cutpoints(sweep, {"precision": 0.95}, metric="f1")
    print(cutpoints_table(cutpoints))
    plot_sweep(sweep, cutpoints, "calibration.png")

Each calibration query has its nearest gallery neighbour at ``distance``; ``correct`` says whether that
neighbour has the query's label, ``known`` whether the query's class is in the gallery at all (a query of an
unseen class has no right answer: "no match" is expected). A threshold ``t`` answers "match" (the neighbour's
label) for ``distance <= t`` and "no match" otherwise. At each threshold:

- ``precision``: of the matches, the fraction with the right label (queries of unseen classes matched count as
  wrong);
- ``recall``: of the queries of known classes, the fraction matched to the right label (TensorFlow Similarity
  divides by the queries whose nearest neighbour is right instead, so its recall reaches 1; this one says how
  many known items a threshold identifies);
- ``f1``: their harmonic mean;
- ``rejection``: of the queries of unseen classes, the fraction answered "no match" (NaN without any).

A cutpoint is one chosen threshold with its row: ``"optimal"`` maximises ``metric``; a target ``{"precision":
0.95}`` takes the largest threshold whose precision is at least 0.95 (the most recall at that precision), a
``rejection`` target likewise, a ``recall`` target the smallest threshold that reaches it. Cutpoints are
named ``"optimal"``, ``"0.95"`` for a precision target (TensorFlow Similarity's names) and
``"recall=0.9"`` for the others. Pure numpy; :meth:`zoo.index.Index.calibrate` feeds it the index's neighbours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

METRICS = ("precision", "recall", "f1", "rejection")
INCREASING = ("recall",)  # metrics that grow with the threshold: a target takes the smallest threshold


class Sweep(NamedTuple):
    """The metrics at every threshold of a calibration set, thresholds ascending (module docstring).

    Attributes:
        thresholds: (T,) distinct nearest-neighbour distances, ascending.
        precision, recall, f1, rejection: (T,) float64 metrics at each threshold.
        matched: (T,) number of queries answered "match".
        num_queries: calibration queries.
        num_unseen: queries of classes absent from the gallery.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    rejection: np.ndarray
    matched: np.ndarray
    num_queries: int
    num_unseen: int

    def row(self, position: int) -> dict[str, float | None]:
        """The threshold (``distance``) and metrics of one row, as Python floats (None for a NaN: valid JSON)."""
        values = {"distance": self.thresholds[position], **{name: getattr(self, name)[position] for name in METRICS}}
        return {name: None if np.isnan(value) else float(value) for name, value in values.items()}


def threshold_sweep(distances: np.ndarray, correct: np.ndarray, known: np.ndarray) -> Sweep:
    """Precision, recall, F1 and rejection of unseen classes at every nearest-neighbour distance.

    Args:
        distances: (N,) distance of each query to its nearest gallery item.
        correct: (N,) bool, that item has the query's label.
        known: (N,) bool, the query's class is in the gallery (``correct`` implies ``known``).

    Raises:
        ValueError: arrays of other lengths, no query, non-finite distances, a correct query of an unseen class,
            or no query of a known class.
    """
    distances = np.asarray(distances, np.float64)
    correct, known = np.asarray(correct, bool), np.asarray(known, bool)
    if distances.ndim != 1 or correct.shape != distances.shape or known.shape != distances.shape:
        raise ValueError(f"distances {distances.shape}, correct {correct.shape} and known {known.shape} must be "
                         "vectors of one length")
    if len(distances) == 0:
        raise ValueError("no calibration query")
    if not np.isfinite(distances).all():
        raise ValueError("the calibration distances contain NaN or inf")
    if (correct & ~known).any():
        raise ValueError("a query of a class absent from the gallery cannot have a correct neighbour")
    if not known.any():
        raise ValueError("no calibration query has its class in the gallery: nothing could be matched correctly")
    order = np.argsort(distances, kind="stable")
    distances, correct, known = distances[order], correct[order], known[order]
    last = np.r_[np.flatnonzero(np.diff(distances)), len(distances) - 1]  # last query at each distinct distance
    matched = last + 1
    true_matches = np.cumsum(correct)[last]
    unseen_matched = np.cumsum(~known)[last]
    num_unseen = int((~known).sum())
    precision = true_matches / matched
    recall = true_matches / known.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true_matches > 0, 2 * precision * recall / (precision + recall), 0.0)
        rejection = (num_unseen - unseen_matched) / num_unseen if num_unseen else np.full(len(last), np.nan)
    return Sweep(distances[last], precision, recall, f1, rejection, matched, len(distances), num_unseen)


def nearest_outcomes(
    query_labels: Sequence[str], neighbor_labels: Sequence[str | None], gallery_labels: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray]:
    """``(correct, known)`` of each calibration query from its label and its nearest neighbour's.

    Raises:
        ValueError: labels and neighbours of other lengths, a query without a label, fewer than two classes
            among the queries, or a gallery without labels.
    """
    if len(query_labels) != len(neighbor_labels):
        raise ValueError(f"{len(query_labels)} calibration labels for {len(neighbor_labels)} queries")
    if any(label is None for label in query_labels):
        raise ValueError("every calibration image needs a label (put each class's images in a subfolder named "
                         "after it, or pass labels)")
    classes = set(query_labels)
    if len(classes) < 2:
        raise ValueError(f"the calibration set has one class ({next(iter(classes))!r}): a threshold is calibrated "
                         "on queries of several classes (at least 2), the gallery's and, ideally, unseen ones")
    gallery_classes = {label for label in gallery_labels if label is not None}
    if not gallery_classes:
        raise ValueError("the gallery has no labels: index a folder with one subfolder per class to calibrate")
    correct = np.array([query == neighbor for query, neighbor in zip(query_labels, neighbor_labels)], bool)
    known = np.array([query in gallery_classes for query in query_labels], bool)
    return correct, known


def resolve_threshold(cutpoints: Mapping[str, Mapping[str, float]] | None, threshold: str | float) -> float:
    """The distance of a threshold: a cutpoint's name (``"optimal"``, ``"0.95"``) or a distance (number or text).

    Raises:
        ValueError: a name without cutpoints (uncalibrated), an unknown name, or a negative distance.
    """
    if isinstance(threshold, str):
        if cutpoints and threshold in cutpoints:
            return float(cutpoints[threshold]["distance"])
        try:
            distance = float(threshold)
        except ValueError:
            distance = None
        if distance is None or threshold == "optimal":
            if not cutpoints:
                raise ValueError(f"threshold {threshold!r} needs a calibrated index: calibrate it first "
                                 "(Index.calibrate, zoo calibrate) or give a distance")
            raise ValueError(f"unknown threshold {threshold!r}; the calibrated ones are {sorted(cutpoints)}, "
                             "or give a distance")
        threshold = distance
    if not threshold >= 0:
        raise ValueError(f"a distance threshold must be a number >= 0, got {threshold}")
    return float(threshold)


def cutpoint_name(metric: str, target: float) -> str:
    """``"0.95"`` for a precision target, ``"recall=0.9"`` for another metric's."""
    return f"{target:g}" if metric == "precision" else f"{metric}={target:g}"


def choose_cutpoints(
    sweep: Sweep, targets: Mapping[str, float | Sequence[float]] | None = None, metric: str = "f1"
) -> dict[str, dict]:
    """The optimal threshold for ``metric`` and one per target (module docstring), by name.

    Args:
        sweep: :func:`threshold_sweep`'s rows.
        targets: metric name -> the value (or values) a threshold must reach, e.g. ``{"precision": [0.9, 0.95]}``.
        metric: what ``"optimal"`` maximises (the smallest threshold among equals).

    Returns:
        ``{name: {"distance": ..., "precision": ..., "recall": ..., "f1": ..., "rejection": ...}}`` (plus
        ``"metric"`` and ``"target"`` of a target's cutpoint).

    Raises:
        ValueError: an unknown metric, a target outside [0, 1], a rejection metric without unseen queries, or a
            target that no threshold reaches (naming the best value the sweep has).
    """
    for name in [metric, *(targets or {})]:
        if name not in METRICS:
            raise ValueError(f"unknown calibration metric {name!r}; choose one of {METRICS}")
        if name == "rejection" and sweep.num_unseen == 0:
            raise ValueError("the rejection of unseen classes needs calibration queries of classes that are not in "
                             "the gallery")
    cutpoints = {"optimal": {**sweep.row(int(np.argmax(getattr(sweep, metric)))), "metric": metric}}
    wanted = [(name, float(value)) for name, values in (targets or {}).items()
              for value in (values if isinstance(values, Sequence) else [values])]
    for name, target in wanted:
        if not 0 <= target <= 1:
            raise ValueError(f"the {name} target must be between 0 and 1, got {target}")
        values = getattr(sweep, name)
        reached = np.flatnonzero(values >= target)
        if len(reached) == 0:
            best = int(np.argmax(values))
            raise ValueError(
                f"no threshold reaches {name} {target:g} on this calibration set of {sweep.num_queries} queries: the "
                f"best is {values[best]:.4f} (distance {sweep.thresholds[best]:.4f}); lower the target or calibrate "
                "with more or cleaner images"
            )
        position = int(reached[0] if name in INCREASING else reached[-1])
        cutpoints[cutpoint_name(name, target)] = {**sweep.row(position), "metric": name, "target": float(target)}
    return cutpoints


def cutpoints_table(cutpoints: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width text table of the cutpoints: name, distance and the metrics at it."""
    width = max(len("cutpoint"), *(len(name) for name in cutpoints))
    lines = [" ".join(["cutpoint".ljust(width), *(c.rjust(9) for c in ("distance", *METRICS))])]
    for name, row in cutpoints.items():
        cells = ("-" if row[c] is None else f"{row[c]:.4f}" for c in ("distance", *METRICS))
        lines.append(" ".join([name.ljust(width), *(cell.rjust(9) for cell in cells)]))
    return "\n".join(lines)


def plot_sweep(sweep: Sweep, cutpoints: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Precision, recall, F1 (and rejection) against the threshold, the cutpoints marked; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in METRICS:
        if name != "rejection" or sweep.num_unseen:
            axes.step(sweep.thresholds, getattr(sweep, name), where="post", label=name)
    for name, row in cutpoints.items():
        axes.axvline(row["distance"], color="grey", linestyle=":", linewidth=1)
        axes.annotate(name, (row["distance"], 0.02), rotation=90, fontsize=8, color="grey")
    axes.set(xlabel="threshold (L2 distance to the nearest gallery image)", ylabel="fraction", ylim=(0, 1.02),
             title=f"calibration on {sweep.num_queries} queries ({sweep.num_unseen} of unseen classes)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
