"""The accuracy benchmark's PEFT side: ``PromptTuningConfig`` trained and scored by rank on the
rows softprompt's run reads (``benchmarks.accuracy``).

PEFT: text init (the embeddings of "Answer with <word> or <word>." repeated; "Answer with the
more plausible option." where the choices are each row's own texts, COPA's), trained on the
language-model loss of the target (label word or the right option's text, + EOS; its usual
recipe, through ``PeftModel``'s own forward), AdamW, the same warmup and decay as softprompt's
recipe, the same batch order (softprompt's length-grouped stream, same seed). The forward asks
for the logits at the labeled positions only (``labeled_loss``: the loss and gradient of
``model(**batch).loss``, tested equal), since only they enter the loss: PEFT learns exactly
what it learns with full logits, at a fraction of the time on Gemma 3's 262,144-word vocabulary
(``--peft-full-logits`` trains as users call it; PEFT's step time as users get it is
``step_floor.py``'s and ``step_time.py``'s measurement, not this one's).
Scored by ``softprompt.evaluate`` through ``PeftScorer``, so both libraries are ranked by the
same code, over the label words or over each row's choices.
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch

from benchmarks.common import resolve_for


class PeftScorer(torch.nn.Module):
    """A PEFT prompt-tuning model behind softprompt's scoring interface (``choice_scores``,
    ``frozen_prompt``), so both libraries are evaluated by the same code. Right padding: PEFT
    puts its virtual tokens first, so with left padding pads would sit between them and the text.

    ``full_logits``: PEFT's forward as users call it, logits ``[R, n+T, V]`` (what
    ``mixed_batch`` times); False: the same forward asked for the logits at the scored
    positions only (transformers' ``logits_to_keep`` mask): the same scores, without the
    ``[R, n+T, V]`` tensor (Gemma 3's 262,144-word vocabulary makes it gigabytes a batch)."""

    def __init__(self, peft_model, n_virtual: int, full_logits: bool = True):
        super().__init__()
        self.peft, self.n, self.full_logits = peft_model, n_virtual, full_logits
        self.backbone = peft_model.get_base_model()
        from softprompt.backbones import join_for

        self.join = join_for(self.backbone)

    def frozen_prompt(self):
        return contextlib.nullcontext()

    def choice_scores(self, input_ids, attention_mask, labels, choice_tokens=None, choice_rows=None):
        """``[E, C]`` log-likelihoods, as ``PromptedModel.choice_scores``: ``choice_tokens`` (one
        labeled position per row; the choices' tokens read there) or ``choice_rows`` (a row per
        choice, scored by the sum of its labeled tokens)."""
        if self.full_logits:
            target = labels[:, 1:]  # [R, T-1]: the token text column t predicts
            scored = target != -100
            logits = self.peft(input_ids=input_ids, attention_mask=attention_mask).logits  # [R, n+T, V]
            picked = logits[:, self.n : -1][scored]  # [K, V]
        else:
            picked, target, scored = labeled_logits(self.peft, input_ids, attention_mask, labels, self.n)
        logprobs = torch.log_softmax(picked.float(), -1)  # [K, V], rows in (row, column) order
        rows = scored.nonzero(as_tuple=True)[0]
        if choice_tokens is not None:
            if not torch.equal(rows, torch.arange(input_ids.shape[0], device=rows.device)):
                raise ValueError("choice_tokens needs exactly one labeled position per row")
            return logprobs.gather(1, choice_tokens.clamp(min=0)).masked_fill(choice_tokens < 0, float("-inf"))
        if choice_rows is None:
            raise ValueError("give choice_tokens or choice_rows")
        tokens = logprobs.gather(1, target[scored].unsqueeze(1)).squeeze(1)  # [K]
        row_scores = torch.zeros(input_ids.shape[0], device=tokens.device).index_add_(0, rows, tokens)  # [R]
        return row_scores[choice_rows.clamp(min=0)].masked_fill(choice_rows < 0, float("-inf"))


def labeled_logits(peft_model, input_ids, attention_mask, labels, n_virtual: int):
    """PEFT's forward over right-padded rows (``[R, T]`` each) with the head at the labeled
    positions only (transformers' ``logits_to_keep`` mask over the ``n_virtual + T`` columns
    PEFT's forward builds): ``(picked [K, V], target [R, T-1], scored [R, T-1])``, ``picked[k]``
    the logits that predict the k-th labeled token in (row, column) order. A label on a row's
    first token (predicted by the last virtual token) is refused: no batch here has one."""
    if (labels[:, 0] != -100).any():
        raise ValueError("labeled_logits: a label on a row's first token")
    target = labels[:, 1:]  # [R, T-1]: the token text column t predicts
    scored = target != -100
    keep = torch.zeros(input_ids.shape[0], n_virtual + input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
    keep[:, n_virtual:-1] = scored
    picked = peft_model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits  # [K, V]
    return picked.reshape(-1, picked.shape[-1]), target, scored


def labeled_loss(peft_model, batch: dict, n_virtual: int) -> torch.Tensor:
    """``peft_model(**batch).loss`` (transformers' causal-LM loss: the mean cross-entropy of the
    labeled tokens, in float32) computed from the logits at the labeled positions only."""
    picked, target, scored = labeled_logits(peft_model, batch["input_ids"], batch["attention_mask"], batch["labels"], n_virtual)
    return torch.nn.functional.cross_entropy(picked.float(), target[scored])


def init_text(task) -> str:
    """PEFT's text init: the label words, or a sentence where each row brings its own choices."""
    if task.choice_fields:
        return "Answer with the more plausible option."
    return f"Answer with {' or '.join(task.label_words)}."


def run_peft(config, lr: float, full_logits: bool = False) -> dict:
    """One PEFT run of ``config`` (the benchmark's ``TrainConfig``, method ``prompt``, not yet
    resolved) at learning rate ``lr``, on a freshly loaded backbone (PEFT wraps the model it is
    given); the checkpoint the held-out rows score best is reported on the test split."""
    from peft import PromptTuningConfig, get_peft_model

    from softprompt.backbones import load_backbone
    from softprompt.batching import collate, encode_examples, pad_id
    from softprompt.evaluate import evaluate
    from softprompt.optim import lr_at, warmup_steps_for
    from softprompt.trainingdata import Stream, load_data

    backbone, tokenizer = load_backbone(config.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone.to(device)
    config, task = resolve_for(config, backbone, tokenizer)
    train_rows, validation, test, _ = load_data(config, task)
    encoded = encode_examples(train_rows, tokenizer, "decoder-only", config.max_length, config.separator,
                              truncation_side=config.truncation_side)
    n = config.prompt_config().length  # the prompt length, a method option
    model = get_peft_model(backbone, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n))
    ids = tokenizer(init_text(task), add_special_tokens=False)["input_ids"]
    ids = torch.tensor((ids * (n // len(ids) + 1))[:n], device=device)
    embedding = model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(backbone.get_input_embeddings()(ids))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    stream = Stream([len(e) for e in encoded], config.batch_size, config.seed)
    torch.manual_seed(config.seed)
    pad = pad_id(tokenizer)
    scorer = PeftScorer(model, n, full_logits=False)
    metric = task.metrics[0]

    def score(rows):
        return evaluate(scorer, tokenizer, task, rows, mode="rank", batch_size=64, max_length=config.max_length,
                        separator=config.separator, truncation_side=config.truncation_side)

    warmup = warmup_steps_for(config, config.max_steps)
    started = time.time()
    best, best_state, best_step = None, None, None
    model.train()
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.max_steps, warmup, lr, config.lr_schedule)
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in stream.next()], pad).items()}  # right padding
        loss = model(**batch).loss if full_logits else labeled_loss(model, batch, n)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
            value = score(validation)[metric]
            print(f"peft {config.task} lr {lr:g}: {step + 1}/{config.max_steps}, loss {loss.item():.4f}, "
                  f"held-out {metric} {value:.4f} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
            if best is None or value > best:
                best, best_step, best_state = value, step + 1, embedding.weight.detach().clone()
            model.train()
    with torch.no_grad():
        embedding.weight.copy_(best_state)
    tested = score(test)
    return {"library": "peft", "method": "peft-prompt", "task": config.task, "seed": config.seed, "metric": metric,
            "validation": best, "test": tested[metric], "test_n": tested.get("n"), "best_step": best_step,
            "trainable_parameters": sum(p.numel() for p in params), "lr": lr, "objective": "lm",
            "head": "every position" if full_logits else "labeled positions",
            "train_n": len(train_rows), "holdout": config.holdout}
