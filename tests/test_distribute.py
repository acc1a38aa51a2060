"""tf.distribute: a step on 2 replicas equals a step on 1 replica with the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "distributed" / "one_vs_two_replicas.py"


@pytest.mark.parametrize("method", ["triplet", "thsg", "topk", "amdaml", "htg"])  # PROFS: tests/test_profs.py
def test_two_replicas_give_the_weights_of_one(method):
    run = subprocess.run([sys.executable, str(SCRIPT), method], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["max_update"] > 1e-4  # the step really moved the weights
    assert result["max_abs_diff"] < 1e-5, result
