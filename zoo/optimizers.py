"""Adam as the papers' frameworks run it: coupled L2 weight decay and per-variable learning-rate multipliers.

- ``l2_weight_decay``: PyTorch's ``Adam(weight_decay=wd)`` and Caffe's ``weight_decay`` add the L2 gradient,
  g <- g + wd * w, before Adam's moments; Keras's ``weight_decay`` is decoupled (AdamW: w <- w - lr * wd * w),
  so a paper's 4e-4 at lr 1e-5 would decay by 4e-9 a step. Both may be given; they add up.
- ``learning_rate_multipliers``: ``{pattern: factor}``, fnmatch patterns on the variable's path
  (``"embedding/*"``: the embedding head of :func:`zoo.backbones.build_embedding_net`); the first pattern that
  matches scales that variable's learning rate (e.g. PROFS Sec. 5.2: the new layer learns 10x faster).

Both act in ``update_step``, per variable, after a ``LossScaleOptimizer`` has unscaled the gradients and a
``tf.distribute`` strategy has summed them, so they hold under mixed precision and on any number of replicas.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="zoo")
class PaperAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with coupled L2 weight decay and per-variable learning-rate multipliers.

    Args:
        l2_weight_decay: wd of g + wd * w (PyTorch's / Caffe's weight decay); 0 = none.
        learning_rate_multipliers: ``{fnmatch pattern on variable.path: factor}``; others keep factor 1.
        **kwargs: ``keras.optimizers.Adam``'s arguments (``learning_rate``, ``beta_2``, ``weight_decay``, ...).
    """

    def __init__(
        self,
        learning_rate: Any = 1e-3,
        *,
        l2_weight_decay: float = 0.0,
        learning_rate_multipliers: dict[str, float] | None = None,
        **kwargs: Any,
    ):
        super().__init__(learning_rate, **kwargs)
        if l2_weight_decay < 0:
            raise ValueError(f"l2_weight_decay must be >= 0, got {l2_weight_decay}")
        self.l2_weight_decay = float(l2_weight_decay)
        self.learning_rate_multipliers = {str(k): float(v) for k, v in (learning_rate_multipliers or {}).items()}
        self._multipliers: list[float] = []

    def build(self, variables: list) -> None:
        super().build(variables)
        self._multipliers = [self.learning_rate_multiplier(v.path) for v in variables]

    def learning_rate_multiplier(self, path: str) -> float:
        """The factor of the first pattern matching ``path`` (1 when none does)."""
        return next((f for p, f in self.learning_rate_multipliers.items() if fnmatch.fnmatchcase(path, p)), 1.0)

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Adam's step on g + wd * w with this variable's learning rate."""
        if self.l2_weight_decay:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype), keras.ops.multiply(self.l2_weight_decay, variable)
            )
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, multiplier)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "l2_weight_decay": self.l2_weight_decay,
            "learning_rate_multipliers": dict(self.learning_rate_multipliers),
        }
