"""Accuracy against PEFT prompt tuning: the same backbone, template, label words, training
rows, batches, step budget and seeds; softprompt with its defaults, PEFT with its best
learning rate from a small grid chosen on validation.

    python -m benchmarks.accuracy --tasks sst2,rte,cb,boolq,copa --seeds 0,1,2 --data-dir ../shared/data
    python -m benchmarks.accuracy --model gemma-3-270m --methods prompt,ulpt,peft   # -> results/accuracy_gemma-3-270m.json
    python -m benchmarks.accuracy --report --include benchmarks/results/accuracy_gemma-3-270m.json

Per task and seed, the training split loses ``--holdout`` rows (a fixed permutation, the same
for everyone) that serve as the validation set: every run keeps the checkpoint that scores best
there, and PEFT's learning rate is the one whose mean validation score is best (on the seeds
every lr of the grid ran: a grid on seed 0 and the chosen lr alone on later seeds keeps seed 0's
choice). The reported
metric is on the official validation split (the test split's labels are not public), which no
choice ever looked at; where the data folder has no full train split (BoolQ, COPA in
../shared/data) FewGLUE's train32 is the training split (``accuracy_runs``). Evaluation is
rank classification over the label words, or over each row's own choices (COPA), for both.

softprompt: ``softprompt.train`` with the decoder-only recipe (template, label words, objective,
learning rate, warmup: whatever the library defaults to). PEFT: ``accuracy_peft``.

Resumable: a job is ``(model, kind, task, seed, method-or-lr)``; its result row (with the model,
its wall time and the load averages at its start and end) is written to ``--output`` as soon as
it finishes (atomically, under the file's lock), and a relaunch runs only the jobs the file does
not hold, so a benchmark spreads over several sittings. The file records its budget (steps,
batch, prompt length...): a launch with another budget onto it stops (give another ``--output``).
Zero-shot (the template, no prompt) is one job per (model, task). ``--report`` prints the tables
(``accuracy_report``) of ``--output`` and any ``--include`` files, grouped by model; ``--rename
VARIANT:NAME`` counts a variant's runs as a method's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.accuracy_report import chosen_lrs, merge_results, parse_rename, report, row_key, zero_shot_rows
from benchmarks.accuracy_runs import parse_variant, run_jobs
from benchmarks.common import RESULTS, model_name, model_tag, set_threads, write_json
from softprompt.lock import FileLock, LockHeld

TASKS = "sst2,rte,cb,boolq,copa"
METHODS = "prompt,residual,dpt,ulpt,dept,rank_probe,peft"
BUDGET = ("steps", "batch_size", "length", "max_length", "eval_every", "holdout", "limit_eval")


def jobs_for(model: str, tasks, seeds, methods, lrs) -> list[tuple]:
    """Every run of the benchmark as ``(model, kind, task, seed, method-or-lr)``: zero-shot
    first, then seed by seed, so a benchmark stopped early has whole seeds of every task.
    ``methods`` holds softprompt variants; PEFT runs once per lr of ``lrs`` (none: no PEFT)."""
    jobs = [(model, "zero", t, None, None) for t in tasks]
    for seed in seeds:
        for task_name in tasks:
            jobs += [(model, "softprompt", task_name, seed, m) for m in methods]
            jobs += [(model, "peft", task_name, seed, lr) for lr in lrs]
    return jobs


def finished(done: dict) -> set[tuple]:
    """The jobs a results file holds a row for (rows written before jobs named the model, and
    a legacy ``zero_shot`` mapping, count as SmolLM2's)."""
    return {row_key(r) for r in done.get("runs", [])} | {row_key(r) for r in zero_shot_rows(done)}


def check_budget(output: Path, done: dict, budget: dict) -> None:
    """Stop where the file's runs had another budget: a table mixing them would compare unlike runs."""
    held = done.get("budget")
    if held is not None and held != budget:
        diff = ", ".join(f"{k} {held.get(k)} there, {budget.get(k)} here" for k in BUDGET if held.get(k) != budget.get(k))
        raise SystemExit(f"{output}: its runs had another budget ({diff}); give another --output")
    done["budget"] = budget


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help=f"comma-separated (default: {TASKS}; with --report: every task in the files)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated softprompt methods, each optionally with config overrides "
                             f"(prompt,ulpt@objective=lm;lr=0.05), and peft for PEFT over --peft-lrs (default: {METHODS}; "
                             "with --report: every method in the files)")
    parser.add_argument("--seeds", default=None, help="default 0,1,2 (with --report: every seed in the files)")
    parser.add_argument("--peft-lrs", default="3e-3,1e-2,3e-2",
                        help="PEFT's learning-rate grid (with --report: the lrs its choice is made among)")
    parser.add_argument("--peft-full-logits", action="store_true",
                        help="train PEFT with its head at every position, as users call it (default: at the labeled "
                             "positions only, the same loss and gradient at a fraction of the time; the rows say which)")
    parser.add_argument("--model", default=None,
                        help="backbone: smollm2 (SmolLM2-135M-Instruct, the default), gemma-3-270m, or what load_backbone "
                             "takes; recorded in every row; another model's default --output is accuracy_<model>.json")
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding glue/ and superglue/")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--holdout", type=int, default=200)
    parser.add_argument("--limit-eval", type=int, default=None, metavar="N",
                        help="score only the first N held-out and N reported rows (smoke runs; recorded in the budget)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes sharing the runs (one device; useful on a GPU, where one "
                             "small model leaves most of it idle)")
    parser.add_argument("--report", action="store_true", help="only print the tables of the runs in --output (and --include)")
    parser.add_argument("--include", action="append", default=[], metavar="FILE",
                        help="with --report: another results file whose runs join --output's in the table "
                             "(read only; repeat for more)")
    parser.add_argument("--rename", action="append", default=[], metavar="VARIANT:NAME",
                        help="with --report: count VARIANT's runs as NAME's, e.g. 'ulpt@sink=bos:ulpt' for a "
                             "variant whose overrides the recipe has since adopted")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # runs the jobs its stdin hands it
    parser.add_argument("--work", default="/tmp/softprompt-accuracy", help="where the runs go")
    parser.add_argument("--output", default=None, help="results file (default: results/accuracy.json for SmolLM2, "
                                                       "results/accuracy_<model>.json for another --model)")
    args = parser.parse_args(argv)
    if (args.include or args.rename) and not args.report:
        parser.error("--include and --rename only shape a --report")
    args.output = args.output or str(RESULTS / f"accuracy{model_tag(args.model)}.json")
    return args


def split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    import softprompt

    args = parse_args(argv)
    set_threads(args.threads)
    tasks, methods = split(args.tasks), split(args.methods)
    seeds = None if args.seeds is None else [int(s) for s in split(args.seeds)]
    lrs = [float(x) for x in split(args.peft_lrs)]
    unknown = [m for m in methods or () if m != "peft" and parse_variant(m)[0] not in softprompt.METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(softprompt.METHODS)} and peft")
    if args.worker:  # the jobs its parent hands it, one JSON line each; one JSON line per result
        # it neither reads nor writes --output: its parent holds the file's lock and records
        handed = (tuple(json.loads(line)) for line in sys.stdin if line.strip())
        return run_jobs(args, handed, record=lambda r: print("RESULT " + json.dumps(r), flush=True),
                        tasks=tasks or split(TASKS))
    output = Path(args.output)
    lock = hold(output)  # noqa: F841 (held until the process ends)
    done = json.loads(output.read_text()) if output.is_file() else {"runs": []}
    done.setdefault("runs", [])

    if not args.report:
        tasks, seeds, methods = tasks or split(TASKS), seeds if seeds is not None else [0, 1, 2], methods or split(METHODS)
        check_budget(output, done, {k: getattr(args, k) for k in BUDGET})
        variants = [m for m in methods if m != "peft"]
        jobs = jobs_for(model_name(args.model), tasks, seeds, variants, lrs if "peft" in methods else [])
        held = finished(done)
        todo = [j for j in jobs if j not in held]
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already in {output}; {len(todo)} to run", file=sys.stderr)

        def record(result: dict) -> None:
            done["runs"].append(result)
            write_json(output, done)  # after every run: an interrupted benchmark loses one run at most
            print(json.dumps(result), flush=True)

        if args.jobs > 1 and todo:
            worker = [sys.executable, "-m", "benchmarks.accuracy", *(argv if argv is not None else sys.argv[1:]), "--worker"]
            run_workers(worker, args.jobs, todo, record)
        else:
            run_jobs(args, todo, record)

    merged = merge_results([(output, done), *((Path(f), json.loads(Path(f).read_text())) for f in args.include)],
                           dict(parse_rename(r) for r in args.rename))
    text, chosen = report(merged, tasks, seeds, lrs, methods)
    if not args.include and not args.rename:  # the choice belongs to --output's own runs only
        done["peft_best_lr"] = chosen_lrs(done.get("peft_best_lr", {}), chosen)
        write_json(output, done)
    print(text)
    return 0


def hold(output: Path):
    """Take the output file's lock (``.NAME.lock`` beside it) for this process's life, or stop: a
    second launch onto the same file would run the first's pending jobs beside it and overwrite
    its records (the file is read once, at the start). Workers (``--worker``) take none: their parent holds it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        return FileLock.take(output.with_name(f".{output.name}.lock"))
    except LockHeld as held:
        raise SystemExit(f"{output}: another benchmark is writing this file (pid {held.holder}); "
                         "wait for it to finish or give another --output") from None


def run_workers(command: list[str], n: int, jobs: list[tuple], record) -> None:
    """``n`` processes of ``command`` (this script with ``--worker``) sharing ``jobs``: each is
    handed the next pending job (a JSON line on its standard input) when its last one ends, so
    one long job (PEFT on a large vocabulary) never leaves the others idle with a share of their
    own. Results come back as ``RESULT {json}`` lines and are recorded here, so the output file
    has one writer. A worker that dies loses the job it held (a relaunch runs it again); the
    others go on with the rest."""
    import subprocess
    import threading

    pending, lock = list(jobs), threading.Lock()

    def take():
        with lock:
            return pending.pop(0) if pending else None

    def serve(proc):
        job = take()
        while job is not None:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                if line.startswith("RESULT "):
                    with lock:
                        record(json.loads(line[len("RESULT "):]))
                    break
            else:  # the worker ended without its result
                print(f"warning: a worker stopped during {json.dumps(job)}", file=sys.stderr)
                return
            job = take()
        proc.stdin.close()

    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    threads = [threading.Thread(target=serve, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [p.wait() for p in procs]
    if any(failed):
        print(f"warning: workers exited with {failed}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
