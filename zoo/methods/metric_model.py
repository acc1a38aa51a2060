"""MetricModel: an embedding net trained by a metric loss in a custom ``train_step``.

The base every method reuses or extends. Its seams:

- ``embedding_net``: images -> L2-normalised embeddings (:func:`zoo.backbones.build_embedding_net`);
- ``metric_loss``: a :class:`zoo.losses.MetricLoss` (triplet + miner, contrastive, margin, ...); the layer
  is tracked, so the loss's own weights (proxies, the margin loss's beta) are among the model's
  ``trainable_variables`` and the optimizer trains them with the net;
- the batches: :meth:`MetricModel.make_train_dataset` (P classes x K images from
  :func:`zoo.data.train_pipeline`; methods with their own batch construction override it);
- :meth:`MetricModel.training_callbacks`: callbacks a method needs during ``fit``: here the
  :class:`zoo.monitor.TrainingMonitor`; methods extend the list.

Every training forward pass (``self(images, training=True)``, which every method's ``train_step``
makes) also records ``embedding_spread`` (:func:`zoo.ops.embedding_spread`), logged beside the loss
for the monitor, the history and TensorBoard.

Distribution: ``train_step`` gathers embeddings and labels from every replica
(:func:`zoo.ops.gather_global_batch`), so mining sees the whole global batch; the loss is the
mean over the global batch, divided by the number of replicas before the gradient because the
optimizer sums the replicas' gradients. Random choices use a stateless seed derived from the
optimizer's iteration counter, identical on every replica.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from zoo import losses as losses_lib
from zoo import ops
from zoo.monitor import SPREAD_LOG, TrainingMonitor, warn_if_unit_scaled

if TYPE_CHECKING:
    from zoo.data import ImageSet


@keras.saving.register_keras_serializable(package="zoo")
class MetricModel(keras.Model):
    """Embedding net + metric loss. ``model(images)`` returns L2-normalised embeddings.

    Args:
        embedding_net: a Keras model mapping images to embeddings.
        loss: a :class:`zoo.losses.MetricLoss`, its name or serialisation dict. The default
            ``"triplet"`` is pytorch-metric-learning's default triplet loss (every batch triplet,
            margin 0.05, mean over the non-zero terms), which learns from scratch.
        miner: with a loss given by name, the miner it uses (``"all"``, ``"semi-hard"``, ...); the
            miner is then part of the loss's config.
        seed: base seed of the stateless random mining.
    """

    # Loss terms a subclass logs beside "loss" (one Mean tracker each), filled by step_logs().
    LOGGED_TERMS: tuple[str, ...] = ()
    # MetricModel's arguments a subclass sets itself (its paper fixes the loss): refused by build_model.
    FIXED_ARGUMENTS: tuple[str, ...] = ()

    def __init__(
        self,
        embedding_net: keras.Model,
        loss: str | dict | losses_lib.MetricLoss = "triplet",
        miner: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.embedding_net = embedding_net
        if miner is not None and not isinstance(loss, str):
            raise ValueError("miner= applies to a loss given by name; configure the miner of a loss object on the loss")
        self.metric_loss = losses_lib.get(loss, **({"miner": miner} if miner is not None else {}))
        self.seed = int(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.LOGGED_TERMS}
        self.spread_tracker = keras.metrics.Mean(name=SPREAD_LOG)

    # ---- inference -------------------------------------------------------------------------
    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        embeddings = self.embedding_net(images, training=training)
        if training is True:  # a training step's forward pass: watch for collapse at no extra cost
            self.spread_tracker.update_state(ops.embedding_spread(embeddings))
        return embeddings

    def build(self, input_shape=None) -> None:
        self.embedding_net.build(input_shape or self.embedding_net.input_shape)
        super().build(input_shape or self.embedding_net.input_shape)

    @property
    def input_size(self) -> int:
        return int(self.embedding_net.input_shape[1])

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding_net.output_shape[-1])

    # ---- training --------------------------------------------------------------------------
    def make_train_dataset(
        self,
        image_set: "ImageSet",
        image_size: int,
        classes_per_batch: int,
        images_per_class: int,
        seed: int = 0,
        **augmentation: Any,
    ) -> tf.data.Dataset:
        """The training batches this method expects: P classes x K images (override for other samplers).

        ``augmentation``: ``augmentation=`` and ``crop_scale=`` of :func:`zoo.data.train_pipeline`. The stream
        starts at the batch of the optimizer's current step, so a resumed run continues it.
        """
        from zoo.data import train_pipeline

        return train_pipeline(image_set, image_size, classes_per_batch, images_per_class, seed=seed,
                              first_step=self.current_step, **augmentation)

    def train_batch_size(self, classes_per_batch: int, images_per_class: int) -> int:
        """Images per batch of :meth:`make_train_dataset` (P x K here; a method with its own sampler overrides it)."""
        return classes_per_batch * images_per_class

    def current_step(self) -> int:
        """The optimizer's iteration counter (0 before ``compile``)."""
        return int(self.optimizer.iterations.numpy()) if getattr(self, "optimizer", None) is not None else 0

    def training_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the method needs during ``fit`` (``zoo.training`` adds them): the training monitor.

        Pass them to a plain ``fit`` too: ``model.fit(data, callbacks=model.training_callbacks())``.
        Subclasses extend ``super().training_callbacks()``.
        """
        return [TrainingMonitor()]

    def sub_networks(self) -> list[tuple[keras.Model, keras.optimizers.Optimizer]]:
        """The method's other networks (generators, discriminators, classifiers), each with its own optimizer.

        ``compile`` builds each optimizer on exactly its network's variables and the compiled optimizer on the
        rest (:meth:`own_variables`), so a ``.keras`` file restores every optimizer's state. None here.
        """
        return []

    def own_variables(self) -> list[tf.Variable]:
        """The variables the compiled optimizer trains: every trainable one outside the sub-networks."""
        theirs = {id(v) for network, _ in self.sub_networks() for v in network.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in theirs]

    def compile(self, optimizer: Any = "adam", **kwargs: Any) -> None:
        """Keras' ``compile``; then, on a built model, every optimizer is built on the variables it updates."""
        super().compile(optimizer=optimizer, **kwargs)
        if self.built:
            self.optimizer.build(self.own_variables())
            for network, sub_optimizer in self.sub_networks():
                sub_optimizer.build(network.trainable_variables)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Restore ``compile`` (and so every optimizer's variables) when a ``.keras`` file is loaded."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def update_network(self, network: keras.Model, optimizer: keras.optimizers.Optimizer, loss_fn) -> tf.Tensor:
        """One gradient step of ``network`` alone on ``loss_fn()`` (a mean over the global batch); returns the loss."""
        with tf.GradientTape() as tape:
            loss = loss_fn()
            scaled_loss = loss / ops.num_replicas()
        variables = network.trainable_variables
        optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return loss

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """Keras' ``fit``; warns first when array images look scaled to [0, 1] (the nets expect [0, 255])."""
        warn_if_unit_scaled(x)
        return super().fit(x, y, *args, **kwargs)

    def step_logs(self, loss: tf.Tensor, terms: dict[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
        """Record a step's ``loss`` and its ``LOGGED_TERMS`` values; return what the step returns.

        The logs are the running means of every tracker. Under ``MultiWorkerMirroredStrategy`` they
        have shape (1,): Keras 3 averages step logs across workers along axis 0, which fails on
        scalars (keras-team/keras#20585).
        """
        self.loss_tracker.update_state(loss)
        for name, value in (terms or {}).items():
            self.trackers[name].update_state(value)
        multiworker = isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)
        return {m.name: tf.reshape(m.result(), [1]) if multiworker else m.result() for m in self.metrics}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        """Work around keras-team/keras#20585: under ``MultiWorkerMirroredStrategy`` Keras' symbolic
        build reduces a nested input batch across workers and fails. The model is built at
        construction and metric models have no compiled losses or metrics, so only the optimizer
        still needs its variables, created here in the strategy's scope."""
        if not isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
            return
        with self.distribute_strategy.scope():
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, *self.trackers.values(), self.spread_tracker]

    def step_seed(self) -> tf.Tensor:
        """Seed of this step's random choices, the same on every replica."""
        return ops.step_seed(self.seed, self.optimizer.iterations)

    def compute_metric_loss(self, embeddings: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The metric loss of one global batch (float32 scalar)."""
        return self.metric_loss(embeddings, labels, self.step_seed())

    def train_step(self, data):
        images, labels = data[0], data[1]
        labels = ops.check_batch(images, labels)
        with tf.GradientTape() as tape:
            embeddings = self(images, training=True)
            global_embeddings, global_labels = ops.gather_global_batch(embeddings, labels)
            loss = self.compute_metric_loss(global_embeddings, global_labels)
            loss += self.regularization_loss()
            # Per-replica share of the global loss; scale_loss applies a LossScaleOptimizer's scale.
            scaled_loss = self.optimizer.scale_loss(loss / ops.num_replicas())
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return self.step_logs(loss)

    def test_step(self, data):
        images, labels = data[0], data[1]
        labels = ops.check_batch(images, labels)
        return self.step_logs(*self.validation_losses(images, labels))

    def validation_losses(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """``train_step``'s loss of one batch and its ``LOGGED_TERMS``, with inference-mode layers and no update
        (``test_step``, so ``evaluate`` and ``validation_data`` report the loss that training minimises).
        A method whose loss is more than the metric loss overrides it."""
        embeddings, labels = ops.gather_global_batch(self(images, training=False), labels)
        return self.compute_metric_loss(embeddings, labels) + self.regularization_loss(), {}

    def regularization_loss(self) -> tf.Tensor:
        """Sum of the layers' weight-regularisation losses (0 when there are none)."""
        return tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) if self.losses else tf.constant(0.0)

    # ---- serialisation ---------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embedding_net": keras.saving.serialize_keras_object(self.embedding_net),
            "loss": keras.saving.serialize_keras_object(self.metric_loss),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MetricModel":
        config = dict(config)
        config["embedding_net"] = keras.saving.deserialize_keras_object(config["embedding_net"])
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
