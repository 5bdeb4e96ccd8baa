"""Push a run to the Hugging Face Hub: its adapter, merged model or GGUF files, with a model card.

    url = push_run("20261123-120000-ab12", "me/my-model", fmt="adapter", private=True)

Steps: export the run (engine.export, into $TUNESMITH_HOME/exports/<run>/<format>),
write README.md (the model card: base model, datasets, method and objective,
settings, final losses, Tunesmith version, how to load it), then
`HfApi.create_repo(exist_ok=True)` and `HfApi.upload_folder` in one commit.

The token comes from the caller (the studio keeps it in memory for the
session), else $HF_TOKEN / huggingface_hub's own login (`hf auth login`).
Tunesmith never writes it anywhere. $HF_ENDPOINT points huggingface_hub at
another Hub (a mirror, or the local test server).

What it does not know: whether the repo name is free or the token may write
to it until the Hub answers; those answers become one-line HubErrors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import yaml

from . import jobs
from .adapters import portable_base_id
from .config import RunConfig
from .errors import TunesmithError
from .events import last_train, read_events

Progress = Callable[[float, str], None]
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class HubError(TunesmithError):
    """The Hub refused or could not be reached."""


def check_repo_id(repo: str) -> str:
    repo = (repo or "").strip()
    if not _REPO_RE.match(repo) or "--" in repo or ".." in repo:
        raise HubError(f"--repo {repo!r}: give it as user/name or org/name (letters, digits, '-', '_', '.').")
    return repo


# ---- the model card ---------------------------------------------------------------


def _final_metrics(run_dir: Path) -> dict[str, float]:
    evs = read_events(run_dir)
    out: dict[str, float] = {}
    tr = last_train(evs)
    if tr is not None:
        out["train_loss"] = tr.get("loss")
        out["steps"] = tr.get("step")
    evals = [e for e in evs if e.get("type") == "eval" and e.get("eval_loss") is not None]
    if evals:
        out["eval_loss"] = evals[-1]["eval_loss"]
    return {k: v for k, v in out.items() if v is not None}


def model_card(cfg: RunConfig, run: jobs.RunInfo, fmt: str, repo: str, files: list[str] | None = None) -> str:
    """README.md for the pushed folder: Hub metadata (front matter) and a human-readable summary."""
    from tunesmith import __version__

    base = portable_base_id(cfg.model.name_or_path)
    hub_datasets = [d for d in cfg.data.datasets if re.match(r"^[\w.-]+/[\w.-]+$", d) and not Path(d).exists()]
    meta: dict = {"base_model": base, "library_name": "peft" if fmt == "adapter" else "transformers",
                  "pipeline_tag": "text-generation",
                  "tags": ["tunesmith", cfg.method, getattr(cfg, "objective", "sft")] + (["gguf"] if fmt == "gguf" else [])}
    if fmt == "adapter":
        meta["tags"].append("lora")
    if hub_datasets:
        meta["datasets"] = hub_datasets
    metrics = _final_metrics(run.run_dir)
    objective = getattr(cfg, "objective", "sft")
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
        f"# {repo.split('/')[-1]}", "",
        f"Fine-tuned from **{base}** with [Tunesmith](https://pypi.org/project/tunesmith/) {__version__} "
        f"({cfg.method}, objective {objective}); this repository holds the "
        + {"adapter": "LoRA adapter", "merged": "merged 16-bit model", "gguf": "GGUF files for llama.cpp and Ollama"}[fmt] + ".",
        "", "## Training", "",
        f"- Base model: `{base}`",
        f"- Data: {', '.join(f'`{d}`' for d in cfg.data.datasets)}"
        + (f" (mixed {cfg.data.mix})" if cfg.data.mix else ""),
        f"- Method: {cfg.method}" + (f", LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {cfg.lora.target_modules}"
                                     if cfg.method in ("lora", "qlora") else ""),
        f"- Steps: {metrics.get('steps', 'n/a')}, learning rate {cfg.training.learning_rate}, "
        f"batch {cfg.training.batch_size} x {cfg.training.gradient_accumulation}, cutoff {cfg.data.cutoff_len} tokens",
    ]
    if "train_loss" in metrics:
        lines.append(f"- Final training loss: {metrics['train_loss']:.4f}")
    if "eval_loss" in metrics:
        lines.append(f"- Final eval loss: {metrics['eval_loss']:.4f}")
    lines += ["", "## Use it", ""]
    if fmt == "adapter":
        if base == "tunesmith/demo":
            lines += ["The base is Tunesmith's bundled demo model: load it from a Tunesmith install.", ""]
        if cfg.lora.init == "loftq":  # [issue 15] see engine/adapters.py, LoftQ
            lines += ["A LoftQ adapter: it corrects the rounding of the 4-bit (bitsandbytes "
                      f"{cfg.quantization.quant_type.upper()}) base, so load the base in 4 bits before adding it; on "
                      "the original 16-bit weights its correction counts twice (tunesmith_loftq.json says how).", ""]
        lines += ["```python", "from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                  f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo}")', "```"]
    elif fmt == "merged":
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo}")', "```"]
    else:
        gguf = next((f for f in files or [] if f.endswith(".gguf")), "MODEL.gguf")
        lines += ["```python", "from llama_cpp import Llama", "",
                  f'llm = Llama.from_pretrained("{repo}", filename="{gguf}")', "```", "",
                  "With Ollama: download the folder and run `ollama create NAME -f <file>.Modelfile` in it."]
    lines += ["", "## Run config", "", "Train it again with `tunesmith train run.yaml`:", "",
              "```yaml", cfg.to_yaml().strip(), "```", ""]
    return "\n".join(lines)


# ---- preparing the folder and pushing -------------------------------------------------


def prepare_folder(run_id: str, fmt: str, repo: str, quants: list[str] | None = None,
                   progress: Progress | None = None) -> Path:
    """Export the run and write the model card into the exported folder; returns the folder."""
    from . import export

    progress = progress or (lambda f, m: None)
    run = jobs.find_run(run_id)
    res = export.export_run(run.id, fmt, None, quants=quants, progress=lambda f, m: progress(0.8 * f, m))
    write_card(run.id, fmt, Path(res.path), repo)
    return Path(res.path)


def write_card(run_id: str, fmt: str, folder: Path, repo: str) -> Path:
    """Write README.md (the model card) and tunesmith_config.yaml into an exported folder."""
    from .atomic import write_text

    run = jobs.find_run(run_id)
    cfg = jobs.load_config(run)
    files = sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    write_text(Path(folder) / "README.md", model_card(cfg, run, fmt, repo, files))
    write_text(Path(folder) / "tunesmith_config.yaml", cfg.to_yaml())
    return Path(folder) / "README.md"


def _hub_error(e: Exception, repo: str, endpoint: str) -> HubError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if status == 401:
        return HubError(f"the Hub at {endpoint} rejected the token (401): set HF_TOKEN to a token with write access "
                        "(huggingface.co/settings/tokens) or log in with `hf auth login`.")
    if status == 403:
        return HubError(f"the token may not write to {repo} (403): use your own user or an org you belong to.")
    if status is None and any(s in text.lower() for s in ("connect", "resolve", "timed out", "network", "offline")):
        return HubError(f"cannot reach the Hub at {endpoint} ({text}): check the network (or HF_HUB_OFFLINE / HF_ENDPOINT).")
    return HubError(f"pushing to {repo} failed: {text}")


def push_folder(folder: Path, repo: str, private: bool = False, token: str | None = None,
                message: str = "Upload from Tunesmith") -> str:
    """Create the repo (if needed) and upload `folder` in one commit; returns the repo URL."""
    from huggingface_hub import HfApi, constants, get_token

    repo = check_repo_id(repo)
    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE is set: pushing needs the Hub. Unset it and try again.")
    api = HfApi(token=token or None)
    endpoint = api.endpoint
    if not (token or get_token()):  # $HF_TOKEN or the stored `hf auth login`
        raise HubError("no Hugging Face token: set HF_TOKEN, log in with `hf auth login`, or paste one in the studio.")
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", commit_message=message,
                          ignore_patterns=[".*", "*.partial"])
    except Exception as e:  # huggingface_hub raises HTTP, network and validation errors alike
        raise _hub_error(e, repo, endpoint) from e
    return str(url)


def push_run(run_id: str, repo: str, fmt: str = "adapter", private: bool = False, token: str | None = None,
             quants: list[str] | None = None, progress: Progress | None = None) -> str:
    """Export `run_id` as `fmt`, write its model card and push it to `repo`; returns the repo URL."""
    progress = progress or (lambda f, m: None)
    repo = check_repo_id(repo)
    folder = prepare_folder(run_id, fmt, repo, quants, progress)
    progress(0.85, f"uploading to {repo}")
    url = push_folder(folder, repo, private=private, token=token,
                      message=f"Tunesmith: {fmt} of run {jobs.find_run(run_id).name}")
    progress(1.0, "pushed")
    return url


def card_metadata(readme: str) -> dict:
    """The YAML front matter of a model card (tests and the studio read it back)."""
    m = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
    return yaml.safe_load(m.group(1)) if m else {}


