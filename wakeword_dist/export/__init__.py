"""Export: ``onnx_export`` (fp32 + int8 ONNX with parity checks, ONNX scoring adapter) and
``stream`` (torch-free streaming runner, ``python -m wakeword_dist.export.stream``).
Nothing is imported here so the runner never pulls in torch."""
