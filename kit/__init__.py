"""lugha: image-text models for low-resource languages, from a workstation GPU to an offline phone.

This package (``kit/`` in the repository) is the contract shared by the GPU side and the device side:
configs, bundle manifest, dataset records, pre-processing, tokenizer spec, errors and reports. It imports only the
standard library, numpy and Pillow (``tokenizers`` lazily), so it runs on a Raspberry Pi.
"""
__version__ = "0.1.0"

from lugha.config import ModelConfig, get_model_config, list_models  # noqa: E402
from lugha.errors import BundleError, ConfigError, DataError, LughaError  # noqa: E402
from lugha.preprocess import PreprocessSpec, preprocess_image  # noqa: E402

__all__ = [
    "__version__", "ModelConfig", "get_model_config", "list_models", "PreprocessSpec",
    "preprocess_image", "LughaError", "ConfigError", "BundleError", "DataError",
]
