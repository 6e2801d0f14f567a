"""LLM support: quantized GGUF weights (quant.py); the model, tokenizer and generation live beside it."""
