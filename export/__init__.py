"""lugha.export: ONNX / TFLite export, quantization, parity and accuracy gates, bundle packing
(needs the ``[export]`` extra). Not available yet: see the export issue."""
