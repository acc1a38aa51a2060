"""Any zoo loss as a plain ``keras.losses.Loss``, for a Keras model trained by ``compile`` and ``fit``."""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo import ops
from zoo.losses.base import MetricLoss


@keras.saving.register_keras_serializable(package="zoo")
class KerasMetricLoss(keras.losses.Loss):
    """Any :class:`MetricLoss` as a plain ``keras.losses.Loss``: ``model.compile(loss=KerasMetricLoss("triplet"))``.

    For any Keras model whose output is the embeddings, trained by the standard ``fit`` with
    ``y = labels``. Mining sees one replica's batch and random choices come from a seeded
    generator: on one device it is the same loss; under ``tf.distribute`` use :class:`MetricModel`,
    which mines over the global batch.

    A loss with weights (proxies, the margin loss's beta) needs its weights among the model's
    trainable variables, which ``compile`` alone cannot arrange (a Keras loss has no optimizer):
    call :meth:`attach` before ``compile``::

        loss = KerasMetricLoss(losses.get("proxy-anchor", num_classes=100))
        model = loss.attach(model)
        model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, metric_loss: str | dict | MetricLoss, seed: int = 0, name: str | None = None, **kwargs):
        from zoo.losses import get

        self.metric_loss = get(metric_loss)
        super().__init__(name=name or self.metric_loss.name, **kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.attached_to: keras.Model | None = None

    def attach(self, model: keras.Model) -> keras.Model:
        """Make ``model`` own the loss's weights, so that ``fit`` trains them; returns ``model``.

        The loss is built for the model's embedding size and tracked as the attribute
        ``model.metric_loss`` (also saved with the model).
        """
        if not self.metric_loss.built:
            self.metric_loss.build(tuple(model.output_shape))
        model.metric_loss = self.metric_loss
        if not any(v is w for w in self.metric_loss.trainable_weights for v in model.trainable_variables):
            raise ValueError(f"{type(model).__name__} did not track the loss's weights")
        self.attached_to = model
        return model

    def call(self, y_true, y_pred):
        if self.metric_loss.trainable_weights and self.attached_to is None:
            raise ValueError(
                f"{type(self.metric_loss).__name__} has trainable weights, which compile() alone cannot train: "
                "call KerasMetricLoss.attach(model) before compile, or use zoo.methods.MetricModel"
            )
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ops.check_batch_sizes(y_pred, y_true, inputs_name="embeddings")
        return self.metric_loss(y_pred, tf.reshape(y_true, [-1]), seed)

    def get_config(self):
        return {
            **super().get_config(),
            "metric_loss": keras.saving.serialize_keras_object(self.metric_loss),
            "seed": self.seed,
        }
