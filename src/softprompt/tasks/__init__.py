"""Tasks as data: the papers' benchmarks and the user's own files.

    from softprompt.tasks import get_task
    task = get_task("cb")                                   # or "CB", "superglue-cb"
    train = task.load("train", data_dir="../shared/data/superglue")
    few = task.sample(train, shots_per_class=8, seed=0)
    task.score([task.parse(text) for text in generated], examples)
    task = resolve_task("my_task.yaml")                     # a task file, as --task takes it

Modules, each importing only those below it (pyproject.toml's import-linter contract):
resolve (``--task`` and the quick options -> one Task) > registry (the built-in tasks: one task
file each in builtin/) > taskfile (a task as YAML/JSON, with its styles and protocols) > custom
(the user's files) > spec (Task) > build (rows -> Examples) > local | hub (rows from the
benchmark's own files or `datasets`) > rows (Example, where rows live, labels) > preprocess
(named text rewrites) | splits (protocols, few-shot).
"""

from softprompt.tasks.custom import custom_task
from softprompt.tasks.registry import TASKS, get_task, list_tasks
from softprompt.tasks.resolve import CUSTOM, resolve_task
from softprompt.tasks.spec import Example, HubSource, LocalFormat, Task
from softprompt.tasks.splits import PROTOCOLS
from softprompt.tasks.taskfile import read_task_file, task_from_dict, task_to_dict, write_task_file

__all__ = ["CUSTOM", "Example", "HubSource", "LocalFormat", "PROTOCOLS", "TASKS", "Task", "custom_task",
           "get_task", "list_tasks", "read_task_file", "resolve_task", "task_from_dict", "task_to_dict",
           "write_task_file"]
