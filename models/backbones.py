"""Backbones chosen by name: a small CNN (the CPU default), ResNet-18 with a CIFAR stem, ResNet-50.

Each returns pooled features of shape (B, out_dim). The ResNets are torchvision's, with `fc`
replaced by identity, so their parameter names match the official SwAV/PCL checkpoints.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn
from torchvision.models import resnet18, resnet50


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Six 3×3 conv layers, three stride-2 steps, global average pooling.

    Sized so a 2-core CPU trains it on 32-px crops at a few thousand crops per second; the
    adaptive pool makes it accept any crop size, so large and small crops share it.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.out_dim = 8 * w
        self.features = nn.Sequential(
            *_conv_bn(3, w),
            *_conv_bn(w, 2 * w, stride=2),
            *_conv_bn(2 * w, 2 * w),
            *_conv_bn(2 * w, 4 * w, stride=2),
            *_conv_bn(4 * w, 4 * w),
            *_conv_bn(4 * w, 8 * w, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def _resnet18_cifar() -> nn.Module:
    net = resnet18(weights=None)
    # CIFAR stem: a 3×3 stride-1 first conv and no max-pool keep 32-px images from shrinking
    # to 1×1 before the last stage.
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _resnet50() -> nn.Module:
    net = resnet50(weights=None)  # never download: weights come from a checkpoint the user gives
    net.fc = nn.Identity()
    return net


BACKBONES = ("small_cnn", "resnet18", "resnet50")


def feature_width(backbone: nn.Module) -> int:
    """The width of a backbone's pooled features: every backbone built here records it."""
    return int(cast(int, backbone.out_dim))


def build_backbone(name: str, width: int = 32) -> nn.Module:
    """Build a backbone by name; it carries `out_dim`, the width of its pooled features.

    The module is returned unwrapped so its parameter names are torchvision's (`conv1.weight`,
    `layer1.0.bn1.running_mean`, ...), the names the official checkpoints use.
    Unknown names raise ValueError listing the choices.
    """
    if name == "small_cnn":
        return SmallCNN(width)
    if name == "resnet18":
        net = _resnet18_cifar()
        # A plain int attribute, which torch's Module typing does not foresee.
        net.out_dim = 512  # type: ignore[assignment]
        return net
    if name == "resnet50":
        net = _resnet50()
        net.out_dim = 2048  # type: ignore[assignment]
        return net
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
