"""Ollama Modelfile next to a GGUF: FROM, TEMPLATE (Go template), SYSTEM, stop tokens, default PARAMETERs.

Ollama templates are Go text/template, HF chat templates are Jinja; there is no general
translation. We recognise the chat format by rendering the HF template on a probe conversation and
comparing it with what each known format (ChatML, Llama 3, Gemma, Mistral [INST]) produces for
the same messages. On a match we write that format's Go template; otherwise we write no TEMPLATE
and say so in the file. Ollama does not run the Jinja template stored in the GGUF: without a
TEMPLATE it guesses one of its own built-in templates from it, or sends the bare prompt.

Many chat templates insert a default system prompt when the conversation has none (Qwen's
"You are a helpful assistant."); a Go template only renders the messages it is given, so that
default becomes the Modelfile's SYSTEM line, and Ollama sends what the model was trained on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChatFormat:
    name: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    system: tuple[str, str] | None  # None: the system text is put before the first user turn
    stops: tuple[str, ...]
    system_join: str = "\n\n"

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """What the Go template below renders, in Python (for matching against the HF template)."""
        out, pending = [], ""
        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            role, content = m["role"], m["content"]
            if role == "system":
                if self.system is None:
                    pending = content
                else:
                    out.append(self.system[0] + content + self.system[1])
            elif role == "user":
                text = (pending + self.system_join + content) if pending else content
                pending = ""
                out.append(self.user[0] + text + self.user[1])
            elif role == "assistant":
                out.append(self.assistant[0] + content + ("" if last else self.assistant[1]))
            if last and role != "assistant" and add_generation_prompt:
                out.append(self.assistant[0])
        return "".join(out)

    def go_template(self) -> str:
        q = _go_literal
        sys_branch = (
            f'{{{{- if eq .Role "system" }}}}{q(self.system[0])}{{{{ .Content }}}}{q(self.system[1])}'
            if self.system is not None
            else '{{- if eq .Role "system" }}{{- $system = .Content }}'
        )
        user_content = (
            "{{ .Content }}"
            if self.system is not None
            else f"{{{{ if $system }}}}{{{{ $system }}}}{q(self.system_join)}{{{{ $system = \"\" }}}}{{{{ end }}}}{{{{ .Content }}}}"
        )
        return (
            '{{- $system := "" }}\n'
            "{{- range $i, $_ := .Messages }}\n"
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
            f"{sys_branch}\n"
            f'{{{{- else if eq .Role "user" }}}}{q(self.user[0])}{user_content}{q(self.user[1])}\n'
            f'{{{{- else if eq .Role "assistant" }}}}{q(self.assistant[0])}{{{{ .Content }}}}'
            f"{{{{ if not $last }}}}{q(self.assistant[1])}{{{{ end }}}}\n"
            "{{- end }}\n"
            f'{{{{- if and $last (ne .Role "assistant") }}}}{q(self.assistant[0])}{{{{ end }}}}\n'
            "{{- end }}"
        )


def _go_literal(s: str) -> str:
    """Verbatim text. Newlines become {{ "\\n" }} actions: `{{-` would trim a literal newline."""
    return s.replace("\n", '{{ "\\n" }}')


FORMATS: tuple[ChatFormat, ...] = (
    ChatFormat("chatml", ("<|im_start|>user\n", "<|im_end|>\n"), ("<|im_start|>assistant\n", "<|im_end|>\n"),
               ("<|im_start|>system\n", "<|im_end|>\n"), ("<|im_start|>", "<|im_end|>")),
    ChatFormat("llama3", ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
               ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
               ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"),
               ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ChatFormat("gemma", ("<start_of_turn>user\n", "<end_of_turn>\n"), ("<start_of_turn>model\n", "<end_of_turn>\n"),
               None, ("<end_of_turn>",)),
    ChatFormat("mistral", ("[INST] ", " [/INST]"), ("", "</s>"), None, ("[INST]", "[/INST]")),
)

_PROBE_SYS = "You are terse."
_PROBE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Name a colour"},
]


def detect_chat_format(tokenizer) -> ChatFormat | None:
    """The known format whose rendering equals the HF template's, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    specials = [t for t in (tokenizer.bos_token,) if t]
    for with_system in (True, False):
        msgs = ([{"role": "system", "content": _PROBE_SYS}] if with_system else []) + _PROBE
        try:
            hf = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception:
            continue  # e.g. Gemma 1/2 templates refuse a system role
        if not isinstance(hf, str):
            continue
        for s in specials:  # BOS is added by llama.cpp, not by the Ollama template
            if hf.startswith(s):
                hf = hf[len(s):]
        for fmt in FORMATS:
            if fmt.render(msgs) == hf.lstrip():
                return fmt
    return None


_PROBE_USER = "Hi there"


def default_system_prompt(tokenizer, fmt: ChatFormat) -> str | None:
    """The system text the HF template inserts when a conversation has no system message, or None.

    Rendered on a one-turn conversation and read back through the matched format's system
    markers (or, for formats without a system role, as the text before the user's words)."""
    try:
        hf = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE_USER}], tokenize=False,
                                           add_generation_prompt=True)
    except Exception:
        return None
    if not isinstance(hf, str):
        return None
    bos = tokenizer.bos_token
    if bos and hf.startswith(bos):
        hf = hf[len(bos):]
    hf = hf.lstrip()
    if fmt.system is not None:
        start, end = fmt.system
        if not hf.startswith(start):
            return None
        body = hf[len(start):]
        cut = body.find(end)
        return body[:cut] if cut > 0 else None
    head = fmt.user[0]
    if not hf.startswith(head):
        return None
    body = hf[len(head):]
    cut = body.find(fmt.system_join + _PROBE_USER)
    return body[:cut] if cut > 0 else None


def _default_parameters(model_dir: Path, context_length: int | None) -> list[tuple[str, object]]:
    gen: dict = {}
    path = Path(model_dir) / "generation_config.json"
    if path.exists():
        gen = json.loads(path.read_text(encoding="utf-8"))
    # do_sample=False in generation_config.json means greedy decoding: temperature 0 in Ollama
    greedy = gen.get("do_sample") is False
    params: list[tuple[str, object]] = [("temperature", 0 if greedy else gen.get("temperature", 0.7))]
    if not greedy:
        params.append(("top_p", gen.get("top_p", 0.9)))
    if gen.get("top_k") and not greedy:
        params.append(("top_k", gen["top_k"]))
    if gen.get("repetition_penalty"):
        params.append(("repeat_penalty", gen["repetition_penalty"]))
    # 4096 is Ollama-friendly on a laptop; larger contexts cost KV-cache memory per token
    params.append(("num_ctx", min(context_length or 4096, 4096)))
    return params


def _modelfile_string(text: str) -> str:
    """A Modelfile argument: triple-quoted (newlines and quotes kept as they are)."""
    if '"""' in text:
        text = text.replace('"""', '\\"\\"\\"')
    return f'"""{text}"""'


def ollama_name(text: str) -> str:
    """A valid Ollama model name: lowercase letters, digits, '.', '_', '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name or "tunesmith-model"


def ollama_create_command(modelfile: Path, name: str | None = None) -> str:
    modelfile = Path(modelfile)
    name = ollama_name(name or modelfile.stem)
    return f'ollama create {name} -f "{modelfile.resolve()}"'


def write_modelfile(
    gguf_path: Path,
    model_dir: Path,
    *,
    stop_tokens: list[str] | None = None,
    context_length: int | None = None,
    name: str | None = None,
    tokenizer=None,
) -> Path:
    """Write <gguf stem>.Modelfile next to gguf_path; return its path.

    model_dir is the HF folder whose tokenizer (chat template, eos) and generation_config.json
    give the template, stops and defaults (pass `tokenizer` when it is already loaded). The file's
    first lines hold the `ollama create` command.
    """
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path)
    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(model_dir))
    fmt = detect_chat_format(tok)
    stops: list[str] = []
    for s in [*(fmt.stops if fmt else ()), *(stop_tokens or []), tok.eos_token]:
        if s and s not in stops:
            stops.append(s)
    path = gguf_path.with_suffix(".Modelfile")
    cmd = ollama_create_command(path, name or gguf_path.stem)
    lines = [
        f"# Ollama Modelfile for {gguf_path.name}, written by Tunesmith.",
        f"# Use it:  {cmd}",
        f"FROM ./{gguf_path.name}",
        "",
    ]
    if fmt is not None:
        lines += [f"# Chat format: {fmt.name} (matched against the model's chat template)", f'TEMPLATE """{fmt.go_template()}"""', ""]
        system = default_system_prompt(tok, fmt)
        if system:
            lines += ["# The chat template's default system prompt (used when a chat sends none), as in training",
                      f"SYSTEM {_modelfile_string(system)}", ""]
    else:
        lines += ["# No TEMPLATE: the chat template is not one we can translate to Ollama's Go templates.",
                  "# Ollama does not run the template stored in the GGUF; it guesses one of its built-in",
                  "# templates from it or sends the bare prompt. Write a Go template here for the model's chat",
                  "# format, or serve the GGUF with llama.cpp (llama-server --jinja uses the stored template).", ""]
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in _default_parameters(model_dir, context_length)]
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
