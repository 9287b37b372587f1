"""`hotserve import`: an ONNX file made elsewhere -> checked graph -> a published repository version."""
