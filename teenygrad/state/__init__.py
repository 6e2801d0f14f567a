"""Reading and writing weights: GGUF, safetensors, checkpoints."""
