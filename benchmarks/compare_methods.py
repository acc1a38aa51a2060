"""Every method beside the baselines its paper compares with: same data, network, initialisation and budget, 3 seeds.

Each run trains through ``zoo.training.train`` (as ``zoo train`` does) from a ``<method>_glyphs`` preset
(``zoo.methods.glyphs_preset``: ``small_cnn``, 32 px, 64-d, P16 x K4, Adam 1e-3, the paper's hyperparameters) on
the glyphs' 352 training characters (``--dataset synthetic``: 40 procedural classes), for the same number of steps
(two epochs), either from scratch or fine-tuned from the zoo's pretrained backbone (``--backbone-weights glyphs``:
the offline stand-in for the papers' ImageNet start, pretrained on 174 other characters). Reports MAP@R, R@1 and
NMI on the unseen test classes (308 characters; 40 synthetic classes) as mean +- population standard deviation
(numpy's ``std``, ddof 0) over the seeds, and each
method's gain over the best of its paper's baselines.

The baselines are the ones each paper's tables compare with:
- THSG (Tables 3-5): the triplet loss on random triplets, and semi-hard / distance-weighted mining with and without
  THSG (THSG(Semi), THSG(D)); top-k (Table 1): uniform, semi-hard and distance-weighted triplets, contrastive,
  lifted structure, N-pair, angular, Proxy-NCA; PROFS (Tables 1-3): its base loss without PROFS (contrastive);
  AMDAML and HTG: the triplet (random negatives) and contrastive losses, and HTG its own triplet loss without G
  (semi-hard). Every method is also compared with the zoo's default baseline (PML's all-triplets triplet).

Every finished run is stored in ``--results`` (JSON lines) and skipped when the script runs again, so a killed
benchmark resumes; ``--report`` prints the table from that file without training.

    python benchmarks/compare_methods.py --backbone-weights glyphs         # fine-tuned from the pretrained backbone
    python benchmarks/compare_methods.py                                   # from scratch
    python benchmarks/compare_methods.py --runs triplet thsg --seeds 0 --steps 100
    python benchmarks/compare_methods.py --report
    python benchmarks/compare_methods.py --dataset synthetic --backbone-weights glyphs   # the synthetic benchmark
    python benchmarks/compare_methods.py --runs thsg --set classifier_learning_rate=0.01   # one reading of a method
    python benchmarks/compare_methods.py --runs topk --set learning_rate=1e-3              # or of its training
"""

from __future__ import annotations

import argparse
import ast
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KEY_METRICS = ("map@r", "recall@1", "nmi")

# name -> (preset, hyperparameter overrides, training overrides)
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "triplet": ("triplet_glyphs", {"loss": "triplet", "miner": "all"}, {}),
    "multi-similarity": ("triplet_glyphs", {"loss": "multi-similarity", "miner": "all"}, {}),
    "contrastive": ("triplet_glyphs", {"loss": "contrastive"}, {}),
    "triplet-random": ("triplet_glyphs", {"loss": "facenet-triplet", "miner": "random"}, {}),
    "triplet-semi-hard": ("triplet_glyphs", {"loss": "facenet-triplet", "miner": "semi-hard"}, {}),
    "triplet-distance-weighted": ("triplet_glyphs", {"loss": "facenet-triplet", "miner": "distance-weighted"}, {}),
    "lifted": ("triplet_glyphs", {"loss": "lifted"}, {}),
    "npair": ("triplet_glyphs", {"loss": "npair", "miner": None}, {}),
    "angular": ("triplet_glyphs", {"loss": "angular", "miner": None}, {}),
    "proxy-nca": ("triplet_glyphs", {"loss": "proxy-nca", "miner": None}, {}),
    "thsg": ("thsg_glyphs", {}, {}),
    "thsg-semi-hard": ("thsg_glyphs", {"miner": "semi-hard"}, {}),
    "thsg-distance-weighted": ("thsg_glyphs", {"miner": "distance-weighted"}, {}),
    "topk": ("topk_glyphs", {}, {}),
    "profs": ("profs_glyphs", {}, {}),
    "amdaml": ("amdaml_glyphs", {}, {}),
    "htg": ("htg_glyphs", {}, {}),
}

# The benchmarks: the glyphs of the presets, and the procedural synthetic set at the glyphs' 24 images per class
# (80 classes: 40 train, 40 unseen), for the same networks and steps.
DATASETS: dict[str, dict[str, Any]] = {
    "glyphs": {"dataset": "glyphs"},
    "synthetic": {"dataset": "synthetic", "dataset_options": {"num_classes": 80, "images_per_class": 24}},
    # Real artwork: 1,638 icon names drawn by 22 icon-theme families (python -m zoo.data.icons builds it), 819 / 819.
    "icons": {"dataset": "icons"},
}
# --backbone efficientnet_lite0 (with --backbone-weights imagenet): the base the protocol's options were measured on.
EXPLORATION_BASE: dict[str, Any] = {"backbone": "efficientnet_lite0", "input_size": 96, "embedding_dim": 64}

# Hyperparameters counted in optimizer steps: scaled with the run, so that a run shorter than its preset keeps the
# preset's share (AMDAML pre-trains phi alone for 100 of its preset's 300 steps: 33 of a 100-step run).
STEP_COUNTS = ("pretrain_steps",)

# top-k's Table 1: the sampling strategies and losses it is compared with.
TOPK_TABLE_1 = ("triplet-random", "triplet-semi-hard", "triplet-distance-weighted", "contrastive", "lifted", "npair",
                "angular", "proxy-nca")
# Each method's paper baselines (every comparison also holds the zoo's default baseline, "triplet").
PAPER_BASELINES: dict[str, tuple[str, ...]] = {
    "thsg": ("triplet-random",),
    "thsg-semi-hard": ("triplet-semi-hard",),
    "thsg-distance-weighted": ("triplet-distance-weighted",),
    "topk": TOPK_TABLE_1,
    "profs": ("contrastive",),
    "amdaml": ("triplet-random", "contrastive"),
    "htg": ("triplet-random", "triplet-semi-hard", "contrastive"),  # and its own triplets without G (semi-hard)
}
# top-k beside its baselines on the same batches ("all algorithms adopt the same batch size", Sec. 4.5): its
# Sec. 4.4 batches (64 images, 11 per class) beside the baselines on the nearest P x K (6 x 11), and top-k on the
# baselines' P16 x K4. Each entry: top-k's run, the suffix of its baselines' runs, the batches.
SAME_BATCHES: tuple[tuple[str, str, str], ...] = (
    ("topk", " classes_per_batch=6 images_per_class=11", "Sec. 4.4's batches"),
    ("topk images_per_class=4", "", "P16 x K4"),
)


def protocol_name(backbone_weights: str | None, backbone: str = "small_cnn", imagenet: bool = False) -> str:
    if imagenet:
        return "the ImageNet protocol (<method>_lite0_icons)"
    start = f"fine-tuned from {backbone_weights}" if backbone_weights else "from scratch"
    return start if backbone == "small_cnn" else f"{backbone}, {start}"


def imagenet_preset_name(glyphs_preset: str) -> str:
    """The ``<method>_lite0_icons`` preset of a ``<method>_glyphs`` one (``zoo.methods.imagenet_preset``)."""
    return glyphs_preset.replace("_glyphs", "_lite0_icons")


def scale_step_counts(hyperparameters: dict[str, Any], preset_steps: int, steps: int) -> dict[str, Any]:
    """The :data:`STEP_COUNTS` of a preset of ``preset_steps`` steps, scaled to a run of ``steps``."""
    return {key: round(value * steps / preset_steps) if key in STEP_COUNTS else value
            for key, value in hyperparameters.items()}


def run_once(name: str, seed: int, steps: int, backbone_weights: str | None, settings: dict[str, Any],
             dataset: str = "glyphs", backbone: str = "small_cnn", imagenet: bool = False,
             publish: bool = False) -> dict[str, Any]:
    """Train run ``name`` once (``settings`` override its training configuration, for the names of
    ``zoo.training.TrainConfig``, and its hyperparameters); returns its metrics, the untrained model's and the last
    epoch's logs (and the zero-shot ImageNet features' metrics, for an ImageNet backbone). With ``publish``, a run
    that is its preset exactly (same hyperparameters and steps, on the preset's dataset) publishes its weights as it."""
    from zoo import registry  # noqa: PLC0415 (TensorFlow after argparse)
    from zoo.training import TrainConfig, config_from_preset, read_epoch_log, train  # noqa: PLC0415

    preset, hyperparameters, training = RUNS[name]
    start = {"backbone_weights": backbone_weights}
    if imagenet:
        preset, start = imagenet_preset_name(preset), {"measure_zero_shot": False}  # zero-shot: once per benchmark
    training_settings = {key: value for key, value in settings.items() if key in TrainConfig.__dataclass_fields__}
    if backbone != "small_cnn":
        training_settings = {**EXPLORATION_BASE, "backbone": backbone, **training_settings}
    with tempfile.TemporaryDirectory() as run_dir:
        config = config_from_preset(preset, seed=seed, run_dir=run_dir, epochs=2, steps_per_epoch=steps // 2,
                                    eval_every=10**6, measure_raw_pixels=False, **start,
                                    **{**DATASETS[dataset], **training, **training_settings})
        preset_training = registry.get_entry(preset)["training"]
        config.hyperparameters = scale_step_counts(
            config.hyperparameters, preset_training["epochs"] * preset_training["steps_per_epoch"], steps)
        config.hyperparameters.update(
            {**hyperparameters, **{key: value for key, value in settings.items() if key not in training_settings}})
        entry = registry.get_entry(preset)
        publishable = publish and config.hyperparameters == entry["hyperparameters"] and \
            config.dataset == entry["dataset"] and steps == preset_training["epochs"] * preset_training["steps_per_epoch"]
        start = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - start
        logs = read_epoch_log(Path(run_dir) / "history.jsonl")[-1]
        published = publish_run(preset, config, result, Path(run_dir)) if publishable else None
    return {"metrics": result["metrics"], "untrained": result["metrics_untrained"], "last_epoch": logs,
            **({"published": published} if published else {}),
            "seconds": round(seconds, 1), **({"zero_shot": result["metrics_zero_shot"]} if result["metrics_zero_shot"] else {})}


def publish_run(preset: str, config: Any, result: dict[str, Any], run_dir: Path) -> str:
    """Publish a finished run's ``model.keras`` as ``preset`` (as ``zoo train --publish`` does); a refused one (below
    the untrained model, say) is recorded, not published: returns the preset or why it was refused."""
    import keras  # noqa: PLC0415 (TensorFlow after argparse)

    from zoo import registry  # noqa: PLC0415
    from zoo.training import check_publishable, training_record  # noqa: PLC0415

    model = keras.models.load_model(run_dir / "model.keras")
    try:
        check_publishable(model, result["metrics"], result["metrics_untrained"], force=False)
    except ValueError as refused:
        return f"refused: {refused}"
    registry.publish(preset, model, result["metrics"], result["metrics_untrained"],
                     command=registry.get_entry(preset)["command"], trained_with=training_record(config))
    return preset


def zero_shot_once(dataset: str) -> dict[str, Any]:
    """The metrics of the ImageNet protocol's backbone without training (its pooled features) on ``dataset``."""
    from zoo.backbones import build_feature_net  # noqa: PLC0415 (TensorFlow after argparse)
    from zoo.evaluation import evaluation_sets, measure  # noqa: PLC0415
    from zoo.training import config_from_preset  # noqa: PLC0415

    config = config_from_preset("triplet_lite0_icons", **DATASETS[dataset])
    start = time.perf_counter()
    metrics = measure(build_feature_net(config.backbone, config.input_size), *evaluation_sets(config), config)
    return {"metrics": metrics, "untrained": metrics, "seconds": round(time.perf_counter() - start, 1)}


def parse_setting(text: str) -> tuple[str, Any]:
    """``name=value`` with a Python literal value (a bare word stays a string)."""
    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"--set takes name=value, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def run_label(name: str, settings: dict[str, Any]) -> str:
    return name + "".join(f" {key}={value}" for key, value in settings.items())


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def report(rows: list[dict[str, Any]], protocol: str, steps: int, dataset: str = "glyphs") -> str:
    """The Markdown table of one protocol: mean +- population std per run, each method's MAP@R gain over the best of its
    paper's baselines and over the zoo's default baseline (``triplet``)."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["protocol"] == protocol and row["steps"] == steps and row.get("dataset", "glyphs") == dataset:
            by_label.setdefault(row["run"], []).append(row)
    map_at_r = {(label, r["seed"]): r["metrics"]["map@r"] for label, runs in by_label.items() for r in runs}

    def paired_gain(label: str, baseline: str) -> float | None:
        """MAP@R of ``label`` minus ``baseline``'s, over the seeds both have (the same batches)."""
        seeds = [seed for (name, seed) in map_at_r if name == label and (baseline, seed) in map_at_r]
        return float(np.mean([map_at_r[label, s] - map_at_r[baseline, s] for s in seeds])) if seeds else None

    def gain_row(title: str, label: str, baselines: dict[str, str]) -> list[str]:
        """``| title | name gain, ... |``: run ``label``'s paired gain over each baseline (name -> its run label)."""
        gains = [(name, paired_gain(label, baseline)) for name, baseline in baselines.items()]
        measured = ", ".join(f"{name} {gain:+.3f}" for name, gain in gains if gain is not None)
        return [f"| {title} | {measured} |"] if measured else []

    order = ["zero-shot", *RUNS]
    zero_shot = by_label.get("zero-shot", [{}])[0].get("metrics", {}).get("map@r")
    lines = [f"{dataset}; {protocol}, {steps} steps; mean +- population standard deviation (ddof 0) over the seeds",
             "| run | seeds | untrained MAP@R | " + " | ".join(KEY_METRICS) + " | s/run | MAP@R - strongest paper baseline (paired) "
             "| MAP@R - triplet |" + (" MAP@R - zero-shot |" if zero_shot is not None else ""),
             "|---|--:|--:|" + "--:|" * len(KEY_METRICS) + "--:|---|--:|" + ("--:|" if zero_shot is not None else "")]
    for label in sorted(by_label, key=lambda label: (order.index(label.split()[0]), label)):
        runs = by_label[label]
        cells = []
        for metric in KEY_METRICS:
            values = np.array([r["metrics"][metric] for r in runs])
            cells.append(f"{values.mean():.3f} +- {values.std():.3f}")
        untrained = np.mean([r["untrained"]["map@r"] for r in runs])
        seconds = np.mean([r["seconds"] for r in runs])
        gains = {b: paired_gain(label, b) for b in PAPER_BASELINES.get(label.split()[0], ())}
        gains = {b: gain for b, gain in gains.items() if gain is not None}
        paper_gain = ""
        if gains:
            best = min(gains, key=gains.get)  # the strongest baseline: the smallest gain over it
            paper_gain = f"{gains[best]:+.3f} vs {best}"
        triplet_gain = paired_gain(label, "triplet") if label not in ("triplet", "zero-shot") else None
        zoo_gain = "" if triplet_gain is None else f"{triplet_gain:+.3f}"
        seeds = ",".join(str(r["seed"]) for r in runs)
        over_zero_shot = "" if zero_shot is None else f" {np.mean([r['metrics']['map@r'] for r in runs]) - zero_shot:+.3f} |"
        lines.append(f"| {label} | {seeds} | {untrained:.3f} | " + " | ".join(cells)
                     + f" | {seconds:.0f} | {paper_gain} | {zoo_gain} |" + over_zero_shot)
    lines += ["", "| method (defaults) | paired MAP@R gain over each of its paper's baselines and the zoo's triplet |",
              "|---|---|"]
    for method, baselines in PAPER_BASELINES.items():
        lines += gain_row(method, method, {b: b for b in (*baselines, "triplet")})
    for method, suffix, batches in SAME_BATCHES:
        lines += gain_row(f"{method}, baselines on the same batches ({batches})", method,
                          {b: b + suffix for b in TOPK_TABLE_1})
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (two epochs)")
    parser.add_argument("--dataset", default="glyphs", choices=list(DATASETS))
    parser.add_argument("--backbone-weights", default=None, help="'glyphs': fine-tune the pretrained small_cnn; "
                        "'imagenet' with --backbone efficientnet_lite0")
    parser.add_argument("--backbone", default="small_cnn", help="efficientnet_lite0: the options of a fine-tuning "
                        "protocol from ImageNet, on EXPLORATION_BASE's size and embedding (overridden by --set)")
    parser.add_argument("--imagenet", action="store_true", help="every method on its <method>_lite0_icons preset: "
                        "EfficientNet-Lite0 from ImageNet (zoo.methods.IMAGENET_PROTOCOL); beside the zero-shot features")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/compare_methods.jsonl"))
    parser.add_argument("--set", nargs="+", type=parse_setting, default=[], metavar="NAME=VALUE",
                        help="training settings (learning_rate, images_per_class, ...) and hyperparameters for the "
                        "runs (a reading of a method); stored as part of the run's name")
    parser.add_argument("--report", action="store_true", help="print the table of the stored runs; train nothing")
    parser.add_argument("--publish", action="store_true", help="seed 0 of each run that is its preset exactly "
                        "publishes its weights and card as that preset (zoo/pretrained/)")
    args = parser.parse_args()
    protocol = protocol_name(args.backbone_weights, args.backbone, args.imagenet)
    settings = dict(args.set)
    if not args.report:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        done = {(r.get("dataset", "glyphs"), r["protocol"], r["steps"], r["run"], r["seed"])
                for r in read_results(args.results)}
        if args.imagenet and (args.dataset, protocol, args.steps, "zero-shot", 0) not in done:
            row = {"dataset": args.dataset, "protocol": protocol, "steps": args.steps, "run": "zero-shot", "seed": 0,
                   **zero_shot_once(args.dataset)}
            with args.results.open("a") as results:
                results.write(json.dumps(row) + "\n")
        for seed in args.seeds:  # seed-major: a partial benchmark already compares every run
            for name in args.runs:
                label = run_label(name, settings)
                if (args.dataset, protocol, args.steps, label, seed) in done:
                    continue
                row = {"dataset": args.dataset, "protocol": protocol, "steps": args.steps, "run": label, "seed": seed,
                       **run_once(name, seed, args.steps, args.backbone_weights, settings, args.dataset, args.backbone,
                                  args.imagenet, args.publish and seed == 0 and not settings)}
                with args.results.open("a") as results:
                    results.write(json.dumps(row) + "\n")
                print(f"{label} seed {seed}: MAP@R {row['metrics']['map@r']:.3f} ({row['seconds']} s)", flush=True)
    print(report(read_results(args.results), protocol, args.steps, args.dataset))


if __name__ == "__main__":
    main()
