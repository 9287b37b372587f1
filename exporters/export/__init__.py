"""`hotserve export`: a training checkpoint -> checked ONNX graph -> a published repository version."""
