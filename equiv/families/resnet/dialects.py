"""The ResNet family's public naming dialects: which library code computes a description, by name.

A dialect is chosen apart from the variant (`Variant.in_dialect`, `dialect=` in the API, `--dialect`
on the command line): torchvision/resnet50 "in hf" is the same network with transformers'
`ResNetForImageClassification` as its reference and Hugging Face's names in its files and modules.
The names themselves are the builders' tables (`DIALECTS` in slim.py, keras.py, torch.py, keyed by the
names below); this module only says, per dialect, its backend, its library and which of that
library's code computes a description (or that none does):

* a library with a registered zoo computes a description when one of its registered variants has
  the same conventions (the head size aside), or one that computes the same function (`_same_function`);
* transformers' ResNet is configured, not listed: `_hf_reference` says which descriptions its
  `ResNetConfig` expresses.

`names_only` dialects are the schemes equiv's own builders use for any description (torchvision's,
keras.applications', tf_slim.nets'): a description no library ships is still written in them, built
by equiv (reference ""). The others refuse what their library cannot compute, naming why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from equiv.errors import EquivError
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet
from equiv.variants import get


@dataclass(frozen=True)
class Spelling:
    name: str  # the public name: --dialect NAME
    backend: str  # the backend whose names it is (a key of equiv.frameworks.REGISTRY)
    library: str  # the prefix of the references it owns (Variant.reference)
    reference: Callable[[ResNet], str | None]  # the library's code computing a description, or None
    names_only: bool  # equiv's builders use its names for any description (else: refuse what it cannot compute)
    help: str
    # The library's own safetensors files hold its state_dict names and layout (transformers' model.safetensors,
    # timm's hub files), so equiv's safetensors files in this dialect do too; else canonical ones.
    safetensors: bool = False


def _zoo(prefix: str, rename: Callable[[str], str] | None = None, *, also: tuple[str, ...] = ()):
    """The reference of a registered variant of the library `prefix` (or of `also`'s libraries,
    renamed into this one) that computes the same function as a description. A library whose
    references name a backbone (keras-hub's ResNetBackbone) computes a headless description too."""
    def reference(v: ResNet) -> str | None:
        from equiv.families.resnet.description import BACKBONE
        from equiv.variants import all_variants

        for cand in all_variants():
            if not isinstance(cand, ResNet) or not cand.reference:
                continue
            if v.head == "none" and cand.reference.startswith(BACKBONE):
                cand = cand.replace(head="none", num_classes=0)
            own = cand.reference.startswith(prefix)
            if (own or cand.reference.startswith(also)) and _same_function(v, cand):
                return cand.reference if own or rename is None else rename(cand.reference)
        return None
    return reference


def _same_function(a: ResNet, b: ResNet) -> bool:
    """`a` and `b` compute the same function of the same canonical parameters (the head size aside):
    equal conventions, except two that give equal numbers where they differ here:
    * `projection` first_unit and channels_or_stride: where the same units have a projection;
    * `pool_pad_value` zero and -inf: where the max-pool's input has passed a ReLU (never negative);
    * `head` conv and dense: a 1x1 convolution of a global mean is a dense layer of it."""
    ca, cb = a.conventions(), b.conventions()
    differ = {k for k in ca if k != "num_classes" and ca[k] != cb[k]}
    if not differ:
        return True
    if not differ <= {"projection", "pool_pad_value", "head"}:
        return False
    if "head" in differ and ({ca["head"], cb["head"]} != {"conv", "dense"} or a.head_pool):
        return False  # a 1x1-conv head on a global mean is a dense layer
    if "projection" in differ:
        theirs = a.replace(projection=cb["projection"])
        if [bool(u.shortcut) for u in plan.units(a)] != [bool(u.shortcut) for u in plan.units(theirs)]:
            return False
    return "pool_pad_value" not in differ or plan.stem(a).relu


def _hf_reference(v: ResNet) -> str | None:
    """transformers' ResNetConfig expresses torchvision's plain ResNets (basic or bottleneck blocks of
    expansion 1 or 4, no groups, any depths and widths): ResNetForImageClassification with a dense
    head, ResNetModel without one."""
    template = get("torchvision/resnet50" if v.block == "bottleneck" else "torchvision/resnet18")
    if len(v.depths) != 4 or v.head not in ("dense", "conv", "features") or v.expansion != template.expansion:
        return None
    head = "features" if v.head == "features" else "dense"
    ours = template.replace(depths=v.depths, widths=v.widths, stem_width=v.stem_width, in_channels=v.in_channels,
                            num_classes=v.num_classes, head=head)
    if not _same_function(v, ours):
        return None
    return "transformers.ResNetForImageClassification" if head == "dense" else "transformers.ResNetModel"


def hf_config(v: ResNet) -> dict:
    """transformers' ResNetConfig arguments for a description `_hf_reference` accepts (config.json)."""
    return {"num_channels": v.in_channels, "embedding_size": v.stem_width,
            "hidden_sizes": [w * v.expansion for w in v.widths], "depths": list(v.depths),
            "layer_type": "bottleneck" if v.block == "bottleneck" else "basic", "hidden_act": "relu",
            "downsample_in_first_stage": False, "downsample_in_bottleneck": False,
            "num_labels": max(v.num_classes, 1)}


def companions(v: ResNet, filename: str) -> dict[str, str]:
    """transformers' `config.json` beside a `model.safetensors` in the hf dialect: the folder
    `ResNetForImageClassification.from_pretrained(folder)` loads with no network."""
    if v.dialect != "hf" or filename != "model.safetensors":
        return {}
    import json

    arch = v.reference.rsplit(".", 1)[1]
    text = json.dumps({"architectures": [arch], "model_type": "resnet", **hf_config(v)}, indent=2, sort_keys=True)
    if arch == "ResNetForImageClassification":  # the label maps on a line each: json's C encoder (an indent
        # makes json encode in Python, 50 ms for 1000 classes, a tenth of a ResNet-50 port)
        labels = {"id2label": {str(i): f"LABEL_{i}" for i in range(v.num_classes)},
                  "label2id": {f"LABEL_{i}": i for i in range(v.num_classes)}}
        text = text[: text.rindex("}")].rstrip() + "".join(f',\n  "{k}": {json.dumps(m)}' for k, m in labels.items())
        text += "\n}"
    return {"config.json": text + "\n"}


SPELLINGS: dict[str, Spelling] = {s.name: s for s in (
    Spelling("torchvision", "torch", "torchvision.", _zoo("torchvision."), True,
             "torchvision.models' names (conv1, layer1.0.conv1, downsample.0, fc); equiv's own torch scheme"),
    Spelling("timm", "torch", "timm.",
             _zoo("timm.", lambda ref: "timm.models.resnet." + ref.rsplit(".", 1)[1], also=("torchvision.",)),
             False, "timm's ResNet (torchvision's names, a deep stem's conv1.N) and ResNetV2 (stem.conv, "
             "stages.S.blocks.U, head.fc)", safetensors=True),
    Spelling("hf", "torch", "transformers.", _hf_reference, False,
             "Hugging Face transformers' ResNet (resnet.embedder..., resnet.encoder.stages.S.layers.U.layer.I, "
             "classifier.1)", safetensors=True),
    Spelling("keras-hub", "keras", "keras_hub.", _zoo("keras_hub."), False,
             "keras-hub's ResNetBackbone and ResNetImageClassifier (stack{s}_block{u}_{i}_conv, predictions)"),
    Spelling("keras", "keras", "keras.applications.", _zoo("keras.applications."), True,
             "keras.applications' layer names (conv2_block1_1_conv, predictions)"),
    Spelling("slim", "slim", "tf_slim.nets.", _zoo("tf_slim.nets."), True,
             "tf_slim.nets' variable names (resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights)"),
)}


def place(v: ResNet, name: str) -> ResNet:
    """`v` in dialect `name`: the library's reference where its code computes `v`, its backend as
    native; an EquivError naming what the library cannot express otherwise (names-only dialects: no
    reference, equiv builds it in those names)."""
    s = SPELLINGS[name]
    if v.dialect == name:
        return v
    if v.reference.startswith(s.library) and not v.dialect:
        return v  # its registered library's own names already
    from equiv.variants import aliases, names

    registered = get(v.name) if v.name in names() and v.name not in aliases() else None
    if registered is not None and registered.reference.startswith(s.library):  # back to its own library
        return v.replace(dialect="", native=registered.native, reference=registered.reference)
    ref = s.reference(v)
    if ref is None and not s.names_only:
        raise EquivError(f"{v.name} is not a network {s.library.rstrip('.')} computes ({_why(v, s)}); the "
                         f"{name} dialect names only what its library builds")
    return v.replace(dialect=name, native=s.backend, reference=ref or "")


def _why(v: ResNet, s: Spelling) -> str:
    if s.name == "hf":
        return "transformers' ResNetConfig has no groups, deep stem, pre-activation or other convention of it"
    return f"no registered {s.library.rstrip('.')} variant has its conventions"
