"""Issue 34: each paper's scoring and task format as its released code has them, pinned on small
fixtures with the numbers worked out by hand from that code (file:line in each test)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from softprompt.config import TrainConfig
from softprompt.metrics import matthews, selection_metrics, with_selection
from softprompt.prompts.base import BackboneInfo, token_init
from softprompt.recipes import RECIPES
from softprompt.tasks import get_task
from softprompt.tasks.build import row_to_examples

# ---------------------------------------------------------------------------------------
# 1. ReCoRD: one fixture with duplicated answers, three scorings


def _record_rows():
    row = dict(passage="Barack Obama visited Paris.\n@highlight\nA visit", entities=["Barack Obama", "Obama", "Paris"])
    return [dict(row, query="@placeholder spoke.", answers=["Obama", "Barack Obama"], idx={"passage": 0, "query": 0}),
            dict(row, query="He visited @placeholder.", answers=["Paris"], idx={"passage": 0, "query": 1})]


def _record_scores(protocol):
    task = get_task("record", protocol=protocol)
    examples = [e for row in _record_rows() for e in row_to_examples(task, row, is_train=False)]
    guess = {"@placeholder spoke.": "Obama", "He visited @placeholder.": "London"}  # one generation per input
    predictions = [next(v for k, v in guess.items() if k in e.input_text) for e in examples]
    return len(examples), task.score(predictions, examples)


def test_record_scores_as_each_papers_code_on_duplicated_answers():
    # paper (SuperGLUE's definition, T5's deduplicate_metric(squad)): one row per query, the best
    # answer: query 1 "Obama" matches, query 2 "London" does not -> EM 1/2, F1 1/2
    n, paper = _record_scores("paper")
    assert n == 2 and paper["em"] == pytest.approx(1 / 2) and paper["f1"] == pytest.approx(1 / 2)
    # dpt: data_utils.py:862-869 copies the row per answer, eval_utils.py:50-54 scores every copy
    # against all answers, metrics.py:287-300 averages over copies -> (1 + 1 + 0) / 3
    n, dpt = _record_scores("dpt")
    assert n == 3 and dpt["em"] == pytest.approx(2 / 3) and dpt["f1"] == pytest.approx(2 / 3)
    # dept/ulpt: src/tasks.py:819-826 copies, src/postprocessors.py:36-40 keeps each copy's own
    # target: "Obama" vs "Obama" 1; vs "Barack Obama" EM 0, F1 2·1·(1/2)/(1+1/2) = 2/3; "London" 0
    for protocol in ("dept", "ulpt"):
        n, dept = _record_scores(protocol)
        assert n == 3 and dept["em"] == pytest.approx(1 / 3) and dept["f1"] == pytest.approx((1 + 2 / 3) / 3)
    assert len({paper["em"], dpt["em"], dept["em"]}) == 3


def test_record_training_rows_and_dpt_prefix():
    task = get_task("record", protocol="dpt")
    train = row_to_examples(task, _record_rows()[0], is_train=True)
    assert [e.target_text for e in train] == ["Obama", "Barack Obama"]  # one copy per answer, as every code
    # DPT's add_task_prefix defaults to True (options.py:67); ReCoRD's preprocessor is the one that
    # honours it (data_utils.py:859-860): "superglue-record " + T5's input
    assert train[0].input_text.startswith("superglue-record record query: @placeholder spoke. entities: Barack Obama, Obama, Paris passage: ")
    assert get_task("record", protocol="dept").template.startswith("record query:")  # DePT's add_prefix False (train.py:81)


# ---------------------------------------------------------------------------------------
# 2. the lester protocol: T5's own preprocessing, taskless


def test_lester_protocol_is_t5s_taskless_preprocessing():
    # t5/data/preprocessors.py glue: "cb hypothesis: H premise: P" (sorted keys), target
    # label_names[label]; prompt_tuning/data/super_glue.py:126-127 removes the first token "cb "
    cb = get_task("cb", protocol="lester")
    (example,) = row_to_examples(cb, {"premise": "P p.", "hypothesis": "H h.", "label": 2, "idx": 0}, is_train=True)
    assert (example.input_text, example.target_text) == ("hypothesis: H h. premise: P p.", "neutral")
    boolq = get_task("boolq", protocol="lester")
    (example,) = row_to_examples(boolq, {"passage": "A.", "question": "b?", "label": 1, "idx": 0}, is_train=True)
    assert (example.input_text, example.target_text) == ("passage: A. question: b?", "True")
    copa = get_task("copa", protocol="lester")
    (example,) = row_to_examples(copa, {"premise": "P.", "question": "cause", "choice1": "A.", "choice2": "B.", "label": 1, "idx": 0}, True)
    assert (example.input_text, example.target_text) == ("choice1: A. choice2: B. premise: P. question: cause", "choice2")
    assert get_task("mnli", protocol="lester").template == "hypothesis: {hypothesis} premise: {premise}"
    assert get_task("wsc", protocol="lester").template == "{wsc_text}"  # taskless_super_glue_wsc_v102_simple_*
    assert RECIPES["lester-paper"].settings["protocol"] == "lester"
    assert get_task("cb").template == "premise: {premise} hypothesis: {hypothesis}"  # the default is unchanged


def test_preview_shows_t5s_input_and_a_label_name(tmp_path, capsys):
    from helpers import write_cb
    from softprompt.cli import main

    data = write_cb(tmp_path / "data")
    assert main(["preview", "cb", "--protocol", "lester", "--data-dir", str(data), "--split", "train", "--n", "1", "--style", "text-to-text"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith("hypothesis: ") and " premise: " in line
    assert line.split(" → ")[-1] in ("entailment", "contradiction", "neutral")


# ---------------------------------------------------------------------------------------
# 3. Residual PT chooses by the mean of the task's metrics


def test_selection_by_the_mean_of_metrics():
    # prompt_tuner2.py:591-592 returns CB's (accuracy, macro F1); :825 np.mean of them chooses
    assert selection_metrics("mean", ("accuracy", "macro_f1")) == ("mean(accuracy,macro_f1)", ("accuracy", "macro_f1"))
    assert selection_metrics("mean(f1a, em)", ("f1a", "em")) == ("mean(f1a,em)", ("f1a", "em"))
    assert selection_metrics("mean", ("accuracy",)) == ("accuracy", ("accuracy",))
    assert selection_metrics(None, ("f1", "em")) == ("f1", ("f1",))
    assert with_selection({"accuracy": 0.75, "macro_f1": 0.5}, "mean(accuracy,macro_f1)", ("accuracy", "macro_f1")) == {
        "accuracy": 0.75, "macro_f1": 0.5, "mean(accuracy,macro_f1)": 0.625}
    with pytest.raises(ValueError, match="selection_metric 'f1' is not a metric of task cb"):
        selection_metrics("mean(accuracy,f1)", ("accuracy", "macro_f1"), "cb")
    assert RECIPES["residual-paper"].settings["selection_metric"] == "mean"
    assert TrainConfig(selection_metric="mean(accuracy,macro_f1)").selection_metric == "mean(accuracy,macro_f1)"


# ---------------------------------------------------------------------------------------
# 5, 14: DPT's STS-B and SciTail


def test_stsb_rounds_to_a_tenth_under_the_authors_protocols():
    # DPT utils.py:170 and DePT's round_stsb_target: np.round((2.26 * 5) / 5, decimals=1) = 2.3;
    # T5's tf.round(2.26 * 5) / 5 = 11 / 5 = 2.2
    row = {"sentence1": "a", "sentence2": "b", "label": 2.26}
    for protocol, target in (("paper", "2.2"), ("lester", "2.2"), ("dpt", "2.3"), ("dept", "2.3"), ("ulpt", "2.3")):
        (example,) = row_to_examples(get_task("stsb", protocol=protocol), row, is_train=True)
        assert example.target_text == target, protocol


def test_scitail_fields_under_dpt():
    task = get_task("scitail", protocol="dpt")  # data_utils.py:271-272
    (example,) = row_to_examples(task, {"sentence1": "A.", "sentence2": "B.", "gold_label": 1}, is_train=True)
    assert example.input_text == "sentence1: A. sentence2: B."
    assert get_task("scitail").template == "premise: {sentence1} hypothesis: {sentence2}"


# ---------------------------------------------------------------------------------------
# 6, 8: inits


def _info(vocab: int, tokenizer=None) -> BackboneInfo:
    table = torch.stack([torch.arange(vocab, dtype=torch.float32), torch.zeros(vocab)], dim=1)  # row i reads i
    return BackboneInfo(embed_dim=2, vocab_size=vocab, embeddings=table, tokenizer=tokenizer)


def test_residual_draws_e_from_the_whole_vocabulary():
    # prompt_tuner2.py:321-325: np.random.randint(N) over all N rows of the embedding table
    ids = token_init("vocab_all", 300, _info(8000), torch.Generator().manual_seed(0))[:, 0].long()
    assert torch.equal(ids, torch.randint(0, 8000, (300,), generator=torch.Generator().manual_seed(0)))
    assert int(ids.max()) >= 5000  # the 5,000-token pool of Lester's vocab init would never give these
    assert int(token_init("vocab", 300, _info(8000), torch.Generator().manual_seed(0))[:, 0].max()) < 5000
    assert RECIPES["residual-paper"].method_options["init"] == "vocab_all"


def test_dept_text_init_keeps_the_eos():
    # prompt_tuning_lora.py:146-154: tokenizer(init_text) -> [5, 6, </s>=1], repeated to 7 and cut
    def tokenizer(text, add_special_tokens=True):
        return {"input_ids": [5, 6] + ([1] if add_special_tokens else [])}

    rows = token_init("text_special", 7, _info(10, tokenizer), torch.Generator(), "Classify")[:, 0].long().tolist()
    assert rows == [5, 6, 1, 5, 6, 1, 5]
    assert token_init("text", 4, _info(10, tokenizer), torch.Generator(), "Classify")[:, 0].long().tolist() == [5, 6, 5, 6]
    assert RECIPES["dept-paper"].method_options["init"] == "text_special"


# ---------------------------------------------------------------------------------------
# 9. DePT/ULPT cut training targets to the generation length


def test_dept_cuts_generation_targets_to_the_generation_length():
    from helpers import tiny_tokenizer
    from softprompt.backbones import ENCODER_DECODER
    from softprompt.tasks.rows import Example
    from softprompt.train import training_batches

    tokenizer = tiny_tokenizer()
    examples = [Example("question: q", "one two three four five", "one two three four five", answers=("x",))]
    task = SimpleNamespace(kind="generation", name="t")

    def labels(protocol):
        c = SimpleNamespace(objective="lm", max_length=64, separator=" ", truncation_side="right", protocol=protocol,
                            max_new_tokens=3)
        _, batch = training_batches(c, examples, tokenizer, ENCODER_DECODER, task)
        return [t for t in batch([0])["labels"][0].tolist() if t != -100]

    full = labels("paper")
    # train.py:326 tokenizer(target, max_length=20, truncation=True): the first 19 tokens and </s>
    assert labels("dept") == full[:2] + full[-1:] and labels("ulpt") == labels("dept") and len(full) > 3


# ---------------------------------------------------------------------------------------
# 10, 11: strict parsing and Matthews' invalid class


def test_matthews_counts_an_invalid_prediction_as_its_own_class_under_the_papers():
    golds, predictions = [1, 1, 0, 0], [1, None, 0, 0]
    # softprompt's default: None -> the opposite class 0: TP 1, FN 1, TN 2 -> 2 / sqrt(1·2·2·3)
    assert matthews(predictions, golds) == pytest.approx(2 / math.sqrt(12))
    # DPT metrics.py:108-112 (string_to_float -> -1), DePT src/metrics.py:118-120 (the strings):
    # classes {-1, 0, 1}: (c·s - Σ p_k t_k) / sqrt((s² - Σ p_k²)(s² - Σ t_k²)) = (3·4 - 6) / sqrt(10·8)
    assert matthews(predictions, golds, invalid_class=True) == pytest.approx(6 / math.sqrt(80))
    cola = get_task("cola", protocol="dept")
    examples = [SimpleNamespace(label=g, answers=(), group=None) for g in golds]
    assert cola.score(predictions, examples)["matthews"] == pytest.approx(6 / math.sqrt(80))
    assert get_task("cola").score(predictions, examples)["matthews"] == pytest.approx(2 / math.sqrt(12))


def test_parsing_is_exact_under_the_papers_protocols():
    # DPT eval_utils.py:36-37, DePT src/postprocessors.py:24-25: strip, then compare the strings
    for protocol in ("dpt", "dept", "ulpt", "lester"):
        task = get_task("rte", protocol=protocol)
        word = task.label_words[1]
        assert task.parse(f" {word} ") == 1 and task.parse(word + ".") is None
        assert word.upper() == word or task.parse(word.upper()) is None
    lenient = get_task("rte")  # the default keeps its leniency (decoder-only recipes rely on it)
    assert lenient.parse("1.") == 1
    assert get_task("rte", style="instruction").parse("Yes.") == 0


# ---------------------------------------------------------------------------------------
# 12. DePT's WSC


def test_dept_wsc_is_wsc_bool():
    # DePT's src/tasks.py:755-766: 'superglue-wsc.fixed' is T5's marked-span classification
    row = {"text": "Mark told Pete he was late.", "span1_text": "Pete", "span1_index": 2, "span2_text": "he",
           "span2_index": 3, "label": 1, "idx": 0}
    for protocol in ("dept", "ulpt"):
        wsc = get_task("wsc", protocol=protocol)
        (example,) = row_to_examples(wsc, row, is_train=True)
        assert wsc.kind == "classification"
        assert (example.input_text, example.target_text) == ("text: Mark told * Pete * # he # was late.", "1")
        (bool_example,) = row_to_examples(get_task("wsc_bool", protocol=protocol), row, is_train=True)
        assert bool_example == example
    assert RECIPES["dept-paper"].per_task["wsc"] == RECIPES["dept-paper"].per_task["wsc_bool"]
    assert get_task("wsc").kind == "generation"  # T5's generative WSC elsewhere


def test_linear_hf_is_transformers_schedule_exactly():
    """Issue 34 item 13: DPT (main_ddp.py get_scheduler("linear")), DePT and ULPT (train.py
    get_linear_schedule_with_warmup) step transformers' LambdaLR, whose step s has the factor
    s / warmup: the first step runs at lr 0. ``linear-hf`` equals it at every step; softprompt's own
    ``linear`` starts one step ahead."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from softprompt.optim import lr_at
    from softprompt.recipes import RECIPES

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.3)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=4, num_training_steps=12)
    theirs = []
    for _ in range(13):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert [lr_at(s, 12, 4, 0.3, "linear-hf") for s in range(13)] == pytest.approx(theirs, abs=1e-12)
    assert theirs[0] == 0.0 and lr_at(0, 12, 4, 0.3, "linear") == pytest.approx(0.075)
    assert {RECIPES[name].settings["lr_schedule"] for name in ("dpt-paper", "dept-paper", "ulpt-paper")} == {"linear-hf"}
