"""Keep data preparation bounded in memory, whatever the rows hold.

    examples = bound_examples(examples, cutoff_len, tokenizer)   # before rendering and tokenizing

Only the first cutoff_len tokens of an example are trained, and no token
covers more characters than the longest entry of the vocabulary, so the first
cutoff_len * that many characters of every text decide the tokens that are
kept. Each string in an example is cut there before the chat template renders
it and the tokenizer sees it: a 5 MB row costs what a few hundred KB does, and
the ids and masks kept after truncation are the same as without the cut.
A row past MAX_ROW_CHARS is refused as a row problem (examples.check_rows)
naming its file and row, before a run exists.

What it does not know: templates that rewrite early turns depending on late
ones (Qwen3 drops past reasoning) may render a cut conversation's early turns
slightly differently when trailing messages are dropped (only past the cutoff).
"""

from __future__ import annotations

from typing import Any

# 32 Mi characters: a long-context example (128k tokens) is about 0.5 M characters;
# 64 times that in one row is a mistake (a whole corpus in one cell), not an example.
MAX_ROW_CHARS = 32 * 2**20
_MARGIN = 1024  # characters beyond the bound, for template text around a message


def row_chars(x: Any) -> int:
    """Characters of text in an example (every string in it, nested)."""
    if isinstance(x, str):
        return len(x)
    if isinstance(x, dict):
        return sum(row_chars(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(row_chars(v) for v in x)
    return 0


_TOKEN_CHARS: dict[int, int] = {}


def longest_token_chars(tokenizer) -> int:
    """The most characters one vocabulary entry can stand for (at least 16)."""
    key = id(tokenizer)
    if key not in _TOKEN_CHARS:
        try:
            longest = max((len(t) for t in tokenizer.get_vocab()), default=16)
        except Exception:  # a tokenizer without a vocabulary listing
            longest = 64
        _TOKEN_CHARS[key] = max(16, longest)
    return _TOKEN_CHARS[key]


def char_bound(cutoff_len: int, tokenizer) -> int:
    return cutoff_len * longest_token_chars(tokenizer) + _MARGIN


def _cut(x: Any, limit: int) -> Any:
    if isinstance(x, str):
        return x[:limit]
    if isinstance(x, dict):
        return {k: _cut(v, limit) for k, v in x.items()}
    if isinstance(x, list):
        out, used = [], 0
        for v in x:
            if used > limit:  # everything from here on starts past the cutoff
                break
            out.append(_cut(v, limit))
            used += row_chars(v)
        return out
    return x


def bound_examples(examples: list[dict], cutoff_len: int, tokenizer) -> list[dict]:
    """`examples` with every text cut to what cutoff_len tokens can reach (unchanged when shorter)."""
    limit = char_bound(cutoff_len, tokenizer)
    return [_cut(ex, limit) if row_chars(ex) > limit else ex for ex in examples]
