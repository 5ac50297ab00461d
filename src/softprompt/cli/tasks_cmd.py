"""`softprompt tasks`: every named task with its kind, metrics and label words; ``--show NAME``
prints its task file (tasks/builtin/NAME.yaml, as it is) to start your own from; with
``--style`` or ``--protocol``, the task those give, written out as a file of its own."""

from __future__ import annotations

from .common import task_argument


def register(subparsers) -> None:
    from softprompt.config import STYLES

    parser = subparsers.add_parser(
        "tasks", help="list the tasks with their metrics, or print one as a task file",
        description="List every named task: benchmark, kind, metrics (the first selects the "
                    "best checkpoint) and default label words. --show NAME prints a task as a "
                    "task file: save it, edit it, and pass it as --task FILE.")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also show each task's template and description")
    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help="show a paper's task details (dpt, dept, ulpt): its templates and checkpoint metrics")
    parser.add_argument("--show", "--task", dest="show", metavar="NAME|FILE",
                        help="print this task's file (a built-in task's as it is; a task file to "
                             "check as it reads, every field written out)")
    parser.add_argument("--style", choices=STYLES, default=None,
                        help="with --show: the template and label words of this style (default "
                             "text-to-text, the papers'; train picks instruction on decoder-only models)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from softprompt.tasks import get_task, list_tasks, resolve_task, write_task_file
    from softprompt.tasks.registry import task_file
    from softprompt.tasks.taskfile import is_task_file

    if args.show and not is_task_file(args.show) and args.style in (None, "text-to-text") and not args.protocol:
        # a built-in task's file is the task: print it as it is (its comments too)
        print(task_file(args.show).read_text(encoding="utf-8"), end="")
        return 0
    if args.show:
        task = resolve_task(task_argument(args.show), style=args.style, protocol=args.protocol)
        style = args.style or "text-to-text"
        details = f", {args.protocol} protocol's details" if args.protocol else ""
        print(f"# softprompt task file ({task.name}, {style} style{details}); use it as --task FILE."
              f" Paths in data: are relative to this file; local: files are looked up under --data-dir.")
        print(write_task_file(task), end="")
        return 0
    if args.style:
        raise ValueError("--style goes with --show NAME")
    rows = []
    for name in list_tasks():
        task = get_task(name, protocol=getattr(args, "protocol", None))
        if task.kind == "regression":
            words = f"number ({len(task.label_words or ())} values)" if task.label_words else "number"
        elif task.label_words:
            words = " ".join(task.label_words)
        else:
            words = "answer text"
        rows.append((task.name, task.benchmark, task.kind, ",".join(task.metrics), words, task))
    header = ("task", "benchmark", "kind", "metrics", "targets")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[4])
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        if getattr(args, "verbose", False):
            print(f"    template: {row[5].template}")
            if row[5].description:
                print(f"    {row[5].description}")
    return 0
