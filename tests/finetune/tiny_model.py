"""A tiny causal LM and a word-level tokenizer built on the fly (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIALS = ["<pad>", "<unk>", "<eos>"]
ROLES = ["system", "user", "assistant", "tool"]
# Each message is `role : content <eos>`; a generation prompt is the `assistant :` that opens the
# reply, so a prompt's tokens are a prefix of the prompt's and the reply's together.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }} : {{ message['content'] }} {{ eos_token }} "
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def texts_of(value: Any) -> Iterable[str]:
    """Every string inside a dataset row (strings, message lists, nested dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts_of(item)


def tokenizer_for(rows: list[dict[str, Any]]) -> Any:
    """A word-level tokenizer whose vocabulary is every word in the rows, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = {w for text in texts_of(rows) for w, _ in split.pre_tokenize_str(text)}
    tokens = dict.fromkeys([*SPECIALS, ":", *ROLES, *sorted(words)])  # in order, once each
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(vocab_size: int) -> Any:
    """A 2-layer Llama with hidden size 32, randomly initialised."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)
