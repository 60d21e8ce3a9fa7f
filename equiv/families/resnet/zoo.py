"""The registered ResNets: the three reference zoos (tf_slim.nets, keras.applications,
torchvision) and the seed's three programs, each as its library computes it."""

from equiv.families.resnet.description import ResNet
from equiv.variants import alias, register

_BOTTLENECK_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_WIDTHS = (64, 128, 256, 512)

for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(ResNet(
        name=f"slim/resnet_v1_{_d}", native="slim",
        description=f"tf_slim.nets.resnet_v1.resnet_v1_{_d}: stride in the last unit, SAME max-pool",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(2, 2, 2, 1), preact=False,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=True,
        conv_bias="unnormalized", conv_padding="symmetric", bn_epsilon=1e-5,
        pool_padding="tf_same", num_classes=1001, reference=f"tf_slim.nets.resnet_v1.resnet_v1_{_d}",
        preprocessing="slim-vgg",
    ))
    register(ResNet(
        name=f"slim/resnet_v2_{_d}", native="slim",
        description=f"tf_slim.nets.resnet_v2.resnet_v2_{_d}: pre-activation, stride in the last unit",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(2, 2, 2, 1), preact=True,
        stride_unit="last", stride_conv=2, projection="channels", shortcut_norm=False,
        conv_bias="unnormalized", conv_padding="symmetric", bn_epsilon=1e-5,
        pool_padding="tf_same", num_classes=1001, reference=f"tf_slim.nets.resnet_v2.resnet_v2_{_d}",
        preprocessing="slim-inception",
    ))

for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(ResNet(
        name=f"keras/ResNet{_d}", native="keras",
        description=f"keras.applications.ResNet{_d}: stride on the first 1x1 conv, biased convs",
        block="bottleneck", depths=_depths, widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
        stride_unit="first", stride_conv=1, projection="first_unit", shortcut_norm=True,
        conv_bias="all", conv_padding="symmetric", bn_epsilon=1.001e-5,
        pool_padding="symmetric", pool_pad_value="zero", reference=f"keras.applications.ResNet{_d}",
        preprocessing="keras-caffe",
    ))
for _d, _depths in _BOTTLENECK_DEPTHS.items():
    register(ResNet(
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
    register(ResNet(
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
register(ResNet(
    name="seed/slim_resnet_v2_demo", description=f"{_SEED_SLIM_NOTE}; the one unit (64, 64, 2) it runs",
    depths=(1,), widths=(64,), strides=(2,), bottleneck_expansion=1, reference="equiv.seed.slim_resnet_v2",
    **_SEED_SLIM,
))
register(ResNet(
    name="seed/slim_resnet_v2_50", description=f"{_SEED_SLIM_NOTE}; the 50-layer list it comments out",
    depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(2, 2, 2, 1), reference="equiv.seed.slim_resnet_v2", **_SEED_SLIM,
))
register(ResNet(
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
register(ResNet(
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

# ---------------------------------------------------------------------------------------
# Issue 16 A: ResNeXt and Wide ResNet (torchvision), ResNet-D (timm).
# torchvision's Bottleneck: width = planes * width_per_group / 64 * groups, output planes * 4, so
# resnext50_32x4d (groups 32, width_per_group 4) has widths 2 * planes and expansion 2,
# resnext101_32x8d (32, 8) widths 4 * planes and expansion 1, wide_resnet50_2 (1, 128) widths
# 2 * planes and expansion 2.

for _name, _depths, _widths, _expansion, _groups in [
    ("resnext50_32x4d", (3, 4, 6, 3), (128, 256, 512, 1024), 2, 32),
    ("resnext101_32x8d", (3, 4, 23, 3), (256, 512, 1024, 2048), 1, 32),
    ("wide_resnet50_2", (3, 4, 6, 3), (128, 256, 512, 1024), 2, 1),
]:
    register(ResNet(
        name=f"torchvision/{_name}", native="torch",
        description=f"torchvision.models.{_name}: "
                    + (f"ResNeXt, a {_groups}-group 3x3 conv" if _groups > 1
                       else "Wide ResNet, twice the bottleneck width")
                    + " (V1.5: stride on the 3x3 conv of the first unit)",
        block="bottleneck", depths=_depths, widths=_widths, strides=(1, 2, 2, 2), preact=False,
        stride_unit="first", stride_conv=2, projection="channels_or_stride", shortcut_norm=True,
        conv_bias="none", conv_padding="symmetric", bn_epsilon=1e-5, bottleneck_expansion=_expansion,
        groups=_groups, reference=f"torchvision.models.{_name}", preprocessing="torchvision",
    ))

register(ResNet(
    name="timm/resnet50d", native="torch",
    description="timm resnet50d (ResNet-D): deep stem of three 3x3 convs (32, 32, 64), average-pool "
                "downsampling before a stride-1 1x1 projection, stride on the 3x3 conv of the first unit",
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
    stride_unit="first", stride_conv=2, projection="channels_or_stride", shortcut_norm=True,
    conv_bias="none", conv_padding="symmetric", bn_epsilon=1e-5,
    stem_kernel=3, deep_stem=(32, 32), projection_pool="avg",
    reference="timm.models.resnet.resnet50d", preprocessing="torchvision",
    notes=("native build: timm.create_model('resnet50d', pretrained=False) where timm imports (timm 1.0.31, in "
           "the torchvision stage's venv); beside the pinned torch 2.13, which has no torchvision for timm to "
           "import, equiv's generic torch module builds it, in timm's module names and layout",
           "input: timm's pretrained_cfg for resnet50d is RGB, mean (0.485, 0.456, 0.406), std (0.229, 0.224, "
           "0.225) of x / 255: the torchvision record's numbers (timm resizes bicubic, crop 0.875: not equiv's)"),
))

# Issue 16 B: the ResNets of timm, Hugging Face transformers and keras-hub that need
# GroupNorm, weight standardisation, a 1x1-conv head or no head. Each is built by its library
# where that library imports beside the pins (timm and transformers: the torchvision stage's
# venv; keras-hub: the main one), else by equiv's generic builder, which is its transcription.

_V2_TORCH_STYLE = dict(  # timm's resnetv2 and keras-hub's v2: stride on the 3x3 of a stage's first unit
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(1, 2, 2, 2), preact=True,
    stride_unit="first", stride_conv=2, projection="first_unit", shortcut_norm=False, conv_bias="none",
    conv_padding="symmetric", bn_epsilon=1e-5,
)
_BUILT = ("built by {lib} where it imports (the torchvision stage's venv for timm and transformers), "
          "else by equiv's generic module, its transcription")
register(ResNet(
    name="timm/resnetv2_50", native="torch",
    description="timm resnetv2_50: torch-style pre-activation (stride on the 3x3 of a stage's first unit, "
                "projection in every stage's first unit, no conv bias, -inf max-pool), BatchNorm, 1x1-conv head",
    **_V2_TORCH_STYLE, head="conv", reference="timm.models.resnetv2_50", preprocessing="slim-inception",
    notes=(_BUILT.format(lib="timm 1.0.31"),
           "preprocessing: timm's default config (mean = std = 0.5 on [0, 1]), which slim-inception computes"),
))
register(ResNet(
    name="timm/resnetv2_50x1_bit", native="torch",
    description="timm resnetv2_50x1_bit (BiT-M R50x1): resnetv2_50 with GroupNorm (32 groups, eps 1e-5), "
                "weight-standardised convs (StdConv2d eps 1e-8) and a zero-padded max-pool ('fixed' stem)",
    **_V2_TORCH_STYLE, head="conv", norm="group", norm_groups=32, weight_std=True, ws_epsilon=1e-8,
    pool_pad_value="zero", reference="timm.models.resnetv2_50x1_bit", preprocessing="slim-inception",
    notes=(_BUILT.format(lib="timm 1.0.31"),
           "preprocessing: timm's BiT config (mean = std = 0.5 on [0, 1]), which slim-inception computes"),
))
_HF_RESNET = dict(  # transformers' ResNetConfig() defaults: torchvision's ResNet-50 (v1.5)
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
    stride_unit="first", stride_conv=2, projection="channels_or_stride", shortcut_norm=True,
    conv_bias="none", conv_padding="symmetric", bn_epsilon=1e-5, preprocessing="torchvision",
)
# transformers' ResNetForImageClassification(ResNetConfig()) is torchvision's ResNet-50 v1.5 (stride on the
# 3x3, downsample_in_bottleneck=False, Flatten + Linear classifier) in Hugging Face's names: one network, so
# hf/resnet-50 is its name in that dialect, not a second description (equiv.dialects; 1000 classes, as
# microsoft/resnet-50).
alias("hf/resnet-50", "torchvision/resnet50", "hf")
register(ResNet(
    name="hf/resnet-50-features", native="torch",
    description="transformers ResNetModel(ResNetConfig()): the same network without a head; its last tap "
                "is the pooler's output (pooler_output, 2048 features)",
    **_HF_RESNET, head="features", num_classes=0, reference="transformers.ResNetModel",
    notes=(_BUILT.format(lib="transformers 5.24.0"),),
))
_KERAS_HUB = ("keras-hub 0.32's ResNetBackbone with ResNetImageClassifier's head (GlobalAveragePooling2D "
              "'pooler' + Dense 'predictions', no activation)")
_KERAS_HUB_NOTE = ("built by keras-hub 0.32.0 where it imports (the `hub` extra, pinned in constraints.txt), "
                   "else by equiv's generic Keras model, in keras-hub's layer names")
register(ResNet(
    name="keras_hub/resnet_50", native="keras",
    description=f"{_KERAS_HUB}: ResNet-50 v1.5 (stride on the 3x3, no conv bias, eps 1e-5), "
                "projection in every stage's first unit, zero-padded max-pool",
    block="bottleneck", depths=(3, 4, 6, 3), widths=_WIDTHS, strides=(1, 2, 2, 2), preact=False,
    stride_unit="first", stride_conv=2, projection="first_unit", shortcut_norm=True, conv_bias="none",
    conv_padding="symmetric", bn_epsilon=1e-5, pool_pad_value="zero",
    reference="keras_hub.models.ResNetBackbone.resnet_50", preprocessing="torchvision", notes=(_KERAS_HUB_NOTE,),
))
register(ResNet(
    name="keras_hub/resnet_v2_50", native="keras",
    description=f"{_KERAS_HUB}: torch-style pre-activation ResNet-50 (use_pre_activation=True), -inf "
                "max-pool padding",
    **_V2_TORCH_STYLE, reference="keras_hub.models.ResNetBackbone.resnet_v2_50", preprocessing="torchvision",
    notes=(_KERAS_HUB_NOTE,),
))
