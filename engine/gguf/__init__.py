"""GGUF export: a merged Hugging Face model folder -> GGUF files for llama.cpp and Ollama.

    from tunesmith.engine.gguf import export_gguf
    for r in export_gguf(merged_dir, out_dir, ["f16", "q4_k_m"], progress=print):
        print(r.path, r.size_bytes, r.fidelity.summary(), r.fallback or "", r.ollama_command)

Modules: arch (per-architecture table), vocab (tokenizers), writer (F32/F16/BF16/Q8_0 streaming),
quantize (llama.cpp's quantizer), llamacpp_setup (installing it on first use), fidelity (llama.cpp vs HF), modelfile (Ollama), export (the flow).
"""

from importlib import import_module
from typing import Any

# Loaded on first use: importing the package (e.g. for llamacpp_setup's status in the studio) must not
# pull in torch and transformers.
_LAZY = {
    "QUANTS": "export", "GgufResult": "export", "export_gguf": "export",
    "PROMPTS": "fidelity", "TARGETS": "fidelity", "Fidelity": "fidelity", "check_fidelity": "fidelity",
    "check_tokenization": "fidelity", "ollama_create_command": "modelfile", "write_modelfile": "modelfile",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "QUANTS",
    "GgufResult",
    "export_gguf",
    "Fidelity",
    "PROMPTS",
    "TARGETS",
    "check_fidelity",
    "check_tokenization",
    "write_modelfile",
    "ollama_create_command",
]
