"""Exporters: turn a training checkpoint into a served model version (ONNX + model.json).

Control path, offline: `hotserve export` -> `pipeline.export_checkpoint` -> the model
repository the server scans. Importing this package never imports torch or onnx.
"""
