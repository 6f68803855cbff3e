"""lugha.runtimes: torch-free inference on a bundle (ONNX Runtime, LiteRT, tflite-runtime).

    from lugha.runtimes import open_bundle, EmbeddingIndex
    bundle = open_bundle("bundles/lite0-e5", backend="onnxruntime", precision="int8", threads=2)
    img = bundle.embed_image(["photo.jpg"])          # [1, D] float32, L2-normalised
    bundle.classify(image="photo.jpg", lang="yo")    # [(label, score), ...]

Never imports torch: a test imports this package with ``sys.modules["torch"] = None``. Engines are
imported when a backend is opened, so importing this package costs only numpy.
"""
from lugha.runtimes.backends import (BACKENDS, BackendNotInstalledError, GraphInputError, GraphNotInBundleError, installed_backends,
                       is_installed)
from lugha.runtimes.bundle import Bundle, LabelPackError, open_bundle
from lugha.runtimes.index import EmbeddingIndex, l2_normalize

__all__ = ["open_bundle", "Bundle", "EmbeddingIndex", "l2_normalize", "BACKENDS", "installed_backends",
           "is_installed", "BackendNotInstalledError", "GraphNotInBundleError", "GraphInputError",
           "LabelPackError"]
