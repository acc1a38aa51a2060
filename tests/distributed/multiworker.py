"""One process of the multi-worker test: two training steps, the final weights saved to a .npz file; prints one
JSON line {"max_update"}: how far the steps moved the weights.

    python tests/distributed/multiworker.py METHOD OUT.npz            # one device, no strategy
    TF_CONFIG=... python tests/distributed/multiworker.py METHOD OUT.npz --multiworker

With ``--multiworker`` the process is one worker of a ``MultiWorkerMirroredStrategy`` cluster
described by ``TF_CONFIG``; every worker takes its share of the same global batch.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from steps import initial_weights, max_abs_diff, train_two_steps  # noqa: E402


def main(method: str, out: str, multiworker: bool) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multiworker else tf.distribute.get_strategy()
    initial = initial_weights(method)
    weights = train_two_steps(method, strategy, initial)
    np.savez(out, *weights)
    print(json.dumps({"max_update": max_abs_diff(weights, initial)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--multiworker" in sys.argv[3:])
