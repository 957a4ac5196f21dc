"""Models as libraries see them: where base models come from and how they are stored once, loaded once per
process, fine-tuned (transformers' Trainer), batched across LoRA adapters, and called over an
OpenAI-compatible API."""
