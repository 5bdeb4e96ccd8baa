"""tunesmith.engine.data: datasets in, tokenized training rows and check reports out.

    from tunesmith.engine.data import list_datasets, prepare_datasets
    train_ds, eval_ds = prepare_datasets(cfg, tokenizer)   # input_ids, assistant_masks (1 = trained)

Modules, in the order data flows through them:

    registry.py   dataset_info.json (LLaMA-Factory format): names -> files, uploads
    readers.py    file types (.json/.jsonl/.csv/.tsv/.parquet/.txt/.xlsx, folders, hub ids) and encodings
    formats.py    format detection and normalisation of every row to messages
    examples.py   one reference -> checked examples + problems (shared by training and reports)
    templates.py  named chat templates (chatml, llama3, qwen, ...)
    tokenize.py   rendering, loss masks, packing, tokenization cache
    prepare.py    prepare_datasets(cfg, tokenizer)
    inspect.py    the check report (tunesmith data inspect, the Data tab), previews, histograms
"""

from .examples import ExampleSet, Problem, load_examples
from .formats import FORMATS, PROBLEM_KINDS, ColumnMapping
from .prepare import prepare_datasets
from .registry import DatasetEntry, get_dataset, list_datasets, register_dataset, register_upload
from .templates import TEMPLATES, resolve_template, template_names

__all__ = [
    "FORMATS", "PROBLEM_KINDS", "TEMPLATES", "ColumnMapping", "DatasetEntry", "ExampleSet", "Problem",
    "get_dataset", "list_datasets", "load_examples", "prepare_datasets", "register_dataset", "register_upload",
    "resolve_template", "template_names",
]
