"""Dataset formats: detect them from the keys of the rows, normalise every row to messages.

Five layouts are understood (the `format` names used everywhere):

    alpaca      {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
    sharegpt    {"conversations": [{"from": "human"|"gpt"|"system"|"function_call"|"observation",
                                    "value": ...}], "system"?, "tools"?}
                (role/content key names and role names can be custom: see ColumnMapping)
    openai      {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": ...,
                               "tool_calls"?: [...]}], "tools"?}
    text        {"text": ...} rows, or the lines of a .txt file (continued pretraining)
    preference  {"prompt" | "messages", "chosen", "rejected"} (chosen/rejected: strings,
                message dicts or one-message lists)

Every row becomes one *example*, a plain dict:

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}],
     "tools": [...]?, "rejected": {"role": "assistant", ...}?}      # chat formats
    {"text": str}                                                    # text format

Assistant messages may carry `tool_calls` (OpenAI shape) and `reasoning_content`;
tool messages may carry `name` / `tool_call_id`. Preference rows put the chosen
reply last in `messages` (so SFT on a preference set learns the chosen answers)
and the rejected one under `rejected`.

A row that cannot be used yields Problems (kind + reason) instead of an example;
kinds are listed in PROBLEM_KINDS and are part of the inspect --json schema.

What it does not know: whether the content is any good. It checks structure only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

FORMATS = ("alpaca", "sharegpt", "openai", "text", "preference")

# kind -> severity. "error" rows cannot be trained on; "warning" rows can.
PROBLEM_KINDS: dict[str, str] = {
    "invalid_json": "error",  # a JSONL line that does not parse
    "malformed_record": "error",  # a CSV/TSV record with the wrong number of fields
    "wrong_type": "error",  # the row or a field has the wrong JSON type (e.g. messages not a list)
    "missing_field": "error",  # a column the format needs is absent
    "non_string_content": "error",  # a message content that is a number, object, null ...
    "unknown_role": "error",  # a role name the mapping does not know
    "wrong_role_order": "error",  # e.g. two user turns in a row, system in the middle, starts with assistant
    "no_response": "error",  # no assistant reply to learn from (missing turn, system-only conversation)
    "empty_response": "error",  # an assistant reply that is empty or whitespace
    "empty_message": "error",  # an empty prompt / user turn / text row
    "mixed_format": "error",  # the row is in another format than the rest of the file
    "row_too_large": "error",  # more text in one row than any cutoff_len could use (bounds.MAX_ROW_CHARS)
    "duplicate_row": "warning",  # the same example as an earlier row (kept unless the user drops it)
}

# Key names recognised during detection, most specific first.
_PROMPT_KEYS = ("instruction", "prompt", "question")
_QUERY_KEYS = ("input",)
_RESPONSE_KEYS = ("output", "response", "completion", "answer")
_MESSAGES_KEYS = ("messages", "conversations", "conversation", "dialog", "dialogue", "turns", "chat")
_ROLE_KEYS = ("role", "from", "speaker", "author", "sender")
_CONTENT_KEYS = ("content", "value", "text", "message", "utterance")
_TEXT_KEYS = ("text", "content", "document", "body")

# Role names -> canonical role. "function_call" is an assistant turn that calls a tool.
ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "user": "user", "human": "user", "prompter": "user", "customer": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "ai": "assistant",
    "tool": "tool", "observation": "tool", "function": "tool", "ipython": "tool",
    "function_call": "function_call",
}
_SHAREGPT_ROLES = {"human", "gpt", "observation", "function_call"}


@dataclass
class ColumnMapping:
    """Which keys of a row hold what, plus (for chat formats) role/content key names and role names.

    Mirrors LLaMA-Factory's `columns` and `tags`. Only the fields the format
    uses matter; None means "absent".
    """

    format: str
    prompt: str | None = None  # alpaca instruction / preference prompt / text column
    query: str | None = None  # alpaca input
    response: str | None = None  # alpaca output
    history: str | None = None
    system: str | None = None
    messages: str | None = None  # chat list column (sharegpt/openai/preference-as-chat)
    tools: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    role_tag: str = "role"
    content_tag: str = "content"
    user_tag: str = "user"
    assistant_tag: str = "assistant"
    system_tag: str = "system"
    observation_tag: str = "tool"
    function_tag: str = "function_call"

    def roles(self) -> dict[str, str]:
        """Role names as written in the data -> canonical role."""
        table = dict(ROLE_ALIASES)
        table.update({
            self.user_tag: "user", self.assistant_tag: "assistant", self.system_tag: "system",
            self.observation_tag: "tool", self.function_tag: "function_call",
        })
        return table

    def describe(self) -> dict[str, str]:
        """The mapping as {field: key}, leaving out the unused fields (for reports)."""
        out = {k: v for k, v in self.to_columns().items()}
        if self.messages:
            out.update(role_tag=self.role_tag, content_tag=self.content_tag)
        return out

    def to_columns(self) -> dict[str, str]:
        keys = ("prompt", "query", "response", "history", "system", "messages", "tools", "chosen", "rejected")
        return {k: getattr(self, k) for k in keys if getattr(self, k)}

    @classmethod
    def from_llamafactory(cls, fmt: str, formatting: str, columns: dict, tags: dict) -> "ColumnMapping":
        m = cls(format=fmt)
        for k in ("prompt", "query", "response", "history", "system", "messages", "tools", "chosen", "rejected"):
            if columns.get(k):
                setattr(m, k, str(columns[k]))
        if formatting == "sharegpt" or fmt in ("sharegpt", "openai"):
            if not m.messages and fmt != "preference":
                m.messages = "conversations" if formatting == "sharegpt" else "messages"
            if formatting == "sharegpt" and not tags:
                tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                        "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
        for k in ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag", "observation_tag", "function_tag"):
            if tags.get(k):
                setattr(m, k, str(tags[k]))
        return m

    @classmethod
    def parse(cls, fmt: str, spec: dict[str, str] | str | None) -> "ColumnMapping":
        """Build a mapping from the user's override: {"prompt": "question", ...} or "prompt=question,response=answer"."""
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; use one of: auto, {', '.join(FORMATS)}.")
        m = default_mapping(fmt)
        if isinstance(spec, str):
            pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise DataError(f"column mapping {spec!r}: expected FIELD=COLUMN pairs, e.g. prompt=question,response=answer.")
            spec = {k.strip(): v.strip() for k, v in pairs}
        for k, v in (spec or {}).items():
            if not hasattr(m, k) or k == "format":
                raise DataError(f"column mapping: unknown field {k!r}; use prompt, query, response, history, system, "
                                "messages, tools, chosen, rejected, role_tag, content_tag, user_tag, assistant_tag.")
            setattr(m, k, v)
        return m


def default_mapping(fmt: str) -> ColumnMapping:
    if fmt == "alpaca":
        return ColumnMapping("alpaca", prompt="instruction", query="input", response="output", system="system", history="history")
    if fmt == "sharegpt":
        return ColumnMapping("sharegpt", messages="conversations", system="system", tools="tools", role_tag="from",
                             content_tag="value", user_tag="human", assistant_tag="gpt", observation_tag="observation")
    if fmt == "openai":
        return ColumnMapping("openai", messages="messages", tools="tools")
    if fmt == "text":
        return ColumnMapping("text", prompt="text")
    if fmt == "preference":
        return ColumnMapping("preference", prompt="prompt", chosen="chosen", rejected="rejected", system="system")
    raise DataError(f"unknown format {fmt!r}; use one of: auto, {', '.join(FORMATS)}.")


# ---------------------------------------------------------------------------
# Detection


@dataclass
class Detection:
    """What detect_format decided and why."""

    format: str
    mapping: ColumnMapping
    evidence: list[str] = field(default_factory=list)  # human-readable reasons (keys seen)
    row_formats: dict[str, int] = field(default_factory=dict)  # per-row guesses over the sample
    overridden: bool = False  # the user named the format


def _first(keys: tuple[str, ...], row: dict) -> str | None:
    for k in keys:
        if k in row:
            return k
    return None


def _chat_keys(items: list) -> tuple[str, str] | None:
    """(role_tag, content_tag) for a list of message dicts, or None if it is not one."""
    sample = [m for m in items[:8] if isinstance(m, dict)]
    if not sample:
        return None
    keys = set().union(*(m.keys() for m in sample))
    role = next((k for k in _ROLE_KEYS if k in keys), None)
    if role is None:  # custom name: the key whose values are all known role names
        for k in sorted(keys):
            vals = [m.get(k) for m in sample]
            if all(isinstance(v, str) and v.lower() in ROLE_ALIASES for v in vals):
                role = k
                break
    if role is None:
        return None
    content = next((k for k in _CONTENT_KEYS if k in keys and k != role), None)
    if content is None:
        others = [k for k in sorted(keys) if k != role and all(isinstance(m.get(k), str) for m in sample)]
        content = others[0] if len(others) == 1 else None
    return (role, content) if content else None


def guess_row(row: Any) -> tuple[str, ColumnMapping, str] | None:
    """(format, mapping, evidence) for one row, or None when nothing fits."""
    if not isinstance(row, dict):
        return None
    if "chosen" in row and "rejected" in row:
        m = ColumnMapping("preference", chosen="chosen", rejected="rejected")
        msgs = _first(_MESSAGES_KEYS, row)
        if msgs and isinstance(row[msgs], list):
            m.messages = msgs
            tags = _chat_keys(row[msgs])
            if tags:
                m.role_tag, m.content_tag = tags
        else:
            m.prompt = _first(_PROMPT_KEYS, row)
            m.query = _first(_QUERY_KEYS, row)
        m.system = "system" if "system" in row else None
        return "preference", m, f"keys chosen, rejected and {m.messages or m.prompt or '(no prompt)'}"
    msgs = _first(_MESSAGES_KEYS, row)
    if msgs is None:  # a custom chat column: any list of message-like dicts
        msgs = next((k for k, v in row.items() if isinstance(v, list) and v and _chat_keys(v)), None)
    if msgs is not None and isinstance(row[msgs], list):
        tags = _chat_keys(row[msgs])
        if tags:
            role_tag, content_tag = tags
            roles = {str(m.get(role_tag)).lower() for m in row[msgs][:16] if isinstance(m, dict)}
            fmt = "sharegpt" if (role_tag, content_tag) != ("role", "content") or roles & _SHAREGPT_ROLES else "openai"
            m = default_mapping(fmt)
            m.messages, m.role_tag, m.content_tag = msgs, role_tag, content_tag
            if fmt == "sharegpt":
                m.user_tag = "human" if "human" in roles else "user"
                m.assistant_tag = "gpt" if "gpt" in roles else "assistant"
            m.system = "system" if "system" in row else None
            m.tools = "tools" if "tools" in row else None
            return fmt, m, f"key {msgs!r} holds a list of messages with {role_tag!r}/{content_tag!r}"
    prompt, response = _first(_PROMPT_KEYS, row), _first(_RESPONSE_KEYS, row)
    if prompt and response:
        m = ColumnMapping("alpaca", prompt=prompt, response=response, query=_first(_QUERY_KEYS, row),
                          system="system" if "system" in row else None,
                          history="history" if "history" in row else None)
        return "alpaca", m, f"keys {prompt!r} and {response!r}"
    text = _first(_TEXT_KEYS, row)
    if text and isinstance(row[text], str) and not response:
        return "text", ColumnMapping("text", prompt=text), f"a {text!r} key with a string"
    if len(row) == 1:
        (k, v), = row.items()
        if isinstance(v, str):
            return "text", ColumnMapping("text", prompt=k), f"a single string column {k!r}"
    return None


def detect_format(rows: list, path_hint: str | Path | None = None, sample: int = 2000) -> Detection:
    """Pick the format of a list of row dicts by majority vote over a sample.

    `rows` holds parsed rows (rows that failed to parse are skipped). Raises
    DataError when no row fits any format, naming the keys it found.
    """
    if path_hint is not None and Path(path_hint).suffix.lower() == ".txt":
        return Detection("text", ColumnMapping("text", prompt="text"), ["a .txt file: one example per line"])
    votes: Counter[str] = Counter()
    first_hit: dict[str, tuple[ColumnMapping, str]] = {}
    key_counts: Counter[str] = Counter()
    seen = 0
    for row in rows:
        if seen >= sample:
            break
        if row is _UNPARSED:
            continue
        seen += 1
        if isinstance(row, dict):
            key_counts.update(row.keys())
        g = guess_row(row)
        if g is None:
            votes["unknown"] += 1
            continue
        fmt, m, ev = g
        votes[fmt] += 1
        first_hit.setdefault(fmt, (m, ev))
    known = [(n, f) for f, n in votes.most_common() if f != "unknown"]
    if not known:
        where = f"{path_hint}: " if path_hint else ""
        found = ", ".join(k for k, _ in key_counts.most_common(12)) or "no JSON objects"
        raise DataError(
            f"{where}could not tell the dataset format from the rows (keys found: {found}). Expected alpaca "
            "(instruction/output), sharegpt (conversations), openai (messages), text, or preference "
            "(chosen/rejected). Pass --format and a column mapping, e.g. prompt=question,response=answer."
        )
    n, fmt = known[0]
    mapping, ev = first_hit[fmt]
    evidence = [f"{n} of {seen} sampled rows match {fmt}: {ev}"]
    for other_n, other in known[1:]:
        evidence.append(f"{other_n} rows look like {other} instead (reported as mixed_format)")
    if votes["unknown"]:
        evidence.append(f"{votes['unknown']} rows match no format")
    # Optional columns seen on any row of the sample extend the mapping.
    for col in ("system", "history", "tools"):
        if getattr(mapping, col) is None and col in key_counts and (fmt != "alpaca" or col != "tools"):
            setattr(mapping, col, col)
    if fmt == "alpaca" and mapping.query is None and "input" in key_counts:
        mapping.query = "input"
    return Detection(fmt, mapping, evidence, dict(votes))


class _Unparsed:
    """Placeholder for a row that failed to parse (readers put it in `rows`)."""

    def __repr__(self) -> str:
        return "<unparsed row>"


_UNPARSED = _Unparsed()


# ---------------------------------------------------------------------------
# Normalisation


class RowProblem(Exception):
    """Raised inside normalisation; carries the problem kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _text(value: Any, what: str, allow_none: bool = False) -> str | None:
    if isinstance(value, str):
        return value
    if value is None and allow_none:
        return None
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        parts = [p.get("text") for p in value]  # OpenAI content parts, text only
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    kind = type(value).__name__ if value is not None else "null"
    raise RowProblem("non_string_content", f"{what} is {kind} ({_short(value)}), not a string; quote it or fix the export")


def _short(v: Any, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def normalize_row(row: Any, mapping: ColumnMapping, roles: dict[str, str] | None = None) -> dict:
    """One row -> one example dict; raises RowProblem on a row that cannot be used.

    `roles` is mapping.roles(), passed in by callers that normalise many rows.
    """
    if not isinstance(row, dict):
        raise RowProblem("wrong_type", f"row is a JSON {type(row).__name__}, expected an object with named fields")
    fmt = mapping.format
    if fmt == "text":
        key = mapping.prompt or "text"
        if key not in row:
            raise RowProblem("missing_field", f"no {key!r} field")
        text = _text(row[key], f"field {key!r}")
        if not text.strip():
            raise RowProblem("empty_message", f"field {key!r} is empty")
        return {"text": text}
    if fmt == "alpaca":
        return _check_turns(_alpaca(row, mapping), fmt)
    if fmt in ("sharegpt", "openai"):
        ex = _chat(row, mapping, roles)
        return _check_turns(ex, fmt)
    if fmt == "preference":
        return _preference(row, mapping, roles)
    raise DataError(f"unknown format {fmt!r}")


def _system(row: dict, mapping: ColumnMapping) -> list[dict]:
    if mapping.system and row.get(mapping.system) not in (None, ""):
        return [{"role": "system", "content": _text(row[mapping.system], f"field {mapping.system!r}")}]
    return []


def _alpaca(row: dict, mapping: ColumnMapping) -> dict:
    for col in (mapping.prompt, mapping.response):
        if col and col not in row:
            raise RowProblem("missing_field", f"no {col!r} field (alpaca rows need {mapping.prompt!r} and {mapping.response!r})")
    msgs = _system(row, mapping)
    if mapping.history and row.get(mapping.history) not in (None, "", []):
        hist = row[mapping.history]
        if not isinstance(hist, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in hist):
            raise RowProblem("wrong_type", f"field {mapping.history!r} must be a list of [prompt, response] pairs")
        for i, (q, a) in enumerate(hist, 1):
            msgs.append({"role": "user", "content": _text(q, f"history[{i}] prompt")})
            msgs.append({"role": "assistant", "content": _text(a, f"history[{i}] response")})
    prompt = _text(row.get(mapping.prompt), f"field {mapping.prompt!r}", allow_none=True) or ""
    query = ""
    if mapping.query and row.get(mapping.query) is not None:
        query = _text(row[mapping.query], f"field {mapping.query!r}")
    user = "\n".join(s for s in (prompt, query) if s.strip()) if (prompt.strip() or query.strip()) else ""
    msgs.append({"role": "user", "content": user})
    msgs.append({"role": "assistant", "content": _text(row.get(mapping.response), f"field {mapping.response!r}")})
    return {"messages": msgs}


def _message(m: Any, i: int, mapping: ColumnMapping, roles: dict[str, str]) -> dict:
    # Fast path (most rows): {role, content} with a known role and string content.
    if type(m) is dict and len(m) == 2:
        raw_role, content = m.get(mapping.role_tag), m.get(mapping.content_tag)
        if type(content) is str and type(raw_role) is str:
            role = roles.get(raw_role)
            if role is not None and role != "function_call":
                if role == raw_role and mapping.role_tag == "role" and mapping.content_tag == "content":
                    return m  # already canonical: shared, never mutated
                return {"role": role, "content": content}
    if not isinstance(m, dict):
        raise RowProblem("wrong_type", f"message {i} is a {type(m).__name__}, expected an object")
    if mapping.role_tag not in m:
        raise RowProblem("missing_field", f"message {i} has no {mapping.role_tag!r} key")
    raw_role = m[mapping.role_tag]
    role = roles.get(raw_role) if isinstance(raw_role, str) else None
    role = role or roles.get(str(raw_role).lower())
    if role is None:
        known = sorted({k for k in (mapping.user_tag, mapping.assistant_tag, mapping.system_tag,
                                    mapping.observation_tag, mapping.function_tag)})
        raise RowProblem("unknown_role", f"message {i} has role {raw_role!r}; expected one of {', '.join(known)}")
    out: dict[str, Any] = {}
    if role == "function_call":  # ShareGPT: the assistant calls a tool; value is the call as JSON
        out["role"] = "assistant"
        call = m.get(mapping.content_tag)
        out["content"] = ""
        out["tool_calls"] = [_as_tool_call(call, i)]
        return out
    out["role"] = role
    has_calls = role == "assistant" and bool(m.get("tool_calls"))
    if mapping.content_tag not in m and not has_calls:
        raise RowProblem("missing_field", f"message {i} ({raw_role}) has no {mapping.content_tag!r} key")
    out["content"] = _text(m.get(mapping.content_tag), f"message {i} ({raw_role}) content", allow_none=has_calls) or ""
    if has_calls:
        calls = m["tool_calls"]
        if not isinstance(calls, list):
            raise RowProblem("wrong_type", f"message {i} tool_calls must be a list")
        out["tool_calls"] = [_as_tool_call(c, i) for c in calls]
    for extra in ("reasoning_content", "name", "tool_call_id"):
        if isinstance(m.get(extra), str):
            out[extra] = m[extra]
    return out


def _as_tool_call(call: Any, i: int) -> dict:
    import json

    if isinstance(call, str):
        try:
            call = json.loads(call)
        except json.JSONDecodeError:
            raise RowProblem("wrong_type", f"message {i}: the function call is not JSON ({_short(call)})") from None
    if isinstance(call, dict) and "function" in call and isinstance(call["function"], dict):
        call = call["function"]  # OpenAI {"type": "function", "function": {...}}
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise RowProblem("wrong_type", f"message {i}: a tool call needs a name and arguments")
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass  # keep the string; templates print it as is
    return {"type": "function", "function": {"name": call["name"], "arguments": args}}


def _chat(row: dict, mapping: ColumnMapping, roles: dict[str, str] | None = None) -> dict:
    col = mapping.messages or "messages"
    if col not in row:
        raise RowProblem("missing_field", f"no {col!r} field ({mapping.format} rows hold a list of messages there)")
    items = row[col]
    if not isinstance(items, list):
        raise RowProblem("wrong_type", f"field {col!r} is a {type(items).__name__}, expected a list of messages")
    roles = roles or mapping.roles()
    msgs = _system(row, mapping)
    for i, m in enumerate(items, 1):
        msgs.append(_message(m, i, mapping, roles))
    ex: dict[str, Any] = {"messages": msgs}
    tools = row.get(mapping.tools) if mapping.tools else None
    if tools not in (None, "", []):
        if isinstance(tools, str):
            import json

            try:
                tools = json.loads(tools)
            except json.JSONDecodeError:
                raise RowProblem("wrong_type", f"field {mapping.tools!r} is not a JSON list of tool schemas") from None
        if not isinstance(tools, list):
            raise RowProblem("wrong_type", f"field {mapping.tools!r} must be a list of tool schemas")
        ex["tools"] = tools
    return ex


def _reply(value: Any, col: str, mapping: ColumnMapping) -> dict:
    if isinstance(value, list):  # TRL conversational: [{"role": "assistant", "content": ...}]
        if len(value) != 1:
            raise RowProblem("wrong_type", f"field {col!r} must hold one assistant reply, got {len(value)} messages")
        value = value[0]
    if isinstance(value, dict):
        msg = _message(value, 1, mapping, mapping.roles())
        if msg["role"] != "assistant":
            raise RowProblem("wrong_role_order", f"field {col!r} holds a {msg['role']} message, expected the assistant's")
        content = msg["content"]
    else:
        content = _text(value, f"field {col!r}")
    if not content.strip():
        raise RowProblem("empty_response", f"field {col!r} is empty")
    return {"role": "assistant", "content": content}


def _preference(row: dict, mapping: ColumnMapping, roles: dict[str, str] | None = None) -> dict:
    for col in (mapping.chosen, mapping.rejected):
        if col not in row:
            raise RowProblem("missing_field", f"no {col!r} field (preference rows need chosen and rejected)")
    if mapping.messages:
        prompt = _chat(row, mapping, roles)["messages"]
    else:
        if not mapping.prompt or mapping.prompt not in row:
            raise RowProblem("missing_field", f"no {mapping.prompt or 'prompt'!r} field")
        text = _text(row[mapping.prompt], f"field {mapping.prompt!r}")
        if mapping.query and isinstance(row.get(mapping.query), str) and row[mapping.query].strip():
            text = f"{text}\n{row[mapping.query]}"
        prompt = _system(row, mapping) + [{"role": "user", "content": text}]
    if prompt and prompt[-1]["role"] == "assistant":
        raise RowProblem("wrong_role_order", "the prompt ends with an assistant turn; chosen/rejected must answer a user turn")
    chosen = _reply(row[mapping.chosen], mapping.chosen, mapping)
    rejected = _reply(row[mapping.rejected], mapping.rejected, mapping)
    ex = _check_turns({"messages": prompt + [chosen]}, "preference")
    ex["rejected"] = rejected
    return ex


def _check_turns(ex: dict, fmt: str) -> dict:
    """Role order: [system] user assistant (tool* assistant)* ... ending with an assistant reply."""
    msgs = ex["messages"]
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            raise RowProblem("wrong_role_order", f"a system message at position {i + 1}; it must come first")
    turns = msgs[1:] if msgs and msgs[0]["role"] == "system" else msgs
    if not turns:
        raise RowProblem("no_response", "the conversation has only a system prompt; add user and assistant turns")
    if not any(m["role"] == "assistant" for m in turns):
        raise RowProblem("no_response", "no assistant reply to learn from; add the assistant's answer")
    if turns[0]["role"] != "user":
        raise RowProblem("wrong_role_order", f"the conversation starts with {turns[0]['role']}; it must start with user")
    prev, turns_prev = None, {}
    for i, m in enumerate(turns, 1 + (len(msgs) - len(turns))):
        role = m["role"]
        ok = (
            (prev is None and role == "user")
            or (prev == "user" and role == "assistant")
            or (prev == "assistant" and role == "user")
            or (prev == "assistant" and role == "tool" and bool(turns_prev.get("tool_calls")))
            or (prev == "tool" and role in ("tool", "assistant"))
        )
        if not ok:
            raise RowProblem("wrong_role_order", f"message {i} is {role} after {prev}; turns must alternate user/assistant"
                             + (" (a tool result must follow an assistant tool call)" if role == "tool" else ""))
        if role == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            raise RowProblem("empty_response", f"assistant message {i} is empty")
        if role == "user" and not m["content"].strip():
            raise RowProblem("empty_message", f"user message {i} is empty")
        prev, turns_prev = role, m
    if prev != "assistant":
        raise RowProblem("wrong_role_order", f"the conversation ends with {prev}; it must end with an assistant reply")
    return ex


# ---------------------------------------------------------------------------
# Suggestions for a person mapping the columns by hand (the studio's Data tab)


def _sample_keys(rows: list, sample: int) -> list[str]:
    """Top-level keys of the sampled dict rows, in order of first appearance."""
    keys: dict[str, None] = {}
    for row in rows[:sample]:
        if isinstance(row, dict):
            keys.update(dict.fromkeys(row))
    return list(keys)


def _messages_in(rows: list, column: str | None, sample: int) -> list[dict]:
    """The message dicts under `column` in the sampled rows."""
    out: list[dict] = []
    for row in rows[:sample]:
        if isinstance(row, dict) and isinstance(row.get(column), list):
            out.extend(m for m in row[column] if isinstance(m, dict))
    return out


def message_keys(rows: list, column: str | None, role_tag: str | None = None,
                 sample: int = 200) -> tuple[list[str], list[str]]:
    """(keys of the message dicts under `column`, values of `role_tag` in them), over a sample.

    Both in order of first appearance; empty when the column holds no message dicts.
    """
    keys: dict[str, None] = {}
    roles: dict[str, None] = {}
    for m in _messages_in(rows, column, sample):
        keys.update(dict.fromkeys(m))
        v = m.get(role_tag) if role_tag else None
        if isinstance(v, str):
            roles[v] = None
    return list(keys), list(roles)


def _fit_role_names(m: ColumnMapping, rows: list, sample: int) -> None:
    """Point user_tag / assistant_tag at role names the rows really use.

    A known alias wins ("customer" -> user); otherwise the name that most often
    opens a conversation is the user and the one that most often answers it the
    assistant (e.g. "client" / "agent").
    """
    firsts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    seen: list[str] = []
    for row in rows[:sample]:
        msgs = row.get(m.messages) if isinstance(row, dict) else None
        if not isinstance(msgs, list):
            continue
        names = [x.get(m.role_tag) for x in msgs if isinstance(x, dict) and isinstance(x.get(m.role_tag), str)]
        seen.extend(n for n in names if n not in seen)
        names = [n for n in names if ROLE_ALIASES.get(n.lower()) != "system" and n != m.system_tag]
        if names:
            firsts[names[0]] += 1
        if len(names) > 1:
            seconds[names[1]] += 1
    if not seen:
        return
    for attr, other, canon, order in (("user_tag", "assistant_tag", "user", firsts),
                                      ("assistant_tag", "user_tag", "assistant", seconds)):
        if getattr(m, attr) in seen:
            continue
        alias = [n for n in seen if ROLE_ALIASES.get(n.lower()) == canon]
        pick = alias[0] if alias else next((n for n, _ in order.most_common() if n != getattr(m, other)), None)
        if pick is not None:
            setattr(m, attr, pick)


def suggest_mapping(rows: list, fmt: str, path_hint: str | Path | None = None, sample: int = 200,
                    messages: str | None = None, role_tag: str | None = None) -> ColumnMapping:
    """The likeliest mapping of `rows` read as `fmt`, for a person to confirm or change.

    The detected mapping when the rows are in `fmt`; otherwise `fmt`'s defaults
    with the keys the rows have (e.g. a "question"/"answer" file read as alpaca).
    `messages` / `role_tag`: the conversation column and role key the person
    picked; the text key and role names are then guessed under them. Chat role
    names are fitted to the names the rows use. Never raises for rows that fit
    nothing: the defaults come back and the person picks.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; use one of: auto, {', '.join(FORMATS)}.")
    try:
        det = detect_format(rows[:sample], path_hint)
    except DataError:
        det = None
    keys = _sample_keys(rows, sample)
    present = dict.fromkeys(keys)
    if det is not None and det.format == fmt:
        m = det.mapping
    else:
        m = default_mapping(fmt)
        if fmt in ("alpaca", "preference"):
            m.prompt = _first(_PROMPT_KEYS, present) or m.prompt
            m.query = _first(_QUERY_KEYS, present)
            if fmt == "alpaca":
                m.response = _first(_RESPONSE_KEYS, present) or m.response
        elif fmt == "text":
            m.prompt = _first(_TEXT_KEYS, present) or (keys[0] if len(keys) == 1 else m.prompt)
        if fmt in ("sharegpt", "openai") or (fmt == "preference" and _first(_MESSAGES_KEYS, present)):
            m.messages = _first(_MESSAGES_KEYS, present) or next(
                (k for k in keys if _messages_in(rows, k, sample)), m.messages)
            tags = _chat_keys(_messages_in(rows, m.messages, sample))
            if tags:
                m.role_tag, m.content_tag = tags
            if fmt == "preference" and m.messages in present:
                m.prompt = None
        for col in ("system", "history", "tools", "query"):
            if getattr(m, col) and getattr(m, col) not in present:
                setattr(m, col, None)
    if messages is not None and fmt != "text" and fmt != "alpaca":
        m.messages = messages
        found = message_keys(rows, messages, sample=sample)[0]
        tags = _chat_keys(_messages_in(rows, messages, sample))
        if role_tag in found:
            m.role_tag = role_tag
            if tags and tags[0] == role_tag:
                m.content_tag = tags[1]
            elif m.content_tag not in found or m.content_tag == role_tag:
                others = [k for k in found if k != role_tag]
                m.content_tag = next((k for k in _CONTENT_KEYS if k in others), others[0] if others else m.content_tag)
        elif tags:
            m.role_tag, m.content_tag = tags
        if fmt == "preference":
            m.prompt = None
    if m.messages:
        _fit_role_names(m, rows, sample)
    return m
