"""SST-2 dev rank-mode evaluation speed on SmolLM2: softprompt ``score`` vs PEFT with full logits.

    python -m benchmarks.eval_speed                      # all 872 dev sentences
    python -m benchmarks.eval_speed --every 4            # every 4th batch (quicker; same length mix)

Rank mode: each sentence is scored once per label word; the prediction is the label word
with the higher log-probability. Both libraries see the same rows, in the same batches:
``"Review: <sentence>\\nSentiment:" + " negative" | " positive"``, sorted by length and
padded (right) to the longest row of the batch, 16 sentences = 32 rows per batch.

* softprompt: ``model.score(ids, mask, labels)``, labels only on the label word: the
  prompt runs once per batch and the head only at the scored position.
* PEFT: the ``PeftModel`` forward (prompt + sentence + label word per row) with its full
  logits ``[B, n+T, V]``, then the log-softmax picked at the label word.

PEFT is given softprompt's prompt (the same ``[n, d]`` tensor), so both must produce the
same scores and predictions; the script checks that. Batches are alternated (one batch
softprompt, the same batch PEFT, ...), after one warm-up batch each, under inference mode.
"""

from __future__ import annotations

import argparse
import time

import torch

import softprompt

from .common import RESULTS, add_thread_option, attach_peft, load_average, load_smollm2, set_threads, write_json

DEV = str(RESULTS.parents[2] / "shared" / "data" / "glue" / "SST-2" / "dev.tsv")  # ../shared/data beside the checkout
TEMPLATE = "Review: {}\nSentiment:"
LABEL_WORDS = (" negative", " positive")


def read_sst2(path: str = DEV) -> list[tuple[str, int]]:
    lines = open(path, encoding="utf-8").read().splitlines()
    if lines[0].split("\t") != ["sentence", "label"]:
        raise ValueError(f"{path}:1: expected the header 'sentence<TAB>label', got {lines[0]!r}")
    return [(s.strip(), int(y)) for s, y in (line.rsplit("\t", 1) for line in lines[1:])]


def make_batches(examples, tokenizer, per_batch: int):
    """Rows (example, choice) grouped by length. Returns a list of
    ``(input_ids [R, T], attention_mask [R, T], labels [R, T], gold [R/2])``; rows 2i and
    2i+1 are the two choices of example i; labels are -100 except on the label word."""
    choices = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in LABEL_WORDS]
    encoded = [(tokenizer(TEMPLATE.format(s), add_special_tokens=False)["input_ids"], y) for s, y in examples]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = tokenizer.pad_token_id
    batches = []
    for start in range(0, len(order), per_batch):
        rows, gold = [], []
        for i in order[start:start + per_batch]:
            text, y = encoded[i]
            gold.append(y)
            rows += [(text, c) for c in choices]
        T = max(len(t) + len(c) for t, c in rows)
        ids = torch.full((len(rows), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (t, c) in enumerate(rows):
            k = len(t) + len(c)
            ids[r, :k] = torch.tensor(t + c)
            mask[r, :k] = 1
            labels[r, len(t):k] = torch.tensor(c)
        batches.append((ids, mask, labels, torch.tensor(gold)))
    return batches


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
    add_thread_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32")
    backbone, tokenizer = load_smollm2()
    examples = read_sst2()
    batches = make_batches(examples, tokenizer, args.per_batch)[:: args.every]
    n_examples = sum(len(b[3]) for b in batches)
    sp = softprompt.attach(backbone, method=args.method, length=args.length, seed=0).eval()
    peft = attach_peft(backbone, args.length, "CAUSAL_LM").eval()
    with torch.no_grad():  # the same prompt in both, so their scores must agree
        peft.prompt_encoder["default"].embedding.weight.copy_(sp.prompt_embeddings())

    times = {"softprompt": 0.0, "peft": 0.0}
    correct = {"softprompt": 0, "peft": 0}
    max_diff = 0.0
    with torch.inference_mode():
        ids, mask, labels, _ = batches[len(batches) // 2]
        sp.score(ids, mask, labels), peft_score(peft, ids, mask, labels)  # warm-up
        for i, (ids, mask, labels, gold) in enumerate(batches):
            scores = {}
            for which in (("softprompt", "peft") if i % 2 == 0 else ("peft", "softprompt")):
                start = time.perf_counter()
                scores[which] = sp.score(ids, mask, labels) if which == "softprompt" else peft_score(peft, ids, mask, labels)
                times[which] += time.perf_counter() - start
            for which, s in scores.items():
                correct[which] += int((s.view(-1, 2).argmax(-1) == gold).sum())
            max_diff = max(max_diff, float((scores["softprompt"] - scores["peft"]).abs().max()))
    rate = {k: n_examples / v for k, v in times.items()}
    print(f"SST-2 dev rank mode, {n_examples} sentences ({2 * n_examples} rows) in {len(batches)} batches, "
          f"prompt {args.length}, {args.per_batch} sentences per batch")
    for which in times:
        print(f"  {which:10s} {times[which]:8.2f} s  {rate[which]:7.2f} examples/s  "
              f"accuracy {correct[which] / n_examples:.4f} (untrained prompt)")
    print(f"  speed-up softprompt / peft = {rate['softprompt'] / rate['peft']:.2f}x")
    print(f"  max |score difference| = {max_diff:.2e} (same prompt in both)")
    print(f"  load average during the run: {load_average()}")
    every = f"_every{args.every}" if args.every > 1 else ""
    write_json(RESULTS / f"eval_speed_sst2_threads{torch.get_num_threads()}{every}.json", {
        "examples": n_examples, "batches": len(batches), "every": args.every, "length": args.length,
        "seconds": times, "examples_per_s": rate, "speedup": rate["softprompt"] / rate["peft"],
        "accuracy": {k: v / n_examples for k, v in correct.items()}, "max_score_diff": max_diff,
        "load_average": load_average(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
