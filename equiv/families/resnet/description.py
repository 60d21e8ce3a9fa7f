"""The ResNet description: every convention that changes a number is a field.

Adapters never decide a convention themselves; they realise what the description says. Two
networks that differ in any field are two variants, even when they share every parameter
name and shape.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import ClassVar, Literal

from equiv.variants import Variant

# Libraries whose networks equiv registers but does not need: their native builds run where they import.
OPTIONAL_LIBRARIES = ("timm", "transformers", "keras_hub")
# A library reference naming a backbone: the headless (head "none") network it builds computes it too.
BACKBONE = "keras_hub.models.ResNetBackbone."


@functools.cache
def _imports(module: str) -> bool:
    """Whether `module` imports here (once per process; any failure means no)."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a library built for another torch fails in many ways
        return False
    return True

# How a strided convolution or pool pads:
#   "symmetric": (k-1)//2 before and the rest after, whatever the input size (slim's
#                conv2d_same for stride > 1, keras' explicit ZeroPadding2D, PyTorch's padding=k//2);
#   "tf_same":   TensorFlow's SAME: total = max((ceil(n/s)-1)*s + k - n, 0), before = total//2,
#                so more after than before on even sizes with stride 2;
#   "valid":     no padding (pools only).
Padding = Literal["symmetric", "tf_same", "valid"]


@dataclass(frozen=True, kw_only=True)
class ResNet(Variant):
    family: ClassVar[str] = "resnet"

    block: Literal["basic", "bottleneck"]
    depths: tuple[int, ...]  # units per stage
    widths: tuple[int, ...]  # bottleneck width per stage; a unit outputs width * expansion
    strides: tuple[int, ...]  # stride of each stage
    preact: bool  # v2: BN+ReLU before each unit, post-norm before pooling, no ReLU after the add
    stride_unit: Literal["first", "last"]  # which unit of a stage carries its stride
    stride_conv: int  # which conv of that unit (1-based) carries it
    # When the shortcut is a 1x1 projection; otherwise it is the identity, subsampled by a
    # 1x1 max-pool of the unit's stride when the unit is strided.
    #   "first_unit": the first unit of every stage (keras.applications)
    #   "channels": when the channel count changes (tf_slim.nets)
    #   "channels_or_stride": when channels change or the unit is strided (torchvision)
    projection: Literal["first_unit", "channels", "channels_or_stride"]
    shortcut_norm: bool  # BatchNorm after the projection
    # Which convolutions carry a bias: all, none, or only those that no BatchNorm follows.
    conv_bias: Literal["all", "none", "unnormalized"]
    conv_padding: Padding  # the strided 3x3 conv
    bn_epsilon: float
    bn_scale: bool = True  # BatchNorm has gamma
    stem_width: int = 64
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_padding: Padding = "symmetric"
    pool_kernel: int = 3
    pool_stride: int = 2
    pool_padding: Padding = "symmetric"
    pool_pad_value: Literal["-inf", "zero"] = "-inf"
    # Conventions of the seed's networks (the defaults are every reference's):
    bottleneck_expansion: int = 4  # a bottleneck unit outputs width * this
    inner_norm: bool = True  # BatchNorm after a unit's convs (v1: every one; v2: all but the last)
    # Which convs of a unit a ReLU follows:
    #   "inner":         every conv of the branch but the last (every reference);
    #   "inner_strided": as "inner", but a 3x3 conv only when strided (the seed's slim
    #                    conv2d_same: its stride-1 path keeps the arg_scope's activation_fn=None);
    #   "every":         every conv, the last and the projection included (the seed's Keras).
    branch_relu: Literal["inner", "inner_strided", "every"] = "inner"
    preact_relu: bool = True  # v2: a ReLU follows the pre-activation BatchNorm
    identity_from: Literal["input", "preact"] = "input"  # what an identity shortcut carries (v2)
    stem_norm: bool | None = None  # BatchNorm after the stem conv; None: unless preact
    stem_relu: bool | None = None  # ReLU after the stem conv; None: unless preact
    # The head: head_pool 0 is a global mean; k > 0 an average pool of k x k with stride
    # head_pool_stride (VALID) flattened in NHWC order, which fixes the input size.
    head_pool: int = 0
    head_pool_stride: int = 0
    head_activation: Literal["none", "softmax"] = "none"
    # Issue 16 A: ResNet-D and grouped convolutions (the defaults are every earlier variant's).
    # A deep stem (ResNet-C/D, timm's stem_type="deep"): the widths of the stem convs before its
    # last, each a stem_kernel x stem_kernel conv followed by BatchNorm and ReLU, the first with
    # stem_stride and stem_padding, the others stride 1; the last conv outputs stem_width and has
    # the stem's norm and ReLU (stem_norm, stem_relu). () is the single stem conv `stem/conv`; a
    # deep stem's convs are `stem/conv1` .. `stem/conv{n}` (timm resnet50d: (32, 32), 3x3).
    deep_stem: tuple[int, ...] = ()
    # How a strided projection shortcut downsamples: "stride", its 1x1 conv strides (every
    # reference before); "avg" (ResNet-D, timm's avg_down=True): an average pool of 2x2 with the
    # unit's stride, the last window kept where it starts inside the input and averaged over its
    # valid elements only (torch AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
    # TF's SAME average pool), then a stride-1 1x1 conv. Identity shortcuts are not affected.
    projection_pool: Literal["stride", "avg"] = "stride"
    # Groups of a bottleneck's 3x3 conv (ResNeXt: torchvision's groups; its width_per_group is
    # in `widths`: width = planes * width_per_group / 64 * groups). Its kernel is HWIO with
    # I = width / groups, output channels grouped contiguously, as TF, Keras and torch store it.
    groups: int = 1
    # Issue 16 B: normalisation, weight standardisation and heads
    # Every norm layer (a conv's, a pre-activation's, the post-norm) is a BatchNorm (moving
    # statistics) or a GroupNorm of `norm_groups` groups (no statistics: gamma and beta only),
    # with epsilon `bn_epsilon` either way.
    norm: Literal["batch", "group"] = "batch"
    norm_groups: int = 32
    # Weight-standardised convolutions (BiT, timm's StdConv2d): every conv but the head's uses
    # (kernel - mean) / sqrt(var + ws_epsilon), per output channel over its k*k*cin weights (biased
    # variance), computed at run time from the stored, raw kernel.
    weight_std: bool = False
    ws_epsilon: float = 1e-8
    # The classifier: "dense" (a Dense / Linear on the pooled features), "conv" (a 1x1 conv on
    # the pooled 1x1 map, as timm's resnetv2 head.fc: the same numbers, the kernel stored as a
    # conv's), "features" (headless: the last tap is the pooled features, as HF ResNetModel's
    # pooler) or "none" (a backbone: the last tap is the last stage's output, after the post-norm).
    head: Literal["dense", "conv", "features", "none"] = "dense"

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.depths)
        if not (len(self.widths) == len(self.strides) == n) or n == 0:
            raise ValueError(f"{self.name}: depths, widths and strides must have one entry per stage")
        if any(d < 1 for d in self.depths) or any(w < 1 for w in self.widths):
            raise ValueError(f"{self.name}: every stage needs at least one unit and a positive width")
        if self.stride_conv < 1 or self.stride_conv > self.convs_per_unit:
            raise ValueError(f"{self.name}: stride_conv must be in 1..{self.convs_per_unit}")
        if self.stem_padding == "valid" or self.conv_padding == "valid":
            raise ValueError(f"{self.name}: convolutions pad 'symmetric' or 'tf_same'")
        if self.pool_padding == "tf_same" and self.pool_pad_value != "-inf":
            raise ValueError(f"{self.name}: TF SAME pooling always pads with -inf")
        if self.head_pool and (self.input_size is None or self.head_pool_stride < 1):
            raise ValueError(f"{self.name}: a pooled, flattened head needs input_size and head_pool_stride")
        if self.bottleneck_expansion < 1:
            raise ValueError(f"{self.name}: bottleneck_expansion must be positive")
        self._check_issue16a()
        self._check_issue16b()

    def _check_issue16a(self) -> None:
        if any(w < 1 for w in self.deep_stem):
            raise ValueError(f"{self.name}: every deep_stem width must be positive")
        if self.groups < 1:
            raise ValueError(f"{self.name}: groups must be positive")
        if self.groups > 1 and self.block != "bottleneck":
            raise ValueError(f"{self.name}: groups apply to a bottleneck's 3x3 conv; a basic block has none")
        if any(w % self.groups for w in self.widths):
            raise ValueError(f"{self.name}: groups={self.groups} must divide every stage width {self.widths}")

    def reference_differences(self) -> list[str]:
        """As Variant.reference_differences; a library reference naming a backbone (keras-hub's
        ResNetBackbone) computes the headless network (head "none") too: its head is no difference."""
        differ = super().reference_differences()
        if self.head == "none" and self.reference.startswith(BACKBONE):
            differ = [k for k in differ if k != "head"]
        return differ

    def built_by(self) -> str:
        """As Variant.built_by, and "" where the library is not importable here: timm and transformers
        need torchvision, which the pinned torch lacks, and keras-hub is an extra; equiv's generic
        builder, in that library's layout, builds the description there (and test ids and reports say
        so)."""
        ref = super().built_by()
        if ref.split(".")[0] in OPTIONAL_LIBRARIES and not _imports(ref.split(".")[0]):
            return ""
        return ref

    def _check_issue16b(self) -> None:
        if self.norm == "group":
            if self.norm_groups < 1:
                raise ValueError(f"{self.name}: norm_groups must be positive")
            bad = sorted({c for c in self.norm_channels() if c % self.norm_groups})
            if bad:
                raise ValueError(f"{self.name}: GroupNorm of {self.norm_groups} groups cannot split "
                                 f"{', '.join(map(str, bad))} channels")
        if self.weight_std and self.groups > 1:
            raise ValueError(f"{self.name}: weight standardisation of grouped convolutions is not realised "
                             "(no registered network has both)")
        if self.weight_std and not self.ws_epsilon > 0:
            raise ValueError(f"{self.name}: weight standardisation needs a positive ws_epsilon")
        if self.head in ("features", "none") and (self.head_activation != "none" or self.head_pool):
            raise ValueError(f"{self.name}: a headless network has no softmax and no flattened head pool")
        if self.head in ("dense", "conv") and self.num_classes < 1:
            raise ValueError(f"{self.name}: a classifier head needs num_classes >= 1 (head 'features' or "
                             "'none' for a headless network)")
        if self.head == "conv" and self.head_pool:
            raise ValueError(f"{self.name}: a 1x1-conv head sits on a global mean (head_pool 0)")

    def norm_channels(self) -> set[int]:
        """The channel counts of every norm layer (GroupNorm's groups must divide each)."""
        from equiv.families.resnet import plan

        out = {c.cout for c in plan.stem_convs(self) if c.norm}  # a deep stem's convs too
        for u in plan.units(self):
            if self.preact:
                out.add(u.cin)
            out |= {c.cout for c in (*u.convs, *([u.shortcut] if u.shortcut else [])) if c.norm}
        if self.preact:
            out.add(plan.channels(self))
        return out

    @property
    def expansion(self) -> int:
        return self.bottleneck_expansion if self.block == "bottleneck" else 1

    @property
    def convs_per_unit(self) -> int:
        return 3 if self.block == "bottleneck" else 2
