"""The registered VGGs: tf_slim.nets, keras.applications and torchvision, each as its library
computes it (dropout off: inference)."""

from equiv.families.vgg.description import VGG
from equiv.variants import register

_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)

for _d, _convs in _CONVS.items():
    register(VGG(
        name=f"slim/vgg_{_d}", native="slim",
        description=f"tf_slim.nets.vgg.vgg_{_d}: fc6 a 7x7 VALID conv on the last pool, fc7 and fc8 1x1 convs "
                    "(spatial_squeeze); 224x224 only",
        convs=_convs, widths=_WIDTHS, input_size=(224, 224), reference=f"tf_slim.nets.vgg.vgg_{_d}",
        preprocessing="slim-vgg",
    ))
for _d, _convs in _CONVS.items():
    register(VGG(
        name=f"keras/VGG{_d}", native="keras",
        description=f"keras.applications.VGG{_d}: Flatten (NHWC) + Dense fc1, fc2, predictions; 224x224 only",
        convs=_convs, widths=_WIDTHS, input_size=(224, 224), reference=f"keras.applications.VGG{_d}",
        preprocessing="keras-caffe",
    ))
for _name, _d, _bn in [("vgg16", 16, False), ("vgg19", 19, False), ("vgg16_bn", 16, True)]:
    register(VGG(
        name=f"torchvision/{_name}", native="torch",
        description=f"torchvision.models.{_name}: AdaptiveAvgPool2d((7, 7)), an NCHW flatten, Linear layers"
                    + (", BatchNorm (eps 1e-5) between each biased conv and its ReLU" if _bn else ""),
        convs=_CONVS[_d], widths=_WIDTHS, batch_norm=_bn, adaptive_pool=(7, 7),
        reference=f"torchvision.models.{_name}", preprocessing="torchvision",
    ))
