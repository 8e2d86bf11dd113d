"""Model files: presets, the GGUF reader, the GGUF / ONNX writers, the memory model, the model cache."""
