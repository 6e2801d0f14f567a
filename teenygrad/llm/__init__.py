"""Large language models: Llama-family model, tokenizer, chat templates, sampling and generation."""
