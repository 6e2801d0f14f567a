"""Large language models: Llama-family model, quantized GGUF weights, tokenizer, chat templates, sampling and generation."""
