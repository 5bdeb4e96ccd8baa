"""The Ollama Modelfile carries the chat template's default system prompt (SYSTEM)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunesmith.engine import paths
from tunesmith.engine.gguf.modelfile import write_modelfile


@pytest.fixture
def demo_tok():
    return AutoTokenizer.from_pretrained(str(paths.demo_model_dir()))


def test_default_system_prompt_becomes_system(demo_tok, tmp_path):
    gguf = tmp_path / "demo-F16.gguf"
    gguf.write_bytes(b"")
    text = write_modelfile(gguf, paths.demo_model_dir(), tokenizer=demo_tok).read_text()
    # the demo template (Qwen's) adds "You are a helpful assistant." when a chat has no system turn;
    # Ollama's Go template would not, so the Modelfile must send it
    assert 'SYSTEM """You are a helpful assistant."""' in text
    assert "Chat format: chatml" in text


def test_no_system_line_when_the_template_has_no_default(demo_tok, tmp_path):
    demo_tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    gguf = tmp_path / "plain-F16.gguf"
    gguf.write_bytes(b"")
    text = write_modelfile(gguf, paths.demo_model_dir(), tokenizer=demo_tok).read_text()
    assert "Chat format: chatml" in text and "SYSTEM" not in text
