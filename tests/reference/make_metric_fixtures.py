#!/usr/bin/env python3
"""make_metric_fixtures.py OUTDIR - token F1 cases for eval.c's token_f1, from
the definition in SQuAD's official evaluation script (v2.0: normalize_answer,
get_tokens, compute_f1, written out below from that script), with Python's
standard library only: an implementation independent of the one under test.

Writes OUTDIR/token_f1.jsonl, one {"pred": ..., "gold": ..., "f1": ...} per line:
the hand-picked cases first (contractions, hyphens, decimals, articles as and
inside words, punctuation-only tokens, tabs, NBSP and U+3000, empty sides),
then 600 random pairs drawn from the same kinds of pieces.  Only ASCII letters
are drawn: Python's lower() and the article regex also act on other scripts,
which eval.c documents as the difference.  Deterministic (fixed seed).
Run: /usr/bin/python3 tests/reference/make_metric_fixtures.py tests/fixtures/metrics
"""
import collections
import json
import os
import random
import re
import string
import sys


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(re.compile(r'\b(a|an|the)\b', re.UNICODE), ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_f1(a_gold, a_pred):
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


HAND = [
    ("Don't stop", "dont stop"), ("e-mail me", "email me"), ("3.5 inch", "35 inch"), ("the-end", "end"),
    ("The cat sat on the mat.", "A cat sat on a red mat"), ("Hello, WORLD", "hello world hello"),
    ("red -- mug !", "red mug"), ("red\u00a0mug", "red mug"), ("red\u3000mug", "mug red"), ("", ""), ("", "x"),
    ("An apple", "apple"), ("theater", "the ater"), ("(a)", "a"), ("a.b", "ab"), ("U.S.A.", "usa"),
    ("x_y z", "xy z"), ("tab\tseparated", "tab separated"), ("!!!", ""), ("an an an", "the"),
]
PIECES = list("abcdeAnThE  ") + list(",.-'!?\"()_/:;") + [
    " a ", " an ", " the ", "The ", "\t", "\n", "\u00a0", "\u3000", "don't", "e-mail", "3.5", "anthe", "x"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(2026)
    cases = list(HAND)
    for _ in range(600):
        cases.append(tuple(''.join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 14))) for _ in range(2)))
    with open(os.path.join(out, "token_f1.jsonl"), "w", encoding="utf-8") as f:
        for pred, gold in cases:
            f.write(json.dumps({"pred": pred, "gold": gold, "f1": float(compute_f1(gold, pred))}) + "\n")
    print("wrote %d cases to %s" % (len(cases), os.path.join(out, "token_f1.jsonl")))


if __name__ == "__main__":
    main()
