"""A tiny Llama, randomly initialised, with a word-level tokenizer whose vocabulary is the
given texts' words, built on the fly (nothing is downloaded): the model in service for the
demo's fine-tune, and the tests' model (tests/finetune/tiny_model.py)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
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


def build(folder: Path, texts: Iterable[str], hidden: int = 32, layers: int = 2) -> Path:
    """Save the model and its tokenizer (every word of `texts`) to `folder`."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    words = tokenizer(texts)
    # the gate scores whole descriptions, untruncated
    model(len(words), hidden, layers, max_positions=2048).save_pretrained(folder)
    words.save_pretrained(folder)
    return folder


def tokenizer(texts: Iterable[str]) -> Any:
    """A word-level tokenizer whose vocabulary is every word of `texts`, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = {w for text in texts for w, _ in split.pre_tokenize_str(text)}
    tokens = dict.fromkeys([*SPECIALS, ":", *ROLES, *sorted(words)])  # in order, once each
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    found = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    found.chat_template = CHAT_TEMPLATE
    return found


def model(vocab_size: int, hidden: int = 32, layers: int = 2, max_positions: int = 256) -> Any:
    """A small Llama, randomly initialised (the same weights for the same sizes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)
