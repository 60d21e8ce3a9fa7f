"""The seed's PyTorch network, `ResNet_v2(Bottleneck, [3, 4, 6, 3])`.

What changed from the seed, and why:

* `__init__` set `self.in_channel = 64` but `_make_layer` reads `self.inplanes`: an
  AttributeError before the first layer was built. It now sets `self.inplanes`.
* `forward` still returns the 2048-d features (the `fc` it defines is never used);
  `return_logits=True` applies the `fc` (an option the seed does not have).

Nothing else changes a number. It is a post-activation (v1) bottleneck network, stride on the 3x3
of each stage's first unit, and the same state_dict keys as torchvision's resnet50; only the
head differs (`AvgPool2d(7)`: 224x224 inputs, then 10 classes).

Taps are read with forward hooks (`record_taps`), so the module stays the seed's.
"""

from __future__ import annotations

import math

from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channel, out_channel, stride=1, downsample=None):
        super(Bottleneck, self).__init__()
        self.conv1 = nn.Conv2d(in_channel, out_channel, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channel)
        self.conv2 = nn.Conv2d(out_channel, out_channel, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channel)
        self.conv3 = nn.Conv2d(out_channel, out_channel * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channel * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        out = self.relu(out)
        return out


class ResNet_v2(nn.Module):  # noqa: N801 - the seed's name
    def __init__(self, block, layer, num_classes=10, return_logits=False):
        self.inplanes = 64  # the seed: self.in_channel = 64
        super(ResNet_v2, self).__init__()
        self.return_logits = return_logits
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, self.inplanes, layer[0])
        self.layer2 = self._make_layer(block, 128, layer[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layer[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layer[3], stride=2)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = []
        layers.append(block(self.inplanes, planes, stride, downsample))
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        if self.return_logits:  # not in the seed
            x = self.fc(x)
        return x


def build(variant, **kwargs) -> ResNet_v2:
    """The seed's model for `variant` (seed/torch_resnet_v2, any class count)."""
    return ResNet_v2(Bottleneck, list(variant.depths), num_classes=variant.num_classes, **kwargs)


def record_taps(model: ResNet_v2, x, record) -> None:
    """Run `model` on NCHW `x`, calling `record(tap, tensor)` with every canonical tap.

    Forward hooks see each layer's output; the seed's in-place ReLUs and `out += residual`
    overwrite some of them later, so each is cloned when seen. A unit's ReLU runs three times
    (after conv1, after conv2, after the add), in that order."""
    handles = []

    def hook(fn):
        return lambda module, args, out: fn(out.clone())

    def on(module, fn):
        handles.append(module.register_forward_hook(hook(fn)))

    on(model.relu, lambda t: record("stem/conv", t))
    on(model.maxpool, lambda t: record("stem/pool", t))
    for s in range(1, 5):
        for u, unit in enumerate(getattr(model, f"layer{s}"), start=1):
            name = f"stage{s}/unit{u}"
            relu_taps = [f"{name}/conv1", f"{name}/conv2", name]
            calls = []

            def on_relu(t, calls=calls, relu_taps=relu_taps):
                record(relu_taps[len(calls)], t)
                calls.append(1)

            def on_input(module, args, name=name, calls=calls):
                calls.clear()
                if module.downsample is None:
                    record(f"{name}/shortcut", args[0].clone())

            handles.append(unit.register_forward_pre_hook(on_input))
            on(unit.relu, on_relu)
            on(unit.bn3, lambda t, name=name: record(f"{name}/conv3", t))
            if unit.downsample is not None:
                on(unit.downsample, lambda t, name=name: record(f"{name}/shortcut", t))
    on(model.avgpool, lambda t: record("pool", t.permute(0, 2, 3, 1).flatten(1)))
    try:
        out = model(x)
        record("logits", out if model.return_logits else model.fc(out))
    finally:
        for h in handles:
            h.remove()
