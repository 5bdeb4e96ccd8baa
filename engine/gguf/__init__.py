"""GGUF export: a merged Hugging Face model folder -> GGUF files for llama.cpp and Ollama.

    from tunesmith.engine.gguf import export_gguf
    for r in export_gguf(merged_dir, out_dir, ["f16", "q4_k_m"], progress=print):
        print(r.path, r.size_bytes, r.fidelity.summary(), r.fallback or "", r.ollama_command)

Modules: arch (per-architecture table), vocab (tokenizers), writer (F32/F16/BF16/Q8_0 streaming),
quantize (llama.cpp's quantizer), fidelity (llama.cpp vs HF), modelfile (Ollama), export (the flow).
"""

from .export import QUANTS, GgufResult, export_gguf
from .fidelity import PROMPTS, TARGETS, Fidelity, check_fidelity, check_tokenization
from .modelfile import ollama_create_command, write_modelfile

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
