"""The chat format of a generative specialist: every prompt goes through the base model's chat template,
with the specialist's system prompt, in training, evaluation and serving alike."""

from __future__ import annotations

from typing import Any


def messages(system: str | None, prompt: str, shots: list[tuple[str, str]] | None = None) -> list[dict]:
    """The conversation: the system prompt, worked examples (few-shot) as earlier turns, then the prompt."""
    out = [{"role": "system", "content": system}] if system else []
    for question, answer in shots or []:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*out, {"role": "user", "content": prompt}]


def render(tokenizer: Any, conversation: list[dict]) -> str:
    """The prompt as text, ending where the assistant's answer starts (rendered, then tokenized: tokenizing in
    ``apply_chat_template`` gave an object ``generate`` rejected here)."""
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer: Any) -> str:
    """What closes an answer in this chat format (SmolLM2: ``<|im_end|>``)."""
    return tokenizer.eos_token or ""


def example(tokenizer: Any, system: str | None, prompt: str, response: str, max_length: int) -> dict:
    """One training example; the loss is on the response only: prompt tokens carry label -100."""
    head = tokenizer(render(tokenizer, messages(system, prompt)), add_special_tokens=False)["input_ids"]
    tail = tokenizer(response + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    ids = (head + tail)[:max_length]
    labels = ([-100] * len(head) + tail)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def token_counter(tokenizer: Any, system: str | None) -> Any:
    """(text, response) -> (prompt tokens with the template and system prompt, response tokens)."""

    def count(text: str, response: str) -> tuple[int, int]:
        prompt = render(tokenizer, messages(system, text))
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), len(
            tokenizer(response, add_special_tokens=False)["input_ids"]
        )

    return count


def clip(tokenizer: Any, prompt: str, max_tokens: int) -> str:
    """``prompt`` cut to its first ``max_tokens`` tokens (unchanged when it fits): a served prompt costs at
    most what the specialist was trained for."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])
