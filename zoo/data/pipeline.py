"""tf.data input pipelines: class-balanced training batches and ordered evaluation batches.

Both pipelines yield ``(images, labels)``: float32 RGB images in [0, 255] of shape
(batch, S, S, 3) and int32 labels. Images are decoded from files with ``tf.io.decode_image``
or taken from memory. Evaluation resizes them to a square of side ``R = round(S * 256 / 224)``
and crops the center ``S x S``. Training uses one of :data:`AUGMENTATIONS`, then mirrors
randomly when the set's ``allow_flip``:

- ``"resize_crop"`` (the default): resize to R x R, crop S x S at a random place (the
  protocol of the zoo's papers, e.g. THSG Sec. 6.1: 256 -> random 227 crop);
- ``"random_resized_crop"``: a random box of ``crop_scale`` (default 0.16-1) of the image's
  area and aspect ratio 3/4-4/3 resized to S x S, as torchvision's ``RandomResizedCrop`` that
  today's DML code bases train with (pytorch-metric-learning's examples, Musgrave et al. 2020).

Training batches are P classes x K images from :class:`PKSampler`. All randomness (the
sampler and the crop/flip draws) comes from numpy generators seeded by ``seed``, and the
parallel map keeps order, so a pipeline is deterministic for its seed. ``first_step`` starts the
stream at a later batch (the draws of the skipped batches are made, their images never loaded),
so a resumed run sees the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from zoo.data import ImageSet


class PKSampler:
    """Class-balanced batches: P classes drawn without replacement, K images of each.

    Images of a class are drawn without replacement when the class has at least K of them,
    else with replacement. Iterating yields an endless stream of int64 index arrays of
    length ``P * K``, class by class (the K images of the first class, then the second...);
    every iteration restarts from ``seed``, so the stream is reproducible.

    Subclasses can change the batch construction by overriding :meth:`sample_batch`, reusing
    :meth:`sample_class` and ``members`` (the image indices of each class).

    Args:
        labels: class label of every image.
        classes_per_batch: P, at least 2 and at most the number of classes.
        images_per_class: K, at least 2.
        seed: seed of the numpy generator.

    Raises:
        ValueError: P or K out of range.
    """

    def __init__(self, labels: np.ndarray, classes_per_batch: int, images_per_class: int, seed: int = 0):
        labels = np.asarray(labels).reshape(-1)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        if not 2 <= classes_per_batch <= len(self.classes):
            raise ValueError(
                f"classes_per_batch must be between 2 and the number of classes ({len(self.classes)}), "
                f"got {classes_per_batch}"
            )
        if images_per_class < 2:
            raise ValueError(f"images_per_class must be >= 2 (positive pairs need 2), got {images_per_class}")
        self.classes_per_batch = classes_per_batch
        self.images_per_class = images_per_class
        self.seed = seed
        order = np.argsort(inverse, kind="stable")
        self.members: list[np.ndarray] = np.split(order, np.cumsum(np.bincount(inverse))[:-1])

    @property
    def batch_size(self) -> int:
        """P * K."""
        return self.classes_per_batch * self.images_per_class

    def sample_class(self, class_index: int, rng: np.random.Generator) -> np.ndarray:
        """K image indices of the class ``self.classes[class_index]``."""
        members = self.members[class_index]
        return rng.choice(members, self.images_per_class, replace=len(members) < self.images_per_class)

    def sample_batch(self, rng: np.random.Generator) -> np.ndarray:
        """One batch of ``P * K`` image indices."""
        chosen = rng.choice(len(self.classes), self.classes_per_batch, replace=False)
        return np.concatenate([self.sample_class(c, rng) for c in chosen]).astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        while True:
            yield self.sample_batch(rng)


AUGMENTATIONS: tuple[str, ...] = ("resize_crop", "random_resized_crop")
DEFAULT_CROP_SCALE: tuple[float, float] = (0.16, 1.0)
_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect ratios (torchvision's default)


def resized_size(image_size: int) -> int:
    """Side R of the square images are resized to before cropping ``image_size``: S * 256 / 224."""
    return int(round(image_size * 256 / 224))


def _check_image_size(image_size: int) -> None:
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")


def _image_loader(image_set: ImageSet) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function index -> uint8 (H, W, 3) image of the set, from memory or decoded from its file."""
    if image_set.images is not None:
        images = tf.constant(image_set.images)
        return lambda index: tf.gather(images, index)
    paths = tf.constant(image_set.paths)

    def load(index: tf.Tensor) -> tf.Tensor:
        data = tf.io.read_file(tf.gather(paths, index))
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    return load


def _resize_crop(image: tf.Tensor, image_size: int, offset: tf.Tensor, flip: tf.Tensor | bool) -> tf.Tensor:
    """Resize to R x R, crop S x S at ``offset`` (y, x), mirror when ``flip``: float32 in [0, 255]."""
    resized = resized_size(image_size)
    image = tf.image.resize(image, [resized, resized], antialias=True)
    image = tf.image.crop_to_bounding_box(image, offset[0], offset[1], image_size, image_size)
    return _finish(image, image_size, flip)


def _box_crop(image: tf.Tensor, image_size: int, box: tf.Tensor, flip: tf.Tensor | bool) -> tf.Tensor:
    """Crop ``box`` = (top, left, height, width) as fractions of the image, resize to S x S, mirror when ``flip``."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.maximum(tf.cast(tf.round(box[2:] * shape), tf.int32), 1)
    corner = tf.minimum(tf.cast(tf.floor(box[:2] * shape), tf.int32), tf.shape(image)[:2] - size)
    image = tf.image.crop_to_bounding_box(image, corner[0], corner[1], size[0], size[1])
    return _finish(tf.image.resize(image, [image_size, image_size], antialias=True), image_size, flip)


def _finish(image: tf.Tensor, image_size: int, flip: tf.Tensor | bool) -> tf.Tensor:
    image = tf.where(flip, tf.reverse(image, axis=[1]), image)
    image = tf.clip_by_value(image, 0.0, 255.0)  # bilinear weights sum to 1 only up to float rounding
    return tf.ensure_shape(image, [image_size, image_size, 3])


def random_resized_boxes(rng: np.random.Generator, count: int, scale: Sequence[float]) -> np.ndarray:
    """``count`` crop boxes (top, left, height, width) as fractions of an image, float32 (count, 4).

    Area fraction uniform in ``scale``, log aspect ratio uniform in log(3/4)..log(4/3) (torchvision's
    ``RandomResizedCrop``); a box wider or taller than the image is clipped to it instead of redrawn.
    """
    area = rng.uniform(scale[0], scale[1], count)
    ratio = np.exp(rng.uniform(np.log(_CROP_RATIO[0]), np.log(_CROP_RATIO[1]), count))
    height, width = np.minimum(np.sqrt(area / ratio), 1.0), np.minimum(np.sqrt(area * ratio), 1.0)
    top, left = rng.uniform(0.0, 1.0 - height), rng.uniform(0.0, 1.0 - width)
    return np.stack([top, left, height, width], axis=1).astype(np.float32)


def _check_augmentation(augmentation: str, crop_scale: Sequence[float]) -> None:
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; choose one of {AUGMENTATIONS}")
    if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {tuple(crop_scale)}")


def train_pipeline(image_set: ImageSet, image_size: int, classes_per_batch: int, images_per_class: int,
                   seed: int = 0, *, sampler_cls: Callable[..., PKSampler] = PKSampler,
                   augmentation: str = "resize_crop", crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
                   first_step: int | Callable[[], int] = 0) -> tf.data.Dataset:
    """Endless class-balanced training batches with random crops (and flips when allowed).

    Args:
        image_set: the training split.
        image_size: S, side of the output images (at least 8).
        classes_per_batch: P, classes per batch (2 to the number of classes).
        images_per_class: K, images per class (at least 2).
        seed: seed of the sampler and of the augmentations.
        sampler_cls: the batch sampler, called as ``sampler_cls(labels, classes_per_batch,
            images_per_class, seed)``: a :class:`PKSampler` subclass (or a ``functools.partial``
            of one) for methods with their own batch construction.
        augmentation: one of :data:`AUGMENTATIONS`.
        crop_scale: area fractions of ``"random_resized_crop"``'s boxes.
        first_step: index of the first batch of the stream, or a function returning it each time
            iteration starts (a model's optimizer step, so that a resumed ``fit`` continues the stream).

    Returns:
        A dataset of ``(float32 (P*K, S, S, 3) images in [0, 255], int32 (P*K,) labels)`` with a
        static batch size.

    Raises:
        ValueError: an argument out of range.
    """
    sampler = sampler_cls(image_set.labels, classes_per_batch, images_per_class, seed)

    def index_batches() -> Iterator[tuple[np.ndarray, np.random.Generator]]:
        rng = np.random.default_rng([seed, 1])  # augmentations: a stream apart from the sampler's
        for indices in sampler:
            yield indices, rng

    return augmented_batches(image_set, image_size, sampler.batch_size, index_batches,
                             augmentation=augmentation, crop_scale=crop_scale, first_step=first_step)


def augmented_batches(
    image_set: ImageSet,
    image_size: int,
    batch_size: int,
    index_batches: Callable[[], Iterator[tuple]],
    extra_dtypes: tuple[tf.DType, ...] = (),
    *,
    augmentation: str = "resize_crop",
    crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
    first_step: int | Callable[[], int] = 0,
) -> tf.data.Dataset:
    """The images of sampled index batches, each randomly cropped (``augmentation``) and flipped when allowed.

    The shared body of every training pipeline (:func:`train_pipeline`, PROFS's pipeline).

    Args:
        image_set: the split the indices point into.
        image_size: S, side of the output images (at least 8).
        batch_size: B, indices per batch.
        index_batches: returns an iterator of ``(indices (B,), rng, *extras)``: the images of a
            batch, the numpy Generator its crop offsets and flips are drawn from, and per-image
            arrays (B,) passed through after the labels.
        extra_dtypes: the dtypes of ``extras``.
        augmentation: one of :data:`AUGMENTATIONS`.
        crop_scale: area fractions of ``"random_resized_crop"``'s boxes.
        first_step: the batches of ``index_batches`` before this one are drawn and dropped (an int,
            or a function called when iteration starts).

    Returns:
        A dataset of ``(float32 (B, S, S, 3) images in [0, 255], int32 (B,) labels, *extras)``.
    """
    _check_image_size(image_size)
    _check_augmentation(augmentation, crop_scale)
    max_offset = resized_size(image_size) - image_size
    allow_flip = image_set.allow_flip
    random_boxes = augmentation == "random_resized_crop"

    def batches() -> Iterator[tuple[np.ndarray, ...]]:
        skip = first_step() if callable(first_step) else first_step
        for step, (indices, rng, *extras) in enumerate(index_batches()):
            if random_boxes:
                crops = random_resized_boxes(rng, batch_size, crop_scale)
            else:  # the crop's (top, left) pixel offsets in the R x R image
                crops = rng.integers(0, max_offset + 1, size=(batch_size, 2), dtype=np.int32).astype(np.float32)
            flips = (rng.random(batch_size) < 0.5) & allow_flip
            if step >= skip:
                yield (indices, crops, flips, *extras)

    load = _image_loader(image_set)
    labels = tf.constant(image_set.labels, tf.int32)

    def augment(index: tf.Tensor, crop: tf.Tensor, flip: tf.Tensor, *extras: tf.Tensor) -> tuple[tf.Tensor, ...]:
        if random_boxes:
            image = _box_crop(load(index), image_size, crop, flip)
        else:
            image = _resize_crop(load(index), image_size, tf.cast(crop, tf.int32), flip)
        return (image, tf.gather(labels, index), *extras)

    signature = (
        tf.TensorSpec((batch_size,), tf.int64),
        tf.TensorSpec((batch_size, None), tf.float32),
        tf.TensorSpec((batch_size,), tf.bool),
        *(tf.TensorSpec((batch_size,), dtype) for dtype in extra_dtypes),
    )
    return (
        tf.data.Dataset.from_generator(batches, output_signature=signature)
        .unbatch()
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def preprocess_for_embedding(images: tf.Tensor | np.ndarray, image_size: int) -> tf.Tensor:
    """The evaluation's preprocessing: resize to R x R (``resized_size``), crop S x S at the centre.

    Use it on your own images to get the embeddings the published metrics were measured with.

    Args:
        images: one (H, W, 3) image or a (B, H, W, 3) batch, RGB in [0, 255] (uint8 or float).
        image_size: S, side of the output images (at least 8).

    Returns:
        float32 (S, S, 3) or (B, S, S, 3) images in [0, 255].
    """
    _check_image_size(image_size)
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 4:
        return tf.map_fn(lambda image: preprocess_for_embedding(image, image_size), images,
                         fn_output_signature=tf.float32)
    margin = (resized_size(image_size) - image_size) // 2
    return _resize_crop(images, image_size, tf.constant([margin, margin], tf.int32), False)


def eval_pipeline(image_set: ImageSet, image_size: int, batch_size: int = 64) -> tf.data.Dataset:
    """One pass over the set in its order, center-cropped.

    Args:
        image_set: the split to embed.
        image_size: S, side of the output images (at least 8).
        batch_size: images per batch; the last batch may be smaller.

    Returns:
        A finite dataset of ``(float32 (B, S, S, 3) images in [0, 255], int32 (B,) labels)``.

    Raises:
        ValueError: an argument out of range.
    """
    _check_image_size(image_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    load = _image_loader(image_set)
    labels = tf.constant(image_set.labels, tf.int32)

    def prepare(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return preprocess_for_embedding(load(index), image_size), tf.gather(labels, index)

    return (
        tf.data.Dataset.range(len(image_set))
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
