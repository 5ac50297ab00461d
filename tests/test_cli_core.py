"""`softprompt params`, `export`, `inspect` and `predict`, run through the CLI's main()."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import batch_for, tiny_llama, tiny_t5
from helpers import tiny_tokenizer

import softprompt
from softprompt.cli import main
from softprompt.spectrum import spectrum


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------
# params: the papers' figures (issue 2)

PAPER_FIGURES = [
    # DPT n=100, b=10 (DPT paper, Table 1)
    (["--method", "dpt", "--length", "100", "--bottleneck", "10", "--embed-dim", "512"], 6_120),
    (["--method", "dpt", "--length", "100", "--bottleneck", "10", "--embed-dim", "768"], 8_680),
    (["--method", "dpt", "--length", "100", "--bottleneck", "10", "--embed-dim", "1024"], 11_240),
    # vanilla prompt tuning, n=100
    (["--method", "prompt", "--length", "100", "--embed-dim", "512"], 51_200),
    (["--method", "prompt", "--length", "100", "--embed-dim", "768"], 76_800),
    (["--method", "prompt", "--length", "100", "--embed-dim", "1024"], 102_400),
    # ULPT r=2, n=100, d=768
    (["--method", "ulpt", "--length", "100", "--rank", "2", "--embed-dim", "768"], 1_736),
    # DePT m=60, r=30, L=256, d=768
    (["--method", "dept", "--length", "60", "--rank", "30", "--max-length", "256", "--embed-dim", "768"], 76_800),
    # Residual n=100, m=400
    (["--method", "residual", "--length", "100", "--bottleneck", "400", "--embed-dim", "512"], 462_736),
    (["--method", "residual", "--length", "100", "--bottleneck", "400", "--embed-dim", "768"], 693_904),
    (["--method", "residual", "--length", "100", "--bottleneck", "400", "--embed-dim", "1024"], 925_072),
]


@pytest.mark.parametrize("argv,expected", PAPER_FIGURES, ids=lambda x: str(x) if isinstance(x, int) else " ".join(x[1::2]))
def test_params_reproduces_the_papers(argv, expected, capsys):
    assert main(["params", *argv]) == 0
    assert last_line(capsys) == str(expected)


def test_params_defaults_match_attach(capsys):
    """Without options, the count is the one a default-attached model really has."""
    assert main(["params", "--method", "residual", "--embed-dim", "32"]) == 0
    model = softprompt.attach(tiny_llama(), method="residual")
    assert int(last_line(capsys)) == model.num_trainable()


def test_params_rejects_an_option_the_method_lacks(capsys):
    assert main(["params", "--method", "ulpt", "--bottleneck", "10", "--embed-dim", "768"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softprompt params: error: ulpt: unknown option(s) bottleneck") and "\n" not in err
    assert main(["params", "--method", "dpt", "--length", "0", "--embed-dim", "768"]) == 2
    assert "length must be a positive integer" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# export


@pytest.mark.parametrize("builder", [tiny_llama, tiny_t5])
def test_export_to_peft_gives_the_same_logits(builder, tmp_path, capsys):
    from peft import PeftModel

    model = softprompt.attach(builder(), method="ulpt", length=5, rank=2, seed=3)
    with torch.no_grad():  # shift starts at 0 and scale at 1: move both so the export must carry them
        model.prompt.shift.normal_(generator=torch.Generator().manual_seed(0))
        model.prompt.scale.mul_(1.5)
    model.save(tmp_path / "p")
    assert main(["export", str(tmp_path / "p"), "--to", "peft", str(tmp_path / "peft")]) == 0
    peft_model = PeftModel.from_pretrained(builder(), str(tmp_path / "peft")).eval()
    ids, mask, labels = batch_for(model.backbone, padding="right")
    with torch.no_grad():
        if model.join.kind == "encoder-decoder":
            ours = model(ids, mask, labels=labels).logits
            theirs = peft_model(input_ids=ids, attention_mask=mask, labels=labels).logits
            keep = torch.ones(ours.shape[:2], dtype=torch.bool)
        else:
            ours = model(ids, mask).logits
            theirs = peft_model(input_ids=ids, attention_mask=mask).logits[:, 5:]  # drop the 5 virtual tokens
            keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)

    # an existing output is not replaced silently
    assert main(["export", str(tmp_path / "p"), "--to", "peft", str(tmp_path / "peft")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_export_from_peft_round_trip(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    model = softprompt.attach(tiny_llama(), method="dpt", length=4, bottleneck=2)
    model.save(tmp_path / "p")
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "peft")]) == 0  # --to peft is the default
    assert main(["export", str(tmp_path / "peft"), "--from", "peft", "--model", str(tmp_path / "tiny"), str(tmp_path / "back")]) == 0
    back = softprompt.load(tiny_llama(), tmp_path / "back")
    assert back.method == "prompt"
    assert torch.equal(back.prompt_embeddings(), model.prompt_embeddings().detach())


# ---------------------------------------------------------------------------------------
# inspect


def test_spectrum_counts_rank_at_each_tolerance():
    # singular values 1, 0.5, 5e-3, 5e-5, 0 by construction (orthonormal factors)
    sigma = torch.tensor([1.0, 0.5, 5e-3, 5e-5, 0.0], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    v, _ = torch.linalg.qr(torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    summary = spectrum((u * sigma) @ v.T, tolerances=(1e-2, 1e-3, 1e-6))
    assert summary["rank"] == {1e-2: 2, 1e-3: 3, 1e-6: 4}
    assert summary["stable_rank"] == pytest.approx(1 + 0.25 + 2.5e-5 + 2.5e-9, rel=1e-9)
    assert summary["frobenius_norm"] == pytest.approx(float(sigma.norm()), rel=1e-9)
    assert spectrum(torch.zeros(3, 4))["rank"] == {1e-2: 0, 1e-3: 0, 1e-6: 0}


def test_inspect_dpt_prompt_has_rank_of_its_bottleneck(tmp_path, capsys):
    model = softprompt.attach(tiny_llama(), method="dpt", length=8, bottleneck=3)
    model.save(tmp_path / "p")
    assert main(["inspect", str(tmp_path / "p"), "--plot", str(tmp_path / "plots" / "spectrum.png")]) == 0
    out = capsys.readouterr().out
    for rtol in ("0.01", "0.001", "1e-06"):
        assert f"numerical rank (σ_i > {rtol}·σ_max): 3\n" in out
    p = model.prompt_embeddings().detach().double()
    sigma = torch.linalg.svdvals(p)
    assert f"stable rank (‖P‖_F²/σ_max²): {float((sigma ** 2).sum() / sigma[0] ** 2):.4f}" in out
    assert "materialized prompt P: 8 x 32" in out and "trainable parameters: 120" in out
    assert (tmp_path / "plots" / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_reports_method_diagnostics(tmp_path, capsys):
    model = softprompt.attach(tiny_llama(), method="rank_probe", length=6)
    with torch.no_grad():
        model.prompt.sigma[:2] = -1.0  # two directions switched off
    model.save(tmp_path / "p")
    assert main(["inspect", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "positive_sigma: 4\n" in out
    expected = spectrum(model.prompt_embeddings())["rank"][1e-6]
    assert expected <= 4 and f"numerical rank (σ_i > 1e-06·σ_max): {expected}\n" in out


def test_inspect_bad_input_is_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "no such prompt directory" in capsys.readouterr().err
    softprompt.attach(tiny_llama(), method="dpt", length=2, bottleneck=1).save(tmp_path / "p")
    assert main(["inspect", str(tmp_path / "p"), "--tolerances", "2"]) == 2
    assert "--tolerances must be numbers in (0, 1)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# predict


@pytest.fixture
def tiny_run(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    softprompt.attach(tiny_llama(), method="ulpt", length=3, rank=2).save(tmp_path / "prompt")
    return tmp_path


def test_predict_generate_with_template(tiny_run, capsys):
    rows = [{"id": "a", "text": "great fun"}, {"id": "b", "text": "a very dull plot"}, {"id": "c", "text": "bad"}]
    (tiny_run / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["predict", str(tiny_run / "prompt"), "--model", str(tiny_run / "tiny"), "--input", str(tiny_run / "in.jsonl"),
            "--template", "sentence : {text}", "--output", str(tiny_run / "out" / "preds.jsonl"), "--max-new-tokens", "3"]
    assert main(argv) == 0
    out = [json.loads(line) for line in (tiny_run / "out" / "preds.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b", "c"] and [r["index"] for r in out] == [0, 1, 2]
    assert out[1]["input"] == "sentence : a very dull plot"
    assert all(isinstance(r["generation"], str) and r["prediction"] == r["generation"].strip() for r in out)
    assert [p.name for p in (tiny_run / "out").iterdir()] == ["preds.jsonl"]  # no temp file left


def test_predict_rank_mode_with_task_from_csv(tiny_run):
    (tiny_run / "in.csv").write_text("sentence,idx\ngreat fun,7\nawful acting,8\n")
    argv = ["predict", str(tiny_run / "prompt"), "--model", str(tiny_run / "tiny"), "--input", str(tiny_run / "in.csv"),
            "--task", "sst2", "--label-words", "names", "--mode", "rank", "--output", str(tiny_run / "preds.jsonl")]
    assert main(argv) == 0
    out = [json.loads(line) for line in (tiny_run / "preds.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in out] == ["7", "8"]
    # the folder records nothing (model.save): the template of its backbone's kind, decoder-only's
    # instruction style, as train and preview pick it (issue 36), with --label-words names
    assert out[0]["input"] == "Review: great fun\nSentiment:"
    assert all(r["prediction"] in ("negative", "positive") and r["generation"] is None for r in out)


def _second_prompt(tiny_run):
    """A DPT prompt beside the fixture's ULPT one, its values moved off the init."""
    model = softprompt.attach(tiny_llama(), method="dpt", length=5, bottleneck=2, seed=3)
    with torch.no_grad():
        model.prompt.a.mul_(4.0)
    model.save(tiny_run / "rte_run" / "prompt")
    return tiny_run / "rte_run" / "prompt"


def _predict(tiny_run, prompts, rows, extra, name="preds.jsonl"):
    (tiny_run / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["predict", *prompts, "--model", str(tiny_run / "tiny"), "--input", str(tiny_run / "in.jsonl"),
            "--output", str(tiny_run / name), *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (tiny_run / name).read_text().splitlines()]


SENTENCES = ["great fun", "a very dull plot", "bad acting", "the film was not good", "really boring", "good movie"]


@pytest.mark.parametrize("mode", ["generate", "rank"])
def test_predict_mixes_prompts_in_batches_and_equals_each_prompt_alone(tiny_run, mode, capsys):
    second = _second_prompt(tiny_run)
    which = ["a", "rte_run", "rte_run", "a", "rte_run", "a"]  # rte_run: named after the run's folder
    rows = [{"id": i, "prompt": w, "sentence": s} for i, (w, s) in enumerate(zip(which, SENTENCES))]
    tasks = {"a": "sst2", "rte_run": "cola"}
    common = (["--label-words", "digits", "--mode", "rank"] if mode == "rank"
              else ["--template", "sentence : {sentence}", "--max-new-tokens", "3"]) + ["--batch-size", "4"]  # both prompts in each batch
    own_task = ["--task", "a=sst2", "--task", "rte_run=cola"] if mode == "rank" else []
    mixed = _predict(tiny_run, [f"a={tiny_run / 'prompt'}", str(second)], rows, common + own_task)
    assert "from 2 prompts in mixed batches" in capsys.readouterr().out
    assert [r["prompt"] for r in mixed] == which and [r["id"] for r in mixed] == list(range(6))
    for name, path in (("a", tiny_run / "prompt"), ("rte_run", second)):
        own = [r for r in rows if r["prompt"] == name]
        alone = _predict(tiny_run, [str(path)], own, common + (["--task", tasks[name]] if mode == "rank" else []), name=f"{name}.jsonl")
        got = [r for r in mixed if r["prompt"] == name]
        assert [(r["input"], r["generation"], r["prediction"]) for r in got] == [(r["input"], r["generation"], r["prediction"]) for r in alone]
    if mode == "rank":
        assert {r["prediction"] for r in mixed if r["prompt"] == "a"} <= {"negative", "positive"}
        assert {r["prediction"] for r in mixed if r["prompt"] == "rte_run"} <= {"unacceptable", "acceptable"}
        # folders that record nothing (model.save): their backbone kind's (decoder-only) instruction template
        assert mixed[1]["input"] == "Sentence: a very dull plot\nIs this sentence grammatical? Answer:"


def test_predict_several_prompts_bad_input_is_one_line(tiny_run, capsys):
    second = _second_prompt(tiny_run)
    (tiny_run / "in.jsonl").write_text('{"sentence": "fun", "prompt": "a"}\n{"sentence": "bad", "prompt": "zzz"}\n')
    base = ["predict", f"a={tiny_run / 'prompt'}", str(second), "--model", str(tiny_run / "tiny"), "--input",
            str(tiny_run / "in.jsonl"), "--output", str(tiny_run / "preds.jsonl")]
    assert main(base + ["--task", "sst2"]) == 2
    assert "in.jsonl row 2: prompt 'zzz' is none of the prompts given (a, rte_run)" in capsys.readouterr().err
    (tiny_run / "in.jsonl").write_text('{"sentence": "fun"}\n')
    assert main(base + ["--task", "sst2"]) == 2
    assert "in.jsonl row 1: missing field 'prompt' (which prompt: a, rte_run)" in capsys.readouterr().err
    assert main(base + ["--task", "a=sst2"]) == 2
    assert "no --task for prompt(s) rte_run" in capsys.readouterr().err
    assert main(base[:2] + [f"a={second}"] + base[3:] + ["--task", "sst2"]) == 2
    assert "two prompts are named 'a'" in capsys.readouterr().err
    assert not (tiny_run / "preds.jsonl").exists()


def test_predict_bad_input_is_one_line(tiny_run, capsys):
    (tiny_run / "in.jsonl").write_text('{"text": "fun"}\n')
    argv = ["predict", str(tiny_run / "prompt"), "--model", str(tiny_run / "tiny"), "--input", str(tiny_run / "in.jsonl"),
            "--task", "sst2", "--output", str(tiny_run / "preds.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "row 1: template field 'sentence' not in the row (fields: text)" in err
    (tiny_run / "bad.jsonl").write_text('{"text": "fun"}\n{oops\n')
    argv[argv.index(str(tiny_run / "in.jsonl"))] = str(tiny_run / "bad.jsonl")
    assert main(argv) == 2
    assert "bad.jsonl:2: malformed JSON (" in capsys.readouterr().err
    assert not (tiny_run / "preds.jsonl").exists()


def test_help_and_parsing_do_not_import_the_modeling_code():
    """`softprompt --help` and the commands that need no model (recipes, tasks, params) load no transformers
    code (seconds on a small machine); the public API still resolves from the package on first
    use (PEP 562)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys, softprompt.cli as cli\n"
        "for argv in (['recipes'], ['tasks']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert cli.main(argv) == 0, argv\n"
        "assert cli.main(['params', '--method', 'ulpt', '--length', '100', '--rank', '2', '--embed-dim', '768']) == 0\n"
        "assert not [m for m in sys.modules if m.startswith('transformers')], 'transformers imported'\n"
        "assert 'softprompt.model' not in sys.modules\n"
        "import softprompt\n"
        "assert softprompt.attach is softprompt.model.attach and softprompt.load is softprompt.model.load\n"
        "assert set(softprompt.__all__) <= set(dir(softprompt))\n"
        "try:\n    softprompt.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise AssertionError('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "1736"
