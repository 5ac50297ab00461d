"""Paper recipes: each paper's training setup as one data table, with where every value comes from.

    train(TrainConfig(recipe="dpt-paper", task="cb", model="t5-base"))   # the DPT paper's run on CB
    softprompt train --recipe dpt-paper --task cb --model t5-base --lr 0.1   # options override it
    softprompt recipes                                              # the tables and their sources

A recipe fills every ``TrainConfig`` option the caller leaves unset: run settings, the method,
the method's options (only when the run keeps the recipe's method) and, where the authors' logs
give them, per-task values; ``softprompt.settings`` applies it (its docstring has the rules and
the order of all the layers). The tables hold only what the papers and their code fix;
``softprompt recipes`` prints the sources, and README.md lists what still differs.

This module is data: it imports nothing from softprompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Recipe:
    """One paper's setup.

    paper: the citation. method, method_options: the prompt method and its options.
    settings: ``TrainConfig`` fields. sources: option (or topic) -> where the value comes from.
    per_task: canonical task name -> settings or method options for that task (authors' logs).
    """

    name: str
    paper: str
    method: str
    settings: Mapping[str, Any]
    method_options: Mapping[str, Any]
    sources: Mapping[str, str]
    per_task: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


DPT = Recipe(
    name="dpt-paper",
    paper="Xiao et al. 2023, Decomposed Prompt Tuning via Low-Rank Reparameterization (Findings of EMNLP)",
    method="dpt",
    method_options={"length": 100, "bottleneck": 10, "init": "uniform"},
    settings={
        "protocol": "dpt", "style": "text-to-text", "objective": "lm",
        "optimizer": "adamw", "adam_eps": 1e-8, "weight_decay": 1e-5, "max_grad_norm": 1.0,
        "lr": 0.3, "lr_schedule": "linear-hf", "warmup_ratio": 0.1,
        "epochs": 100, "batch_size": 16, "grad_accum": 1,
        "max_length": 256, "truncation_side": "right", "max_new_tokens": 128,
        "eval_mode": "generate", "eval_every": 1, "eval_unit": "epochs",
        "seed": 42, "split_seed": 42,
    },
    sources={
        "lr, epochs, optimizer, length, bottleneck": "paper §4.2 (Settings): 100 epochs, lr 0.3, AdamW, prompt length 100, bottleneck 10",
        "batch_size": "README.md reproduction command: -ts 16 -e 100",
        "adam_eps, weight_decay, max_grad_norm": "main_ddp.py: torch.optim.AdamW (eps 1e-8) over the prompt with options.py --weight_decay 1e-5, --max_grad_norm 1.0",
        "lr_schedule, warmup_ratio": "options.py --lr_scheduler_type linear, --num_warmup_steps 0.1 (a fraction of the steps, main_ddp.py get_scheduler: transformers' LambdaLR, the first step at lr 0: linear-hf)",
        "max_length, max_new_tokens": "options.py --max_source_length 256, --max_target_length 128 (generate max_length); loader.py truncation=True (right)",
        "eval_mode, eval_every": "main_ddp.py: generation on the validation set after every epoch, best by TASK_TO_METRICS[task][0] (utils.py)",
        "protocol": "dpt: official train, reported on the validation set (paper §4.1, data_utils.py split_to_data_split); DPT's task details (each task file's protocols.dpt, tasks/builtin/)",
        "init": "modeling_t5.py init_prefix_weights: U(-0.5, 0.5) (the paper says Gaussian; its numbers come from this code)",
        "seed": "options.py --seed 42",
    },
)

# DePT's per-task values, from the authors' released runs (checkpoints/<task>/output.log).
_DEPT_LOGS = {
    "cola": {"lr": 0.3, "lr_update": 5e-4, "max_steps": 40_000, "length": 80, "rank": 15},
    "mrpc": {"lr": 0.3, "lr_update": 5e-3, "max_steps": 10_000},
    "mnli": {"lr": 0.3, "lr_update": 1e-4, "max_steps": 250_000},
    "qnli": {"lr": 0.4, "lr_update": 5e-3, "max_steps": 100_000},
    "qqp": {"lr": 0.4, "lr_update": 5e-3, "max_steps": 100_000},
    "glue_rte": {"lr": 0.4, "lr_update": 1e-4, "max_steps": 30_000},
    "sst2": {"lr": 0.3, "lr_update": 5e-4, "max_steps": 30_000},
    "stsb": {"lr": 0.3, "lr_update": 1e-4, "max_steps": 30_000},
    "boolq": {"lr": 0.3, "lr_update": 5e-3, "max_steps": 30_000, "length": 40, "rank": 45},
    "cb": {"lr": 0.4, "lr_update": 1e-4, "max_steps": 30_000},
    "multirc": {"lr": 0.3, "lr_update": 5e-3, "max_steps": 30_000, "max_length": 348},
    "wic": {"lr": 0.3, "lr_update": 1e-3, "max_steps": 20_000},
    "wsc_bool": {"lr": 0.3, "lr_update": 1e-4, "max_steps": 20_000},
    "wsc": {"lr": 0.3, "lr_update": 1e-4, "max_steps": 20_000},  # DePT's WSC is wsc_bool (wsc.yaml protocols.dept)
    **{t: {"lr": lr, "lr_update": 1e-4, "max_steps": steps, "batch_size": 16, "max_length": 512, "rank": 24}
       for t, lr, steps in (("hotpotqa", 0.4, 250_000), ("newsqa", 0.4, 200_000), ("nq", 0.3, 300_000), ("searchqa", 0.3, 250_000))},
}

DEPT = Recipe(
    name="dept-paper",
    paper="Shi and Lipani 2024, DePT: Decomposed Prompt Tuning for Parameter-Efficient Fine-tuning (ICLR)",
    method="dept",
    method_options={"length": 60, "rank": 30, "max_length": 256, "lr_update": 5e-3, "init": "text_special",
                    "init_text": "Classify this text is postive or not:"},
    settings={
        "protocol": "dept", "style": "text-to-text", "objective": "lm",
        "optimizer": "adamw", "adam_eps": 1e-6, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "lr": 0.3, "lr_schedule": "linear-hf", "warmup_steps": 500,
        "max_steps": 40_000, "batch_size": 32, "grad_accum": 1,
        "max_length": 256, "truncation_side": "right", "max_new_tokens": 20,
        "eval_mode": "generate", "eval_every": 1000, "eval_unit": "steps",
        "seed": 42, "split_seed": 42,
    },
    sources={
        "lr, lr_update, max_steps, batch_size, max_length, warmup_steps": "README.md GLUE script: lr {0.3, 0.4} x LORA_LR {5e-3, 0.3, 5e-4}, MAX_STEPS 40000, batch 32, MAX_LENGTH 256, warmup 500 (lr_update 5e-3: the grid's first)",
        "length, rank": "the DePT paper's experimental setup (T5-Base: m = 60, r = 30, as many parameters as a 100-token prompt)",
        "per task": "checkpoints/<task>/output.log of the released runs: lr, lora_embedding_lr, max_steps, prefix_length, r, max_seq_length, batch size",
        "adam_eps, weight_decay": "train.py builds transformers.AdamW([...], lr=...) itself: eps 1e-6, weight decay 0 (its --weight_decay 1e-5 never reaches the optimizer)",
        "lr_schedule, max_grad_norm": "train.py get_linear_schedule_with_warmup (its LambdaLR: the first step at lr 0, linear-hf); Seq2SeqTrainer's max_grad_norm 1.0",
        "eval_mode, eval_every, max_new_tokens": "train.py predict_with_generate, --eval_steps 1000, load_best_model_at_end with metric_for_best_model = TASK_TO_METRICS[task][0]; generation_max_length 20",
        "init": "train.py --text_init True with prompt_tuning_init_text 'Classify this text is postive or not:'; text_special: tokenizer(init_text) keeps T5's </s> (peft/tuners/prompt_tuning_lora.py:146)",
        "target length": "train.py:520, 326: generation targets cut to generation_max_length 20 tokens in training (tasks/splits.py TARGET_CUT_PROTOCOLS, with max_new_tokens)",
        "protocol": "dept: the ATTEMPT re-split (src/tasks.py split_validation_test, seed 42) with DePT's task details (each task file's protocols.dept, tasks/builtin/)",
        "seed": "Seq2SeqTrainingArguments' seed 42 (output.log)",
    },
    per_task=_DEPT_LOGS,
)

ULPT = Recipe(
    name="ulpt-paper",
    paper="Wu, Hao and Mou 2025, ULPT: Prompt Tuning with Ultra-Low-Dimensional Optimization (arXiv 2502.04501)",
    method="ulpt",
    method_options={"length": 100, "rank": 2, "projection": "xavier"},
    settings={
        "protocol": "ulpt", "style": "text-to-text", "objective": "lm",
        "optimizer": "adamw", "adam_eps": 1e-6, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "lr": 0.6, "lr_schedule": "linear-hf", "warmup_steps": 500,
        "max_steps": 30_000, "batch_size": 16, "grad_accum": 1,
        "max_length": 256, "truncation_side": "right", "max_new_tokens": 20,
        "eval_mode": "generate", "eval_every": 1000, "eval_unit": "steps",
        "seed": 42, "split_seed": 42,
    },
    sources={
        "lr, length, rank, max_steps, batch_size, max_length, warmup_steps, eval_every": "train.sh / README.md: lr 6e-1, PREFIX_LENGTH 100, R 2, MAX_STEPS 30000, batch_size 16, MAX_LENGTH 256, warmup 500, eval_steps 1000",
        "adam_eps, weight_decay": "train.py builds transformers.AdamW itself (from DePT): eps 1e-6, weight decay 0",
        "projection": "peft/tuners/prompt_tuning_lodim.py: xavier-uniform projection; its seed is the run's (set_seed before the model is built)",
        "eval_mode, max_new_tokens": "train.py predict_with_generate, generation_max_length 20 (also the training targets' cut: tasks/splits.py TARGET_CUT_PROTOCOLS), metric_for_best_model = TASK_TO_METRICS[task][0]",
        "protocol": "ulpt: the ATTEMPT re-split with DePT's task details (the code is DePT's)",
        "seed": "Seq2SeqTrainingArguments' seed 42",
    },
)

RESIDUAL = Recipe(
    name="residual-paper",
    paper="Razdaibiedina et al. 2023, Residual Prompt Tuning (Findings of ACL)",
    method="residual",
    method_options={"length": 10, "bottleneck": 400, "init": "vocab_all"},
    settings={
        "protocol": "paper", "style": "text-to-text", "objective": "lm",
        "optimizer": "adamw", "adam_eps": 1e-8, "weight_decay": 1e-5, "max_grad_norm": 0.0,
        "lr": 0.3, "lr_schedule": "constant", "warmup_steps": 0,
        "epochs": 20, "batch_size": 8, "grad_accum": 1,
        "max_length": 512, "truncation_side": "right", "max_new_tokens": 16,
        "eval_mode": "generate", "eval_every": 1, "eval_unit": "epochs", "selection_metric": "mean",
        "seed": 42, "split_seed": 42,
    },
    sources={
        "lr, batch_size, epochs, length": "bash_prompt_tune.sh: --lr 0.3 --batch_size 8 --num_epochs 20 --prefix_len 10 --early_stopping 1",
        "bottleneck": "the Residual PT paper's SuperGLUE setup, bottleneck 400 (restated in the DPT paper's A.4); train.py's default is 800",
        "adam_eps, weight_decay, lr_schedule, max_grad_norm": "prompt_tuner2.py get_optimizer: transformers.AdamW(eps=1e-8) with weight decay 1e-5, no scheduler, no gradient clipping",
        "max_length": "train.py --seq_len 512 (t5_dataset.py truncation=True)",
        "eval_mode, eval_every": "prompt_tuner2.py validate: generation after every epoch (early_stopping keeps the best prompt)",
        "selection_metric": "prompt_tuner2.py:825 np.mean(acc_dict['score']): the mean of the task's metrics (CB accuracy and F1, MultiRC EM and F1, ReCoRD EM and F1: 591-613)",
        "init": "prompt_tuner2.py:321-325: E from np.random.randint over the whole vocabulary (vocab_all)",
        "protocol": "paper: official splits, reported on validation (get_test_subset 0); the inputs are not Residual PT's own (t5_dataset.py): docs/papers.md lists how they differ",
        "max_new_tokens, seed": "ours: the authors generate max_length = task_to_target_len (2-10, prompt_tuner2.py:132-159) and set no seed",
    },
)

LESTER = Recipe(
    name="lester-paper",
    paper="Lester, Al-Rfou and Constant 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (EMNLP)",
    method="prompt",
    method_options={"length": 100, "init": "vocab"},
    settings={
        "protocol": "lester", "style": "text-to-text", "objective": "lm",
        "optimizer": "adafactor", "weight_decay": 1e-5, "max_grad_norm": 0.0,
        "lr": 0.3, "lr_schedule": "constant", "warmup_steps": 0,
        "max_steps": 30_000, "batch_size": 32, "grad_accum": 1,
        "max_length": 512, "truncation_side": "right", "max_new_tokens": 16,
        "eval_mode": "generate", "eval_every": 1000, "eval_unit": "steps",
        "seed": 42, "split_seed": 42,
    },
    sources={
        "lr, lr_schedule, max_steps, batch_size": "paper §3: 30,000 steps, constant learning rate 0.3, batch size 32; prompt_tuning/configs/runs/prompt_finetune.gin (factors 'constant', base_learning_rate 0.3)",
        "optimizer, weight_decay": "paper §3 and prompt_tuning/configs/models/t5_1_1_prompt.gin: Adafactor, decay_rate 0.8, step_offset 0, multiply_by_parameter_scale False, weight_decay_rate 1e-5; t5x/adafactor.py: factored only from 128 x 128, decay (1 - wd) * p, no gradient clipping beyond Adafactor's update clipping (optim.py T5XAdafactor)",
        "length": "paper §3: 100 tokens (the default of its ablations)",
        "init": "vocab: sampled from the 5,000 most common tokens (paper §2.1's second-best; its best, class-label init, is not implemented)",
        "max_length": "not fixed by the paper or the gin files: 512, T5's SuperGLUE input length (our choice)",
        "eval_mode, eval_every": "paper §3: checkpoints chosen by early stopping on the development set's default metric; T5X evaluates by decoding (eval period: our choice)",
        "protocol": "lester: official splits, reported on validation, T5's own preprocessing as the taskless_* tasks of prompt_tuning/data/super_glue.py:120-131 and glue.py (sorted key: fields, label names, no task name), which its configs train on (configs/test/train_t5_1_1_tiny_prompt.gin, scripts/sst2-demo.sh)",
    },
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (DPT, ULPT, DEPT, RESIDUAL, LESTER)}
