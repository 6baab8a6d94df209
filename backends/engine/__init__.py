"""Built-in serving engine: a paged-KV, continuously batched Llama-family engine (see docs/engine.md).

Import `backends.engine.engine.LLMEngine` for the offline API; this package itself imports no torch.
"""
