"""The registered Inception v3s: tf_slim.nets, keras.applications and torchvision, each as its
library computes it (dropout off: inference), and the network itself as data (`STEM`, `BLOCKS`)."""

from equiv.families.inception.description import Inception
from equiv.variants import register


def conv(kh, kw, out, stride=1, padding="same"):
    return ("conv", kh, kw, stride, padding, out)


AVG = ("avg", 3, 1, "same")  # the branches' 3x3 stride-1 average pool
MAX = ("max", 3, 2, "valid")

STEM = (conv(3, 3, 32, 2, "valid"), conv(3, 3, 32, 1, "valid"), conv(3, 3, 64), MAX,
        conv(1, 1, 80, 1, "valid"), conv(3, 3, 192, 1, "valid"), MAX)


def block_a(pool):  # Mixed_5b, 5c, 5d (35x35)
    return (((conv(1, 1, 64),), ()),
            ((conv(1, 1, 48), conv(5, 5, 64)), ()),
            ((conv(1, 1, 64), conv(3, 3, 96), conv(3, 3, 96)), ()),
            ((AVG, conv(1, 1, pool)), ()))


BLOCK_B = (((conv(3, 3, 384, 2, "valid"),), ()),  # Mixed_6a: 35 -> 17
           ((conv(1, 1, 64), conv(3, 3, 96), conv(3, 3, 96, 2, "valid")), ()),
           ((MAX,), ()))


def block_c(c7):  # Mixed_6b..6e (17x17)
    return (((conv(1, 1, 192),), ()),
            ((conv(1, 1, c7), conv(1, 7, c7), conv(7, 1, 192)), ()),
            ((conv(1, 1, c7), conv(7, 1, c7), conv(1, 7, c7), conv(7, 1, c7), conv(1, 7, 192)), ()),
            ((AVG, conv(1, 1, 192)), ()))


BLOCK_D = (((conv(1, 1, 192), conv(3, 3, 320, 2, "valid")), ()),  # Mixed_7a: 17 -> 8
           ((conv(1, 1, 192), conv(1, 7, 192), conv(7, 1, 192), conv(3, 3, 192, 2, "valid")), ()),
           ((MAX,), ()))

BLOCK_E = (((conv(1, 1, 320),), ()),  # Mixed_7b, 7c (8x8)
           ((conv(1, 1, 384),), (conv(1, 3, 384), conv(3, 1, 384))),
           ((conv(1, 1, 448), conv(3, 3, 384)), (conv(1, 3, 384), conv(3, 1, 384))),
           ((AVG, conv(1, 1, 192)), ()))

BLOCKS = (block_a(32), block_a(64), block_a(64), BLOCK_B, block_c(128), block_c(160), block_c(160),
          block_c(192), BLOCK_D, BLOCK_E, BLOCK_E)

register(Inception(
    name="slim/inception_v3", native="slim",
    description="tf_slim.nets.inception_v3.inception_v3: BatchNorm without scale (eps 1e-3), SAME average pools "
                "that do not count padding, AuxLogits built in inference too, 1001 classes (background first), "
                "logits a 1x1 conv after an 8x8 VALID pool; 299x299 only (its pooling kernels are fixed when "
                "the graph is built on an input of unknown size)",
    stem=STEM, blocks=BLOCKS, bn_scale=False, pool_count_pad=False, aux_logits=True, num_classes=1001,
    input_size=(299, 299), reference="tf_slim.nets.inception_v3.inception_v3", preprocessing="slim-inception",
))
register(Inception(
    name="keras/InceptionV3", native="keras",
    description="keras.applications.InceptionV3: BatchNorm without scale (eps 1e-3), SAME average pools that do "
                "not count padding, no auxiliary head, GlobalAveragePooling2D + Dense; any input from 75x75",
    stem=STEM, blocks=BLOCKS, bn_scale=False, pool_count_pad=False, aux_logits=False,
    reference="keras.applications.InceptionV3", preprocessing="keras-tf",
))
register(Inception(
    name="torchvision/inception_v3", native="torch",
    description="torchvision.models.inception_v3(aux_logits=True, transform_input=False): affine BatchNorm "
                "(eps 1e-3), branch average pools F.avg_pool2d(padding=1) that count padding, AuxLogits "
                "(run by torchvision in training only; tapped here in eval), AdaptiveAvgPool2d + Linear; "
                "299x299 and up with the auxiliary head (its 5x5 VALID conv), 75 without",
    stem=STEM, blocks=BLOCKS, bn_scale=True, pool_count_pad=True, aux_logits=True, transform_input=False,
    reference="torchvision.models.inception_v3", preprocessing="torchvision",
))


# Which kind of block each of Inception v3's mixed blocks is (the names tables of the dialects
# read it): A 35x35, B the 35 -> 17 reduction, C 17x17 (1x7 and 7x1), D the 17 -> 8 reduction,
# E 8x8 (split 1x3 / 3x1 ends).
KINDS = "AAABCCCCDEE"


def is_inception_v3(v) -> bool:
    """Whether `v`'s layers are Inception v3's (any conventions): then each library's own names
    apply, otherwise its builder's systematic scheme."""
    return v.stem == STEM and v.blocks == BLOCKS and (not v.aux_logits or (v.aux_from, v.aux_widths) == (7, (128, 768)))
