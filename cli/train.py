"""`tunesmith train CONFIG.yaml`: start a run and follow it in the terminal."""

from __future__ import annotations

import argparse
import sys
import time

EXAMPLES = """examples:
  tunesmith train assets/demo_identity.yaml
  tunesmith train run.yaml --set training.max_steps=20 --set lora.r=32
  tunesmith train run.yaml --detach        # queue it and return; watch it in the studio or `tunesmith runs`
  tunesmith train run.yaml --gpus 0,1      # two GPUs, one process each (DDP); also --gpus 2 or --gpus auto
  tunesmith train llama3_lora_sft.yaml --dry-run   # a LLaMA-Factory YAML: print what it becomes, train nothing

Runs wait in a queue until their GPUs are free (one run per GPU; one at a time on a CPU-only machine);
`tunesmith queue` shows, reorders and cancels them.

The YAML is what the studio's "Show YAML" prints; every field is described in README.md.
A LLaMA-Factory training YAML is accepted as it is: it is translated (a report
says what mapped to what) and keys Tunesmith cannot honour are refused by name.
Ctrl+C asks the run to stop gracefully (the adapter trained so far is saved).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune from a YAML config", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML (see README.md or the studio's Show YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. training.max_steps=20 (repeatable)")
    p.add_argument("--gpus", metavar="auto|N|0,1", help="GPUs to train on (resources.gpus): auto, a count, or indices")
    p.add_argument("--detach", action="store_true", help="queue the run and return at once")
    p.add_argument("--dry-run", action="store_true", help="print the resulting RunConfig YAML and exit without training")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs, scheduler
    from tunesmith.engine.compat import read_config
    from tunesmith.engine.text import printable
    from tunesmith.engine.trackers import check_available

    overrides = list(args.overrides) + ([f"resources.gpus={args.gpus}"] if args.gpus else [])
    cfg, translation = read_config(args.config, overrides, register=not args.dry_run)
    if translation is not None:
        print(f"{args.config}: LLaMA-Factory config, translated:", file=sys.stderr)
        print("\n".join(translation.report()), file=sys.stderr)
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        return 0
    check_available(cfg.training.report_to)
    from tunesmith.engine.data.pairs import objective_data_note

    if note := objective_data_note(cfg):  # sft on preference / KTO data: said before the run, not only in its log
        print(f"note: {note}", file=sys.stderr)
    run_id = jobs.submit(cfg)
    info = jobs.get_run(run_id)
    place = scheduler.positions().get(run_id)
    state = f"queued (number {place}; `tunesmith queue` shows the queue)" if place else "started"
    print(f"run {run_id} ({printable(info.name)}) {state}; folder {info.run_dir}")
    if args.detach:
        scheduler.hand_off()  # someone must start it if it is still waiting
        return 0
    return follow(run_id)


def printable_lines(text: str) -> str:
    from tunesmith.engine.text import printable

    return "\n".join(printable(line) for line in text.splitlines())


def follow(run_id: str) -> int:
    """Show a progress bar until the run ends; Ctrl+C requests a graceful stop."""
    from tqdm import tqdm

    from tunesmith.engine import events, jobs, scheduler
    from tunesmith.engine.text import printable

    bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)
    seen = 0
    stopping = False
    waiting = None
    try:
        while True:
            try:
                scheduler.tick()  # this process schedules while it waits (if no other one does)
                place = scheduler.positions().get(run_id)
                if place != waiting:
                    waiting = place
                    if place:
                        bar.set_description(f"queued: number {place}")
                evs = events.read_events(jobs.get_run(run_id).run_dir)
                for ev in evs[seen:]:
                    if ev["type"] == "train":
                        if ev.get("max_steps"):
                            bar.total = ev["max_steps"]
                        bar.n = ev["step"]
                        post = {"loss": f"{ev['loss']:.4f}"}
                        if ev.get("tokens_per_s"):
                            post["tok/s"] = f"{ev['tokens_per_s']:.0f}"
                        bar.set_postfix(post, refresh=False)
                        bar.refresh()
                    elif ev["type"] == "eval":
                        bar.write(f"step {ev['step']}: eval loss {ev['eval_loss']:.4f}")
                    elif ev["type"] == "status" and ev.get("message"):
                        bar.set_description(printable(ev["message"])[:40])
                seen = len(evs)
                info = jobs.get_run(run_id)
                if info.finished:
                    break
                time.sleep(0.5)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                bar.write("stopping after the current step (Ctrl+C again to leave it running in the background)...")
                jobs.stop(run_id)
    finally:
        bar.close()
        scheduler.tick()  # settle this run and start the next one
        scheduler.hand_off()
    info = jobs.get_run(run_id)
    if info.status == "cancelled":
        print(f"run {run_id} was cancelled before it started", file=sys.stderr)
        return 1
    if info.status == "failed":
        print(f"run {run_id} failed:\n{printable_lines(info.error or '')}", file=sys.stderr)
        return 1
    out = info.run_dir / ("model" if info.has_full_model else "adapter")
    print(f"run {run_id} {info.status}; last loss {info.last_loss}; saved to {out}")
    return 0
