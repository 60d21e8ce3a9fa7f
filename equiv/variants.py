"""Variants as data: one frozen description per network, and the registry of named ones.

Every convention that changes a number is a field here. Adapters never decide a convention
themselves; they realise what the description says. Two networks that differ in any field
are two variants, even when they share every parameter name and shape.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Literal

from equiv.errors import EquivError, UnknownVariantError

Framework = str  # a registered backend: a key of equiv.frameworks.REGISTRY

# How a strided convolution or pool pads:
#   "symmetric": (k-1)//2 before and the rest after, whatever the input size (slim's
#                conv2d_same for stride > 1, keras' explicit ZeroPadding2D, PyTorch's padding=k//2);
#   "tf_same":   TensorFlow's SAME: total = max((ceil(n/s)-1)*s + k - n, 0), before = total//2,
#                so more after than before on even sizes with stride 2;
#   "valid":     no padding (pools only).
Padding = Literal["symmetric", "tf_same", "valid"]


@dataclass(frozen=True)
class Variant:
    name: str
    native: Framework
    description: str
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
    num_classes: int = 1000
    in_channels: int = 3
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
    input_size: tuple[int, int] | None = None  # the only input size a flatten head admits
    notes: tuple[str, ...] = field(default=(), compare=False)
    # The library code this description is a transcription of (tf_slim.nets.resnet_v1.resnet_v1_50,
    # keras.applications.ResNet50, torchvision.models.resnet18, equiv.seed.*), built natively where
    # its library imports; "" for a description no library ships. It changes no number.
    reference: str = ""
    # The input its reference library's weights expect (a name of equiv.preprocessing.RECORDS:
    # channel order, scale, mean, std; "none" for the seed programs, which preprocess nothing).
    # It changes no number of the network.
    preprocessing: str = "none"

    def __post_init__(self) -> None:
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
        from equiv.preprocessing import RECORDS

        if self.preprocessing not in RECORDS:
            raise ValueError(f"{self.name}: unknown preprocessing {self.preprocessing!r}; known: {', '.join(RECORDS)}")

    @property
    def expansion(self) -> int:
        return self.bottleneck_expansion if self.block == "bottleneck" else 1

    @property
    def convs_per_unit(self) -> int:
        return 3 if self.block == "bottleneck" else 2

    @property
    def framework(self) -> str:
        """The registry prefix (slim, keras, torchvision, seed, ...)."""
        return self.name.split("/", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[-1]

    def replace(self, **changes) -> Variant:
        return dataclasses.replace(self, **changes)

    def conventions(self) -> dict:
        """Every field that changes a number (everything but the name, native, reference, prose and the
        preprocessing its weights expect, which is outside the network)."""
        skip = {"name", "native", "description", "notes", "reference", "preprocessing"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def reference_differences(self) -> list[str]:
        """The conventions in which this description differs from the registered one of its name
        (the head size aside): where it names a reference, that library code no longer computes
        what it says unless this is empty."""
        registered = _REGISTRY.get(self.name)
        if registered is None or registered.reference != self.reference:
            return ["reference"]
        mine, theirs = self.conventions(), registered.conventions()
        return sorted(k for k in mine if k != "num_classes" and mine[k] != theirs[k])

    def built_by(self) -> str:
        """The library code that computes this description (any head size), or "" if none does."""
        return self.reference if self.reference and not self.reference_differences() else ""


# ---------------------------------------------------------------------------------------
# The registry

_REGISTRY: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant
    return variant


def names() -> list[str]:
    return list(_REGISTRY)


def all_variants() -> list[Variant]:
    return list(_REGISTRY.values())


def closest(name: str, n: int = 3) -> list[str]:
    """Registered names near `name`; a bare short name ("resnet50") ranks its exact owner first."""
    pool = names()
    short = {v.split("/", 1)[-1].lower(): v for v in pool}
    hits = [short[name.lower()]] if name.lower() in short else []
    hits += [short[s] for s in difflib.get_close_matches(name.lower(), list(short), n=n, cutoff=0.6)]
    hits += difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    return list(dict.fromkeys(hits))[:n]


def get(name: str | Variant, num_classes: int | None = None) -> Variant:
    """Look up a registered variant; `num_classes` gives a copy with another head."""
    if isinstance(name, Variant):
        v = name
    else:
        try:
            v = _REGISTRY[name]
        except KeyError:
            hint = closest(name)
            msg = f"unknown variant {name!r}"
            msg += f"; did you mean {', '.join(hint)}?" if hint else "; `equiv variants` lists them"
            raise UnknownVariantError(msg) from None
    if num_classes is not None and num_classes != v.num_classes:
        if num_classes < 1:
            raise EquivError(f"num_classes must be positive, got {num_classes}")
        v = v.replace(num_classes=num_classes)
    return v


# ---------------------------------------------------------------------------------------
# Real references

_BOTTLENECK_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_WIDTHS = (64, 128, 256, 512)

for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(Variant(
        name=f"slim/resnet_v1_{_d}", native="slim",
        description=f"tf_slim.nets.resnet_v1.resnet_v1_{_d}: stride in the last unit, SAME max-pool",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(2, 2, 2, 1), preact=False,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=True,
        conv_bias="unnormalized", conv_padding="symmetric", bn_epsilon=1e-5,
        pool_padding="tf_same", num_classes=1001, reference=f"tf_slim.nets.resnet_v1.resnet_v1_{_d}",
        preprocessing="slim-vgg",
    ))
    register(Variant(
        name=f"slim/resnet_v2_{_d}", native="slim",
        description=f"tf_slim.nets.resnet_v2.resnet_v2_{_d}: pre-activation, stride in the last unit",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(2, 2, 2, 1), preact=True,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=False,
        conv_bias="unnormalized", conv_padding="symmetric", bn_epsilon=1e-5,
        pool_padding="tf_same", num_classes=1001, reference=f"tf_slim.nets.resnet_v2.resnet_v2_{_d}",
        preprocessing="slim-inception",
    ))

for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(Variant(
        name=f"keras/ResNet{_d}", native="keras",
        description=f"keras.applications.ResNet{_d}: stride on the first 1x1 conv, biased convs",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
        stride_unit="first", stride_conv=1, projection="first_unit", shortcut_norm=True,
        conv_bias="all", conv_padding="symmetric", bn_epsilon=1.001e-5,
        pool_padding="symmetric", pool_pad_value="zero", reference=f"keras.applications.ResNet{_d}",
        preprocessing="keras-caffe",
    ))
for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(Variant(
        name=f"keras/ResNet{_d}V2", native="keras",
        description=f"keras.applications.ResNet{_d}V2: slim v2 but zero-padded VALID max-pool",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(2, 2, 2, 1), preact=True,
        stride_unit="last", stride_conv=2, projection="first_unit", shortcut_norm=False,
        conv_bias="unnormalized", conv_padding="symmetric", bn_epsilon=1.001e-5,
        pool_padding="symmetric", pool_pad_value="zero", reference=f"keras.applications.ResNet{_d}V2",
        preprocessing="keras-tf",
    ))

for _d, _block, _depths in [
    (18, "basic", (2, 2, 2, 2)), (34, "basic", (3, 4, 6, 3)),
    (50, "bottleneck", (3, 4, 6, 3)), (101, "bottleneck", (3, 4, 23, 3)),
    (152, "bottleneck", (3, 8, 36, 3)),
]:
    register(Variant(
        name=f"torchvision/resnet{_d}", native="torch",
        description=f"torchvision.models.resnet{_d} (V1.5: stride on the 3x3 conv of the first unit)",
        block=_block, depths=_depths, widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
        stride_unit="first", stride_conv=2 if _block == "bottleneck" else 1,
        projection="channels_or_stride", shortcut_norm=True, conv_bias="none",
        conv_padding="symmetric", bn_epsilon=1e-5, reference=f"torchvision.models.resnet{_d}",
        preprocessing="torchvision",
    ))

# ---------------------------------------------------------------------------------------
# The seed's three networks (../shared/seed), as their code computes, quirks included.
# Native builds: equiv/seed/.

_SEED_SLIM = dict(
    native="slim", block="bottleneck", preact=True, stride_unit="last", stride_conv=2,
    projection="channels", shortcut_norm=False, conv_bias="all", conv_padding="symmetric",
    bn_epsilon=1e-3, bn_scale=False, inner_norm=False, branch_relu="inner_strided",
    stem_norm=False, stem_relu=True, pool_padding="valid", num_classes=10,
)
_SEED_SLIM_NOTE = ("the seed's tf.contrib.slim network on tf_slim: biased convs without BatchNorm, "
                   "bare batch_norm (eps 1e-3, no gamma) only as pre-activation and post-norm, "
                   "ReLU on the stem, VALID max-pool, ReLU on a 3x3 conv only when strided")
register(Variant(
    name="seed/slim_resnet_v2_demo", description=f"{_SEED_SLIM_NOTE}; the one unit (64, 64, 2) it runs",
    depths=(1,), widths=(64,), strides=(2,), bottleneck_expansion=1, reference="equiv.seed.slim_resnet_v2",
    **_SEED_SLIM,
))
register(Variant(
    name="seed/slim_resnet_v2_50", description=f"{_SEED_SLIM_NOTE}; the 50-layer list it comments out",
    depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(2, 2, 2, 1), reference="equiv.seed.slim_resnet_v2", **_SEED_SLIM,
))
register(Variant(
    name="seed/keras_resnet_v2_50", native="keras",
    description="the seed's Keras 2 network on Keras 3: BatchNorm (no ReLU) on each unit's input, "
                "identity from the normalised input, ReLU after every conv and the biased projection, "
                "TF SAME on the strided 3x3, AveragePooling2D(2) + Flatten + Dense softmax; 224x224 only",
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(2, 2, 2, 1), preact=True,
    stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=False, conv_bias="all",
    conv_padding="tf_same", bn_epsilon=1e-3, inner_norm=False, branch_relu="every", preact_relu=False,
    identity_from="preact", stem_norm=False, stem_relu=False, pool_padding="valid",
    head_pool=2, head_pool_stride=2, head_activation="softmax", input_size=(224, 224), num_classes=10,
    reference="equiv.seed.keras_resnet_v2",
))
register(Variant(
    name="seed/torch_resnet_v2", native="torch",
    description="the seed's PyTorch network (its in_channel/inplanes bug fixed): a post-activation "
                "bottleneck ResNet-50, stride on the 3x3 of the first unit, AvgPool2d(7); its forward "
                "returns the 2048-d features and never uses the fc it defines (equiv taps the fc's "
                "logits too); 224x224 only",
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
    stride_unit="first", stride_conv=2, projection="channels_or_stride", shortcut_norm=True,
    conv_bias="none", conv_padding="symmetric", bn_epsilon=1e-5,
    head_pool=7, head_pool_stride=1, input_size=(224, 224), num_classes=10,
    reference="equiv.seed.torch_resnet_v2",
))

DEFAULT_VARIANT = "slim/resnet_v2_50"
