"""Model architectures (plain torch or ultralytics) and ONNX graph pieces used by the builders."""
