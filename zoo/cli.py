"""The ``zoo`` command line (also ``python -m zoo``): train, evaluate, export, show, index, search, list.

    zoo train --method triplet --dataset digits        # the default job, a few minutes on a CPU
    zoo train --method triplet --dataset digits --resume
    zoo train --dataset folder --data-dir photos/      # your own images, one subfolder per class
    zoo evaluate --model triplet_digits --dataset digits
    zoo evaluate --model triplet_digits --queries queries/ --gallery gallery/   # or --queries data.csv (is_query)
    zoo export --model triplet_digits --out exported/triplet_digits
    zoo export --model triplet_digits --format tflite [--quantize] --out triplet_digits.tflite
    zoo export --index photos.index --out exported/photos     # model, vectors, labels, thresholds: match signature
    zoo show --model triplet_digits --dataset digits --out grid.png --map map.png [--failures]
    zoo index --model triplet_digits --images photos/ --out photos.index
    zoo index --backbone efficientnet_lite0 --images photos/ --out photos.index   # ImageNet features, no training
    zoo evaluate --backbone efficientnet_lite0 --dataset folder --data-dir photos/
    zoo search --index photos.index --query photo.png -k 10 [--grid result.png]
    zoo calibrate --index photos.index --images calibration/ --target-precision 0.95 [--plot calibration.png]
    zoo search --index photos.index --query photo.png --threshold optimal   # or 0.95 (a target), or a distance
    zoo card triplet_digits
    zoo list
    zoo list --markdown

TensorFlow is imported only by the command that needs it: ``zoo --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence


TABLE_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision@5", "map", "map@r", "r_precision", "nmi", "f1")


def metrics_table(rows: dict[str, dict[str, float]], columns: Sequence[str] = TABLE_METRICS) -> str:
    """A fixed-width text table: one row per labelled metrics dict, one column per metric."""
    columns = [c for c in columns if any(c in metrics for metrics in rows.values())]
    label_width = max(len(label) for label in rows)
    widths = [max(len(c), 6) for c in columns]
    lines = [" ".join([" " * label_width, *(c.rjust(w) for c, w in zip(columns, widths))])]
    for label, metrics in rows.items():
        cells = (f"{metrics[c]:.4f}".rjust(w) if c in metrics else "-".rjust(w) for c, w in zip(columns, widths))
        lines.append(" ".join([label.ljust(label_width), *cells]))
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> None:
    from zoo.training import config_from_args, train

    config = config_from_args(args)
    result = train(config)
    print(f"\nRetrieval on the unseen test classes of {config.dataset} (run folder: {result['run_dir']}):")
    rows = {"raw pixels": result["metrics_raw_pixels"], "ImageNet features (no training)": result["metrics_zero_shot"],
            "untrained": result["metrics_untrained"], "trained": result["metrics"]}
    print(metrics_table({label: metrics for label, metrics in rows.items() if metrics is not None}))


def _model_spec(args: argparse.Namespace) -> str:
    """``--model``, or ``--backbone`` (with ``--image-size``) as the name of its ImageNet features."""
    from zoo.registry import zero_shot_spec

    return args.model or zero_shot_spec(args.backbone, args.image_size)


def _evaluate(args: argparse.Namespace) -> None:
    from zoo.data.folder import load_query_gallery
    from zoo.evaluation import evaluation_sets, measure
    from zoo.registry import load_model, model_input_size
    from zoo.training import TrainConfig

    spec = _model_spec(args)
    model = load_model(spec)
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, input_size=model_input_size(model))
    if args.queries:
        queries, gallery = load_query_gallery(args.queries, args.gallery)
        print(f"{len(queries)} queries against a gallery of {len(gallery)} images", file=sys.stderr)
    elif args.gallery:
        raise ValueError("--gallery needs --queries")
    else:
        queries, gallery = evaluation_sets(config)
    print(metrics_table({spec: measure(model, queries, gallery, config)}))


def _export(args: argparse.Namespace) -> None:
    from zoo import export
    from zoo.registry import load_model

    if (args.model is None) == (args.index is None):
        raise ValueError("give --model (a model) or --index (an index with its model), not both")
    if args.quantize and args.format != "tflite":
        raise ValueError("--quantize applies to --format tflite")
    if args.index:
        from zoo.index import Index

        index = Index.load(args.index)
        path = export.export_index(index, args.out, tflite=args.format == "tflite", quantize=args.quantize)
        thresholds = ", ".join(index.calibration["cutpoints"]) if index.calibration else "none (not calibrated)"
        print(f"index of {len(index)} images written to {path}: saved_model/ (signatures 'serve', 'serve_images', "
              f"'match'), index.json (thresholds: {thresholds}), embeddings.npy"
              + (", model.tflite" if args.format == "tflite" else ""))
    elif args.format == "tflite":
        path = export.export_tflite(load_model(args.model), args.out, quantize=args.quantize)
        print(f"TFLite model written to {path} ({'int8 dynamic-range' if args.quantize else 'float32'}; signature "
              f"'serve': images float32 [0, 255] at the model's size -> 'embeddings')")
    else:
        path = export.export_saved_model(load_model(args.model), args.out)
        print(f"SavedModel written to {path} (signature 'serve': images float32 [0, 255] -> 'embeddings')")


def _show(args: argparse.Namespace) -> None:
    from zoo import viz
    from zoo.evaluation import embed_for_retrieval, evaluation_pipelines, evaluation_sets, own_references
    from zoo.registry import load_model, model_input_size
    from zoo.training import TrainConfig

    model = load_model(args.model)
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, input_size=model_input_size(model))
    queries, gallery = evaluation_sets(config)
    query_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    embeddings, labels, reference = embed_for_retrieval(model, query_data, gallery_data)
    grid = viz.grid_from_embeddings(
        embeddings, labels, query_data, args.n_queries, args.k, class_names=queries.class_names, seed=args.seed,
        failures=args.failures, reference_dataset=gallery_data, own_reference=own_references(queries, gallery),
        **reference,
    )
    which = "failed queries" if args.failures else "queries"
    print(f"retrieval grid ({which}, {args.k} neighbours each) written to {viz.save_png(grid, args.out)}")
    if args.map:
        path = viz.map_from_embeddings(
            embeddings, labels, args.map, class_names=queries.class_names, title=f"{args.model}, {args.dataset}",
            seed=args.seed,
        )
        print(f"embedding map written to {path}")


def _index(args: argparse.Namespace) -> None:
    from zoo.index import Index

    spec = _model_spec(args)
    index = Index.from_images(spec, args.images, args.batch_size, kind=args.kind)
    labelled = sum(label is not None for label in index.labels)
    print(f"{len(index)} images ({labelled} labelled) indexed with {spec} ({index.kind} search): "
          f"{index.save(args.out)}")


def _search(args: argparse.Namespace) -> None:
    from zoo import viz
    from zoo.index import Index
    from zoo.registry import load_model

    index = Index.load(args.index, model=load_model(args.model) if args.model else None)
    neighbors = index.search(args.query, args.k)
    shown = neighbors if args.threshold is None else _within_threshold(index, neighbors, args.threshold)
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(neighbor) for neighbor in shown], indent=1))
    elif not shown:
        print(f"no match (the nearest, {one_line(neighbors[0].file)}, is at {neighbors[0].distance:.4f})")
    else:
        for neighbor in shown:
            label = neighbor.label if neighbor.label is not None else "-"
            print(f"{one_line(neighbor.file)}\t{neighbor.distance:.4f}\t{one_line(label)}")
    if args.grid:  # the k nearest, whatever the threshold
        print(f"grid written to {viz.save_png(viz.search_grid(args.query, neighbors, index.label_of(args.query)), args.grid)}", file=sys.stderr)


LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def one_line(text: str) -> str:
    """``text`` with newlines, carriage returns and tabs written ``\\n``, ``\\r``, ``\\t``: one field of one line."""
    return text.translate(LINE_BREAKS)


def _within_threshold(index, neighbors: list, threshold: str) -> list:
    """The neighbours within a threshold (a cutpoint's name or a distance)."""
    from zoo.calibration import resolve_threshold

    cutpoints = None if index.calibration is None else index.calibration["cutpoints"]
    distance = resolve_threshold(cutpoints, threshold)
    named = f"cutpoint {threshold!r}, " if cutpoints and threshold in cutpoints else ""
    unnamed = "" if named else f" (a distance: {'no cutpoint is named so' if cutpoints else 'the index is not calibrated'})"
    print(f"threshold: {named}distance {distance:.4f}{unnamed}", file=sys.stderr)
    return [neighbor for neighbor in neighbors if neighbor.distance <= distance]


def _calibrate(args: argparse.Namespace) -> None:
    from zoo import calibration
    from zoo.index import Index

    index = Index.load(args.index)
    targets = {"precision": args.target_precision} if args.target_precision is not None else None
    sweep = index.calibrate(args.images, targets=targets, metric=args.metric)
    index.save(args.index)
    print(f"calibrated on {sweep.num_queries} images of {args.images} ({sweep.num_unseen} of classes not in the "
          f"index), saved in {args.index}:")
    print(calibration.cutpoints_table(index.calibration["cutpoints"]))
    if args.plot:
        print(f"plot written to {calibration.plot_sweep(sweep, index.calibration['cutpoints'], args.plot)}",
              file=sys.stderr)


def _card(args: argparse.Namespace) -> None:
    from zoo import cards

    print(cards.card(args.name))


def _list(args: argparse.Namespace) -> None:
    from zoo import cards, registry

    if args.markdown:
        print(cards.markdown_table(args.pattern))
        return
    for name in registry.list_models(args.pattern):
        print(cards.summary_line(name))


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count or a size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default in its help, except the empty ones (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


HANDLERS = {"train": _train, "evaluate": _evaluate, "export": _export, "show": _show, "index": _index,
            "search": _search, "calibrate": _calibrate, "card": _card, "list": _list}
MODEL_HELP = "registry name (zoo list) or a .keras file"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, or ``--backbone`` for its ImageNet features without training (at ``--image-size``)."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help=MODEL_HELP)
    which.add_argument("--backbone", help="an ImageNet backbone (efficientnet_lite0): its pooled features, no training")
    parser.add_argument("--image-size", type=int, help="with --backbone: image side (default: the backbone's, 224 "
                        "for efficientnet_lite0; 96-128 is 2-5x faster on a CPU)")


def build_parser(train_arguments: bool = True) -> argparse.ArgumentParser:
    """The ``zoo`` parser; without ``train_arguments`` the ``train`` flags (which import TensorFlow) are left out."""
    parser = argparse.ArgumentParser(prog="zoo", description="Deep metric learning model zoo",
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help,
                                   formatter_class=HelpFormatter)

    train = command("train", "train a model and report its retrieval metrics")
    if train_arguments:
        from zoo.training import add_train_arguments

        add_train_arguments(train)
    evaluate = command("evaluate", "retrieval metrics of a model on a dataset's test split")
    add_model_arguments(evaluate)
    evaluate.add_argument("--dataset", default="digits", help="dataset whose test split is measured")
    evaluate.add_argument("--data-dir", help="the dataset's files (benchmarks, folder)")
    evaluate.add_argument("--queries", help="instead of a dataset: query images (class folder or CSV), or a CSV "
                          "with is_query and is_gallery columns")
    evaluate.add_argument("--gallery", help="the gallery the queries retrieve from (class folder or CSV)")
    export = command("export", "export a model as a TensorFlow SavedModel or TFLite file, or an index for serving")
    export.add_argument("--model", help=MODEL_HELP)
    export.add_argument("--index", help="instead of --model: folder written by zoo index; exports its model, "
                        "vectors, labels and calibrated thresholds together (match signature)")
    export.add_argument("--out", required=True, help="output folder (a .tflite file for --format tflite)")
    export.add_argument("--format", choices=("savedmodel", "tflite"), default="savedmodel",
                        help="TensorFlow SavedModel, or TFLite (with --index: both)")
    export.add_argument("--quantize", action="store_true", help="TFLite with dynamic-range int8 weights")
    show = command("show", "retrieval grid (and embedding map) of a model on a dataset's test split")
    show.add_argument("--model", required=True, help=MODEL_HELP)
    show.add_argument("--dataset", default="digits", help="dataset whose test split is shown")
    show.add_argument("--data-dir", help="the dataset's files (benchmarks, folder)")
    show.add_argument("--out", required=True, help="PNG file of the retrieval grid")
    show.add_argument("--n-queries", type=positive_int, default=8, help="rows of the grid: queries drawn with --seed")
    show.add_argument("--k", type=positive_int, default=8, help="nearest neighbours shown per query")
    show.add_argument("--failures", action="store_true", help="draw the queries only among those whose nearest "
                      "neighbour is of another class")
    show.add_argument("--map", help="PNG file of a 2-D map of the embeddings (t-SNE; needs zoo[viz])")
    show.add_argument("--seed", type=int, default=0, help="seed of the choice of queries and of the map")
    index = command("index", "embed a folder of images into a searchable index")
    add_model_arguments(index)
    index.add_argument("--images", required=True, help="folder of images (labels: subfolder names)")
    index.add_argument("--out", required=True, help="folder to write the index to")
    index.add_argument("--batch-size", type=positive_int, default=64, help="images embedded per batch")
    index.add_argument("--kind", choices=("exact", "hnsw", "ivf"), default="exact",
                       help="exact search, or approximate (faster on large galleries)")
    search = command("search", "the nearest indexed images of a query image")
    search.add_argument("--index", required=True, help="folder written by zoo index")
    search.add_argument("--model", help=f"{MODEL_HELP}, instead of the one the index names (same weights)")
    search.add_argument("--query", required=True, help="image file")
    search.add_argument("-k", type=positive_int, default=10, help="neighbours to print, nearest first")
    search.add_argument("--grid", help="PNG file of the query and its neighbours")
    search.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one line per neighbour, 'file<TAB>distance<TAB>label' (newlines and tabs in names "
                        "written \\n and \\t); json: a list of {file, label, distance}, for programs")
    search.add_argument("--threshold", help="print only the neighbours within it (else 'no match'): a calibrated "
                        "cutpoint ('optimal', or a target such as 0.95; zoo calibrate) or an L2 distance")
    calibrate = command("calibrate", "measure match thresholds of an index on labelled images (saved with it)")
    calibrate.add_argument("--index", required=True, help="folder written by zoo index")
    calibrate.add_argument("--images", required=True, help="folder of labelled images, one subfolder per class "
                           "(include classes that are not in the index: they should get 'no match')")
    calibrate.add_argument("--target-precision", type=float, nargs="+", help="also keep the largest threshold "
                           "with this precision (cutpoint named after it, e.g. 0.95); several values allowed")
    calibrate.add_argument("--metric", choices=("f1", "precision", "recall", "rejection"), default="f1",
                           help="what the 'optimal' threshold maximises")
    calibrate.add_argument("--plot", help="PNG file of precision and recall against the threshold")
    card = command("card", "a registry entry as a readable model card")
    card.add_argument("name", help="registry name, e.g. triplet_digits")
    listing = command("list", "registry entries, one line each")
    listing.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'thsg_*'")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table with the measured metrics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ start-up lines (no CUDA driver, CPU features) are noise on a console; TF_CPP_MIN_LOG_LEVEL=0 shows them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    positional = [word for word in argv if not word.startswith("-")]
    args = build_parser(train_arguments=positional[:1] == ["train"]).parse_args(argv)
    try:
        HANDLERS[args.command](args)
    except (ValueError, KeyError, OSError, ImportError) as error:  # OSError: FileNotFoundError, FileExistsError...
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
