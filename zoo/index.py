"""Find more like this: embed a gallery of images once, then search it for the nearest images of a query.

    index = zoo.Index.from_images("triplet_digits", "photos/")     # a model (or registry name) and a folder
    index.search("query.png", k=5)      # [Neighbor(file='photos/cats/3.jpg', label='cats', distance=0.12), ...]
    index.save("photos.index")
    index = zoo.Index.load("photos.index")                          # refuses another model's weights

    index.calibrate("calibration/", targets={"precision": 0.95})    # thresholds (zoo.calibration), saved with it
    index.match("query.png", threshold="optimal")   # its nearest Neighbor, or None: "no match"

    zoo index --model triplet_digits --images photos/ --out photos.index
    zoo search --index photos.index --query query.png -k 10 --grid result.png
    zoo calibrate --index photos.index --images calibration/ --target-precision 0.95 --plot calibration.png
    zoo search --index photos.index --query query.png --threshold optimal

The index is kept beside the model, not in it (TensorFlow Similarity's index, outside the Model class).
Images go through the evaluation's preprocessing (:func:`zoo.data.preprocess_for_embedding`) and
:func:`zoo.evaluation.embed_dataset`, so their embeddings are the ones the published metrics were measured
with. The distance is the L2 distance between the unit embeddings (as in :mod:`zoo.viz`'s grids). Search
is exact (faiss ``IndexFlatL2``) by default; ``kind="hnsw"`` (graph) or ``kind="ivf"`` (inverted lists)
are approximate and faster on large galleries. A gallery folder with subfolders labels each image
with its first subfolder's name (as the ``folder`` dataset does); other images have no label.

A saved index is a folder: ``index.json`` records the sha256 of its other files and of its file and
label lists, and its image files and ``.keras`` model relative to the folder (the index works from any
working directory, and after the folder is moved together with its images); :meth:`Index.load`
refuses, naming the file, an index that is damaged, edited or inconsistent.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import keras
import numpy as np
import tensorflow as tf

from zoo import calibration, registry
from zoo.data import ImageSet, eval_pipeline, preprocess_for_embedding
from zoo.data.folder import check_readable, image_files
from zoo.evaluation import embed_dataset

KINDS = ("exact", "hnsw", "ivf")
HNSW_NEIGHBORS = 32  # graph degree M of the HNSW index
IVF_PROBES = 8  # inverted lists visited per query by the IVF index
FORMAT = 2  # version of the saved index's index.json (2: sha256 of every file and list, counts, relative paths)
# What faiss must hand back for each kind: the index class, and the class of its vector storage or coarse quantizer.
FAISS_TYPES = {"exact": ("IndexFlat", None), "hnsw": ("IndexHNSWFlat", "IndexFlat"),
               "ivf": ("IndexIVFFlat", "IndexFlat")}
ON_DISK_LISTS = b"ilod"  # faiss' fourcc of on-disk inverted lists: reading them maps another file into memory


@dataclass(frozen=True)
class Neighbor:
    """One search result: the gallery file, its label (None without one) and its L2 distance to the query."""

    file: str
    label: str | None
    distance: float


def _faiss_index(embeddings: np.ndarray, kind: str) -> faiss.Index:
    """A faiss L2 index of ``kind`` holding ``embeddings``."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    dimension = embeddings.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatL2(dimension)
    elif kind == "hnsw":
        index = faiss.index_factory(dimension, f"HNSW{HNSW_NEIGHBORS}")
    else:
        lists = max(1, min(len(embeddings) // 39, round(4 * math.sqrt(len(embeddings)))))  # faiss: >= 39 per list
        index = faiss.index_factory(dimension, f"IVF{lists},Flat")
        index.train(embeddings)
        index.nprobe = min(IVF_PROBES, lists)
    index.add(embeddings)
    return index


def _with_progress(batches: tf.data.Dataset, total: int, show: bool) -> Iterator:
    """The batches of a dataset, with a progress bar of ``total`` batches when ``show``."""
    bar = keras.utils.Progbar(total, unit_name="batch", verbose=1 if show else 0)
    for step, batch in enumerate(batches, 1):
        yield batch
        bar.update(step)


def _file_set(paths: Sequence[str], labels: Sequence[str | None]) -> ImageSet:
    """An on-disk ImageSet of ``paths`` (labels numbered; unlabelled images share the class ``""``)."""
    names = ["" if label is None else label for label in labels]
    classes = sorted(set(names))
    return ImageSet("index", "gallery", np.searchsorted(classes, names).astype(np.int32), tuple(classes),
                    paths=tuple(paths))


def _is_single(query) -> bool:
    """Whether a query is one image (a file, or an array (H, W, 3)) rather than a batch."""
    return isinstance(query, (str, Path)) or (not isinstance(query, (list, tuple)) and np.ndim(query) == 3)


def embed_files(model: keras.Model, paths: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Embeddings (N, D) of image files, decoded, resized and centre-cropped as the evaluation does.

    Raises:
        FileNotFoundError: a missing file. ValueError: files that do not decode (all named).
    """
    check_readable(list(paths))
    image_set = _file_set(paths, [None] * len(paths))
    batches = eval_pipeline(image_set, registry.model_input_size(model), batch_size)
    return embed_dataset(model, _with_progress(batches, math.ceil(len(paths) / batch_size), progress))[0]


def embed_images(model: keras.Model, images: np.ndarray | tf.Tensor, batch_size: int = 64) -> np.ndarray:
    """Embeddings (B, D) of a batch of images (B, H, W, 3) in [0, 255], preprocessed as the evaluation does."""
    size = registry.model_input_size(model)
    images = tf.convert_to_tensor(images)
    batches = (
        tf.data.Dataset.from_tensor_slices((images, tf.zeros(len(images), tf.int32)))
        .map(lambda image, label: (preprocess_for_embedding(image, size), label))
        .batch(batch_size)
    )
    return embed_dataset(model, batches)[0]


class Index:
    """A searchable gallery of embedded images (module docstring).

    Build one with :meth:`from_images`, reload a saved one with :meth:`load`.

    Attributes:
        model: the embedding model (images -> embeddings).
        model_name: registry name or ``.keras`` file of the model (what :meth:`load` loads).
        weights_sha256: :func:`zoo.registry.weights_sha256` of the model the gallery was embedded with.
        files: the gallery's image files, in index order.
        labels: the label of each file, or None.
        embeddings: float32 (N, D) unit embeddings of the files.
        kind: ``"exact"``, ``"hnsw"`` or ``"ivf"``.
        calibration: None, or what :meth:`calibrate` measured: ``cutpoints`` (name -> distance and metrics),
            ``metric``, ``queries``, ``unseen`` and ``gallery_sha256`` (:meth:`gallery_sha256`).
    """

    def __init__(
        self,
        model: keras.Model,
        files: Sequence[str],
        labels: Sequence[str | None],
        embeddings: np.ndarray,
        *,
        model_name: str,
        kind: str = "exact",
        vectors: faiss.Index | None = None,
    ):
        if not len(files) == len(labels) == len(embeddings):
            raise ValueError(f"{len(files)} files, {len(labels)} labels and {len(embeddings)} embeddings differ")
        self.model = model
        self.model_name = model_name
        self.weights_sha256 = registry.weights_sha256(model)
        self.files = [str(file) for file in files]
        self.labels = list(labels)
        self.embeddings = np.ascontiguousarray(embeddings, np.float32)
        self.kind = kind
        self._vectors = vectors if vectors is not None else _faiss_index(self.embeddings, kind)
        self._positions = {str(Path(file).resolve()): i for i, file in enumerate(self.files)}
        self.calibration: dict | None = None

    @classmethod
    def from_images(
        cls,
        model: keras.Model | str,
        images: str | Path | Sequence[str | Path],
        batch_size: int = 64,
        *,
        kind: str = "exact",
        model_name: str | None = None,
        progress: bool = True,
    ) -> Index:
        """Embed a gallery: a folder (labels from its subfolders) or a list of image files (no labels).

        Args:
            model: a Keras embedding model, or a registry name / ``.keras`` file to load.
            images: the gallery.
            batch_size: images embedded per batch.
            kind: ``"exact"`` search, or approximate ``"hnsw"`` / ``"ivf"`` for large galleries.
            model_name: saved with the index, for :meth:`load`: by default the registry name or
                ``.keras`` file the model was loaded from (its ``zoo_name``), else its Keras name.
            progress: show a progress bar while embedding.

        Raises:
            FileNotFoundError: no such folder or file, or no image in the folder.
            ValueError: unreadable images (named), an unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        if isinstance(model, str):
            model = registry.load_model(model)
        if isinstance(images, (str, Path)):
            files, labels = image_files(images)
        else:
            files, labels = [str(file) for file in images], [None] * len(images)
        embeddings = embed_files(model, files, batch_size, progress)
        model_name = model_name or getattr(model, "zoo_name", None) or model.name
        return cls(model, files, labels, embeddings, model_name=model_name, kind=kind)

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, file: str | Path) -> str | None:
        """The label of an indexed file; None for a file not in the index or without a label."""
        position = self._positions.get(str(Path(file).resolve()))
        return None if position is None else self.labels[position]

    def search(
        self, query: str | Path | np.ndarray | tf.Tensor | Sequence[str | Path], k: int = 10
    ) -> list[Neighbor] | list[list[Neighbor]]:
        """The k nearest gallery images of a query, nearest first.

        Args:
            query: an image file, an image (H, W, 3) in [0, 255], or a batch: a list of files or
                an array (B, H, W, 3). A query file that is in the index comes back first.
            k: neighbours per query (at most the gallery's size).

        Returns:
            A list of :class:`Neighbor` for one query; a list of such lists for a batch.
        """
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must be between 1 and the number of indexed images ({len(self)})")
        single = _is_single(query)
        if isinstance(query, (str, Path, list, tuple)):
            paths = [str(query)] if single else [str(path) for path in query]
            embeddings = embed_files(self.model, paths)
            own = [self._positions.get(str(Path(path).resolve())) for path in paths]
        else:
            embeddings = embed_images(self.model, query[None] if single else query)
            own = [None] * len(embeddings)
        squared, positions = self._vectors.search(np.ascontiguousarray(embeddings, np.float32), k)
        results = [self._neighbors(row, distances, own_position, embedding, k)
                   for row, distances, own_position, embedding in zip(positions, squared, own, embeddings)]
        return results[0] if single else results

    def _neighbors(
        self, positions: np.ndarray, squared: np.ndarray, own: int | None, embedding: np.ndarray, k: int
    ) -> list[Neighbor]:
        """faiss' results of one query as Neighbors, the query's own file (when indexed) first."""
        found = [(int(p), float(d)) for p, d in zip(positions, squared) if p >= 0]
        if own is not None:
            own_distance = float(np.sum((self.embeddings[own] - embedding) ** 2))
            found = [(own, own_distance)] + [(p, d) for p, d in found if p != own][: k - 1]
        return [Neighbor(self.files[p], self.labels[p], math.sqrt(max(d, 0.0))) for p, d in found]

    def save(self, path: str | Path) -> Path:
        """Write the index into the folder ``path``: ``embeddings.npy``, ``vectors.faiss`` and ``index.json``.

        ``index.json`` (written last) records the model, the count and dimension of the embeddings and the
        sha256 of each file and of the file and label lists, which :meth:`load` checks. The image files and a
        ``.keras`` model are recorded relative to the index folder, so that the index works from any working
        directory and after the folder is moved together with them.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "embeddings.npy", self.embeddings)
        faiss.write_index(self._vectors, str(path / "vectors.faiss"))
        model = _relative_to(path, self.model_name) if self.model_name.endswith(".keras") else self.model_name
        meta = {"format": FORMAT, "model": model, "weights_sha256": self.weights_sha256, "kind": self.kind,
                "input_size": registry.model_input_size(self.model), "count": len(self),
                "dimension": int(self.embeddings.shape[1]), "files": [_relative_to(path, file) for file in self.files],
                "labels": self.labels}
        if self.calibration is not None:
            meta["calibration"] = self.calibration
        meta["sha256"] = {**{name: registry.sha256_of(path / name) for name in INDEX_FILES},
                          **{part: _json_sha256(meta[part]) for part in INDEX_PARTS}}
        (path / "index.json").write_text(json.dumps(meta, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, model: keras.Model | None = None) -> Index:
        """Reload a saved index, with ``model`` or else the model it names (registry name or ``.keras`` file).

        Every file is checked before it is used (:func:`read_index_files`). The image files (and a ``.keras``
        model) are found from the index folder (:meth:`save`): ``files`` are ``path`` joined with them.

        Raises:
            FileNotFoundError: not a saved index.
            ValueError: a damaged or edited file of the index (named), or the model's weights are not
                those the gallery was embedded with.
        """
        path = Path(path)
        meta, embeddings, vectors = read_index_files(path)
        if meta["model"].endswith(".keras"):
            meta["model"] = _from_folder(path, meta["model"])
        if model is None:
            try:
                model = registry.load_model(meta["model"])
            except (KeyError, FileNotFoundError) as error:
                raise ValueError(
                    f"index {path} was built with the model {meta['model']!r}, which is neither a registry name nor "
                    f"an existing .keras file: pass it, Index.load(path, model=...)"
                ) from error
        fingerprint = registry.weights_sha256(model)
        if fingerprint != meta["weights_sha256"]:
            raise ValueError(
                f"index {path} was embedded with {meta['model']!r} (weights sha256 {meta['weights_sha256']}); "
                f"this model's weights have sha256 {fingerprint}: rebuild the index with this model "
                "(zoo index) or load it with the model it was built with"
            )
        files = [_from_folder(path, file) for file in meta["files"]]
        index = cls(model, files, meta["labels"], embeddings, model_name=meta["model"], kind=meta["kind"],
                    vectors=vectors)
        index.calibration = index._checked_calibration(meta.get("calibration"), path)
        return index

    def gallery_sha256(self) -> str:
        """sha256 of the gallery (its embeddings and labels): a calibration holds for this gallery only."""
        digest = hashlib.sha256(self.embeddings.tobytes())
        digest.update(json.dumps(self.labels).encode())
        return digest.hexdigest()

    def _checked_calibration(self, saved: dict | None, path: Path) -> dict | None:
        """A saved calibration, refused when the gallery is not the one it was measured on."""
        if saved is not None and saved.get("gallery_sha256") != self.gallery_sha256():
            raise ValueError(f"the calibration saved in {path} was measured on another gallery (sha256 "
                             f"{saved.get('gallery_sha256')}, this one {self.gallery_sha256()}): calibrate again")
        return saved

    def nearest_others(self, query: str | Path | np.ndarray | Sequence[str | Path]) -> list[Neighbor]:
        """The nearest gallery image of each query of a batch, other than the query's own file."""
        queries = [query] if isinstance(query, (str, Path)) else query
        results = self.search(queries, k=min(2, len(self)))
        own = [None] * len(results) if not isinstance(queries, (list, tuple)) else [
            self._positions.get(str(Path(file).resolve())) for file in queries]
        return [neighbors[1 if position is not None else 0] for neighbors, position in zip(results, own)]

    def calibrate(
        self,
        images: str | Path | np.ndarray | Sequence[str | Path],
        labels: Sequence[str] | None = None,
        targets: dict[str, float | Sequence[float]] | None = None,
        metric: str = "f1",
    ) -> calibration.Sweep:
        """Measure match thresholds on labelled queries and keep them (:mod:`zoo.calibration`).

        Each query's nearest gallery image (other than its own file, when it is indexed) is a match when it is
        within the threshold; a query of a class absent from the gallery should get "no match". The optimal
        threshold for ``metric`` and one per target are kept in :attr:`calibration` (saved with the index).

        Args:
            images: a folder (labels: its subfolders), image files or an array (B, H, W, 3) in [0, 255].
            labels: the label of each image (a folder's by default).
            targets: e.g. ``{"precision": 0.95}`` (or ``[0.9, 0.95]``): the largest threshold that keeps that
                precision.
            metric: what the ``"optimal"`` threshold maximises: ``"f1"``, ``"precision"``, ``"recall"``,
                ``"rejection"``.

        Returns:
            The sweep over every threshold (for :func:`zoo.calibration.plot_sweep`).

        Raises:
            ValueError: images without labels, a calibration set of one class, an unlabelled gallery, a target
                that no threshold reaches, an unknown metric.
        """
        if isinstance(images, (str, Path)):
            files, folder_labels = image_files(images)
            images, labels = files, folder_labels if labels is None else labels
        if labels is None:
            raise ValueError("calibration images need labels: a folder with one subfolder per class, or labels=...")
        if len(self) < 2:
            raise ValueError(f"an index of {len(self)} image cannot be calibrated: index at least 2")
        neighbors = self.nearest_others(images)
        correct, known = calibration.nearest_outcomes(list(labels), [n.label for n in neighbors], self.labels)
        sweep = calibration.threshold_sweep([n.distance for n in neighbors], correct, known)
        self.calibration = {
            "metric": metric, "cutpoints": calibration.choose_cutpoints(sweep, targets, metric),
            "queries": sweep.num_queries, "unseen": sweep.num_unseen, "gallery_sha256": self.gallery_sha256(),
        }
        return sweep

    def match(
        self, query: str | Path | np.ndarray | Sequence[str | Path], threshold: str | float = "optimal"
    ) -> Neighbor | None | list[Neighbor | None]:
        """The nearest gallery image of a query if it is within ``threshold``, else None ("no match").

        Args:
            query: as :meth:`search` (a file, an image, or a batch). A query file that is in the index matches
                itself at distance 0.
            threshold: a calibrated cutpoint's name (``"optimal"``, ``"0.95"``: see :attr:`calibration`) or
                a distance.

        Raises:
            ValueError: a cutpoint name on an uncalibrated index, or an unknown one.
        """
        cutpoints = None if self.calibration is None else self.calibration["cutpoints"]
        distance = calibration.resolve_threshold(cutpoints, threshold)
        single = _is_single(query)
        results = self.search(query, k=1)
        found = [neighbors[0] if neighbors[0].distance <= distance else None
                 for neighbors in ([results] if single else results)]
        return found[0] if single else found


def _relative_to(folder: Path, file: str) -> str:
    """``file`` as a path relative to ``folder`` (absolute where there is none, e.g. another drive)."""
    try:
        return os.path.relpath(os.path.abspath(file), os.path.abspath(folder))
    except ValueError:
        return os.path.abspath(file)


def _from_folder(folder: Path, file: str) -> str:
    """A path that :func:`_relative_to` wrote, as seen from the working directory (an absolute one unchanged)."""
    return os.path.normpath(os.path.join(folder, file))


INDEX_FILES = ("embeddings.npy", "vectors.faiss")  # the files of a saved index beside its index.json
INDEX_PARTS = ("files", "labels")  # the lists inside index.json that its sha256 record covers too
_META_TYPES = {"format": int, "model": str, "weights_sha256": str, "kind": str, "count": int, "dimension": int,
               "files": list, "labels": list, "sha256": dict}


def _json_sha256(value: object) -> str:
    """sha256 of ``value``'s JSON text (how index.json's lists are checked)."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _read_checked(path: Path, expected_sha256: str) -> bytes:
    """The bytes of ``path``, refused unless their sha256 is the one ``index.json`` records."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ValueError(f"{path} is damaged or was changed after the index was saved: sha256 {actual}, "
                         f"index.json records {expected_sha256}; rebuild the index (zoo index)")
    return data


def _read_meta(path: Path) -> dict:
    """``index.json`` of the index folder ``path``, its fields and the sha256 of its lists checked."""
    meta_file = path / "index.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved index (no {meta_file})")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{meta_file} cannot be read: {error}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file} holds a {type(meta).__name__}, not an index description")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is of format {meta.get('format')!r}, this zoo reads format {FORMAT} "
                         "(which checks every file): rebuild the index (zoo index)")
    wrong = [name for name, kind in _META_TYPES.items() if not isinstance(meta.get(name), kind)]
    if wrong:
        raise ValueError(f"{meta_file} lacks or mistypes the fields {', '.join(wrong)}: rebuild the index (zoo index)")
    for part in INDEX_PARTS:
        if meta["sha256"].get(part) != _json_sha256(meta[part]):
            raise ValueError(f"{meta_file}: its {part} list was changed after the index was saved (its sha256 is "
                             "not the recorded one); rebuild the index (zoo index)")
    if not len(meta["files"]) == len(meta["labels"]) == meta["count"]:
        raise ValueError(f"{meta_file} lists {len(meta['files'])} files and {len(meta['labels'])} labels for "
                         f"{meta['count']} embeddings")
    if meta["kind"] not in KINDS:
        raise ValueError(f"{meta_file}: unknown index kind {meta['kind']!r}")
    return meta


def _read_vectors(file: Path, data: bytes, kind: str) -> faiss.Index:
    """The faiss index in ``data`` (the bytes of ``file``), read read-only and checked to be of ``kind``.

    On-disk inverted lists (which would map another file into memory) are refused before faiss reads anything.
    """
    if ON_DISK_LISTS in data:  # never in the unit vectors and small ids of the indexes the zoo writes
        raise ValueError(f"{file} holds on-disk inverted lists (a reference to another file): refused")
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.frombuffer(data, np.uint8), reader.data)
    try:
        vectors = faiss.read_index(reader, faiss.IO_FLAG_READ_ONLY)  # of its own class (faiss downcasts)
    except RuntimeError as error:
        raise ValueError(f"{file} is not a readable faiss index: {str(error).strip().splitlines()[-1]}") from None
    outer, inner = FAISS_TYPES[kind]
    parts = [vectors]
    for attribute in ("storage", "quantizer"):  # HNSW's vector storage, IVF's coarse quantizer
        if hasattr(vectors, attribute) and getattr(vectors, attribute) is not None:
            parts.append(faiss.downcast_index(getattr(vectors, attribute)))
    expected = [getattr(faiss, outer)] + ([getattr(faiss, inner)] if inner else [])
    lists = faiss.downcast_InvertedLists(vectors.invlists) if hasattr(vectors, "invlists") else None
    if (len(parts) != len(expected) or not all(map(isinstance, parts, expected))
            or any(part.metric_type != faiss.METRIC_L2 for part in parts)
            or (lists is not None and not isinstance(lists, faiss.ArrayInvertedLists))):
        found = " over ".join(type(part).__name__ for part in parts)
        raise ValueError(f"{file} holds a faiss {found}, not the L2 {kind} index that index.json names")
    return vectors


def read_index_files(path: Path) -> tuple[dict, np.ndarray, faiss.Index]:
    """``index.json``, the embeddings and the faiss index of a saved index, each checked before it is used.

    Checked: ``index.json``'s fields and the sha256 of its file and label lists; the sha256 of ``embeddings.npy``
    and ``vectors.faiss``; that the embeddings are float32 (count, dimension) and the faiss index an L2 index of
    the recorded kind holding as many vectors of that dimension, with no on-disk inverted lists.

    Raises:
        FileNotFoundError: not a saved index, or one of its files is missing.
        ValueError: a damaged, edited or inconsistent file, named.
    """
    meta = _read_meta(path)
    shape = (meta["count"], meta["dimension"])
    missing = [name for name in INDEX_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"index {path} lacks {', '.join(missing)}: rebuild it (zoo index)")
    file = path / "embeddings.npy"
    data = _read_checked(file, meta["sha256"].get(file.name, ""))
    try:
        embeddings = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{file} cannot be read: {error}") from None
    if embeddings.dtype != np.float32 or embeddings.shape != shape:
        raise ValueError(f"{file} holds {embeddings.dtype} {embeddings.shape}, index.json records float32 {shape}")
    file = path / "vectors.faiss"
    vectors = _read_vectors(file, _read_checked(file, meta["sha256"].get(file.name, "")), meta["kind"])
    if (vectors.ntotal, vectors.d) != shape:
        raise ValueError(f"{file} holds {vectors.ntotal} vectors of dimension {vectors.d}, index.json records "
                         f"{shape[0]} of dimension {shape[1]}")
    return meta, embeddings, vectors
