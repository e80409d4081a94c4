"""Encoders with a classifier head and an L2-normalised projection head (spec §1).

Both networks expose the same interface:

- ``features(x)`` -> h, the pooled encoder feature (B, feature_dim);
- ``forward(x)`` -> (logits (B, num_classes), z (B, embed_dim)), z unit-norm, float32;
- ``classifier`` (nn.Linear) and ``projector`` (nn.Module) as attributes.

``PreActResNet18`` is the MOIT encoder; ``SmallConvNet`` is a compact CNN so the method can be
tried on CPU (8x8 digits, 28x28 Fashion-MNIST). Any number of input channels and any input size
works, because both end in an adaptive average pool.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ARCHS",
    "PROJECTIONS",
    "SHORTCUTS",
    "PreActBlock",
    "PreActResNet18",
    "SmallConvNet",
    "build_model",
    "make_projector",
    "reset_classifier",
]

ARCHS = ("preact_resnet18", "small_cnn")
PROJECTIONS = ("linear", "nonlinear")
SHORTCUTS = ("preactivated", "raw")


def make_projector(feature_dim: int, embed_dim: int = 128, projection: str = "linear") -> nn.Module:
    """Projection head on h: "linear" (release default) or "nonlinear" (MLP with BN, spec §1)."""
    if projection == "linear":
        return nn.Linear(feature_dim, embed_dim)
    if projection == "nonlinear":
        return nn.Sequential(
            nn.Linear(feature_dim, 1024, bias=False),
            nn.BatchNorm1d(1024),
            nn.ReLU(inplace=True),
            nn.Linear(1024, embed_dim),
        )
    raise ValueError(
        f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}"
    )


def _check_sizes(num_classes: int, in_channels: int, width: int, embed_dim: int) -> None:
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                        ("width", width), ("embed_dim", embed_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convolutions; BatchNorm weight 1, bias 0 (spec §1)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Heads(nn.Module):
    """Shared forward logic: encoder -> h -> (classifier(h), normalize(projector(h)))."""

    feature_dim: int
    classifier: nn.Linear
    projector: nn.Module

    def _build_heads(self, num_classes: int, projection: str, embed_dim: int) -> None:
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.projector = make_projector(self.feature_dim, embed_dim, projection)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> (logits (B, num_classes), z (B, embed_dim) unit-norm, float32)."""
        h = self.features(x)
        logits = self.classifier(h)
        # z feeds fp32 similarities (losses.py, detection.py): normalise in fp32 so unit norm
        # holds to fp32 precision under bf16/fp16 autocast too.
        z = F.normalize(self.projector(h).float(), dim=1)
        return logits, z


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut.

    When the shape changes the shortcut is a 1x1 conv of the pre-activated input BN-ReLU(x).
    Otherwise it is the identity, of ``shortcut``:

    - "preactivated" (release, default): the identity of BN-ReLU(x), like the conv shortcut;
    - "raw" (a named deviation: He et al.'s PreAct ResNet): the identity of x itself.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 shortcut: str = "preactivated") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.shortcut_from = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is not None:
            shortcut = self.shortcut(out)
        else:
            shortcut = out if self.shortcut_from == "preactivated" else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(_Heads):
    """PreAct ResNet-18, CIFAR variant (3x3 stride-1 stem, no max-pool), spec §1.

    As the release: stem conv -> BN+ReLU -> stages of two blocks with ``width * (1, 2, 4, 8)``
    channels and strides 1/2/2/2 -> global average pool of the last block's output (no final
    BN+ReLU): h has ``feature_dim = 8 * width`` (512 for the default width 64). ``shortcut``:
    what the identity shortcuts carry (see :class:`PreActBlock`; release: "preactivated").
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 projection: str = "linear", embed_dim: int = 128,
                 shortcut: str = "preactivated") -> None:
        super().__init__()
        _check_sizes(num_classes, in_channels, width, embed_dim)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, 2 * width, 4 * width, 8 * width]
        strides = [1, 2, 2, 2]
        layers: list[nn.Module] = []
        in_planes = width
        for p, s in zip(planes, strides, strict=True):
            layers.append(nn.Sequential(PreActBlock(in_planes, p, s, shortcut),
                                        PreActBlock(p, p, 1, shortcut)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.feature_dim = in_planes
        self._build_heads(num_classes, projection, embed_dim)
        _init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> h (B, feature_dim)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class SmallConvNet(_Heads):
    """Compact CNN for CPU runs: three conv-BN-ReLU blocks (width w, 2w, 4w), each followed
    by a 2x2 max-pool while the map is still at least 2x2, then a global average pool.

    h has ``feature_dim = 4 * width``. At width 32 a 28x28 image costs about 7.5 M MACs
    (PreActResNet18 at 32x32: about 0.56 G). The conv weights are stored channels_last.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32,
                 projection: str = "linear", embed_dim: int = 128) -> None:
        super().__init__()
        _check_sizes(num_classes, in_channels, width, embed_dim)
        chans = [in_channels, width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(3)
        )
        self.feature_dim = chans[-1]
        self._build_heads(num_classes, projection, embed_dim)
        _init_weights(self)
        # channels_last weights make oneDNN run the convs and pools in NHWC: about 3x faster
        # forward+backward on CPU than NCHW, whose max-pool is slow. .to(device) keeps it.
        self.to(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> h (B, feature_dim)."""
        out = x
        for block in self.blocks:
            out = block(out)
            # Never pool below 1x1: 8x8 digits go 8 -> 4 -> 2 -> 1.
            if min(out.shape[-2:]) >= 2:
                out = F.max_pool2d(out, 2)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def build_model(arch: str, num_classes: int, in_channels: int, *, width: int = 64,
                projection: str = "linear", embed_dim: int = 128,
                shortcut: str = "preactivated") -> nn.Module:
    """Model by name: ``arch`` is "preact_resnet18" or "small_cnn" (same interface).

    shortcut: PreAct ResNet's identity shortcuts (:class:`PreActBlock`); small_cnn has none.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if projection not in PROJECTIONS:
        raise ValueError(
            f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}"
        )
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    common = dict(in_channels=in_channels, width=width, projection=projection,
                  embed_dim=embed_dim)
    if arch == "preact_resnet18":
        return PreActResNet18(num_classes, shortcut=shortcut, **common)
    return SmallConvNet(num_classes, **common)


def reset_classifier(model: nn.Module) -> None:
    """Re-initialise the classifier head in place (MOIT+, spec §4); the encoder is untouched.

    Uses nn.Linear's default initialisation. Works through ``torch.compile`` and
    DataParallel/DistributedDataParallel wrappers.
    """
    inner = model
    for attr in ("_orig_mod", "module"):  # torch.compile / (D)DP wrappers
        while hasattr(inner, attr) and not hasattr(inner, "classifier"):
            inner = getattr(inner, attr)
    head = getattr(inner, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear attribute 'classifier'; pass a model "
            "built by moit_explore.maths.models.build_model"
        )
    head.reset_parameters()
