"""`tunesmith eval RUN`: answer held-out rows with a run and its base model, and score both."""

from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """examples:
  tunesmith eval demo-identity                     # the run's held-out rows, tuned vs base
  tunesmith eval RUN --data test.jsonl -n 50       # a test file (or a registered dataset name)
  tunesmith eval RUN --no-base --json              # scores and predictions as JSON
Scores: exact match, ROUGE-L (0-1, higher is better), BLEU (0-100), perplexity (lower is better).
Predictions are written to $TUNESMITH_HOME/evals/RUN_ID/TIME/predictions.jsonl.
A preference run (dpo, orpo, simpo, kto, reward) is scored on held-out pairs instead: preference
accuracy, mean rewards of the chosen and rejected replies and their margin (evals/.../pairs.jsonl).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a run's answers on held-out rows (and the base model's)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", help="run id (or unique prefix / name)")
    p.add_argument("--data", help="test set: a file or registered dataset name (default: the run's held-out rows)")
    p.add_argument("-n", "--rows", type=int, default=20, help="rows to answer (default 20; 0 = all)")
    p.add_argument("--no-base", action="store_true", help="skip the base model")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print scores and predictions as JSON")
    p.set_defaults(func=run)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tunesmith.engine import evaluate
    from tunesmith.engine.errors import ConfigError

    if args.rows < 0:
        raise ConfigError("--rows must be 0 (all) or more.")
    bars: list = []  # made on the first progress report, so a refused run prints only its one line

    def progress(frac: float, msg: str) -> None:
        if not bars:
            bars.append(tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True, disable=args.json))
        bar = bars[0]
        bar.n = int(100 * frac)
        bar.set_description(msg[:40])
        bar.refresh()

    from tunesmith.engine import evaluate_preference

    if evaluate_preference.is_preference_run(args.run_id):
        return _preference(evaluate_preference.evaluate_preference_run(
            args.run_id, data=args.data, n=args.rows or None, base=not args.no_base, progress=progress), bars, args)
    results = evaluate.evaluate_run(args.run_id, data=args.data, n=args.rows or None, base=not args.no_base,
                                    max_new_tokens=args.max_new_tokens, progress=progress)
    for bar in bars:
        bar.close()
    if args.json:
        print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
        return 0
    print(f"test set: {results[0].test_set} ({len(results[0].predictions)} rows)")
    print(f"{'model':<7} {'exact':>7} {'rouge-l':>8} {'bleu':>7} {'perplexity':>11}  target")
    for r in results:
        s = r.scores
        print(f"{r.label:<7} {_fmt(s['exact_match']):>7} {_fmt(s['rouge_l']):>8} {_fmt(s['bleu'], 1):>7} "
              f"{_fmt(s['perplexity'], 2):>11}  {r.target}")
    print(f"predictions: {results[0].path}")
    return 0


def _preference(result, bars: list, args: argparse.Namespace) -> int:
    for bar in bars:
        bar.close()
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        return 0
    print(f"test set: {result.test_set} ({len(result.pairs)} {result.unit}), objective {result.objective}")
    print(f"{'model':<7} {'accuracy':>9} {'chosen':>8} {'rejected':>9} {'margin':>8} {'logp-acc':>9}")
    for label, m in (("tuned", result.metrics), ("base", result.base_metrics)):
        if m:
            print(f"{label:<7} {_fmt(m['accuracy']):>9} {_fmt(m['reward_chosen']):>8} {_fmt(m['reward_rejected']):>9} "
                  f"{_fmt(m['margin']):>8} {_fmt(m['logp_accuracy']):>9}")
    if result.base_note:
        print(f"base: {result.base_note}")
    print(f"pairs: {result.path}")
    return 0
