"""The ``zoo`` command line: train, evaluate, export, show and list models.

    zoo train --method triplet --dataset digits        # the default job, a few minutes on a CPU
    zoo train --method triplet --dataset digits --resume
    zoo evaluate --model triplet_digits --dataset digits
    zoo export --model triplet_digits --out exported/triplet_digits
    zoo show --model triplet_digits --dataset digits --out grid.png --map map.png
    zoo card triplet_digits
    zoo list
    zoo list --markdown
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import keras

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


def load_model(spec: str) -> keras.Model:
    """A model from a registry name or a saved ``.keras`` file."""
    import zoo

    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"model file {spec} does not exist")
        return keras.models.load_model(spec)
    return zoo.load(spec)


def input_size(model: keras.Model) -> int:
    """Side of the square images a model takes (a method model's ``input_size``, else its input shape)."""
    return int(getattr(model, "input_size", None) or model.input_shape[1])


def _train(args: argparse.Namespace) -> None:
    from zoo.training import config_from_args, train

    result = train(config_from_args(args))
    print(f"\nRetrieval on the unseen test classes of {args.dataset} (run folder: {result['run_dir']}):")
    print(metrics_table({"untrained": result["metrics_untrained"], "trained": result["metrics"]}))


def _evaluate(args: argparse.Namespace) -> None:
    from zoo.training import TrainConfig, evaluation_sets, measure

    model = load_model(args.model)
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, input_size=input_size(model))
    queries, gallery = evaluation_sets(config)
    print(metrics_table({args.model: measure(model, queries, gallery, config)}))


def _export(args: argparse.Namespace) -> None:
    from zoo.export import export_saved_model

    path = export_saved_model(load_model(args.model), args.out)
    print(f"SavedModel written to {path} (signature 'serve': images float32 [0, 255] -> embeddings)")


def _show(args: argparse.Namespace) -> None:
    from zoo import viz
    from zoo.callbacks import embed_for_retrieval
    from zoo.training import TrainConfig, evaluation_pipelines, evaluation_sets

    model = load_model(args.model)
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, input_size=input_size(model))
    queries, gallery = evaluation_sets(config)
    query_data, gallery_data = evaluation_pipelines(queries, gallery, config)
    embeddings, labels, reference = embed_for_retrieval(model, query_data, gallery_data)
    grid = viz.grid_from_embeddings(
        embeddings, labels, query_data, args.n_queries, args.k, class_names=queries.class_names, seed=args.seed,
        reference_dataset=gallery_data, **reference,
    )
    print(f"retrieval grid ({args.n_queries} queries x {args.k} neighbours) written to {viz.save_png(grid, args.out)}")
    if args.map:
        path = viz.map_from_embeddings(
            embeddings, labels, args.map, class_names=queries.class_names, title=f"{args.model}, {args.dataset}",
            seed=args.seed,
        )
        print(f"embedding map written to {path}")


def _card(args: argparse.Namespace) -> None:
    import zoo

    print(zoo.card(args.name))


def _list(args: argparse.Namespace) -> None:
    import zoo
    from zoo import cards

    if args.markdown:
        print(cards.markdown_table(args.pattern))
        return
    for name in zoo.list_models(args.pattern):
        print(cards.summary_line(name))


def build_parser() -> argparse.ArgumentParser:
    from zoo.training import add_train_arguments

    parser = argparse.ArgumentParser(prog="zoo", description="Deep metric learning model zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a model and report its retrieval metrics"))
    evaluate = commands.add_parser("evaluate", help="retrieval metrics of a model on a dataset's test split")
    evaluate.add_argument("--model", required=True, help="registry name or a .keras file")
    evaluate.add_argument("--dataset", default="digits")
    evaluate.add_argument("--data-dir")
    export = commands.add_parser("export", help="export a model as a TensorFlow SavedModel")
    export.add_argument("--model", required=True, help="registry name or a .keras file")
    export.add_argument("--out", required=True, help="output folder")
    show = commands.add_parser("show", help="retrieval grid (and embedding map) of a model on a dataset's test split")
    show.add_argument("--model", required=True, help="registry name or a .keras file")
    show.add_argument("--dataset", default="digits")
    show.add_argument("--data-dir")
    show.add_argument("--out", required=True, help="PNG file of the retrieval grid")
    show.add_argument("--n-queries", type=int, default=8, help="rows of the grid: queries drawn with --seed")
    show.add_argument("--k", type=int, default=8, help="nearest neighbours shown per query")
    show.add_argument("--map", help="PNG file of a 2-D map of the embeddings (t-SNE; needs zoo[viz])")
    show.add_argument("--seed", type=int, default=0)
    card = commands.add_parser("card", help="a registry entry as a readable model card")
    card.add_argument("name", help="registry name, e.g. triplet_digits")
    listing = commands.add_parser("list", help="registry entries, one line each")
    listing.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'thsg_*'")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table with the measured metrics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "export": _export, "show": _show, "card": _card, "list": _list}
    try:
        handlers[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
