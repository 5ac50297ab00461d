"""`softprompt tasks`: every named task with its kind, metrics and label words."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tasks", help="list the tasks with their metrics",
        description="List every named task: benchmark, kind, metrics (the first selects the "
                    "best checkpoint) and default label words.")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also show each task's template and description")
    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help="show a paper's task details (dpt, dept, ulpt): its templates and checkpoint metrics")
    parser.set_defaults(func=run)


def run(args) -> int:
    from softprompt.tasks import get_task, list_tasks

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
