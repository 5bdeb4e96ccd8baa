"""Evaluate tab: "is it better than before?" — a run and its base model answer the same held-out rows.

Calls engine.evaluate.evaluate_run() (the same as `tunesmith eval RUN`): greedy
answers for N test rows, scored with exact match, ROUGE-L, BLEU and the
perplexity of the reference answers; a table puts the question, the expected
answer and both models' answers side by side, and the predictions download as
JSONL. The test rows are the run's held-out rows unless a dataset or file is
picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from tunesmith.engine import data as engine_data

from .context import StudioContext
from .export_tab import exportable_runs, pick_run
from .i18n import T, tr
from .notices import toast_errors

HELD_OUT = ""  # the test-set choice meaning "the run's own held-out rows"
SCORE_COLUMNS = ["model", "exact match", "ROUGE-L", "BLEU", "perplexity"]


@dataclass
class EvaluateHandles:
    run: gr.Dropdown
    test_set: gr.Dropdown
    rows: gr.Slider
    base: gr.Checkbox
    start: gr.Button
    scores: gr.Dataframe
    predictions: gr.Dataframe
    download: gr.File
    refresh_inputs: list
    refresh_outputs: list


def test_set_choices() -> list[tuple[str, str]]:
    return [(tr("The run's held-out rows"), HELD_OUT)] + [(e.name, e.name) for e in engine_data.list_datasets()]


def refresh(current: str | None, shown: str | None, known: list[str] | None):
    """(run dropdown update, ids known, test set choices)."""
    choices = exportable_runs()
    ids = [v for _, v in choices]
    return gr.update(choices=choices, value=pick_run(ids, current, shown, known)), ids, gr.update(
        choices=test_set_choices())


def _num(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def scores_frame(results: list) -> pd.DataFrame:
    rows = [[tr("fine-tuned") if r.label == "tuned" else tr("base model"), f"{100 * r.scores['exact_match']:.0f}%",
             _num(r.scores["rouge_l"], 3), _num(r.scores["bleu"], 1), _num(r.scores["perplexity"], 2)]
            for r in results]
    return pd.DataFrame(rows, columns=[tr(c) for c in SCORE_COLUMNS])


def predictions_frame(results: list) -> pd.DataFrame:
    tuned = results[0]
    base = results[1] if len(results) > 1 else None
    cols = [tr("question"), tr("expected answer"), tr("fine-tuned answer")] + ([tr("base answer")] if base else [])
    rows = []
    for i, p in enumerate(tuned.predictions):
        row = [p.prompt, p.reference, p.prediction]
        if base:
            row.append(base.predictions[i].prediction)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def build_evaluate_tab(ctx: StudioContext) -> EvaluateHandles:
    gr.Markdown(T("Ask a finished run and its base model the same questions it did not train on, and score "
                  "both answers against the expected ones."), elem_classes="ts-hint")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            run = gr.Dropdown(choices=[], label=T("Run"), elem_id="eval-run",
                              info=T("A finished run. The newest is picked."))
            test_set = gr.Dropdown(choices=[], value=HELD_OUT, allow_custom_value=True, label=T("Questions"),
                                   elem_id="eval-data",
                                   info=T("The rows the run held out (its validation fraction), a dataset, "
                                          "or a file path."))
            rows = gr.Slider(1, 200, value=20, step=1, label=T("How many questions"), elem_id="eval-rows",
                             info=T("More questions give a surer score and take longer."))
            base = gr.Checkbox(True, label=T("Also ask the base model"), elem_id="eval-base")
            start = gr.Button(T("Evaluate"), variant="primary", elem_id="eval-start")
        with gr.Column(scale=3):
            scores = gr.Dataframe(label=T("Scores"), interactive=False, elem_id="eval-scores")
            gr.Markdown(T("Exact match: answers identical to the expected one. ROUGE-L and BLEU: how many words "
                          "they share with it (higher is better). Perplexity: how surprised the model is by "
                          "the expected answer (lower is better)."), elem_classes="ts-hint")
            download = gr.File(label=T("Download"), interactive=False, visible=False, elem_id="eval-download")
    predictions = gr.Dataframe(label=T("Answers"), interactive=False, wrap=True, max_height=480,
                               elem_id="eval-predictions")
    known = gr.State([])

    @toast_errors
    def run_eval(run_id: str | None, data: str | None, n: float, with_base: bool, progress=gr.Progress()):
        from tunesmith.engine import evaluate  # loads torch: only when someone evaluates

        if not run_id:
            raise gr.Error(tr("Pick a run to evaluate. No runs yet: train one first."), print_exception=False)
        results = evaluate.evaluate_run(run_id, data=(data or "").strip() or None, n=int(n), base=with_base,
                                        progress=lambda f, m: progress(f, desc=m))
        path = results[0].path
        return (scores_frame(results), predictions_frame(results),
                gr.update(value=str(path) if path else None, visible=bool(path)))

    refresh_inputs = [run, ctx.run_id, known]
    refresh_outputs = [run, known, test_set]
    start.click(run_eval, [run, test_set, rows, base], [scores, predictions, download])
    ctx.demo.load(refresh, refresh_inputs, refresh_outputs, show_progress="hidden")
    return EvaluateHandles(run=run, test_set=test_set, rows=rows, base=base, start=start, scores=scores,
                           predictions=predictions, download=download, refresh_inputs=refresh_inputs,
                           refresh_outputs=refresh_outputs)
