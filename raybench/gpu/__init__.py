"""GPU packing: the probe that measures each workload on a GPU of the cluster
(:mod:`raybench.gpu.probe`) and the shares that pack trials by that memory
(:mod:`raybench.gpu.packing`). Torch-free at import; the probe imports torch inside its task."""
