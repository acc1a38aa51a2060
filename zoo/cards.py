"""Registry entries as text: a model card, a one-line summary, a Markdown table of all entries.

    print(zoo.card("topk_digits"))     # zoo card topk_digits
    zoo list                           # one line per entry with its key metrics
    zoo list --markdown                # the README's table (generated, never typed)

Every number comes from :func:`zoo.registry.get_entry`: the preset merged with the card
``zoo/pretrained/<name>.json`` that the training run wrote.
"""

from __future__ import annotations

from typing import Any

from zoo import registry
from zoo.data import SPLITS

# Columns of the Markdown table: metric key -> header.
TABLE_COLUMNS = {
    "recall@1": "R@1", "recall@4": "R@4", "map@r": "MAP@R", "r_precision": "R-Prec", "nmi": "NMI", "f1": "F1"
}


def _evaluation_split(dataset: str) -> str:
    """Where a dataset's metrics are measured, from its splits (In-Shop: query vs gallery)."""
    if "gallery" in SPLITS[dataset]:
        return "'query' images retrieved from the 'gallery'"
    return "the unseen classes of the 'test' split, each image retrieved from the others"


def _key_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "-"


def card(name: str) -> str:
    """The registry entry ``name`` as a readable card.

    Method and paper, backbone, dataset and split, hyperparameters and training protocol, and for
    published weights the metrics they measured (and those of the untrained model) with the
    command that produced them, the weights file and its sha256.

    Raises:
        KeyError: unknown name (with close names as suggestions).
    """
    entry = registry.get_entry(name)
    weights = entry.get("backbone_weights") or "none (trained from scratch)"
    size = entry["input_size"]
    lines = [
        name,
        "=" * len(name),
        f"method           {entry['method']}: {entry['paper']}",
        f"backbone         {entry['backbone']}, backbone weights: {weights}",
        f"embedding        {entry['embedding_dim']}-d, input {size}x{size} RGB in [0, 255]",
        f"dataset          {entry['dataset']}: trained on the {entry.get('num_classes') or '?'} classes of its "
        "'train' split",
        f"evaluated on     {_evaluation_split(entry['dataset'])}",
        f"hyperparameters  {_key_values(entry.get('hyperparameters', {}))}",
        f"training         {_key_values(entry.get('training', {}))}",
    ]
    if not entry["weights"]:
        lines += ["weights          none published yet (zoo.load refuses it; zoo.build gives the untrained model)",
                  f"command          {registry.publish_command(entry)}"]
        return "\n".join(lines)
    lines += [
        f"weights          {registry.PRETRAINED_DIR.name}/{entry['weights']} ({entry.get('date', 'undated')})",
        *([f"url              {entry['url']}"] if entry.get("url") else []),
        f"sha256           {entry['sha256']}",
        f"command          {entry['command']}",
        *([f"trained with     {_key_values(entry['trained_with'])}"] if entry.get("trained_with") else []),
        "",
        "metrics measured by that command on the evaluation split:",
    ]
    untrained = entry.get("metrics_untrained", {})
    width = max(len(metric) for metric in entry["metrics"])
    lines.append(f"  {'metric'.ljust(width)}  {'trained':>9}  {'untrained':>9}")
    for metric, value in entry["metrics"].items():
        before = f"{untrained[metric]:.4f}" if metric in untrained else "-"
        lines.append(f"  {metric.ljust(width)}  {value:>9.4f}  {before:>9}")
    return "\n".join(lines)


def summary_line(name: str) -> str:
    """One line of ``zoo list``: name, method, backbone, dataset and the key metrics (MAP@R, R@1)."""
    entry = registry.get_entry(name)
    metrics = entry["metrics"]
    key = f"MAP@R {metrics['map@r']:.3f}  R@1 {metrics['recall@1']:.3f}" if metrics else "no published weights"
    return f"{name:24s} {entry['method']:8s} {entry['backbone']:13s} {entry['dataset']:8s} {key}"


def markdown_table(pattern: str = "*") -> str:
    """A Markdown table of the registry entries matching ``pattern`` with their measured metrics."""
    header = ["model", "method", "backbone", "dataset", *TABLE_COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "--:|" * len(TABLE_COLUMNS)]
    for name in registry.list_models(pattern):
        entry = registry.get_entry(name)
        metrics = entry["metrics"]
        cells = [f"{metrics[key]:.3f}" if key in metrics else "-" for key in TABLE_COLUMNS]
        row = [f"`{name}`", entry["method"], entry["backbone"], entry["dataset"], *cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
