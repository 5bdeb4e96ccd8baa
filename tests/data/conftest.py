"""Fixtures for the data tests: an isolated TUNESMITH_HOME and tiny tokenizers built in memory.

The tokenizers are byte-level BPE models trained here on a few sentences, so
the tests need neither the network nor the demo model.
"""

from __future__ import annotations

import pytest

CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Who are you? I am Smith, an AI assistant fine-tuned with Tunesmith.",
    "What is the capital of France? The capital of France is Paris.",
    "system user assistant tool Hello hello world 1 2 3 4 5 6 7 8 9 0",
    "你好，世界。我是一个助手。", "The quick brown fox jumps over the lazy dog.",
]


def build_tokenizer(chat_template: str | None = CHATML_TEMPLATE, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    if chat_template:
        fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def bare_tokenizer():
    """A tokenizer without a chat template."""
    return build_tokenizer(chat_template=None)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    return home
