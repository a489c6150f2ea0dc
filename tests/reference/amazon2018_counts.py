#!/usr/bin/env python3
"""amazon2018_counts.py RAW - the record counts `recfound build-data` must give
for the tasks built from the Amazon Reviews 2018 files of RAW (the folder of
../shared/data/raw/README.md), computed here from the rules of data.c's
comments with Python's gzip and json, independently of the C code.
tests/test_data.c checks the C builder against these numbers.

Rules (data.c, "Amazon Reviews 2018"):
  - meta items: a line counts when its ASIN is non-empty and it has a name: a
    title without '<' that is not blank, else a non-blank brand or first
    non-empty description; the first such line of each ASIN is kept;
  - links: also_buy / also_view ASINs of kept items of the same file, the item
    itself dropped;
  - I2I: one record per item with an also_view link; item_embedding_test.json
    holds the test-split ones;
  - PRP: per item, "A" when some also_buy link is not an also_view link, "B"
    when some also_view link is not an also_buy link, "E" when it had A or B;
  - SA (only when the 2023 histories are absent): every 5-core review with a
    whole star rating 1-5, a reviewer id and a text that is not blank;
  - split: FNV-1a (64 bit) of the ASIN or reviewer id, mod 10: 0 test, 1 eval,
    else train.
Run: /usr/bin/python3 tests/reference/amazon2018_counts.py ../shared/data/raw
"""
import gzip
import json
import os
import re
import sys


def split_of(key):
    h = 1469598103934665603
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) % 2**64
    return {0: "test", 1: "eval"}.get(h % 10, "train")


def blank(s):
    """True when nothing but tags, &nbsp; and ASCII whitespace is left."""
    s = re.sub(r"<[^>]*>", " ", s).replace("&nbsp;", " ")
    return not s.strip(" \t\n\r\f\v")


def has_name(it):
    title = it.get("title")
    if isinstance(title, str) and "<" not in title and not blank(title):
        return True
    brand = it.get("brand") if isinstance(it.get("brand"), str) else ""
    desc = next((d for d in it.get("description", []) if isinstance(d, str) and d), "") \
        if isinstance(it.get("description"), list) else ""
    return not blank(brand) or not blank(desc)


def json_lines(path):
    """Each non-blank line of a gzip file of JSON lines, parsed."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def meta_counts(path):
    kept = {}
    for it in json_lines(path):
        asin = it.get("asin")
        if isinstance(asin, str) and asin and has_name(it) and asin not in kept:
            kept[asin] = it
    c = {}
    for asin, it in kept.items():
        links = {}
        for r in ("also_buy", "also_view"):
            lst = it.get(r) if isinstance(it.get(r), list) else []
            links[r] = {a for a in lst if isinstance(a, str) and a in kept and a != asin}
        sp = split_of(asin)
        a = bool(links["also_buy"] - links["also_view"])
        b = bool(links["also_view"] - links["also_buy"])
        for key, ok in (("I2I", bool(links["also_view"])), ("PRP_A", a), ("PRP_B", b), ("PRP_E", a or b)):
            if ok:
                c[key, sp] = c.get((key, sp), 0) + 1
    return c


def sa_counts(path):
    c = {}
    for r in json_lines(path):
        st, text, who = r.get("overall"), r.get("reviewText"), r.get("reviewerID")
        if isinstance(st, (int, float)) and not isinstance(st, bool) and st in (1, 2, 3, 4, 5) \
                and isinstance(text, str) and text.strip() and isinstance(who, str):
            sp = split_of(who)
            c[sp] = c.get(sp, 0) + 1
    return c


def main(raw):
    total = {}
    for cat in ("Gift_Cards", "Magazine_Subscriptions"):
        for k, v in meta_counts(os.path.join(raw, "amazon_reviews/2018_meta", f"meta_{cat}.json.gz")).items():
            total[k] = total.get(k, 0) + v
    for key in ("I2I", "PRP_A", "PRP_B", "PRP_E"):
        print(key, " ".join(f"{sp} {total.get((key, sp), 0)}" for sp in ("train", "eval", "test")),
              "all", sum(total.get((key, sp), 0) for sp in ("train", "eval", "test")))
    sa = {}
    for cat in ("Gift_Cards", "Magazine_Subscriptions", "All_Beauty", "AMAZON_FASHION", "Appliances"):
        for k, v in sa_counts(os.path.join(raw, "amazon_reviews/2018_5core", f"{cat}_5.json.gz")).items():
            sa[k] = sa.get(k, 0) + v
    print("SA_2018", " ".join(f"{sp} {sa.get(sp, 0)}" for sp in ("train", "eval", "test")), "all", sum(sa.values()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
