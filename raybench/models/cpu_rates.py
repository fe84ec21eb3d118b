"""Measured CPU training rates of the paper's models: what :func:`raybench.predict.warn_if_long`
scales to the image size and cores of a run, so that a run of hours says so before it starts.

Plain PyTorch training on the 2-core development machine (:data:`CPU_CORES`), batch 8, 2
threads, 224 px unless stated (DESIGN.md section 7). A library backbone has no rate, hence no
estimate.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuRate:
    """Measured training images/s of a model on :data:`CPU_CORES` cores at ``size`` px.

    Evaluation (forward only) is taken as 3x as fast: a training step is a forward pass plus
    a backward pass of about twice its cost.
    """

    images_per_s: float
    size: int = 224


CPU_RATES: dict[str, CpuRate] = {
    "cnnx": CpuRate(33.7), "squeezenet": CpuRate(33.5), "resnet18": CpuRate(14.1),
    "googlenet": CpuRate(10.5), "resnet50": CpuRate(5.1), "alexnet": CpuRate(4.8),
    "inception_v3": CpuRate(3.9, 299), "densenet201": CpuRate(3.1), "resnet101": CpuRate(3.0),
    "xception": CpuRate(1.7, 299), "inception_resnet_v2": CpuRate(1.7, 299),
    "vgg19": CpuRate(1.2), "vgg16": CpuRate(0.9)}
#: The cores the rates were measured on.
CPU_CORES = 2
