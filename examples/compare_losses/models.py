"""Flax NNX classifiers: a small CNN for the offline default and the CIFAR architectures of
Mukhoti et al. 2020 (ResNet-50, ResNet-110, Wide-ResNet-26-10, DenseNet-121), in their CIFAR
forms (3×3 stem, no initial max-pool), as in the paper's public code."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch's defaults (momentum 0.1 ≙ Flax momentum 0.9, eps 1e-5), as in the paper's code.
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=k // 2, use_bias=False, rngs=rngs)


class SmallCNN(nnx.Module):
    """Two 3×3 conv-BN-ReLU layers, global average pooling and a two-layer head.

    Batch norm (as in the paper's ResNets) lets every loss train at the paper's learning rate;
    there is no dropout, so nothing but the loss and weight decay counters over-confidence.
    """

    def __init__(self, num_classes: int, in_channels: int, *, width: int = 32, rngs: nnx.Rngs):
        self.conv1 = _conv(in_channels, width, 3, 1, rngs)
        self.bn1 = _bn(width, rngs)
        self.conv2 = _conv(width, 2 * width, 3, 1, rngs)
        self.bn2 = _bn(2 * width, rngs)
        self.dense1 = nnx.Linear(2 * width, 4 * width, rngs=rngs)
        self.dense2 = nnx.Linear(4 * width, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = x.mean(axis=(1, 2))
        return self.dense2(nnx.relu(self.dense1(x)))


class PoolCNN(nnx.Module):
    """Three 3×3 conv-BN-ReLU stages (width, 2·width, 4·width) with 2×2 max-pooling after the
    first two, then a flattened two-layer head: ~0.9M parameters at width 32 on 28×28 images,
    enough to fit a 10k-image Fashion-MNIST subset exactly (the paper's over-fitted regime),
    at ~1k images/s for a training step on 2 CPU cores."""

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        *,
        width: int = 32,
        hidden: int = 128,
        rngs: nnx.Rngs,
    ):
        h, w, c = image_shape
        self.conv1, self.bn1 = _conv(c, width, 3, 1, rngs), _bn(width, rngs)
        self.conv2, self.bn2 = _conv(width, 2 * width, 3, 1, rngs), _bn(2 * width, rngs)
        self.conv3, self.bn3 = _conv(2 * width, 4 * width, 3, 1, rngs), _bn(4 * width, rngs)
        flat = (h // 4) * (w // 4) * 4 * width
        self.dense1 = nnx.Linear(flat, hidden, rngs=rngs)
        self.dense2 = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), strides=(2, 2))
        x = nnx.relu(self.bn3(self.conv3(x)))
        return self.dense2(nnx.relu(self.dense1(x.reshape(x.shape[0], -1))))


class MLP(nnx.Module):
    """A fully connected classifier on flattened images."""

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        *,
        hidden: Sequence[int] = (256, 256),
        rngs: nnx.Rngs,
    ):
        sizes = (in_features, *hidden)
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.out = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = nnx.relu(layer(x))
        return self.out(x)


class BasicBlock(nnx.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-110)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride, rngs), _bn(planes, rngs)
        self.conv2, self.bn2 = _conv(planes, planes, 3, 1, rngs), _bn(planes, rngs)
        self.shortcut = (
            nnx.Sequential(_conv(cin, planes, 1, stride, rngs), _bn(planes, rngs))
            if stride != 1 or cin != planes
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nnx.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nnx.Module):
    """1×1 → 3×3 → 1×1 bottleneck with 4× expansion (ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        out = 4 * planes
        self.conv1, self.bn1 = _conv(cin, planes, 1, 1, rngs), _bn(planes, rngs)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride, rngs), _bn(planes, rngs)
        self.conv3, self.bn3 = _conv(planes, out, 1, 1, rngs), _bn(out, rngs)
        self.shortcut = (
            nnx.Sequential(_conv(cin, out, 1, stride, rngs), _bn(out, rngs))
            if stride != 1 or cin != out
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return nnx.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nnx.Module):
    """CIFAR ResNet: 3×3 stem, stages of residual blocks, global pooling, linear head."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        *,
        block: type[BasicBlock] | type[Bottleneck],
        stage_sizes: Sequence[int],
        widths: Sequence[int],
        rngs: nnx.Rngs,
    ):
        self.stem = _conv(in_channels, widths[0], 3, 1, rngs)
        self.stem_bn = _bn(widths[0], rngs)
        blocks, cin = [], widths[0]
        for i, (n, planes) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(cin, planes, stride, rngs=rngs))
                cin = planes * block.expansion
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem(x)))
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(axis=(1, 2)))


class WideBlock(nnx.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.bn1, self.conv1 = _bn(cin, rngs), _conv(cin, cout, 3, 1, rngs)
        self.bn2, self.conv2 = _bn(cout, rngs), _conv(cout, cout, 3, stride, rngs)
        self.shortcut = _conv(cin, cout, 1, stride, rngs) if stride != 1 or cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv1(nnx.relu(self.bn1(x)))
        out = self.conv2(nnx.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nnx.Module):
    """WRN-depth-k; ``(depth - 4) // 6`` blocks per stage (WRN-26-10 has 3, as in the paper's
    code, which truncates the non-integer 22/6)."""

    def __init__(
        self, num_classes: int, in_channels: int, *, depth: int, widen: int, rngs: nnx.Rngs
    ):
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = _conv(in_channels, widths[0], 3, 1, rngs)
        blocks, cin = [], widths[0]
        for i, cout in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(cin, cout, 2 if i > 0 and j == 0 else 1, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.bn = _bn(cin, rngs)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(nnx.relu(self.bn(x)).mean(axis=(1, 2)))


class DenseLayer(nnx.Module):
    """BN-ReLU-1×1 conv (4·growth) → BN-ReLU-3×3 conv (growth), concatenated to the input."""

    def __init__(self, cin: int, growth: int, *, rngs: nnx.Rngs):
        self.bn1, self.conv1 = _bn(cin, rngs), _conv(cin, 4 * growth, 1, 1, rngs)
        self.bn2, self.conv2 = _bn(4 * growth, rngs), _conv(4 * growth, growth, 3, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv1(nnx.relu(self.bn1(x)))
        out = self.conv2(nnx.relu(self.bn2(out)))
        return jnp.concatenate([x, out], axis=-1)


class Transition(nnx.Module):
    """BN-ReLU-1×1 conv with compression, then 2×2 average pooling."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.bn, self.conv = _bn(cin, rngs), _conv(cin, cout, 1, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(nnx.relu(self.bn(x)))
        return nnx.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nnx.Module):
    """CIFAR DenseNet-BC (DenseNet-121: blocks 6-12-24-16, growth 32, compression 0.5)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        *,
        block_sizes: Sequence[int] = (6, 12, 24, 16),
        growth: int = 32,
        rngs: nnx.Rngs,
    ):
        cin = 2 * growth
        self.stem = _conv(in_channels, cin, 3, 1, rngs)
        layers: list[nnx.Module] = []
        for i, n in enumerate(block_sizes):
            for _ in range(n):
                layers.append(DenseLayer(cin, growth, rngs=rngs))
                cin += growth
            if i < len(block_sizes) - 1:
                layers.append(Transition(cin, cin // 2, rngs=rngs))
                cin //= 2
        self.layers = nnx.List(layers)
        self.bn = _bn(cin, rngs)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(nnx.relu(self.bn(x)).mean(axis=(1, 2)))


_MODELS: dict[str, Callable[..., nnx.Module]] = {
    "small_cnn": lambda k, c, rngs: SmallCNN(k, c, rngs=rngs),
    "mlp": lambda k, c, rngs, in_features: MLP(k, in_features, rngs=rngs),
    "pool_cnn": lambda k, c, rngs, image_shape: PoolCNN(k, image_shape, rngs=rngs),
    "resnet50": lambda k, c, rngs: ResNet(
        k, c, block=Bottleneck, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), rngs=rngs
    ),
    "resnet110": lambda k, c, rngs: ResNet(
        k, c, block=BasicBlock, stage_sizes=(18, 18, 18), widths=(16, 32, 64), rngs=rngs
    ),
    "wide_resnet26_10": lambda k, c, rngs: WideResNet(k, c, depth=26, widen=10, rngs=rngs),
    "densenet121": lambda k, c, rngs: DenseNet(k, c, rngs=rngs),
}
MODELS = tuple(_MODELS)


def create_model(
    name: str, *, num_classes: int, image_shape: tuple[int, int, int], seed: int
) -> nnx.Module:
    """Builds model ``name`` (one of :data:`MODELS`) for images of ``image_shape`` (HWC)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    rngs = nnx.Rngs(params=seed)
    if name == "mlp":
        h, w, c = image_shape
        return _MODELS[name](num_classes, c, rngs, h * w * c)
    if name == "pool_cnn":
        return _MODELS[name](num_classes, image_shape[-1], rngs, image_shape)
    return _MODELS[name](num_classes, image_shape[-1], rngs)
