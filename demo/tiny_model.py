"""The model in service for the demo's fine-tune: a tiny Llama, randomly initialised, with a
word-level tokenizer whose vocabulary is the corpus's words, built on the fly (nothing is
downloaded; the way tests/finetune/tiny_model.py builds the tests' model)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()

    split = pre_tokenizers.Whitespace()
    words = {w for text in texts for w, _ in split.pre_tokenize_str(text)}
    tokens = dict.fromkeys([*SPECIALS, ":", *ROLES, *sorted(words)])  # in order, once each
    backend = Tokenizer(
        models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # the gate scores whole descriptions, untruncated
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
