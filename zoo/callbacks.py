"""Retrieval evaluation during ``fit``: :mod:`zoo.evaluation`'s embeddings scored by :func:`zoo.metrics.evaluate`.

    callbacks = [
        RetrievalEvaluation(eval_data, every_n_epochs=5, log_dir="runs/x/logs"),  # first
        keras.callbacks.EarlyStopping(monitor="val_recall@1", mode="max", patience=3),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="val_map@r", mode="max", save_best_only=True),
    ]

The callback writes its metrics into the epoch's ``logs`` in place, so it must come BEFORE the
callbacks that monitor them (Keras passes one ``logs`` dict to the callbacks in list order). Give
those callbacks ``mode="max"``: Keras' "auto" mode would minimise ``val_recall@1``. On epochs
without an evaluation the metrics are absent from ``logs`` and EarlyStopping only warns.

Also here: :class:`EpochLog` (one JSON line per epoch) and :class:`TrainingBackup` (the whole training
state at each epoch end, written atomically), which ``zoo.training`` uses.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from zoo import viz
from zoo.evaluation import embed_for_retrieval
from zoo.metrics import evaluate
from zoo.registry import sha256_of


def evaluate_arguments(metrics: Sequence[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`zoo.metrics.evaluate`'s arguments, with ``metrics`` also naming result keys (``recall@1``).

    ``recall@K`` and ``precision@k`` become the metric ``recall``/``precision`` with those K (replacing
    ``recall_ks``/``precision_ks``); other names pass unchanged.
    """
    if metrics is None:
        return kwargs
    groups: list[str] = []
    for name in metrics:
        group, _, k = name.partition("@")
        if group in ("recall", "precision") and k:
            kwargs[f"{group}_ks"] = (*(kwargs.get(f"{group}_ks", ()) if group in groups else ()), int(k))
            name = group
        if name not in groups:
            groups.append(name)
    return {**kwargs, "metrics": tuple(groups)}


class RetrievalEvaluation(keras.callbacks.Callback):
    """Retrieval and clustering metrics of the model every N epochs and at the last epoch.

    Metrics go into ``logs`` as ``f"{prefix}{name}"`` (``val_recall@1``, ``val_map@r``, ...), into
    ``self.history`` as ``{"epoch": epoch, "metrics": {...}}`` (0-based epochs, as Keras' ``History``),
    and, with ``log_dir``, to TensorBoard scalars in ``log_dir/retrieval`` at step = epoch.
    With ``log_dir`` and ``log_images``, each evaluation also writes there the retrieval grid
    (:func:`zoo.viz.grid_from_embeddings`) as the TensorBoard image ``f"{prefix}retrieval_grid"``
    and the embeddings of the query set, with their labels and thumbnails, for the TensorBoard
    projector (:func:`zoo.viz.write_projector`, replaced at each evaluation); the dataset(s) must
    then yield images in a fixed order (a second pass fetches the images drawn).
    Place it before the callbacks that monitor its metrics (module docstring).

    Args:
        dataset: ``(images, labels)`` batches of the query set.
        every_n_epochs: evaluate after epochs N, 2N, ... (1-based) and after the last epoch of ``fit``.
        prefix: prefix of the metric names in ``logs`` and TensorBoard.
        log_dir: TensorBoard log directory, or None.
        reference_dataset: ``(images, labels)`` batches of a gallery to retrieve from (e.g. In-Shop);
            None retrieves among the queries.
        log_images: with ``log_dir``, also write the retrieval grid and the projector files.
        grid_queries: rows (queries, drawn with a fixed seed) of the retrieval grid.
        grid_k: neighbours per query in the retrieval grid.
        **evaluate_kwargs: passed to :func:`zoo.metrics.evaluate` (``metrics``, ``recall_ks``, ...);
            ``metrics`` may name the keys the logs use, e.g. ``("recall@1", "map@r")``
            (:func:`evaluate_arguments`).
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        every_n_epochs: int = 1,
        prefix: str = "val_",
        log_dir: str | None = None,
        reference_dataset: tf.data.Dataset | None = None,
        log_images: bool = False,
        grid_queries: int = 8,
        grid_k: int = 8,
        **evaluate_kwargs: Any,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.dataset = dataset
        self.every_n_epochs = int(every_n_epochs)
        self.prefix = prefix
        self.log_dir = log_dir
        self.reference_dataset = reference_dataset
        self.log_images = log_images
        self.grid_queries = grid_queries
        self.grid_k = grid_k
        self.evaluate_kwargs = evaluate_arguments(**evaluate_kwargs)
        self.history: list[dict[str, Any]] = []
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        last_epoch = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every_n_epochs and not last_epoch:
            return
        embeddings, labels, reference = embed_for_retrieval(self.model, self.dataset, self.reference_dataset)
        results = evaluate(embeddings, labels, **reference, **self.evaluate_kwargs)
        named = {f"{self.prefix}{name}": value for name, value in results.items()}
        if logs is not None:
            logs.update(named)
        self.history.append({"epoch": epoch, "metrics": results})
        if self.log_dir is not None:
            self._write_scalars(named, epoch)
            if self.log_images:
                self._write_images(embeddings, labels, reference, epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _summary_writer(self) -> tf.summary.SummaryWriter:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "retrieval"))
        return self._writer

    def _write_scalars(self, scalars: dict[str, float], step: int) -> None:
        with self._summary_writer().as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=step)
        self._writer.flush()

    def _write_images(
        self, embeddings: np.ndarray, labels: np.ndarray, reference: dict[str, np.ndarray], step: int
    ) -> None:
        grid = viz.grid_from_embeddings(
            embeddings, labels, self.dataset, self.grid_queries, self.grid_k,
            reference_dataset=self.reference_dataset, own_reference=self.evaluate_kwargs.get("own_reference"),
            **reference,
        )
        with self._summary_writer().as_default():
            tf.summary.image(f"{self.prefix}retrieval_grid", grid[None], step=step)
        self._writer.flush()
        viz.write_projector(
            os.path.join(self.log_dir, "retrieval"), embeddings, labels, self.dataset,
            tensor_name=f"{self.prefix}embeddings (epoch {step + 1})",
        )


class EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs as one JSON line ``{"epoch": e, "loss": ..., "val_map@r": ...}``.

    Unlike ``keras.callbacks.CSVLogger``, whose columns are fixed by the first epoch, every line
    keeps all of its epoch's values, so metrics that appear only on evaluation epochs are kept.
    The file is appended to, so a resumed run continues the same history.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {name: float(value) for name, value in (logs or {}).items()}
        with open(self.path, "a") as stream:
            stream.write(json.dumps({"epoch": epoch, **values}) + "\n")


def read_epoch_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """The epochs written by :class:`EpochLog`, in order.

    Raises:
        ValueError: a line that is not an epoch's JSON object (named with the file).
    """
    rows = []
    with open(path, errors="replace") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError(f"{path}, line {number}, is not an epoch's JSON object: {line.strip()[:80]!r}")
            rows.append(row)
    return rows


class TrainingBackup(keras.callbacks.Callback):
    """The whole training state at each epoch end, written so that a kill never loses the last good one.

    One file per backup, ``epoch-00005.weights.h5`` after 5 finished epochs: ``model.save_weights``,
    which holds the model's variables and the state of every optimizer it has as an attribute
    (F's, and a method's sub-network optimizers). A backup is written to a temporary file, flushed to
    disk and renamed into place, so a kill while writing leaves the previous backups whole; beside it,
    ``epoch-00005.weights.h5.sha256`` holds its sha256 (``sha256sum -c`` reads it). The ``keep``
    newest are kept. An epoch whose loss or weights are not finite is never backed up.
    :meth:`restore` loads the newest backup that reads and matches its sha256, falling back to an
    older one with a warning.

    Args:
        directory: the backup folder (created at the first backup).
        keep: how many backups to keep (at least 1).
    """

    _NAME = re.compile(r"epoch-(\d+)\.weights\.h5")

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = int(keep)

    def backups(self) -> list[Path]:
        """The backup files, newest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), path) for path in self.directory.iterdir() if (m := self._NAME.fullmatch(path.name))]
        return [path for _, path in sorted(found, reverse=True)]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if (loss is not None and not math.isfinite(float(loss))) or not weights_are_finite(self.model):
            warnings.warn(f"epoch {epoch + 1} is not backed up: its loss or weights are not finite", stacklevel=2)
            return
        self.save(epoch + 1)

    def save(self, epochs_done: int) -> Path:
        """Back up the model as the state after ``epochs_done`` epochs; returns the file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"epoch-{epochs_done:05d}.weights.h5"
        partial = self.directory / f"partial-{path.name}"
        self.model.save_weights(partial)
        with open(partial, "rb+") as stream:  # on disk before the rename makes it the backup
            os.fsync(stream.fileno())
        checksum, partial_checksum = self.checksum_file(path), self.directory / f"partial-{path.name}.sha256"
        partial_checksum.write_text(f"{sha256_of(partial)}  {path.name}\n")
        os.replace(partial_checksum, checksum)  # a checksum without its backup is harmless; never the reverse
        os.replace(partial, path)
        for old in self.backups()[self.keep :]:
            old.unlink()
            self.checksum_file(old).unlink(missing_ok=True)
        return path

    @staticmethod
    def checksum_file(backup: Path) -> Path:
        """The file beside ``backup`` holding its sha256 (``sha256sum`` format)."""
        return backup.with_name(f"{backup.name}.sha256")

    def verify(self, backup: Path) -> None:
        """Raise ValueError unless ``backup`` has a checksum file and matches it."""
        checksum = self.checksum_file(backup)
        try:
            expected = checksum.read_text().split()[0]
        except (OSError, UnicodeDecodeError, IndexError):
            raise ValueError(f"its checksum file {checksum} is missing or unreadable") from None
        actual = sha256_of(backup)
        if actual != expected:
            raise ValueError(f"its bytes are damaged: sha256 {actual}, {checksum} records {expected}")

    def restore(self, model: keras.Model) -> int:
        """Load the newest readable backup into ``model`` (compiled, optimizers built).

        Returns:
            The number of finished epochs of the loaded backup; 0 when there is none.

        Raises:
            ValueError: backups exist but none can be read or matches its sha256 (the message names each
                file and its error).
        """
        errors = []
        for path in self.backups():
            try:
                self.verify(path)
                model.load_weights(path)
            except Exception as error:  # h5py and Keras raise OSError, ValueError, KeyError...
                errors.append(f"{path}: {type(error).__name__}: {error}")
                warnings.warn(f"the training backup {path} cannot be read ({error}): trying an older one", stacklevel=2)
                continue
            return int(self._NAME.fullmatch(path.name).group(1))
        if errors:
            raise ValueError("no training backup can be read: " + "; ".join(errors)
                             + ". Delete the folder to start the run again")
        return 0


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every floating-point weight of ``model`` is finite (a non-finite update reaches them)."""
    return all(np.isfinite(value).all() for value in model.get_weights() if np.issubdtype(value.dtype, np.floating))
