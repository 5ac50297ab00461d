"""`softprompt sweep`: run a sweep spec with Optuna, or write its report.

    softprompt sweep sweeps/smollm2-lr.yaml --workers 2            # runs/sweeps/smollm2-lr
    softprompt sweep SPEC.yaml --storage postgresql://user@host/db --dir /shared/sweep   # on each machine
    softprompt sweep SPEC.yaml --launcher slurm --workers 16 --storage postgresql://...
    softprompt sweep report runs/sweeps/smollm2-lr                   # table.md, table.csv, trials.csv, plots/

Running the same command again continues a sweep: finished trials are kept, a trial a killed
worker left resumes from its checkpoint, and only what is missing runs. A trial that failed with
an error is run again only with ``--retry-failed`` (same values, same directory, from its
checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CLIError, positive_int


def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser(
        "sweep", help="run a grid or search of training runs (Optuna), or report one",
        description="Run the trials of SPEC.yaml, each an ordinary `softprompt train` run in DIR/trials/;\n"
                    "the same command again continues the sweep. `softprompt sweep report DIR` writes the table\n"
                    "(rows methods, columns tasks, mean ± std over seeds) as Markdown and CSV, every trial's\n"
                    "numbers (trials.csv), and plots. Examples: sweeps/ in the repository (docs/sweeps.md).",
        epilog=spec_format(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", metavar="SPEC.yaml|report", help="the sweep spec, or `report`")
    parser.add_argument("report_dir", metavar="DIR", nargs="?", help="(after `report`) the sweep directory")
    parser.add_argument("--output-dir", "--dir", dest="dir", metavar="DIR",
                        help="the sweep directory (default runs/sweeps/<spec name>; --dir is the same option)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="worker processes on this machine, or SLURM array tasks (default 1)")
    parser.add_argument("--storage", metavar="URL",
                        help="an Optuna database URL shared by workers on several machines, e.g. "
                             "postgresql://user:pass@host/db (default: DIR/optuna.db, SQLite)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local processes (default) or a SLURM job array through submitit")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run the trials that failed with an error again (same values and directory, "
                             "resumed from their checkpoints)")
    parser.set_defaults(func=run)


def spec_format() -> str:
    """The spec format for ``--help``, from the one place that documents it (``sweep/spec.py``'s
    docstring), read without importing the training stack (``softprompt --help`` stays light)."""
    import ast
    import importlib.util

    origin = importlib.util.find_spec("softprompt.sweep.spec").origin
    doc = ast.get_docstring(ast.parse(Path(origin).read_text(encoding="utf-8"))) or ""
    return "the spec (YAML):\n" + doc.split("\n\n")[1] if "\n\n" in doc else ""


def run(args) -> int:
    if args.spec == "report":
        if not args.report_dir:
            raise CLIError("usage: softprompt sweep report DIR")
        return report(args.report_dir)
    if args.report_dir:
        raise CLIError(f"unexpected argument {args.report_dir!r} (did you mean --output-dir?)")
    from softprompt.sweep.engine import Sweep
    from softprompt.sweep.spec import SweepSpec

    spec = SweepSpec.from_file(args.spec)
    directory = Path(args.dir or Path("runs") / "sweeps" / spec.name)
    sweep = Sweep.create(spec, directory, args.storage)
    if args.retry_failed:
        from softprompt.sweep.engine import retry_failed

        again = retry_failed(sweep)
        print(f"softprompt sweep: retrying {len(again)} failed trial(s)" + (f": {', '.join(again)}" if again else ""),
              file=sys.stderr)
    plans = spec.studies()
    size = sum(p.size for p in plans)
    print(f"softprompt sweep: {spec.name}: {size} trial(s) in {len(plans)} stud{'y' if len(plans) == 1 else 'ies'} "
          f"({spec.sampler} sampler), in {sweep.path}"
          + (f"; the workers write to {sweep.path / 'logs'}" if args.workers > 1 and args.launcher == "local" else ""),
          file=sys.stderr)
    if args.launcher == "slurm":
        from softprompt.sweep.launch import submit_slurm

        if sweep.default_storage:
            print("softprompt sweep: note: SLURM workers share the SQLite file in the sweep directory; on several nodes "
                  "give --storage (PostgreSQL or MySQL)", file=sys.stderr)
        jobs = submit_slurm(sweep, args.workers)
        print(f"submitted {len(jobs)} worker(s): job {jobs[0].job_id.split('_')[0] if jobs else '-'}; "
              f"when they end: softprompt sweep report {directory}")
        return 0
    from softprompt.sweep.launch import exit_on_signals, run_local

    import contextlib

    # one worker is this process: it stops as a worker process does, its trial left resumable
    with exit_on_signals() if args.workers == 1 else contextlib.nullcontext():
        code = run_local(sweep, args.workers)
    summary = report(directory, quiet=True)
    print(summary)
    _hint_retry(sweep, args)
    return code


def _hint_retry(sweep, args) -> None:
    """Say how to run the failed trials again, when there are some."""
    from softprompt.sweep.engine import tally

    failed = tally(sweep)["failed"]
    if failed:
        again = ["softprompt sweep", args.spec, *(["--dir", args.dir] if args.dir else []),
                 *(["--storage", "URL"] if args.storage else []), "--retry-failed"]
        print(f"softprompt sweep: {failed} trial(s) failed (see the report); to run them again: {' '.join(again)}",
              file=sys.stderr)


def report(directory, quiet: bool = False) -> int | str:
    from softprompt.sweep.report import write_report

    if not (Path(directory) / "sweep.json").is_file():
        raise CLIError(f"{directory}: not a sweep directory (no sweep.json)")
    result = write_report(directory)
    text = result["markdown"] + "wrote " + ", ".join(str(f) for f in result["files"])
    if quiet:
        return text
    print(text)
    return 0
