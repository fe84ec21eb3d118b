"""The model table: every architecture raybench can train, as one torch-free entry each.

Like timm's ``default_cfgs`` beside its architectures, each :class:`ModelSpec` holds what the
rest of raybench needs to know about a model (input size, normalisation, classifier head, CAM
layer and method, architecture options) with the defaults filled in, and names its builder by
a ``module:function`` path that is imported only when a model is built. Spec validation,
``raybench models`` and the CAM code read this table; nothing else lists models.

Adding a model is one ``_add(ModelSpec(...))`` line below (plus a builder function when its
source library is new); see the README's "Add a model" paragraph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from raybench import schema as S
from raybench.registry import Registry, load_ref

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

#: The builder of each source library (``builder(spec, num_classes, pretrained, image_size,
#: weights_dir, **options)``), used when an entry names none.
SOURCE_BUILDERS = {"torchvision": "raybench.models.zoo:build_torchvision",
                   "timm": "raybench.models.zoo:build_timm"}

#: The paper's own model, CNN-X: the baseline the report compares the others against.
PAPER_MODEL = "cnnx"
#: The model a spec trains when it names none: CNN-X, the paper's own (and the fastest).
DEFAULT_MODEL = PAPER_MODEL
#: The CAM method of CNN-X: its exact per-position contribution map (``raybench.cam.methods``).
CNNX_CAM_METHOD = "cnnx"
#: CNN-X pooling window (the paper's 2x2).
CNNX_POOL_WINDOW = 2
#: Smallest useful side of a CNN-X pooled map.
CNNX_MIN_POOLED = 2


@dataclass(frozen=True)
class ModelOption:
    """An architecture option a model declares; a spec sets it as ``model.options.<name>``.

    Attributes:
        name: Key under ``model.options`` (and the runs-table column that records it).
        default: The value used when the spec leaves it unset (the paper's).
        doc: One line for error messages and ``raybench models``.
        search: The values an Optuna sweep tries when the option is tuned (empty: not
            tunable); ``sweep.space.options.<name>`` overrides them.
        check: ``check(value, image_size)`` returns why a value cannot work, or ``None``.
    """

    name: str
    default: int
    doc: str
    search: tuple[int, ...] = ()
    check: Optional[Callable[[int, int], Optional[str]]] = None

    @property
    def tunable(self) -> bool:
        """Whether a sweep may vary it."""
        return bool(self.search)


@dataclass(frozen=True)
class ModelSpec:
    """Everything raybench knows about one architecture.

    Attributes:
        name: Table key (snake_case).
        paper_name: The name used in Majeed et al. 2020.
        source: ``torchvision``, ``timm`` or ``raybench``.
        arch: The architecture's name in its source library.
        cam_layer: Dotted module path of the CAM target layer (last conv block).
        head: Dotted module path of the classifier layer (a torchvision builder replaces it;
            a weights file's keys under it are ignored); timm models name theirs.
        cam_method: ``cam`` (GAP + linear head), ``gradcam`` (fully connected head) or ``cnnx``.
        cam_activation: A ``torch.nn.functional`` activation the architecture applies
            functionally between ``cam_layer`` and the pooling, where no module can be hooked
            (DenseNet's ``F.relu(features)``); the exact CAM applies it to the captured map.
        input_size: Default square input side (224, or 299 for the Inception family).
        min_input_size: Smallest input the architecture accepts (used by smoke tests).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        aux_heads: An Inception-style torchvision model with auxiliary heads (dropped).
        cam_tokens: Vision transformers: the prefix (class) tokens dropped before the last
            block's tokens are reshaped to the patch grid; ``None`` for convolutional maps.
        cam_note: Why the model has no CAMs, when ``cam_layer`` is empty (it still trains).
        options: Architecture options (``model.options.<name>``); tunable ones are what a
            sweep's search space may vary besides lr and batch size.
        builder: ``module:function`` of the builder; empty: the source's
            (:data:`SOURCE_BUILDERS`). It takes exactly the options the entry declares.
    """

    name: str
    paper_name: str
    source: str
    arch: str
    cam_layer: str
    head: str = ""
    cam_method: str = "cam"
    cam_activation: Optional[str] = None
    input_size: int = 224
    min_input_size: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    aux_heads: bool = False
    options: tuple[ModelOption, ...] = ()
    builder: str = ""
    cam_tokens: Optional[int] = None
    cam_note: str = ""

    @property
    def resolved(self) -> str:
        """``<source>.<arch>``: what the name builds (the runs table's ``model_resolved``)."""
        return f"{self.source}.{self.arch}"

    @property
    def tunables(self) -> tuple[str, ...]:
        """Names of the options a sweep may tune."""
        return tuple(o.name for o in self.options if o.tunable)

    def load_builder(self) -> Callable[..., Any]:
        """The builder function, imported now (it imports torch and the source library)."""
        fn: Callable[..., Any] = load_ref(self.builder or SOURCE_BUILDERS[self.source])
        return fn


def cnnx_pooled_size(image_size: int, stride: int) -> int:
    """Side of each CNN-X branch's pooled map for a square input (0 when empty)."""
    if image_size < CNNX_POOL_WINDOW:
        return 0
    return (image_size - CNNX_POOL_WINDOW) // stride + 1


def _cnnx_stride_fits(stride: int, image_size: int) -> Optional[str]:
    side = cnnx_pooled_size(image_size, stride)
    if side >= CNNX_MIN_POOLED:
        return None
    return (f"CNN-X stride {stride} on {image_size} px inputs leaves {side}x{side} feature maps; "
            "lower the stride or raise model.image_size")


MODELS: Registry[ModelSpec] = Registry(S.MODEL)


def _add(spec: ModelSpec) -> None:
    MODELS.register(spec.name, spec)
    for option in spec.options:  # each option is also a column of the runs table
        S.add_model_option(option.name)


_add(ModelSpec("alexnet", "AlexNet", "torchvision", "alexnet", "features.11", "classifier.6",
               cam_method="gradcam", min_input_size=63))
_add(ModelSpec("vgg16", "VGG16", "torchvision", "vgg16", "features.29", "classifier.6",
               cam_method="gradcam"))
_add(ModelSpec("vgg19", "VGG19", "torchvision", "vgg19", "features.35", "classifier.6",
               cam_method="gradcam"))
_add(ModelSpec("resnet18", "ResNet18", "torchvision", "resnet18", "layer4", "fc"))
_add(ModelSpec("resnet50", "ResNet50", "torchvision", "resnet50", "layer4", "fc"))
_add(ModelSpec("resnet101", "ResNet101", "torchvision", "resnet101", "layer4", "fc"))
_add(ModelSpec("googlenet", "GoogleNet", "torchvision", "googlenet", "inception5b", "fc",
               aux_heads=True))
_add(ModelSpec("inception_v3", "Inception-v3", "torchvision", "inception_v3", "Mixed_7c", "fc",
               input_size=299, min_input_size=75, aux_heads=True))
_add(ModelSpec("squeezenet", "SqueezeNet", "torchvision", "squeezenet1_1", "features",
               "classifier.1"))
_add(ModelSpec("inception_resnet_v2", "Inception-ResNet-v2", "timm", "inception_resnet_v2",
               "conv2d_7b", input_size=299, min_input_size=75, mean=INCEPTION_MEAN,
               std=INCEPTION_STD))
_add(ModelSpec("xception", "Xception", "timm", "legacy_xception", "act4", input_size=299,
               min_input_size=71, mean=INCEPTION_MEAN, std=INCEPTION_STD))
_add(ModelSpec("densenet201", "DenseNet201", "torchvision", "densenet201", "features",
               "classifier", cam_activation="relu"))
_add(ModelSpec(PAPER_MODEL, "CNN-X", "raybench", PAPER_MODEL, "pooled", "fc",
               cam_method=CNNX_CAM_METHOD, min_input_size=16, mean=INCEPTION_MEAN,
               std=INCEPTION_STD,
               builder="raybench.models.cnnx:build_cnnx",
               options=(ModelOption("stride", 3, "CNN-X pooling stride (the paper's 3)",
                                    search=(2, 3, 4), check=_cnnx_stride_fits),)))


#: Libraries whose models a spec names as ``<library>.<name>`` (``timm.convnext_tiny``).
LIBRARIES = ("timm", "torchvision")


def get_model_spec(name: str) -> ModelSpec:
    """The entry for ``name``: a table entry, or a library model's (``timm.convnext_tiny``,
    made by :mod:`raybench.models.generic`, which imports torch); unknown names raise
    ``ConfigError`` with a close match."""
    if name not in MODELS and str(name).partition(".")[0] in LIBRARIES:
        spec: ModelSpec = load_ref("raybench.models.generic:library_spec")(name)
        return spec
    return MODELS.get(name)
