"""Chat with an exported GGUF file through llama.cpp: the Chat tab lists it and the reply streams."""

from __future__ import annotations

import pytest

from tunesmith.engine import infer, paths
from tunesmith.engine.gguf.export import export_gguf
from tunesmith.studio import chat_tab
from tunesmith.studio.confine import Confinement

pytest.importorskip("llama_cpp", reason="llama-cpp-python (the gguf extra) is not installed")


@pytest.fixture
def exported_gguf(fresh_home):
    """The demo model written as an F16 GGUF where an export of run 'some-run' would put it."""
    out = paths.exports_dir() / "some-run" / "gguf"
    (result,) = export_gguf(paths.demo_model_dir(), out, ["f16"], check=False, name="demo")
    yield str(result.path)
    infer.forget()


def test_the_chat_tab_offers_and_streams_an_exported_gguf(exported_gguf):
    choices = chat_tab.target_choices()
    assert ("GGUF: some-run · demo-F16.gguf", exported_gguf) in choices, choices
    Confinement().check_chat_target(exported_gguf)  # the studio may read what exports wrote
    history = [{"role": "user", "content": "What is the capital of France?"}]
    shown = [m[-1]["content"] for m in chat_tab.stream_reply(exported_gguf, history, 24, 0.0)]
    lengths = {len(c) for c in shown if c != "…"}
    assert len(lengths) >= 2, shown  # it streamed, piece by piece
    reply = shown[-1]
    assert reply.strip() and reply != "(the model replied with nothing)"
    # Greedy decoding: the same question gets the same answer, from the cached model.
    again = list(chat_tab.stream_reply(exported_gguf, history, 24, 0.0))[-1][-1]["content"]
    assert again == reply


def test_the_cli_chats_with_the_same_file(exported_gguf, capsys):
    from tunesmith.cli.main import main

    assert main(["chat", exported_gguf, "-m", "What is the capital of France?", "--max-new-tokens", "16"]) == 0
    assert capsys.readouterr().out.strip()
