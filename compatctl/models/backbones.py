"""Backbones: image [B, C, H, W] -> feature [B, feature_dim] (global average pool at the end).

- ``tiny_cnn``: three conv blocks, for tests and quick demos.
- ``resnet20`` / ``resnet56``: the CIFAR ResNets of He et al. 2016 (sec. 4.2): a 3x3 conv,
  three stages of 16/32/64 channels with n = 3 / 9 basic blocks each, option-A shortcuts
  (stride-2 subsampling plus zero-padded channels; no parameters).
- ``resnet18``: the ImageNet ResNet-18 (64..512 channels, [2, 2, 2, 2] blocks) adapted to
  32x32 inputs the usual way: a 3x3 stride-1 stem and no max-pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


class TinyCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-GAP: a few hundred thousand FLOPs per image."""

    def __init__(self, in_channels: int):
        super().__init__()
        widths = (32, 64, 128)
        layers, cin = [], in_channels
        for i, width in enumerate(widths):
            layers += [conv_bn(cin, width), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by the stride and zero-pad the new channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; ``shortcut`` picks option A or B when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, stride), conv_bn(cout, cout)
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(cin, cout, stride)
        else:  # option B: a 1x1 projection
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        return F.relu(self.conv2(out) + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """A stem conv, stages of BasicBlocks (the first block of each later stage has stride 2), GAP."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...], shortcut: str):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, widths[0]), nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for i in range(depth):
                blocks.append(BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1, shortcut))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = widths[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


def cifar_resnet(depth: int) -> Callable[[int], nn.Module]:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers."""
    n = (depth - 2) // 6
    return lambda in_channels: ResNet(in_channels, (16, 32, 64), (n, n, n), shortcut="A")


def resnet18(in_channels: int) -> nn.Module:
    return ResNet(in_channels, (64, 128, 256, 512), (2, 2, 2, 2), shortcut="B")


BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "tiny_cnn": TinyCNN,
    "resnet20": cifar_resnet(20),
    "resnet56": cifar_resnet(56),
    "resnet18": resnet18,
}
