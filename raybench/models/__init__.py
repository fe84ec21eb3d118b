"""Model zoo: the paper's 12 ImageNet CNNs plus CNN-X, behind one registry."""
from raybench.models.registry import MODELS, ModelSpec, get_model_spec
from raybench.models.zoo import build_model, count_parameters, unwrap_model

__all__ = ["MODELS", "ModelSpec", "build_model", "count_parameters", "get_model_spec", "unwrap_model"]
