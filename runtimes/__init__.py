"""lugha.runtimes: torch-free inference on a bundle (ONNX Runtime, LiteRT).

Never imports torch: a test imports this package with ``sys.modules["torch"] = None``.
"""
