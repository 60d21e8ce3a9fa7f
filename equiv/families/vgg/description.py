"""The VGG description: every convention that changes a number is a field.

A VGG is stages of 3x3 stride-1 SAME convolutions (each followed by a ReLU, and by a BatchNorm
before it in the _bn variants), each stage ending in a 2x2 stride-2 VALID max-pool; then the
last map is flattened (in canonical NHWC order) into dense layers with ReLUs (fc6, fc7) and the
logits. Dropout is off in every build (inference).

How a library stores the classifier (slim: fc6 a k x k VALID conv, fc7/fc8 1x1 convs; Keras:
Flatten + Dense; torchvision: an NCHW flatten + Linear) changes no number at the input sizes
the description admits: that is each builder's layout, not a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from equiv.variants import Variant


@dataclass(frozen=True, kw_only=True)
class VGG(Variant):
    family: ClassVar[str] = "vgg"

    convs: tuple[int, ...]  # 3x3 convolutions per stage (vgg16: 2, 2, 3, 3, 3)
    widths: tuple[int, ...]  # output channels of each stage's convolutions
    conv_bias: bool = True  # every reference's convs carry a bias (the _bn ones too)
    batch_norm: bool = False  # BatchNorm between each conv and its ReLU (torchvision's vgg*_bn)
    bn_epsilon: float = 1e-5  # torchvision's BatchNorm2d default
    fc_widths: tuple[int, ...] = (4096, 4096)  # the hidden dense layers: fc6, fc7, ...
    # torchvision's AdaptiveAvgPool2d((7, 7)) between the last pool and the flatten: any input
    # size then gives a 7x7 map (the identity at 224x224). None: the last pool is flattened as
    # it is, which fixes the input size (input_size): slim's vgg_16 and Keras' VGG16 at 224x224.
    adaptive_pool: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.convs)
        if n == 0 or len(self.widths) != n:
            raise ValueError(f"{self.name}: convs and widths must have one entry per stage")
        if any(c < 1 for c in self.convs) or any(w < 1 for w in self.widths) or any(f < 1 for f in self.fc_widths):
            raise ValueError(f"{self.name}: every stage needs a conv, and every width must be positive")
        if self.adaptive_pool is None:
            if self.input_size is None:
                raise ValueError(f"{self.name}: a VGG without adaptive_pool flattens its last pool as it is, "
                                 "which fixes the input size: give input_size")
            if min(self.input_size) < 2 ** n:
                raise ValueError(f"{self.name}: input_size {self.input_size} is too small for {n} pools")
        elif len(self.adaptive_pool) != 2 or min(self.adaptive_pool) < 1:
            raise ValueError(f"{self.name}: adaptive_pool must be (height, width), both positive")
        if self.batch_norm and not self.bn_epsilon > 0:
            raise ValueError(f"{self.name}: bn_epsilon must be positive")
