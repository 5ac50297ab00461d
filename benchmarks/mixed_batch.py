"""Many prompts on one frozen SmolLM2: mixed-task batches against PEFT and against one prompt at a time.

    python -m benchmarks.mixed_batch --threads 1                 # 512 rows, 3 rounds, + SST-2 dev eval
    python -m benchmarks.mixed_batch --threads 1 --rows 64 --rounds 1 --eval-rows 64   # a quick check
    python -m benchmarks.mixed_batch --threads 1 --rows 0 --rounds 1   # part 2 only, all 872 sentences

Part 1, mixed batches. Four prompts for four tasks, each its own method (SST-2 ``prompt``, RTE
``ulpt``, CB ``dpt``, BoolQ ``residual``; 100 tokens each by default, ``--lengths``), and
``--rows`` rows drawn from the tasks' validation splits in turn (a split shorter than its share
is repeated), then shuffled: requests of four tasks arriving mixed. Every row is a rank-mode
classification (the task's label words, each one token: one forward per row), through the
same code (``evaluate.rank_choices``: rows sorted by length, ``--batch-size`` rows a batch):

* softprompt, mixed: one ``PromptBank``; a batch mixes tasks and each row takes its own prompt
  (each distinct prompt's keys and values computed once, kept across batches and calls).
* softprompt, one prompt at a time: a ``SoftPromptModel`` per task on that task's rows.
* PEFT, one adapter at a time: one ``PeftModel`` holding the four prompt-tuning adapters;
  ``set_adapter(task)``, then that task's rows in batches (PEFT cannot mix prompt adapters in
  a batch: its mixed-adapter batches are LoRA-only). Full logits ``[B, n+T, V]``, the label
  words read at the answer position (``benchmarks.accuracy_peft.PeftScorer``).

PEFT's adapters hold softprompt's materialized prompts, so all three must pick the same label
words; the script counts disagreements (float rounding can flip a near-tie).

Part 2, evaluation: SST-2 dev (``--eval-rows``, default all 872) in rank mode, softprompt's
``rank_predictions`` (one row per sentence scores both label words at the answer position; the
prompt's keys and values kept across batches and calls) against PEFT two ways:

* ``peft same rows``: the same rows, batches and code (``PeftScorer``: one row per sentence,
  full logits ``[B, n+T, V]``, the label words read at the answer position);
* ``peft per-choice rows``: ``benchmarks.eval_speed``'s PEFT baseline (the issue's "today
  4.75x"): a row per (sentence, label word), 16 sentences a batch, full logits, log-softmax at
  the label word: what scoring each continuation separately costs.

Rounds alternate the variants (the order flips every round) after a warm-up (part 1: a full
pass of each, which fills the prompt caches; part 2: one batch of each); figures are medians
over rounds. Raw figures: ``results/mixed_batch_threads{N}.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch

import softprompt

from .accuracy_peft import PeftScorer
from .accuracy_runs import data_dir_for
from .common import RESULTS, add_thread_option, load_average, load_model, median, set_threads, write_json

TASKS = ("sst2", "rte", "cb", "boolq")
METHODS = {"sst2": ("prompt", {}), "rte": ("ulpt", {"rank": 2}), "cb": ("dpt", {"bottleneck": 10}), "boolq": ("residual", {})}


def task_rows(names, rows: int, data_dir: str, max_length: int, tokenizer):
    """``rows`` examples of the tasks' validation splits, in turn, shuffled; each carries its
    task's label words as its choices. Returns ``(tasks {name: Task}, examples, names per row)``."""
    from softprompt.tasks import get_task

    tasks = {name: get_task(name, style="instruction") for name in names}
    pools = {name: task.load("validation", data_dir=data_dir_for(task, data_dir)) for name, task in tasks.items()}
    picked = []
    for i in range(rows):
        name = names[i % len(names)]
        pool = pools[name]
        example = pool[(i // len(names)) % len(pool)]
        picked.append((dataclasses.replace(example, choices=tuple(tasks[name].label_words)), name))
    random.Random(0).shuffle(picked)
    return tasks, [e for e, _ in picked], [n for _, n in picked]


def build(backbone, names, lengths, seed: int = 0):
    """A prompt per task (its own method and length), on the one backbone."""
    models = {}
    for i, name in enumerate(names):
        method, options = METHODS[name]
        models[name] = softprompt.attach(backbone, method=method, length=lengths[i], seed=seed + i, **options).eval()
    return models


def peft_with_adapters(backbone, models):
    """One PeftModel holding a prompt-tuning adapter per task, each set to softprompt's prompt."""
    from peft import PromptTuningConfig, get_peft_model

    names = list(models)
    first = names[0]
    peft = None
    for name in names:
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=models[name].config.length)
        if peft is None:
            peft = get_peft_model(backbone, config, adapter_name=first)
        else:
            peft.add_adapter(name, config)
        with torch.no_grad():
            peft.prompt_encoder[name].embedding.weight.copy_(models[name].prompt_embeddings())
    return peft.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="mixed rows (tasks in turn, shuffled); 0: part 2 only")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)} (each with its own method)")
    parser.add_argument("--lengths", default="100,100,100,100", help="prompt length per task, in --tasks order")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="input tokens kept (BoolQ passages are long)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-rows", type=int, default=872, help="SST-2 dev sentences for part 2 (0: skip it)")
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding glue/ and superglue/")
    parser.add_argument("--skip-peft", action="store_true", help="time softprompt only (mixed vs one prompt at a time)")
    add_thread_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from softprompt.evaluate import rank_choices, rank_predictions

    names_of_tasks = tuple(t.strip() for t in args.tasks.split(","))
    unknown = [t for t in names_of_tasks if t not in METHODS]
    if unknown:
        parser.error(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    lengths = [int(x) for x in args.lengths.split(",")][: len(names_of_tasks)]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32; load average {load_average()}")
    backbone, tokenizer = load_model()
    tasks, examples, names = task_rows(names_of_tasks, args.rows, args.data_dir, args.max_length, tokenizer)
    models = build(backbone, names_of_tasks, lengths)
    bank = softprompt.PromptBank(backbone, models).eval()
    peft = None if args.skip_peft else peft_with_adapters(backbone, models)
    by_task = {t: [i for i, n in enumerate(names) if n == t] for t in names_of_tasks}
    bs, ml = args.batch_size, args.max_length

    def mixed():
        return rank_choices(bank, tokenizer, examples, None, bs, ml, prompts=names)

    def one_at_a_time():
        best = torch.empty(len(examples), dtype=torch.long)
        for t, index in by_task.items():
            best[index] = rank_choices(models[t], tokenizer, [examples[i] for i in index], None, bs, ml)
        return best

    def peft_per_adapter():
        best = torch.empty(len(examples), dtype=torch.long)
        for t, index in by_task.items():
            peft.set_adapter(t)
            scorer = PeftScorer(peft, models[t].config.length)
            best[index] = rank_choices(scorer, tokenizer, [examples[i] for i in index], None, bs, ml)
        return best

    variants = {"softprompt mixed": mixed, "softprompt one prompt at a time": one_at_a_time} if args.rows else {}  # 0: part 2 only
    if peft is not None and variants:
        variants["peft one adapter at a time"] = peft_per_adapter
    seconds = {k: [] for k in variants}
    picks = {}
    with torch.inference_mode():
        for name, fn in variants.items():  # warm-up: fills the prompt caches, loads the kernels
            picks[name] = fn()
        for r in range(args.rounds):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                start = time.perf_counter()
                fn = variants[name]
                fn()
                seconds[name].append(time.perf_counter() - start)
    if variants:
        rate = {k: len(examples) / median(v) for k, v in seconds.items()}
        counts = ", ".join(f"{t} {len(i)}" for t, i in by_task.items())
        print(f"\nPart 1: {len(examples)} mixed rows ({counts}), prompts {dict(zip(names_of_tasks, lengths))}, "
              f"methods {', '.join(f'{t}={METHODS[t][0]}' for t in names_of_tasks)}, {bs} rows a batch, {args.rounds} rounds")
        for name in variants:
            s = seconds[name]
            print(f"  {name:32s} median {median(s):8.2f} s  {rate[name]:7.2f} examples/s  (min {min(s):.2f}, max {max(s):.2f})")
        ref = picks["softprompt mixed"]
        disagree = {k: int((v != ref).sum()) for k, v in picks.items() if k != "softprompt mixed"}
        ratios = {"mixed / one prompt at a time": rate["softprompt mixed"] / rate["softprompt one prompt at a time"]}
        if peft is not None:
            ratios["mixed / peft"] = rate["softprompt mixed"] / rate["peft one adapter at a time"]
        for k, v in ratios.items():
            print(f"  {k} = {v:.2f}x")
        print(f"  label words picked differently from mixed: {disagree}")

        result = {
            "rows": len(examples), "per_task": {t: len(i) for t, i in by_task.items()}, "lengths": dict(zip(names_of_tasks, lengths)),
            "methods": {t: METHODS[t][0] for t in names_of_tasks}, "batch_size": bs, "rounds": args.rounds,
            "seconds": seconds, "examples_per_s": rate, "ratios": ratios, "disagreements": disagree,
            "threads": torch.get_num_threads(), "load_average_end_part1": load_average(),
        }
    else:
        result = {"threads": torch.get_num_threads()}

    if args.eval_rows and peft is not None and "sst2" in models:
        sst2 = tasks["sst2"]
        dev = sst2.load("validation", data_dir=data_dir_for(sst2, args.data_dir))[: args.eval_rows]
        model = models["sst2"]
        peft.set_adapter("sst2")
        scorer = PeftScorer(peft, model.config.length)
        from .eval_speed import make_batches, peft_score, sst2_rows

        rows, task, config = sst2_rows(backbone, tokenizer, None, args.data_dir)  # the same sentences, as eval_speed builds them
        per_choice = make_batches(rows[: args.eval_rows], tokenizer, task, config, 16)

        def peft_per_choice():
            return [int(i) for ids, mask, labels, _ in per_choice
                    for i in peft_score(peft, ids, mask, labels).view(-1, 2).argmax(-1)]

        fns = {"softprompt": lambda rows=dev: rank_predictions(model, tokenizer, sst2, rows, bs, ml),
               "peft same rows": lambda rows=dev: rank_predictions(scorer, tokenizer, sst2, rows, bs, ml),
               "peft per-choice rows": peft_per_choice}
        eval_seconds = {k: [] for k in fns}
        preds = {}
        with torch.inference_mode():
            # warm-up on one batch (kernels, the prompt cache); a full pass each would double the run
            fns["softprompt"](dev[:bs]), fns["peft same rows"](dev[:bs]), peft_score(peft, *per_choice[0][:3])
            for r in range(args.rounds):
                for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    start = time.perf_counter()
                    preds[k] = fns[k]()
                    eval_seconds[k].append(time.perf_counter() - start)
        eval_rate = {k: len(dev) / median(v) for k, v in eval_seconds.items()}
        same = sum(a == b for a, b in zip(preds["softprompt"], preds["peft same rows"]))
        print(f"\nPart 2: SST-2 dev rank mode, {len(dev)} sentences, prompt {model.config.length}, {bs} rows a batch")
        for k, v in eval_seconds.items():
            print(f"  {k:22s} median {median(v):8.2f} s  {eval_rate[k]:7.2f} examples/s")
        speedups = {k: eval_rate["softprompt"] / eval_rate[k] for k in fns if k != "softprompt"}
        for k, v in speedups.items():
            print(f"  speed-up softprompt / {k} = {v:.2f}x")
        print(f"  same predictions as PEFT on {same}/{len(dev)} (same prompt in both)")
        result["eval"] = {"examples": len(dev), "seconds": eval_seconds, "examples_per_s": eval_rate,
                          "speedups": speedups, "same_predictions": same}
    print(f"  load average at the end: {load_average()}")
    result["load_average_end"] = load_average()
    suffix = "" if args.rows == 512 and args.eval_rows in (0, 872) and names_of_tasks == TASKS else f"_rows{args.rows}_eval{args.eval_rows}"
    suffix += "" if names_of_tasks == TASKS else "_" + "-".join(names_of_tasks)
    write_json(RESULTS / f"mixed_batch_threads{torch.get_num_threads()}{suffix}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
