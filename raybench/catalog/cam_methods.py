"""The CAM methods, torch-free: names, whether each is exact, and where its code lives.

Spec validation reads the names from here before torch is imported; :mod:`raybench.cam.methods`
holds the functions (imported when a map is computed). ``raybench.cam`` re-exports the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from raybench.models.table import CNNX_CAM_METHOD
from raybench.registry import Registry, load_ref


@dataclass(frozen=True)
class CamMethod:
    """A registered CAM method; ``exact`` methods satisfy the sum identity.

    Attributes:
        name: Registry key (``cam.method``, and a model table entry's ``cam_method``).
        exact: ``logit = sum(map) * scale + offset`` holds.
        function: ``module:function`` computing a batch
            (``fn(model, spec, x, classes) -> CamBatch``).
        description: One line for listings.
    """

    name: str
    exact: bool
    function: str
    description: str

    def load(self) -> Callable[..., Any]:
        """The method's function, imported now (it imports torch)."""
        fn: Callable[..., Any] = load_ref(self.function)
        return fn


METHODS: Registry[CamMethod] = Registry("CAM method")
for _method in (
        CamMethod("cam", True, "raybench.cam.methods:cam_batch",
                  "CAM (Zhou et al. 2016), GAP + linear head"),
        CamMethod(CNNX_CAM_METHOD, True, "raybench.cam.methods:cnnx_batch",
                  "CNN-X per-position contribution map"),
        CamMethod("gradcam", False, "raybench.cam.methods:gradcam_batch",
                  "Grad-CAM (Selvaraju et al. 2017), any model")):
    METHODS.register(_method.name, _method)
