"""Hugging Face tokenizer -> GGUF vocabulary (tokens, types, scores, merges, specials).

Two tokenizer families are written, the two llama.cpp can reproduce exactly:

- byte-level BPE (GPT-2, Llama 3, Qwen 2/2.5/3, the demo model) -> `tokenizer.ggml.model = "gpt2"`.
  llama.cpp needs the name of its pre-tokenizer (the regex that cuts text into words before the
  merges run). We identify it by behaviour: the HF pre-tokenizer cuts a probe text, and the cut
  must equal, piece for piece, the cut of one of the reference patterns below. A tokenizer that
  matches none stops the export with an ExportError; writing a file with the wrong (or no)
  pre-tokenizer would load fine and tokenize some inputs differently, silently.
- SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B, Gemma 1/2/3), as tokenizer.json
  holds it -> `tokenizer.ggml.model = "llama"`. Scores come from the merge ranks (llama.cpp merges
  the highest-scoring pair first, HF the lowest-ranked merge first; score = -rank makes the two
  agree).

What it does not know: Unigram / WordPiece tokenizers, tokenizers with a normalizer other than
NFC, folders without tokenizer.json (a lone tokenizer.model or tiktoken file). Those raise
ExportError.
The definitive check is the tokenization comparison in fidelity.py (ids must be equal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.engine.errors import ExportError

# llama.cpp token types (llama.h: LLAMA_TOKEN_TYPE_*)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Reference pre-tokenizer patterns, as the HF tokenizer.json of each family writes them, keyed by
# the name llama.cpp's loader accepts (llama-vocab.cpp). Order matters only if two match.
PRE_TOKENIZERS: dict[str, str] = {
    "llama-bpe": (  # Llama 3 / 3.1 / 3.2: digits in groups of up to 3
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
    "qwen2": (  # Qwen 2 / 2.5 / 3: single digits
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
    "gpt-2": (  # GPT-2's ByteLevel(use_regex=True); the demo model
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    ),
}

# Text that separates the patterns above: case of contractions, digit grouping, newlines after
# punctuation, whitespace runs, letters after punctuation, marks, scripts without spaces.
PROBE = (
    "Hello world! I'M here, you're THERE; it's 1 12 123 1234 1234567 3.14159.\n"
    "  indented\tcode(x) == {\"k\": [1,2]}\n\n\nfoo_bar-baz --flag\r\n"
    "Ünïcödé façade, naïve café. Привет, мир! Γειά σου. مرحبا بالعالم. हिन्दी भाषा\n"
    "你好，世界。日本語のテキスト。한국어 텍스트. emoji 👋🏽 👨‍👩‍👧 ... ?!\n"
    "   trailing   \n DON'T 'quoted' 'S 2024-01-01 $100 #tag @user\t\t\n"
)

# End-of-turn markers of chat templates we know; the first one in the vocab becomes EOT.
EOT_CANDIDATES = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|eot|>")

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


@dataclass
class GgufVocab:
    """Everything the GGUF tokenizer.* keys need."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None  # llama.cpp pre-tokenizer name (BPE only)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None
    chat_template: str | None
    stop_tokens: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write_to(self, w: Any) -> None:
        """Add the tokenizer keys to a gguf.GGUFWriter."""
        w.add_tokenizer_model(self.model)
        if self.pre:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        if self.merges:
            w.add_token_merges(self.merges)
        for key_fn, value in (
            (w.add_bos_token_id, self.bos_id),
            (w.add_eos_token_id, self.eos_id),
            (w.add_eot_token_id, self.eot_id),
            (w.add_unk_token_id, self.unk_id),
            (w.add_pad_token_id, self.pad_id),
        ):
            if value is not None:
                key_fn(value)
        w.add_add_bos_token(self.add_bos)
        w.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            w.add_chat_template(self.chat_template)


# --------------------------------------------------------------------------- helpers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in order, to U+0100...
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_B2U = bytes_to_unicode()


def _byte_level(text: str) -> str:
    return "".join(_B2U[b] for b in text.encode("utf-8"))


def _regex_pieces(pattern: str, text: str) -> list[str]:
    """Cut text the way HF's Split(behavior="isolated") does: matches and the gaps between them."""
    import regex

    pieces: list[str] = []
    pos = 0
    for m in regex.finditer(pattern, text):
        if m.start() > pos:
            pieces.append(text[pos : m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


def portable_chat_template(template: str | None) -> str | None:
    """Drop HF-only `{% generation %}` tags (assistant masks); llama.cpp and Ollama reject them."""
    if not template:
        return None
    return _GENERATION_TAG.sub("", template)


def _load_hf_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # the message names the missing file or bad field
        raise ExportError(
            f"Cannot load the tokenizer in {model_dir}: {e}. The folder needs tokenizer.json "
            "and tokenizer_config.json, as save_pretrained writes them."
        ) from e


# --------------------------------------------------------------------------- identification


def identify_pre_tokenizer(backend) -> str:
    """Name llama.cpp's pre-tokenizer for a byte-level BPE `tokenizers.Tokenizer`, by behaviour.

    Raises ExportError when the cut of PROBE matches none of PRE_TOKENIZERS.
    """
    pre = backend.pre_tokenizer
    if pre is None:
        raise ExportError(
            "Unknown tokenizer: byte-level BPE without a pre-tokenizer; llama.cpp cannot reproduce it. "
            "Export as a merged model instead, or use a tokenizer of a supported family "
            f"({', '.join(PRE_TOKENIZERS)})."
        )
    pieces = pre.pre_tokenize_str(PROBE)
    cut = [PROBE[a:b] for _, (a, b) in pieces]
    # Each piece must be the plain byte-level image of its text: ByteLevel without prefix space.
    if "".join(cut) != PROBE or any(p != _byte_level(t) for (p, _), t in zip(pieces, cut)):
        raise ExportError(
            "Unknown tokenizer: its pre-tokenizer is not plain byte-level (it adds a prefix space or "
            "changes the text), which llama.cpp does not reproduce. Supported byte-level families: "
            f"{', '.join(PRE_TOKENIZERS)}."
        )
    for name, pattern in PRE_TOKENIZERS.items():
        if _regex_pieces(pattern, PROBE) == cut:
            return name
    raise ExportError(
        "Unknown tokenizer: its pre-tokenizer splits text differently from every family llama.cpp "
        f"is known to match here ({', '.join(PRE_TOKENIZERS)}); a GGUF written anyway would "
        "tokenize some inputs differently from the trained model. Export the merged model instead."
    )


def _check_normalizer(tj: dict, notes: list[str]) -> None:
    norm = tj.get("normalizer")
    if not norm:
        return
    kind = norm.get("type")
    if kind == "Sequence" and not norm.get("normalizers"):
        return
    if kind == "NFC":
        # Qwen 2 ships NFC; llama.cpp does not normalise. Same ids for text already in NFC
        # (nearly all text); the multilingual tokenization check covers the common cases.
        notes.append("tokenizer normalises to NFC; llama.cpp does not (same ids for NFC input)")
        return
    raise ExportError(
        f"Unknown tokenizer: its normalizer ({kind}) changes text before tokenizing and llama.cpp "
        "has no equivalent. Export the merged model instead."
    )


# --------------------------------------------------------------------------- builders


def _merges_as_strings(merges: list) -> list[str]:
    out = []
    for m in merges:
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        if " " in a or " " in b:
            raise ExportError(
                f"tokenizer.json has a merge with a literal space ({a!r} + {b!r}); GGUF stores merges "
                "as 'left right' strings and cannot hold it."
            )
        out.append(f"{a} {b}")
    return out


def _id_table(tj: dict, n_vocab: int) -> tuple[list[str | None], dict[int, dict]]:
    """Token text by id (None = hole) and the added-token records by id."""
    vocab: dict[str, int] = tj["model"]["vocab"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    top = max([*vocab.values(), *added.keys()], default=-1)
    if top >= n_vocab:
        raise ExportError(
            f"The tokenizer has token id {top} but the model's embedding has only {n_vocab} rows. "
            "Resize the embeddings (model.resize_token_embeddings) before merging, then export again."
        )
    table: list[str | None] = [None] * n_vocab
    for text, i in vocab.items():
        table[i] = text
    for i, t in added.items():
        table[i] = t["content"]
    return table, added


def _fill_holes(table: list[str | None], types: list[int], notes: list[str]) -> list[str]:
    holes = [i for i, t in enumerate(table) if t is None]
    if holes:
        notes.append(f"{len(holes)} embedding rows have no token; written as unused [PAD<id>] tokens")
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(table)]
    for i in holes:
        types[i] = UNUSED
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise ExportError(f"The tokenizer has two tokens with the same text ({dup!r}); llama.cpp cannot load that.")
    return tokens


def _bpe_vocab(tj: dict, backend, n_vocab: int, notes: list[str]) -> tuple[list[str], list[int], list[str], str]:
    model = tj["model"]
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ExportError("Unknown tokenizer: byte-level BPE with subword prefixes/suffixes or byte fallback.")
    _check_normalizer(tj, notes)
    pre = identify_pre_tokenizer(backend)
    table, added = _id_table(tj, n_vocab)
    types = [NORMAL] * n_vocab
    for i, t in added.items():
        types[i] = CONTROL if t.get("special") else USER_DEFINED
    tokens = _fill_holes(table, types, notes)
    merges = _merges_as_strings(model.get("merges", []))
    return tokens, types, merges, pre


_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _spm_vocab_from_json(tj: dict, n_vocab: int, unk: str | None, notes: list[str]) -> tuple[list[str], list[int], list[float]]:
    model = tj["model"]
    merges = model.get("merges", [])
    table, added = _id_table(tj, n_vocab)
    vocab: dict[str, int] = model["vocab"]
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        rank.setdefault(a + b, r)
    n_merges = len(merges)
    types = [NORMAL] * n_vocab
    scores = [0.0] * n_vocab
    for text, i in vocab.items():
        if text == unk:
            types[i] = UNKNOWN
        elif _BYTE_TOKEN.match(text):
            types[i] = BYTE
        elif text in rank:
            scores[i] = -float(rank[text])
        else:  # single characters: below every merged piece
            scores[i] = -float(n_merges + i)
    for i, t in added.items():
        if t["content"] == unk:
            types[i] = UNKNOWN
        else:
            types[i] = CONTROL if t.get("special") else USER_DEFINED
        scores[i] = 0.0 if types[i] == CONTROL else -1000.0
    tokens = _fill_holes(table, types, notes)
    return tokens, types, scores


def _is_sentencepiece_style(tj: dict) -> bool:
    """BPE over '▁'-escaped text with byte fallback (how HF writes Llama 2 / Mistral / Gemma)."""
    if tj["model"].get("type") != "BPE" or not tj["model"].get("byte_fallback"):
        return False
    blob = json.dumps([tj.get("normalizer"), tj.get("pre_tokenizer")])
    return "Metaspace" in blob or "\\u2581" in blob or "▁" in blob


def _spm_add_space_prefix(backend) -> bool:
    """Whether the tokenizer puts '▁' before the first word (behaviour, not config)."""
    text = "a"
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is not None:
        text = "".join(p for p, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return text.startswith("▁")


def _special_flags(tok, bos_id: int | None, eos_id: int | None) -> tuple[bool, bool]:
    """add_bos / add_eos from what the tokenizer actually adds around a text."""
    probe = "Hello world"
    plain = tok(probe, add_special_tokens=False)["input_ids"]
    full = tok(probe, add_special_tokens=True)["input_ids"]
    add_bos = bos_id is not None and len(full) > len(plain) and full[0] == bos_id
    add_eos = eos_id is not None and len(full) > len(plain) and full[-1] == eos_id
    expected = ([bos_id] if add_bos else []) + plain + ([eos_id] if add_eos else [])
    if full != expected:
        raise ExportError(
            "The tokenizer adds special tokens other than BOS/EOS around text "
            f"({full[:3]}...{full[-3:]}), which llama.cpp cannot reproduce."
        )
    return add_bos, add_eos


def build_vocab(model_dir: Path, n_vocab: int, config: dict) -> GgufVocab:
    """Read the tokenizer files in model_dir and return the GGUF vocabulary.

    n_vocab is the number of rows of the model's token embedding (the GGUF vocab must match it).
    Raises ExportError for a tokenizer llama.cpp would not reproduce.
    """
    model_dir = Path(model_dir)
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.exists():
        raise ExportError(
            f"No tokenizer.json in {model_dir}. Save the (fast) tokenizer next to the merged weights "
            "with tokenizer.save_pretrained; GGUF export reads the tokenizer the model was trained with."
        )
    tok = _load_hf_tokenizer(model_dir)
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"Cannot read the fast tokenizer in {model_dir}.")
    notes: list[str] = []

    kind = tj.get("model", {}).get("type")
    if kind == "BPE" and not _is_sentencepiece_style(tj):
        tokens, types, merges, pre = _bpe_vocab(tj, backend, n_vocab, notes)
        model, scores, add_space_prefix = "gpt2", None, None
    elif _is_sentencepiece_style(tj):
        tokens, types, scores = _spm_vocab_from_json(tj, n_vocab, tok.unk_token, notes)
        model, pre, merges = "llama", None, None
        add_space_prefix = _spm_add_space_prefix(backend)
    else:
        raise ExportError(
            f"Unknown tokenizer: {kind or 'no tokenizer.json model'} in {model_dir}. GGUF export supports "
            "byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece BPE (Llama 2, Mistral, Gemma)."
        )

    def tid(text: str | None) -> int | None:
        if text is None:
            return None
        i = tok.convert_tokens_to_ids(text)
        return i if isinstance(i, int) and 0 <= i < n_vocab and tokens[i] == text else None

    bos_id = tid(tok.bos_token)
    if bos_id is None and isinstance(config.get("bos_token_id"), int) and config["bos_token_id"] < n_vocab:
        bos_id = config["bos_token_id"]  # Qwen: no bos_token in the tokenizer, one in config.json
    eos_id = tid(tok.eos_token)
    if eos_id is None:
        raise ExportError(
            f"The tokenizer in {model_dir} has no eos_token; set it in tokenizer_config.json "
            "(generation would never stop)."
        )
    eot_id = next((tokens.index(t) for t in EOT_CANDIDATES if t in tokens), None)
    add_bos, add_eos = _special_flags(tok, bos_id, eos_id)

    template = tok.chat_template
    if isinstance(template, dict):  # several named templates: the default one is the chat template
        template = template.get("default")
    stops = [tokens[eos_id]]
    if eot_id is not None and tokens[eot_id] not in stops:
        stops.append(tokens[eot_id])

    return GgufVocab(
        model=model,
        pre=pre,
        tokens=tokens,
        types=types,
        scores=scores,
        merges=merges,
        bos_id=bos_id,
        eos_id=eos_id,
        eot_id=eot_id,
        unk_id=tid(tok.unk_token),
        pad_id=tid(tok.pad_token),
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=add_space_prefix,
        chat_template=portable_chat_template(template),
        stop_tokens=stops,
        notes=notes,
    )
