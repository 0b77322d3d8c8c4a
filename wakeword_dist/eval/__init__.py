"""Evaluation: clip metrics, streaming detector, DET / threshold choice, reports.

Submodules: ``metrics`` (clip level), ``detector`` (smoothing, lockout, FA/h; numpy only),
``det`` (DET curve, threshold choice, checkpoint pick, plot), ``report`` (model scoring,
report.json / det.png). Import from the submodules; this package imports nothing heavy so
the ONNX streaming runner stays torch-free.
"""
