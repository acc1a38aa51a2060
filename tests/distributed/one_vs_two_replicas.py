"""Train a method for two steps on 1 replica and on 2 logical CPU replicas; print the weight difference.

Run as a separate process (logical devices must be set before TensorFlow starts):
    python tests/distributed/one_vs_two_replicas.py METHOD
prints one JSON line {"method", "max_abs_diff", "max_update", "num_weights"}.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

from steps import initial_weights, max_abs_diff, train_two_steps  # noqa: E402


def main(method: str) -> None:
    initial = initial_weights(method)
    single = train_two_steps(method, tf.distribute.OneDeviceStrategy("/cpu:0"), initial)
    mirrored = train_two_steps(method, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial)
    print(json.dumps({
        "method": method,
        "max_abs_diff": max_abs_diff(single, mirrored),
        "max_update": max_abs_diff(single, initial),
        "num_weights": len(single),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
