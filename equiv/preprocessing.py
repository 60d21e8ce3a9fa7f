"""The input a network's weights expect: each reference library's preprocessing of a raw image.

Weights are right only for the inputs their training fed them. keras.applications' ResNet50 was
trained on BGR images with the ImageNet mean subtracted, torchvision's on RGB scaled to [0, 1]
and normalised by the ImageNet mean and std, tf-slim's resnet_v1 on RGB with the VGG mean
subtracted and its resnet_v2 on RGB scaled to [-1, 1]. A port that is exact layer by layer still
predicts wrongly when the target is fed its own library's habitual preprocessing instead of the
one the weights were trained with. These records say which one each variant expects
(`Variant.preprocessing` names one), where each is stated, and how to compute it.

Each record maps a raw RGB uint8 image, NHWC, to the float32 network input:

    x = raw as float32; x = x[..., ::-1] if BGR; x = (x / divisor - mean) / std

with mean and std per channel in the record's channel order. `apply` computes exactly these
float32 operations, in the order the libraries do (keras.applications' numpy path, torchvision's
ToTensor + Normalize), so it gives their bits. Resizing and cropping are not part of a record:
equiv compares networks at the input size it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from equiv.errors import EquivError

_IMAGENET_MEAN_RGB_01 = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB_01 = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    name: str
    channel_order: Literal["RGB", "BGR"]  # of the network input (the raw image is RGB)
    divisor: float  # raw values are divided by this first (255: to [0, 1]; 1: kept 0-255)
    mean: tuple[float, float, float]  # then subtracted, per channel in channel_order
    std: tuple[float, float, float]  # then divided by, per channel in channel_order
    source: str  # where the convention is stated: the library function, or its documentation
    function: str = ""  # the library's own function that computes it, if one ships in a pip package

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """The network input (float32 NHWC) for `raw`, a uint8 RGB NHWC batch."""
        raw = check_raw(raw)
        x = raw.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = x / np.float32(self.divisor)
        x = x - np.asarray(self.mean, np.float32)
        x = x / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def formula(self) -> str:
        """The transform as an expression of x, the RGB image (0-255) as float32, channels last."""
        f = "x[..., ::-1]" if self.channel_order == "BGR" else "x"
        if self.divisor != 1:
            f = f"{f} / {_num(self.divisor)}"
        if any(self.mean):
            f = f"{f} - {_vec(self.mean)}"
        if any(s != 1 for s in self.std):
            f = f"({f}) / {_vec(self.std)}"
        return f

    def describe(self) -> str:
        """One line: name, channel order and formula."""
        if self.name == "none":
            return "none: the input as given (x unchanged)"
        return f"{self.name}: {self.channel_order}, {self.formula()}"

    def same_as(self, other: Preprocessing) -> bool:
        """Whether the two compute the same input up to float32 rounding (inception's (x/255-0.5)/0.5
        is keras' x/127.5-1), judged on every uint8 value."""
        if self.channel_order != other.channel_order:
            return False
        levels = np.arange(256, dtype=np.float64)[:, None]
        a = (levels / self.divisor - np.asarray(self.mean)) / np.asarray(self.std)
        b = (levels / other.divisor - np.asarray(other.mean)) / np.asarray(other.std)
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(a).max())))

    def to_json(self) -> dict:
        return {"name": self.name, "channel_order": self.channel_order, "divisor": self.divisor,
                "mean": list(self.mean), "std": list(self.std), "formula": self.formula(),
                "source": self.source, "function": self.function}


def _num(x: float) -> str:
    return f"{x:g}"


def _vec(v: tuple[float, ...]) -> str:
    if len(set(v)) == 1:
        return _num(v[0])
    return "[" + ", ".join(_num(x) for x in v) + "]"


_SLIM_MODELS = ("tensorflow/models' research/slim/preprocessing/, no pip package (tf_slim 1.1.0 ships the nets, "
                "not their preprocessing)")

RECORDS: dict[str, Preprocessing] = {p.name: p for p in (
    Preprocessing(
        "keras-caffe", "BGR", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
        source="keras.applications.resnet.preprocess_input: imagenet_utils.preprocess_input(mode='caffe'), "
               "RGB to BGR, ImageNet mean subtracted, no scaling",
        function="keras.applications.resnet.preprocess_input"),
    Preprocessing(
        "keras-tf", "RGB", 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0),
        source="keras.applications.resnet_v2.preprocess_input: imagenet_utils.preprocess_input(mode='tf'), "
               "x / 127.5 - 1",
        function="keras.applications.resnet_v2.preprocess_input"),
    Preprocessing(
        "torchvision", "RGB", 255.0, _IMAGENET_MEAN_RGB_01, _IMAGENET_STD_RGB_01,
        source="torchvision's ImageNet weights (ResNet*_Weights.IMAGENET1K_*.transforms: ImageClassification, "
               "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html): "
               "transforms.ToTensor (x / 255) then transforms.Normalize(mean=[0.485, 0.456, 0.406], "
               "std=[0.229, 0.224, 0.225])",
        function="torchvision.transforms.Normalize"),
    Preprocessing(
        "slim-vgg", "RGB", 1.0, (123.68, 116.78, 103.94), (1.0, 1.0, 1.0),
        source="vgg_preprocessing.preprocess_image (_mean_image_subtraction of _R_MEAN 123.68, _G_MEAN 116.78, "
               "_B_MEAN 103.94), which preprocessing_factory gives resnet_v1_50/101/152, in " + _SLIM_MODELS),
    Preprocessing(
        "slim-inception", "RGB", 255.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
        source="inception_preprocessing.preprocess_image (convert_image_dtype to [0, 1], subtract 0.5, "
               "multiply by 2), which slim's README names for its resnet_v2 checkpoints ('ResNet V2 models use "
               "Inception pre-processing'), in " + _SLIM_MODELS),
    Preprocessing(
        "none", "RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
        source="the seed programs feed their networks random values (slim: tf.random_uniform in [0, 1)) and "
               "preprocess nothing"),
)}

def get(name: str) -> Preprocessing:
    try:
        return RECORDS[name]
    except KeyError:
        raise EquivError(f"unknown preprocessing {name!r}; known: {', '.join(RECORDS)}") from None


def of_variant(v) -> Preprocessing:
    """What `v`'s weights expect: its reference library's preprocessing."""
    return get(v.preprocessing)


def of_framework(framework: str, v) -> Preprocessing:
    """What `framework`'s own library feeds a network like `v`: the variant's own convention in its
    native framework, else that library's habit for such a network (`preprocessing(v)` of the
    family's builder for that backend, equiv/families/<family>/<backend>.py)."""
    from equiv import families

    habit = getattr(families.builder(v, framework), "preprocessing", None) if framework != v.native else None
    return get(habit(v)) if habit else of_variant(v)


def check_raw(raw, channels: int = 3) -> np.ndarray:
    """`raw` as a uint8 NHWC array of `channels` channels, or EquivError naming what is wrong."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise EquivError(f"raw images must be uint8 (0-255), got {raw.dtype}")
    if raw.ndim != 4 or raw.shape[-1] != channels:
        raise EquivError(f"raw images must be NHWC with {channels} channels (RGB), got shape {raw.shape}")
    if 0 in raw.shape:
        raise EquivError(f"raw images: an empty array of shape {raw.shape}")
    return raw


def random_raw(batch: int, height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A seeded batch of uint8 RGB images (uniform over 0-255), NHWC."""
    rng = np.random.default_rng([seed, 2])
    return rng.integers(0, 256, size=(batch, height, width, channels), dtype=np.uint8)


def library_function(p: Preprocessing) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The library's own implementation of `p` as a function of a uint8 RGB NHWC batch, and what
    computes it; (None, why) where that library does not import or ships none (equiv's `apply`
    is then used, and the reason said)."""
    if p.name in ("keras-caffe", "keras-tf"):
        import importlib

        try:
            preprocess_input = importlib.import_module(p.function.rsplit(".", 1)[0]).preprocess_input
        except Exception as e:  # noqa: BLE001 - any import failure is a reason to say, not a crash
            return None, f"{p.function} does not import ({type(e).__name__}: {e})"

        def keras_fn(raw: np.ndarray) -> np.ndarray:
            out = preprocess_input(np.array(check_raw(raw)), data_format="channels_last")  # a copy: it works in place
            return np.ascontiguousarray(out, dtype=np.float32)
        return keras_fn, p.function
    if p.name == "torchvision":
        try:
            import torch
            from torchvision import transforms
        except Exception as e:  # noqa: BLE001 - any import failure is a reason to say, not a crash
            return None, f"torchvision does not import ({type(e).__name__}: {e})"
        normalize = transforms.Normalize(mean=list(p.mean), std=list(p.std))

        def torchvision_fn(raw: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.array(check_raw(raw))).permute(0, 3, 1, 2)  # NCHW, as ToTensor gives
            t = normalize(t.to(torch.float32).div(255))  # ToTensor: a ByteTensor .to(float).div(255)
            return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())
        return torchvision_fn, "torchvision.transforms.Normalize (after ToTensor's x / 255)"
    if p.name == "none":
        return p.apply, "nothing (the input as given)"
    return None, f"tf_slim ships no preprocessing; {p.name} is tensorflow/models' research/slim/preprocessing"


def port_advice(v, source_framework: str, target_framework: str | None) -> dict:
    """What a port of `v`'s weights means for their input: the convention they expect (their
    reference library's), the one the target's library feeds by habit, and, where those differ,
    the exact transform to feed the target. `target_framework` None: a file of no framework."""
    weights_expect = of_variant(v)
    if target_framework is None:
        return {"weights_expect": weights_expect.to_json(), "target_convention": None, "target_framework": None,
                "differ": False,
                "line": f"input: the weights of {v.name} expect {weights_expect.describe()}; the target belongs to "
                        f"no framework: whatever loads it must feed {weights_expect.formula()}"}
    habit = of_framework(target_framework, v)
    same = weights_expect.same_as(habit)
    whose = f"{target_framework}'" if target_framework.endswith("s") else f"{target_framework}'s"
    if same:
        line = (f"input: the weights of {v.name} expect {weights_expect.describe()}; {whose} own convention "
                f"for this network is {habit.name}, the same")
    else:
        line = (f"input: the weights of {v.name} (from {source_framework}) expect {weights_expect.describe()}; "
                f"{whose} own convention for this network is {habit.describe()}: feed the target "
                f"{weights_expect.formula()} (x: the RGB image, 0-255, as float32, channels last), not "
                f"{habit.function or habit.name}, or the predictions differ")
    return {"weights_expect": weights_expect.to_json(), "target_convention": habit.to_json(),
            "target_framework": target_framework, "differ": not same, "line": line}
