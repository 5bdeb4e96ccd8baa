"""Evaluate tab: "is it better than before?" — a run and its base model answer the same held-out rows.

Calls engine.evaluate.evaluate_run() (the same as `tunesmith eval RUN`): greedy
answers for N test rows, scored with exact match, ROUGE-L, BLEU and the
perplexity of the reference answers; a table puts the question, the expected
answer and both models' answers side by side, and the predictions download as
JSONL. The test rows are the run's held-out rows unless a dataset or file is
picked.

A preference run (dpo, orpo, simpo, kto, reward) learnt to prefer one reply over
another, so it is scored on held-out pairs instead
(engine.evaluate_preference.evaluate_preference_run): preference accuracy, mean
rewards of the chosen and rejected replies and their margin, the base model's
where they mean something, and a table of every pair. The note under the scores
says which kind of evaluation the picked run gets.
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
# (metric key, column) of a preference evaluation; columns no row has a value for are left out
PREFERENCE_COLUMNS = [("accuracy", "preference accuracy"), ("reward_chosen", "reward chosen"),
                      ("reward_rejected", "reward rejected"), ("margin", "margin"),
                      ("logp_accuracy", "log-prob accuracy"), ("loss", "loss")]
ANSWERS_HINT = ("Exact match: answers identical to the expected one. ROUGE-L and BLEU: how many words they share with "
                "it (higher is better). Perplexity: how surprised the model is by the expected answer (lower is "
                "better).")
# What a preference run's scores mean, per objective (shown under the scores before and after evaluating).
PREFERENCE_HINTS = {
    "dpo": "A preference run is scored on held-out pairs, not on answers. Preference accuracy: the share of pairs "
           "whose chosen reply gets the higher reward. Reward: how much more likely the fine-tuned model makes a "
           "reply than the base model does (beta × log-ratio); margin = chosen − rejected, higher is better. "
           "Log-prob accuracy: the share of pairs whose chosen reply the model finds more likely outright. The base "
           "model's rewards are 0 by definition (it is the reference): compare the log-prob accuracy.",
    "kto": "A KTO run is scored on held-out replies marked good or bad. Accuracy: the share of replies whose reward "
           "has the right sign (good above 0, bad below). Reward: how much more likely the fine-tuned model makes a "
           "reply than the base model does (beta × log-ratio); reward chosen is the good replies' mean, reward "
           "rejected the bad ones'. The base model's rewards are 0 by definition, so it gets no row.",
    "reward": "A reward model is scored on held-out pairs. Preference accuracy: the share of pairs whose chosen reply "
              "it scores higher. Reward chosen / rejected: its mean scores; margin: their difference, higher is "
              "better. The base model has no score head, so it gets no row.",
    "simpo": "A preference run is scored on held-out pairs, not on answers. Preference accuracy: the share of pairs "
             "whose chosen reply gets the higher reward. Reward: beta × the mean log-prob of a reply's tokens (no "
             "reference model, so the base model is scored the same way); margin = chosen − rejected, higher is "
             "better. Log-prob accuracy: the share of pairs whose chosen reply the model finds more likely outright.",
}
PREFERENCE_HINTS["orpo"] = PREFERENCE_HINTS["simpo"]


@dataclass
class EvaluateHandles:
    run: gr.Dropdown
    test_set: gr.Dropdown
    rows: gr.Slider
    base: gr.Checkbox
    start: gr.Button
    scores: gr.Dataframe
    hint: gr.Markdown
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


def _signed(v: float | None) -> str:
    return "—" if v is None else "0" if v == 0 else f"{v:+.3f}"


def _share(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def preference_scores_frame(result) -> pd.DataFrame:
    """One row per metric the evaluation has, one column per model (fine-tuned, and base where it was scored):
    narrow enough for the column beside the form."""
    models = [(tr("fine-tuned"), result.metrics)] + ([(tr("base model"), result.base_metrics)]
                                                     if result.base_metrics else [])
    fmt = {"accuracy": _share, "logp_accuracy": _share, "loss": lambda v: _num(v, 3)}
    rows = [[tr(col)] + [fmt.get(key, _signed)(m.get(key)) for _, m in models]
            for key, col in PREFERENCE_COLUMNS if any(m.get(key) is not None for _, m in models)]
    return pd.DataFrame(rows, columns=[tr("score")] + [who for who, _ in models])


def table_widths(frame: pd.DataFrame, text_columns: int, total: int = 1220) -> list[str]:
    """Column widths (px): the first `text_columns` share what the short ones (numbers, marks) leave; a short
    column is as wide as its longest value or header word, so its header wraps instead of widening it."""
    short = [max(4, *(len(str(v)) for v in frame[c]), *(len(w) for w in str(c).split())) * 9 + 24
             for c in frame.columns[text_columns:]]
    rest = max(160, (total - sum(short)) // text_columns)
    return [f"{rest}px"] * text_columns + [f"{w}px" for w in short]


def pairs_frame(result) -> pd.DataFrame:
    """Every held-out pair (KTO: reply) with its rewards and whether the model got it right."""
    yes, no = "✓", "✗"
    with_base = any(p.base_correct is not None for p in result.pairs)
    if result.unit == "rows":
        cols = [tr("question"), tr("reply"), tr("label"), tr("reward"), tr("right way")]
        rows = [[p.prompt, p.chosen or p.rejected, tr("good") if p.chosen else tr("bad"),
                 _signed(p.chosen_reward if p.chosen else p.rejected_reward), yes if p.correct else no]
                for p in result.pairs]
        return pd.DataFrame(rows, columns=cols)
    cols = [tr("question"), tr("chosen reply"), tr("rejected reply"), tr("reward chosen"), tr("reward rejected"),
            tr("margin"), tr("prefers chosen")] + ([tr("base prefers chosen")] if with_base else [])
    rows = []
    for p in result.pairs:
        row = [p.prompt, p.chosen, p.rejected, _signed(p.chosen_reward), _signed(p.rejected_reward),
               _signed(p.margin), yes if p.correct else no]
        if with_base:
            row.append("—" if p.base_correct is None else yes if p.base_correct else no)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def run_objective(run_id: str | None) -> str | None:
    """The objective a run trained with (None when there is no such run); a reference-free DPO run counts
    as simpo, whose scores it shares in meaning (rewards of the model alone, the base scored alike)."""
    from tunesmith.engine import jobs
    from tunesmith.engine.errors import TunesmithError

    if not run_id:
        return None
    try:
        cfg = jobs.load_config(jobs.find_run(run_id))
    except (TunesmithError, OSError, ValueError):
        return None
    if cfg.objective == "dpo" and (cfg.objective_settings or {}).get("reference") == "none":
        return "simpo"
    return cfg.objective


def describe(run_id: str | None):
    """The note under the scores, and the form's wording, for the kind of evaluation this run gets."""
    objective = run_objective(run_id)
    if objective in PREFERENCE_HINTS:
        unit = "replies" if objective == "kto" else "pairs"
        return (tr(PREFERENCE_HINTS[objective]), gr.update(label=tr("Test pairs")),
                gr.update(label=tr("How many replies") if unit == "replies" else tr("How many pairs"),
                          info=tr("More pairs give a surer score and take longer.")),
                gr.update(label=tr("Also score the base model")))
    return (tr(ANSWERS_HINT), gr.update(label=tr("Questions")),
            gr.update(label=tr("How many questions"), info=tr("More questions give a surer score and take longer.")),
            gr.update(label=tr("Also ask the base model")))


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
            hint = gr.Markdown(T(ANSWERS_HINT), elem_classes="ts-hint", elem_id="eval-hint")
            download = gr.File(label=T("Download"), interactive=False, visible=False, elem_id="eval-download")
    predictions = gr.Dataframe(label=T("Answers"), interactive=False, wrap=True, max_height=480,
                               elem_id="eval-predictions")
    known = gr.State([])

    @toast_errors
    def run_eval(run_id: str | None, data: str | None, n: float, with_base: bool, progress=gr.Progress()):
        from tunesmith.engine import evaluate, evaluate_preference  # loads torch: only when someone evaluates

        if not run_id:
            raise gr.Error(tr("Pick a run to evaluate. No runs yet: train one first."), print_exception=False)
        data = (data or "").strip() or None
        if run_objective(run_id) in evaluate_preference.OBJECTIVES:
            result = evaluate_preference.evaluate_preference_run(run_id, data=data, n=int(n), base=with_base,
                                                                 progress=lambda f, m: progress(f, desc=m))
            table = pairs_frame(result)
            widths = table_widths(table, 2 if result.unit == "rows" else 3)
            return (preference_scores_frame(result), gr.update(value=table, label=tr("Pairs"), column_widths=widths),
                    describe(run_id)[0],
                    gr.update(value=str(result.path), visible=True))
        results = evaluate.evaluate_run(run_id, data=data, n=int(n), base=with_base,
                                        progress=lambda f, m: progress(f, desc=m))
        path = results[0].path
        answers = predictions_frame(results)  # text columns only: they share the width, so all of them show
        widths = table_widths(answers, len(answers.columns))
        return (scores_frame(results), gr.update(value=answers, label=tr("Answers"), column_widths=widths),
                tr(ANSWERS_HINT),
                gr.update(value=str(path) if path else None, visible=bool(path)))

    refresh_inputs = [run, ctx.run_id, known]
    refresh_outputs = [run, known, test_set]
    start.click(run_eval, [run, test_set, rows, base], [scores, predictions, hint, download])
    run.change(describe, run, [hint, test_set, rows, base], show_progress="hidden")
    ctx.demo.load(refresh, refresh_inputs, refresh_outputs, show_progress="hidden")
    return EvaluateHandles(run=run, test_set=test_set, rows=rows, base=base, start=start, scores=scores, hint=hint,
                           predictions=predictions, download=download, refresh_inputs=refresh_inputs,
                           refresh_outputs=refresh_outputs)
