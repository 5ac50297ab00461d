"""Base (pretrained only) decoder-only models: the base template style and the methods' base
recipes, resolved through the same layers as everything else (settings.kind_layers)."""

from __future__ import annotations

import dataclasses

import pytest

from softprompt import METHODS
from softprompt.config import TrainConfig
from softprompt.prompts import recipe_for
from softprompt.settings import default_style, kind_layers, resolved
from softprompt.tasks import list_tasks, resolve_task, task_from_dict
from softprompt.tasks.registry import task_file
from softprompt.yamlfile import load_yaml


@pytest.mark.parametrize("name", list_tasks())
def test_base_style_is_the_instruction_style_where_a_task_file_has_no_base_entry(name):
    styles = load_yaml(task_file(name).read_text()).get("styles") or {}
    base, instruction = resolve_task(name, style="base"), resolve_task(name, style="instruction")
    if "base" not in styles:
        assert base == instruction
    else:  # only the fields the base entry names differ
        changed = {f.name for f in dataclasses.fields(base) if getattr(base, f.name) != getattr(instruction, f.name)}
        assert changed and changed <= {k.replace("-", "_") for k in styles["base"]}


def test_copa_base_style_continues_the_premise_with_each_choice():
    task = resolve_task("copa", style="base")
    row = {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
           "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0}
    from softprompt.tasks.preprocess import TRANSFORMS

    fields = TRANSFORMS[task.preprocess](row)
    assert task.template.format(**fields) == "The man turned on the faucet so"
    assert [fields[f] for f in task.choice_fields] == ["the toilet filled with water.", "water flowed from the spout."]
    cause = TRANSFORMS[task.preprocess](dict(row, question="cause", premise="My body cast a shadow over the grass. "))
    assert task.template.format(**cause) == "My body cast a shadow over the grass because"
    assert row["premise"] == "The man turned on the faucet."  # the row itself is not changed


def test_a_task_file_s_base_entry_applies_over_its_instruction_entry():
    data = {"hub": {"path": "x"}, "template": "t2t {a}", "label_words": ["0", "1"],
            "styles": {"instruction": {"template": "Q: {a}\nA:", "label_words": ["no", "yes"]},
                       "base": {"label_words": ["false", "true"]}}}
    base = task_from_dict(data, style="base")
    assert (base.template, base.label_words) == ("Q: {a}\nA:", ("false", "true"))
    assert task_from_dict(data, style="instruction").label_words == ("no", "yes")
    assert task_from_dict({k: v for k, v in data.items() if k != "styles"} | {"styles": {"instruction": data["styles"]["instruction"]}},
                          style="base").label_words == ("no", "yes")


def test_a_base_model_gets_the_base_style_and_each_method_s_base_recipe():
    assert default_style("decoder-only", base=True) == "base"
    assert default_style("decoder-only") == "instruction" and default_style("encoder-decoder") == "text-to-text"
    for method in METHODS:
        layer = kind_layers(method, "decoder-only", base=True)
        assert layer["style"] == ("base", "kind default decoder-only base")
        for key, value in recipe_for(method, "base").items():
            assert layer[key] == (value, f"method recipe {method}/decoder-only base")
        # what the base recipe does not name is the kind's recipe, named as such
        for key, value in recipe_for(method, "decoder-only").items():
            if key not in recipe_for(method, "base"):
                assert layer[key] == (value, f"method recipe {method}/decoder-only")
        # an instruction-tuned model is unchanged by any of it
        assert kind_layers(method, "decoder-only")["style"] == ("instruction", "kind default decoder-only")
    config = resolved(TrainConfig(method="ulpt", length=20), "decoder-only", base=True)
    assert config.style == "base" and config.sources["style"] == "kind default decoder-only base"
    expected = recipe_for("ulpt", "base").get("lr", recipe_for("ulpt", "decoder-only")["lr"])
    assert config.lr == expected
    # what the user gives wins over the base layers
    given = resolved(TrainConfig(method="ulpt", length=20, style="instruction", lr=0.5), "decoder-only", base=True)
    assert (given.style, given.lr) == ("instruction", 0.5)
