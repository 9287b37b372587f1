"""Exporters: turn a model into a served version (ONNX + model.json) in the model repository.

Control path, offline. Two pipelines, each in its folder, end the same way:

- `export/`: `hotserve export`, a training checkpoint -> ONNX (`export.pipeline.export_checkpoint`);
- `imports/`: `hotserve import`, an ONNX file made elsewhere (`imports.pipeline.import_model`);
- `shared/`: what both use: the checks' defaults and parity, graph signatures, optimisation and
  int8/fp16, reference tables, `model.json` assembly, and publishing (the staged version opened
  by the server's own loader and warmed up, then renamed into place).

Importing this package never imports torch or onnx.
"""
