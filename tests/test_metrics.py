"""Metrics: hand-worked values and agreement with scikit-learn / scipy."""

import random

import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from softprompt import metrics
from softprompt.tasks import Example, get_task


def _ex(label, answers=(), group=None):
    return Example("x", "", label, None, tuple(answers), group)


# ----------------------------------------------------------------------------- per example
def test_normalize_answer_is_squad():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.normalize_answer("An apple a day") == "apple day"


def test_token_f1_hand_worked():
    # "cat sat" vs "cat sat down": 2 common tokens, P = 2/2, R = 2/3 -> F1 = 0.8
    assert metrics.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert metrics.token_f1("dog", "cat") == 0.0
    assert metrics.exact_match("The Cat.", "cat") == 1.0


def test_max_over_gold():
    assert metrics.max_over_gold(metrics.token_f1, "red bike", ["blue bike", "red bike"]) == 1.0
    assert metrics.max_over_gold(metrics.token_f1, "red car", ["blue bike", "red bike"]) == 0.5
    assert metrics.max_over_gold(metrics.exact_match, None, ["x"]) == 0.0


@pytest.mark.parametrize("prediction,referent,expected", [
    ("Mark", "Mark", 1), ("the trophy", "The trophy", 1), ("trophy", "The big trophy", 1),
    ("Pete", "Mark", 0), ("Bob", "Bob's hat", 0), ("", "Mark", -1), ("the", "Mark", -1),
])
def test_wsc_referent_match_as_t5(prediction, referent, expected):
    assert metrics.wsc_referent_match(prediction, referent) == expected


# ----------------------------------------------------------------------------- aggregators
@pytest.fixture()
def rng():
    return random.Random(1234)


def test_accuracy_f1_matthews_match_sklearn(rng):
    golds = [rng.randint(0, 1) for _ in range(200)]
    preds = [rng.randint(0, 1) for _ in range(200)]
    assert metrics.accuracy(preds, golds) == pytest.approx(accuracy_score(golds, preds))
    assert metrics.binary_f1(preds, golds) == pytest.approx(f1_score(golds, preds))
    assert metrics.matthews(preds, golds) == pytest.approx(matthews_corrcoef(golds, preds))


def test_macro_f1_matches_sklearn(rng):
    golds = [rng.randint(0, 2) for _ in range(100)]
    preds = [rng.randint(0, 2) for _ in range(100)]
    expected = f1_score(golds, preds, average="macro")
    assert metrics.macro_f1(preds, golds, 3) == pytest.approx(expected)


def test_correlations_match_scipy(rng):
    golds = [rng.uniform(0, 5) for _ in range(50)]
    preds = [g + rng.gauss(0, 1) for g in golds]
    assert metrics.pearson(preds, golds) == pytest.approx(pearsonr(preds, golds)[0])
    assert metrics.spearman(preds, golds) == pytest.approx(spearmanr(preds, golds)[0])
    assert metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0  # undefined -> 0


def test_invalid_predictions_count_as_wrong():
    golds = [1, 0, 1, 0]
    assert metrics.accuracy([1, None, None, 0], golds) == 0.5
    # None -> opposite class: preds become [1, 1, 0, 0]: TP=1 FP=1 FN=1 -> F1 = 0.5
    assert metrics.binary_f1([1, None, None, 0], golds) == pytest.approx(0.5)
    assert metrics.binary_f1([1, None, None, 0], golds) == pytest.approx(f1_score(golds, [1, 1, 0, 0]))
    # macro-F1: None -> -1 (outside the classes): a miss, never a false positive
    assert metrics.macro_f1([0, None, 2], [0, 1, 2], 3) == pytest.approx(
        f1_score([0, 1, 2], [0, -1, 2], labels=[0, 1, 2], average="macro"))
    assert metrics.pearson([None, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(
        pearsonr([-1.0, 2.0, 3.0], [1.0, 2.0, 3.0])[0])


def test_multirc_f1a_and_grouped_em_hand_worked():
    task = get_task("multirc")
    # question A: 3 options, all right; question B: 2 options, one wrong
    examples = [_ex(1, group="A"), _ex(0, group="A"), _ex(1, group="A"), _ex(1, group="B"), _ex(0, group="B")]
    preds = [1, 0, 1, 0, 0]
    scores = task.score(preds, examples)
    # over all options: TP=2 FP=0 FN=1 -> F1a = 0.8; EM = 1 of 2 questions
    assert scores == {"f1a": pytest.approx(0.8), "em": 0.5}
    assert list(scores) == ["f1a", "em"]


def test_record_max_over_gold_grouped():
    task = get_task("record")
    examples = [_ex("Zurich", ["Zurich"], "q1"), _ex("Apple", ["Apple", "Microsoft"], "q2")]
    scores = task.score(["zurich", "Microsoft Corp"], examples)
    # q1: EM 1, F1 1; q2: EM 0, F1 vs "Microsoft" = 2*(1/2*1)/(1/2+1) = 2/3
    assert scores["em"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)
    # duplicated training copies of one query count once
    dup = [_ex("Apple", ["Apple", "Microsoft"], "q2")] * 2 + [_ex("Zurich", ["Zurich"], "q1")]
    assert task.score(["Apple", "Apple", "Berlin"], dup)["em"] == pytest.approx(0.5)


def test_mrqa_and_wsc_scoring():
    nq = get_task("nq")
    assert nq.score(["Paris", None], [_ex("Paris", ["Paris"]), _ex("France", ["France"])]) == \
        {"f1": 0.5, "em": 0.5}
    wsc = get_task("wsc")
    examples = [_ex(1, ["Mark"]), _ex(0, ["Mark"]), _ex(1, ["The trophy"])]
    # referent matched for 1 and 2, not for 3: correct, wrong, wrong
    assert wsc.score(["mark", "Mark", "suitcase"], examples) == {"accuracy": pytest.approx(1 / 3)}


def test_cb_and_stsb_task_scores():
    cb = get_task("cb")
    golds = [0, 1, 2, 0, 1]
    preds = [0, 1, 1, 0, None]
    examples = [_ex(g) for g in golds]
    expected_f1 = f1_score(golds, [0, 1, 1, 0, -1], labels=[0, 1, 2], average="macro")
    assert cb.score(preds, examples) == {"accuracy": 0.6, "macro_f1": pytest.approx(expected_f1)}
    stsb = get_task("stsb")
    examples = [_ex(v) for v in (0.0, 2.4, 5.0, 3.6)]
    result = stsb.score([0.2, 2.0, 4.8, 4.0], examples)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] == pytest.approx(pearsonr([0.2, 2.0, 4.8, 4.0], [0.0, 2.4, 5.0, 3.6])[0])


def test_score_rejects_bad_input():
    task = get_task("sst2")
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        task.score([0, 1], [_ex(0)])
    with pytest.raises(ValueError, match="unlabeled"):
        task.score([0], [_ex(None)])
