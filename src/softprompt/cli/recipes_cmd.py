"""`softprompt recipes`: the paper recipes `train --recipe` takes, with the source of each value."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipes", help="list the paper recipes (--recipe) with their sources",
        description="List the paper recipes `softprompt train --recipe NAME` takes: each paper's method, "
                    "optimizer, learning rate(s), schedule, steps or epochs, batch size, lengths, "
                    "evaluation and protocol, with the paper section or repository file each comes from. "
                    "Any other train option overrides a recipe's value.")
    parser.add_argument("name", nargs="?", help="show only this recipe")
    parser.set_defaults(func=run)


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(args) -> int:
    from softprompt.recipes import RECIPES

    if args.name is not None and args.name not in RECIPES:
        raise ValueError(f"unknown recipe {args.name!r}; known: {', '.join(RECIPES)}")
    for name, recipe in RECIPES.items():
        if args.name is not None and name != args.name:
            continue
        print(f"{name}: {recipe.paper}")
        options = ", ".join(f"{k} {_fmt(v)}" for k, v in recipe.method_options.items())
        print(f"  method {recipe.method} ({options})")
        print("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in recipe.settings.items()))
        for what, source in recipe.sources.items():
            print(f"  - {what}: {source}")
        if recipe.per_task:
            print(f"  per task (authors' logs): {', '.join(recipe.per_task)}")
        print()
    return 0
