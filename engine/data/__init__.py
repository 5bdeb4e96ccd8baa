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
    pairs.py      preference pairs and KTO rows for the preference objectives (dpo, orpo, simpo, kto, reward)
    inspect.py    the check report (tunesmith data inspect, the Data tab), previews, histograms

For the studio's Data tab:

    report = inspect_dataset(path_or_name, format=None, model=None, cutoff_len=1024, drop_invalid=False,
                             allowed_roots=[paths.uploads_dir(), paths.data_dir()])
    report.to_json(); report.to_text(); length_histogram_figure(report)
    rows = preview_rows(path_or_name, tokenizer=tok, n=5)      # PreviewRow.spans: [(text, trained)]
    render_masked_html(rows[0])
    register_upload(uploaded_file, name) -> DatasetEntry

For the trainer, with data.packing: run the model with use_cache=False (or use
tokenize.collate_packed(..., explicit_mask=True)); see tokenize.py.
"""

from .examples import ExampleSet, Problem, load_examples
from .formats import FORMATS, PROBLEM_KINDS, ColumnMapping
from .inspect import (
    InspectReport,
    PreviewRow,
    inspect_dataset,
    length_histogram_figure,
    preview_rows,
    render_masked_html,
)
from .prepare import prepare_datasets
from .registry import (
    DatasetEntry,
    get_dataset,
    import_dataset_info,
    list_datasets,
    register_dataset,
    register_upload,
)
from .templates import TEMPLATES, resolve_template, template_names

__all__ = [
    "FORMATS", "PROBLEM_KINDS", "TEMPLATES", "ColumnMapping", "DatasetEntry", "ExampleSet", "InspectReport",
    "PreviewRow", "Problem", "get_dataset", "import_dataset_info", "inspect_dataset", "length_histogram_figure", "list_datasets",
    "load_examples", "prepare_datasets", "preview_rows", "register_dataset", "register_upload",
    "render_masked_html", "resolve_template", "template_names",
]
