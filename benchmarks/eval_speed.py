"""SST-2 dev rank-mode evaluation speed: softprompt ``score`` vs PEFT with full logits.

    python -m benchmarks.eval_speed                      # all 872 dev sentences, SmolLM2-135M
    python -m benchmarks.eval_speed --every 4            # every 4th batch (quicker; same length mix)
    python -m benchmarks.eval_speed --model gemma-3-270m # Gemma 3 270M (base)

Rank mode: each sentence is scored once per label word; the prediction is the label word
with the higher log-probability. Both libraries see the same rows, in the same batches: the
rows softprompt's own evaluation builds for this backbone (``common.resolve_for``: the task's
template and label words for the backbone's kind, its separator, the tokenizer's special
tokens, e.g. Gemma's BOS; ``batching.encode_choices``), on SmolLM2 and Gemma
``"Review: <sentence>\nSentiment:" + " negative" | " positive"``, sorted by length and padded
(right) to the longest row of the batch, 16 sentences = 32 rows per batch.

* softprompt: ``model.score(ids, mask, labels)``, labels only on the label word: the
  prompt runs once per batch and the head only at the scored position.
* PEFT: the ``PeftModel`` forward (prompt + sentence + label word per row) with its full
  logits ``[B, n+T, V]``, then the log-softmax picked at the label word.
* softprompt evaluate: the library's own rank evaluation (``evaluate.rank_choices``, what
  ``softprompt eval`` and the demo run) on the same sentences in the same batches: with one-token
  label words, one row per sentence scores both words at the answer position. PEFT users score
  one row per choice (lm-evaluation-harness' loglikelihood requests do), so issue 33's target
  ("rank evaluation >= 10x PEFT's examples/s") is read on this line; the same-rows ratio is
  printed beside it.

PEFT is given softprompt's prompt (the same ``[n, d]`` tensor), so both must produce the
same scores and predictions; the script checks that. Batches are alternated (one batch
softprompt, the same batch PEFT, ...), after one warm-up batch each, under inference mode.
Prints ``speed-up softprompt / peft`` (examples/s over examples/s) and issue 33's target
(``TARGET``). Raw figures: ``results/eval_speed_sst2_threads{N}[_every{K}].json`` (SmolLM2),
``results/eval_speed_<model>_sst2_threads{N}[_every{K}].json`` (another ``--model``).
"""

from __future__ import annotations

import argparse
import time

import torch

import softprompt

from .common import (
    DATA, RESULTS, add_model_option, add_thread_option, attach_peft, load_average, load_model, model_name, model_tag,
    resolve_for, set_threads, write_json,
)

TARGET = 10.0  # issue 33: softprompt's examples/s at least this many times PEFT's (Gemma 3 270M, one thread, idle)


def sst2_rows(backbone, tokenizer, model: str | None, data_dir: str, method: str = "prompt"):
    """``(examples, task, config)``: SST-2's dev split as softprompt's run on ``backbone``
    reads it (the resolved task: template, label words, separator, max length)."""
    from softprompt.config import TrainConfig

    config, task = resolve_for(TrainConfig(task="sst2", model=model, method=method, data_dir=data_dir), backbone, tokenizer)
    return task.load("validation", data_dir=config.data_dir), task, config


def make_batches(examples, tokenizer, task, config, per_batch: int, plan=None):
    """One row per (example, choice), built by softprompt's own encoder, grouped by length.
    Returns a list of ``(input_ids [R, T], attention_mask [R, T], labels [R, T], gold [R/C])``;
    rows ``C*i ... C*i + C-1`` are the C choices of example i; labels are -100 except on the
    label word. ``plan``: ``batch_plan``'s, where the caller also needs each batch's examples."""
    from softprompt.batching import collate, pad_id

    encoded, groups, chunks = plan or batch_plan(examples, tokenizer, task, config, per_batch)
    batches = []
    for chunk in chunks:
        batch = collate([encoded.rows[r] for i in chunk for r in groups[i]], pad_id(tokenizer))  # right padding
        batches.append((batch["input_ids"], batch["attention_mask"], batch["labels"],
                        torch.tensor([examples[i].label for i in chunk])))
    return batches


def batch_plan(examples, tokenizer, task, config, per_batch: int):
    """``(encoded, groups, chunks)``: the rows ``encode_choices`` builds, each example's rows, and
    the examples of each batch (``per_batch`` of them, sorted by length)."""
    from softprompt.batching import encode_choices

    encoded = encode_choices(examples, tokenizer, "decoder-only", config.max_length, config.separator,
                             default_choices=task.label_words, truncation_side=config.truncation_side)
    groups = [[] for _ in examples]
    for row, owner in enumerate(encoded.example.tolist()):
        groups[owner].append(row)
    order = sorted(range(len(examples)), key=lambda i: len(encoded.rows[groups[i][0]]))
    return encoded, groups, [order[start:start + per_batch] for start in range(0, len(order), per_batch)]


def peft_score(model, ids, mask, labels) -> torch.Tensor:
    """Sum of log-probs of the labeled tokens from PEFT's full logits, ``[R]``."""
    logits = model(input_ids=ids, attention_mask=mask).logits  # [R, n+T, V]
    logits = logits[:, -ids.shape[1]:]  # the text positions (PEFT puts the prompt first)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    picked = torch.gather(logprobs, -1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100, help="prompt length n")
    parser.add_argument("--per-batch", type=int, default=16, help="sentences per batch (2 rows each)")
    parser.add_argument("--every", type=int, default=1, help="time every k-th batch of the length-sorted list")
    parser.add_argument("--method", default="prompt")
    parser.add_argument("--data-dir", default=str(DATA), help="folder holding glue/SST-2 (default: ../shared/data)")
    add_model_option(parser)
    add_thread_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32")
    backbone, tokenizer = load_model(args.model)
    examples, task, config = sst2_rows(backbone, tokenizer, args.model, args.data_dir, args.method)
    print(f"model {model_name(args.model)}; template {task.template!r}, label words {task.label_words}, "
          f"separator {config.separator!r} (softprompt's resolution for this backbone)")
    choices = len(task.label_words)
    plan = batch_plan(examples, tokenizer, task, config, args.per_batch)
    batches = make_batches(examples, tokenizer, task, config, args.per_batch, plan)[:: args.every]
    members = plan[2][:: args.every]  # each batch's examples, for the library's own evaluation
    n_examples = sum(len(b[3]) for b in batches)
    sp = softprompt.attach(backbone, method=args.method, length=args.length, seed=0).eval()
    peft = attach_peft(backbone, args.length, "CAUSAL_LM").eval()
    with torch.no_grad():  # the same prompt in both, so their scores must agree
        peft.prompt_encoder["default"].embedding.weight.copy_(sp.prompt_embeddings())

    from softprompt.evaluate import rank_choices

    def evaluate(chunk):  # the library's rank evaluation (eval, demo): one row per example for one-token words
        return rank_choices(sp, tokenizer, [examples[i] for i in chunk], task.label_words, batch_size=args.per_batch,
                            max_length=config.max_length, separator=config.separator)

    times = {"softprompt": 0.0, "peft": 0.0, "softprompt evaluate": 0.0}
    correct = {"softprompt": 0, "peft": 0, "softprompt evaluate": 0}
    max_diff = 0.0
    with torch.inference_mode():
        ids, mask, labels, _ = batches[len(batches) // 2]
        sp.score(ids, mask, labels), peft_score(peft, ids, mask, labels), evaluate(members[len(batches) // 2])  # warm-up
        for i, (ids, mask, labels, gold) in enumerate(batches):
            scores = {}
            for which in (("softprompt", "peft", "softprompt evaluate") if i % 2 == 0 else ("softprompt evaluate", "peft", "softprompt")):
                start = time.perf_counter()
                if which == "softprompt evaluate":
                    picked = evaluate(members[i])
                else:
                    scores[which] = sp.score(ids, mask, labels) if which == "softprompt" else peft_score(peft, ids, mask, labels)
                times[which] += time.perf_counter() - start
            correct["softprompt evaluate"] += int((picked == gold).sum())
            for which, s in scores.items():
                correct[which] += int((s.view(-1, choices).argmax(-1) == gold).sum())
            max_diff = max(max_diff, float((scores["softprompt"] - scores["peft"]).abs().max()))
    rate = {k: n_examples / v for k, v in times.items()}
    print(f"SST-2 dev rank mode, {n_examples} sentences ({choices * n_examples} rows) in {len(batches)} batches, "
          f"prompt {args.length}, {args.per_batch} sentences per batch")
    for which in times:
        print(f"  {which:19s} {times[which]:8.2f} s  {rate[which]:7.2f} examples/s  "
              f"accuracy {correct[which] / n_examples:.4f} (untrained prompt)")
    speedup = rate["softprompt"] / rate["peft"]
    evaluation = rate["softprompt evaluate"] / rate["peft"]
    print(f"  speed-up softprompt / peft = {speedup:.2f}x on the same rows (one per choice); "
          f"softprompt's rank evaluation (one row per example) / peft = {evaluation:.2f}x")
    print(f"  target (issue 33, set for Gemma 3 270M): softprompt's rank evaluation / peft examples/s = {evaluation:.2f} >= {TARGET:.0f}: "
          + ("met" if evaluation >= TARGET else "MISSED") + f" (the same rows: {speedup:.2f})")
    print(f"  max |score difference| = {max_diff:.2e} (same prompt in both)")
    print(f"  load average during the run: {load_average()}")
    every = f"_every{args.every}" if args.every > 1 else ""
    write_json(RESULTS / f"eval_speed{model_tag(args.model)}_sst2_threads{torch.get_num_threads()}{every}.json", {
        "model": model_name(args.model), "template": task.template, "label_words": list(task.label_words),
        "examples": n_examples, "batches": len(batches), "every": args.every, "length": args.length,
        "seconds": times, "examples_per_s": rate, "speedup": speedup, "speedup_evaluate": evaluation,
        "accuracy": {k: v / n_examples for k, v in correct.items()}, "max_score_diff": max_diff,
        "load_average": load_average(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
