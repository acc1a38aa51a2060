"""See an embedding: retrieval grids, 2-D embedding maps and TensorBoard projector files.

    from zoo import viz
    viz.retrieval_grid(model, eval_pipeline(test_set, 32), out="grid.png")   # zoo show --out grid.png
    viz.embedding_map(model, eval_pipeline(test_set, 32), "map.png")         # zoo show --map map.png

A retrieval grid has one row per query: the query (framed grey), a gap, then its k nearest
neighbours, most similar first, framed green (same class as the query) or red (another class),
each captioned with its rank and distance (grey frames when the query's class is unknown). Neighbours are ranked as :func:`zoo.metrics.evaluate`
ranks them (unit vectors, the query excluded from its own neighbours, ties by the smaller index);
the distance is the L2 distance between the unit vectors. The grid and the projector draw with
numpy and Pillow; only the embedding map needs matplotlib (``pip install "zoo[viz]"``).

Images are fetched from the dataset by position in a second pass, so the dataset must yield the
same images in the same order on every pass (as :func:`zoo.data.eval_pipeline` does).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from tensorboard.plugins import projector

from zoo.data import preprocess_for_embedding
from zoo.evaluation import embed_dataset
from zoo.metrics import l2_normalise, compute_ranking

THUMBNAIL = 96  # side in pixels of each image of a retrieval grid
BORDER = 4  # width of a grid frame
PAD = 4  # white space around the cells
CAPTION = 14  # height of the caption strip under each cell
SEPARATOR = 12  # extra white space between the query column and its neighbours
QUERY_COLOUR = (128, 128, 128)
SAME_CLASS_COLOUR = (0, 160, 0)
OTHER_CLASS_COLOUR = (220, 0, 0)
TEXT_COLOUR = (0, 0, 0)

TSNE_MAX_POINTS = 10_000  # embedding maps of more points use PCA (t-SNE would take many minutes)
PROJECTOR_MAX_POINTS = 10_000  # points written for the TensorBoard projector (a seeded sample beyond)
SPRITE_THUMBNAIL = 32  # side of a sprite thumbnail, less when the sprite would exceed SPRITE_MAX_SIDE
SPRITE_MAX_SIDE = 8192  # TensorBoard's limit on a sprite image's side


def grid_image(
    query_images: np.ndarray,
    neighbor_images: np.ndarray,
    query_labels: Sequence,
    neighbor_labels: Sequence,
    distances: np.ndarray,
    *,
    thumbnail: int = THUMBNAIL,
) -> np.ndarray:
    """Draw a retrieval grid (module docstring) from images, labels and distances.

    Layout: cells of ``(thumbnail + 2 * BORDER)`` pixels square with a ``CAPTION`` strip below,
    ``PAD`` pixels around every cell and ``SEPARATOR`` more after the query column: the grid is
    ``PAD + Q * (thumbnail + 2 * BORDER + CAPTION + PAD)`` pixels high and
    ``PAD + (k + 1) * (thumbnail + 2 * BORDER + PAD) + SEPARATOR`` wide.

    Args:
        query_images: (Q, H, W, C) images, C = 1 or 3, values in [0, 255].
        neighbor_images: (Q, k, H', W', C) images of each query's neighbours, most similar first.
        query_labels: (Q,) class of each query (ids or names; shown in its caption), or None when unknown.
        neighbor_labels: (Q, k) classes of the neighbours, compared with the query's.
        distances: (Q, k) distance of each neighbour to its query.
        thumbnail: side in pixels each image is resized to.

    Returns:
        The grid as an RGB uint8 (height, width, 3) array.
    """
    neighbor_labels, distances = np.asarray(neighbor_labels), np.asarray(distances)
    rows, k = neighbor_labels.shape
    if len(query_images) != rows or len(query_labels) != rows or neighbor_images.shape[:2] != (rows, k):
        raise ValueError(
            f"{len(query_images)} query images, {len(query_labels)} query labels and neighbour images of shape "
            f"{neighbor_images.shape[:2]} do not match neighbour labels of shape {(rows, k)}"
        )
    cell = thumbnail + 2 * BORDER
    canvas = np.full((PAD + rows * (cell + CAPTION + PAD), PAD + (k + 1) * (cell + PAD) + SEPARATOR, 3), 255, np.uint8)
    captions = []
    for row in range(rows):
        y = PAD + row * (cell + CAPTION + PAD)
        known = query_labels[row] is not None
        cells = [(query_images[row], QUERY_COLOUR, f"query: {query_labels[row]}" if known else "query")]
        for rank in range(k):
            same = neighbor_labels[row, rank] == query_labels[row]
            colour = (SAME_CLASS_COLOUR if same else OTHER_CLASS_COLOUR) if known else QUERY_COLOUR
            cells.append((neighbor_images[row, rank], colour, f"#{rank + 1}  d={distances[row, rank]:.2f}"))
        for column, (image, colour, caption) in enumerate(cells):
            x = PAD + column * (cell + PAD) + (SEPARATOR if column else 0)
            canvas[y : y + cell, x : x + cell] = colour
            canvas[y + BORDER : y + BORDER + thumbnail, x + BORDER : x + BORDER + thumbnail] = thumbnails(
                image[None], thumbnail
            )[0]
            captions.append(((x, y + cell + 1), caption))
    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for position, caption in captions:
        draw.text(position, caption, fill=TEXT_COLOUR, font=font)
    return np.asarray(picture)


def thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """Images in [0, 255] ((N, H, W, 1) or (N, H, W, 3)) as RGB uint8 (N, size, size, 3).

    Upscaling repeats pixels (sharp digits); downscaling filters (no aliasing).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3), got shape {images.shape}")
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    images = np.repeat(images, 3 // images.shape[-1], axis=-1)
    resample = Image.NEAREST if size >= max(images.shape[1:3]) else Image.BILINEAR
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), resample)) for image in images])


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as a PNG file (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path


def seeded_sample(num_items: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct positions among ``num_items`` (all when fewer), drawn with ``seed``, ascending."""
    return np.sort(np.random.default_rng(seed).choice(num_items, min(size, num_items), replace=False))


def nearest_neighbors(
    embeddings: np.ndarray,
    labels: np.ndarray,
    query_indices: np.ndarray,
    k: int,
    reference_embeddings: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    own_reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest references of ``embeddings[query_indices]``, ranked as :func:`zoo.metrics.evaluate` ranks.

    Without references the references are all the ``embeddings``, each query excluded from its
    own neighbours; with them, ``own_reference`` (as :func:`zoo.metrics.evaluate`'s, one per embedding) names
    the references that are the queries themselves, never shown as their neighbours.

    Returns:
        ``(indices, distances)``: int64 (Q, k) positions among the references, most similar first,
        and float32 (Q, k) L2 distances between the unit vectors.

    Raises:
        ValueError: k is not between 1 and the number of references per query.
    """
    same_set = reference_embeddings is None
    references = l2_normalise(embeddings if same_set else reference_embeddings)
    reference_labels = np.asarray(labels if same_set else reference_labels, np.int64)
    query_indices = np.asarray(query_indices, np.int64)
    own = None if own_reference is None or same_set else np.asarray(own_reference, np.int64)[query_indices]
    num_references = len(references) - same_set - bool(own is not None and (own >= 0).any())
    if not 1 <= k <= num_references:
        raise ValueError(f"k={k} must be between 1 and the number of references per query ({num_references})")
    ranking = compute_ranking(
        l2_normalise(np.asarray(embeddings)[query_indices]),
        np.asarray(labels, np.int64)[query_indices],
        references,
        reference_labels,
        k=k + same_set,
        positive_ranks=False,
        own_reference=own,
    )
    indices, similarities = ranking.neighbors, ranking.similarities
    if same_set:  # drop the query itself, keeping the order of the others
        keep = np.argsort(indices == query_indices[:, None], axis=1, kind="stable")[:, :k]
        indices, similarities = np.take_along_axis(indices, keep, 1), np.take_along_axis(similarities, keep, 1)
    return indices, np.sqrt(np.maximum(2.0 - 2.0 * similarities, 0.0)).astype(np.float32)


def images_at(dataset: tf.data.Dataset, indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The images at positions ``indices`` of a dataset of ``(images, labels)`` batches, in one pass.

    Args:
        dataset: the dataset the embeddings came from, in the same order.
        indices: positions (any order, repeats allowed).
        labels: the labels of the whole dataset as embedded, to check the order is the same.

    Returns:
        The images, in the order of ``indices``.

    Raises:
        ValueError: the dataset does not yield images, or not in the order it was embedded in.
    """
    indices = np.asarray(indices, np.int64)
    wanted = np.unique(indices)
    found: dict[int, np.ndarray] = {}
    start = 0
    for images, batch_labels in dataset:
        if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"drawing needs a dataset of images (B, H, W, 1 or 3), got batches of {images.shape}")
        batch_labels = np.reshape(batch_labels, [-1])
        hits = wanted[(wanted >= start) & (wanted < start + len(batch_labels))]
        for index in hits:
            if batch_labels[index - start] != labels[index]:
                raise ValueError(
                    "the dataset yielded another label at a position on a second pass: drawing needs a dataset in a "
                    "fixed order (e.g. zoo.data.eval_pipeline), not a shuffled one"
                )
            found[int(index)] = images[int(index - start)].numpy()
        start += len(batch_labels)
        if start > wanted[-1]:
            break
    if len(found) < len(wanted):
        raise ValueError(f"the dataset yielded {start} images on a second pass, fewer than were embedded")
    return np.stack([found[int(index)] for index in indices])


def _names(ids: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    """The class names of class ids (the ids themselves without names)."""
    return ids if class_names is None else np.asarray(class_names)[ids]


def grid_from_embeddings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    dataset: tf.data.Dataset,
    n_queries: int = 8,
    k: int = 8,
    *,
    reference_embeddings: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    reference_dataset: tf.data.Dataset | None = None,
    own_reference: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    failures: bool = False,
    thumbnail: int = THUMBNAIL,
) -> np.ndarray:
    """The retrieval grid of seeded queries among the embedded ``dataset`` (see :func:`retrieval_grid`).

    Args:
        embeddings, labels: :func:`zoo.evaluation.embed_dataset` of ``dataset``.
        reference_embeddings, reference_labels, reference_dataset: a gallery to retrieve from
            (In-Shop), given together; None retrieves among the other images of ``dataset``.
        own_reference: the gallery position of each query's own image (-1: none), never its neighbour.
        class_names: names of the class ids, shown in the captions; the ids when None.
        failures: draw the queries among those whose nearest neighbour is of another class.

    Raises:
        ValueError: ``failures`` and every query's nearest neighbour is of its class.
    """
    if (reference_embeddings is None) != (reference_dataset is None):
        raise ValueError("give reference_embeddings, reference_labels and reference_dataset together, or none")
    candidates = np.arange(len(labels))
    if failures:
        nearest, _ = nearest_neighbors(embeddings, labels, candidates, 1, reference_embeddings, reference_labels,
                                       own_reference)
        gallery_labels = np.asarray(labels if reference_labels is None else reference_labels)
        candidates = candidates[gallery_labels[nearest[:, 0]] != np.asarray(labels)]
        if not len(candidates):
            raise ValueError("no query's nearest neighbour is of another class: there is no failure to show")
    queries = candidates[seeded_sample(len(candidates), n_queries, seed)]
    neighbors, distances = nearest_neighbors(embeddings, labels, queries, k, reference_embeddings, reference_labels,
                                             own_reference)
    if reference_dataset is None:
        reference_labels = labels
        images = images_at(dataset, np.concatenate([queries, neighbors.ravel()]), labels)
        query_images, neighbor_images = images[: len(queries)], images[len(queries) :]
    else:
        query_images = images_at(dataset, queries, labels)
        neighbor_images = images_at(reference_dataset, neighbors.ravel(), reference_labels)
    return grid_image(
        query_images,
        neighbor_images.reshape(*neighbors.shape, *neighbor_images.shape[1:]),
        _names(labels[queries], class_names),
        _names(reference_labels[neighbors], class_names),
        distances,
        thumbnail=thumbnail,
    )


def search_grid(
    query_file: str, neighbors: Sequence, query_label: str | None = None, *, thumbnail: int = THUMBNAIL
) -> np.ndarray:
    """The grid of one search (:meth:`zoo.Index.search`): the query file, then its neighbours' files.

    Images are shown as the model sees them (:func:`zoo.data.preprocess_for_embedding`); neighbours
    are framed by class when ``query_label`` is known, grey otherwise.
    """

    def load(path: str) -> np.ndarray:
        return preprocess_for_embedding(tf.io.decode_image(tf.io.read_file(path), channels=3,
                                                           expand_animations=False), thumbnail).numpy()

    return grid_image(
        np.stack([load(query_file)]),
        np.stack([load(neighbor.file) for neighbor in neighbors])[None],
        [query_label],
        np.array([[neighbor.label for neighbor in neighbors]], dtype=object),
        np.array([[neighbor.distance for neighbor in neighbors]]),
        thumbnail=thumbnail,
    )


def retrieval_grid(
    model: keras.Model,
    dataset: tf.data.Dataset,
    n_queries: int = 8,
    k: int = 8,
    *,
    out: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    thumbnail: int = THUMBNAIL,
) -> np.ndarray:
    """One row per query: the query, then its k nearest neighbours among the other images.

    Args:
        model: images -> embeddings.
        dataset: ``(images, labels)`` batches in a fixed order, e.g. ``zoo.data.eval_pipeline(test_set, size)``.
        n_queries: rows; the queries are drawn with ``seed`` among the dataset's images.
        k: neighbours per query.
        out: PNG file to write the grid to, or None.
        class_names: names of the class ids, shown in the captions.
        seed: seed of the choice of queries.
        thumbnail: side in pixels of each image in the grid.

    Returns:
        The grid as an RGB uint8 array (layout: :func:`grid_image`).
    """
    embeddings, labels = embed_dataset(model, dataset)
    grid = grid_from_embeddings(
        embeddings, labels, dataset, n_queries, k, class_names=class_names, seed=seed, thumbnail=thumbnail
    )
    if out is not None:
        save_png(grid, out)
    return grid


def projection_method(method: str, num_points: int) -> str:
    """``"tsne"`` or ``"pca"`` for ``method``: ``"auto"`` is t-SNE up to ``TSNE_MAX_POINTS`` points, PCA beyond."""
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"unknown projection {method!r}; choose 'auto', 'tsne' or 'pca'")
    if method == "auto":
        return "tsne" if num_points <= TSNE_MAX_POINTS else "pca"
    return method


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of the unit embeddings by t-SNE or PCA (:func:`projection_method`)."""
    points = l2_normalise(embeddings)
    if projection_method(method, len(points)) == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(points) - 1) / 3)  # t-SNE needs perplexity < number of points
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(points)


def map_from_embeddings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    method: str = "auto",
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Scatter the 2-D projection (:func:`project_2d`) of the embeddings coloured by class into a PNG.

    Raises:
        ImportError: matplotlib is not installed (``pip install "zoo[viz]"``).
    """
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('the embedding map needs matplotlib: pip install "zoo[viz]"') from error
    labels = np.asarray(labels)
    points = project_2d(embeddings, method, seed)
    classes = np.unique(labels)
    colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    figure = Figure(figsize=(7, 7), layout="constrained")
    axes = figure.subplots()
    for i, name in enumerate(_names(classes, class_names)):
        axes.scatter(*points[labels == classes[i]].T, s=8, alpha=0.8, color=colours(i % colours.N), label=name)
    if len(classes) <= 20:  # beyond, a legend would hide the map
        axes.legend(title="class", markerscale=2, fontsize="small")
    used = {"tsne": "t-SNE", "pca": "PCA"}[projection_method(method, len(points))]
    axes.set_title(f"{title + ': ' if title else ''}{used} of {len(points)} embeddings, {len(classes)} classes")
    axes.set_xticks([])
    axes.set_yticks([])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def embedding_map(model: keras.Model, dataset: tf.data.Dataset, out: str | Path, **options: Any) -> Path:
    """Embed ``dataset`` and write its 2-D map coloured by class to ``out``: :func:`map_from_embeddings`, which takes
    the ``options`` (``class_names``, ``method``, ``title``, ``seed``)."""
    return map_from_embeddings(*embed_dataset(model, dataset), out, **options)


def sprite_image(images: np.ndarray) -> tuple[np.ndarray, int]:
    """The TensorBoard projector sprite of images: a square grid of thumbnails, row by row.

    Returns:
        ``(sprite, side)``: the RGB uint8 sprite (white beyond the last image) and the side of one thumbnail.
    """
    columns = math.ceil(math.sqrt(len(images)))
    side = min(SPRITE_THUMBNAIL, SPRITE_MAX_SIDE // columns)
    small = thumbnails(images, side)
    sprite = np.full((columns * columns, side, side, 3), 255, np.uint8)
    sprite[: len(small)] = small
    sprite = sprite.reshape(columns, columns, side, side, 3).transpose(0, 2, 1, 3, 4)
    return sprite.reshape(columns * side, columns * side, 3), side


def write_projector(
    log_dir: str | Path,
    embeddings: np.ndarray,
    labels: np.ndarray,
    dataset: tf.data.Dataset,
    *,
    tensor_name: str = "embeddings",
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write the TensorBoard projector files of the embedded ``dataset`` into ``log_dir`` (a run folder).

    Files: ``embeddings.tsv`` (one row per point), ``metadata.tsv`` (its class, one per line),
    ``sprite.png`` (its thumbnail) and ``projector_config.pbtxt``; at most
    ``PROJECTOR_MAX_POINTS`` points, a seeded sample of larger sets. Earlier files are replaced.

    Returns:
        The path of ``projector_config.pbtxt``.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    points = seeded_sample(len(labels), PROJECTOR_MAX_POINTS, seed)
    sprite, side = sprite_image(images_at(dataset, points, labels))
    save_png(sprite, log_dir / "sprite.png")
    np.savetxt(log_dir / "embeddings.tsv", embeddings[points], delimiter="\t", fmt="%.6g")
    names = _names(labels[points], class_names)
    (log_dir / "metadata.tsv").write_text("".join(f"{name}\n" for name in names))  # one column: no header
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = "embeddings.tsv"
    embedding.tensor_shape.extend([len(points), embeddings.shape[1]])
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([side, side])
    projector.visualize_embeddings(str(log_dir), config)
    return log_dir / "projector_config.pbtxt"
