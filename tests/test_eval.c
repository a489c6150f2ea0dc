/*
 * test_eval.c - the "eval" suite: §5's metrics, ranking and inference.
 *
 * Every metric is checked against values computed by hand in the comments;
 * the KV-cached decoder against model_forward's causal logits (GQA, with and
 * without a sliding window); greedy decoding against argmax of full
 * recomputation; folded adapters against the TMoLE forward; and a tiny
 * end-to-end `eval` / `metrics` run on a synthetic world.
 */
#include "check_util.h"
#include "recfound.h"

#include <unistd.h>

#define N_OF(a) (long)(sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ metrics */

START_TEST(test_binary_yes) {
    /* gold/pred: yes/yes TP; yes/no FN; no/yes FP; no/no TN;
     * yes/"maybe" invalid -> "no" -> FN; no/"Yes." invalid -> "yes" -> FP.
     * tp 1, fp 2, fn 2: P = 1/3, R = 1/3, F1 = 2/(2+2+2) = 1/3, acc = 2/6. */
    const char *out[] = {"Yes", " no\n", "yes", "no", "maybe", "Yes."};
    const char *ans[] = {"yes", "yes", "no", "no", "yes", "no"};
    MetricResult r;
    metric_binary_yes(&r, out, ans, N_OF(out));
    ck_assert_double_eq_tol(r.score, 1.0 / 3, 1e-12);
    ck_assert_double_eq_tol(r.precision, 1.0 / 3, 1e-12);
    ck_assert_double_eq_tol(r.recall, 1.0 / 3, 1e-12);
    ck_assert_double_eq_tol(r.accuracy, 2.0 / 6, 1e-12);
    ck_assert_int_eq(r.invalid, 2);
    ck_assert_int_eq(r.n, 6);
}
END_TEST

START_TEST(test_letter_macro_f1) {
    /* gold A B B C A; outputs "A", "B) good", "C", "x", " A\n".
     *   1 A/A TP(A); 2 B/B TP(B); 3 pred C gold B: FP(C) FN(B);
     *   4 "x" invalid, gold C -> pred 'A': FP(A) FN(C); 5 A/A TP(A).
     * A: tp 2 fp 1 fn 0 -> F1 4/5;  B: tp 1 fp 0 fn 1 -> 2/3;  C: tp 0 -> 0.
     * macro F1 = (4/5 + 2/3 + 0) / 3 = 22/45. */
    const char *out[] = {"A", "B) good", "C", "x", " A\n"};
    const char *ans[] = {"A", "B", "B", "C", "A: positive"};
    MetricResult r;
    metric_letter_f1(&r, out, ans, N_OF(out));
    ck_assert_double_eq_tol(r.score, 22.0 / 45, 1e-12);
    ck_assert_double_eq_tol(r.accuracy, 3.0 / 5, 1e-12);
    /* macro precision: A 2/3, B 1, C 0 -> 5/9;  macro recall: A 1, B 1/2, C 0 -> 1/2 */
    ck_assert_double_eq_tol(r.precision, 5.0 / 9, 1e-12);
    ck_assert_double_eq_tol(r.recall, 0.5, 1e-12);
    ck_assert_int_eq(r.invalid, 1);
    /* an empty output is invalid, not a crash */
    const char *o2[] = {""}, *a2[] = {"A"};
    metric_letter_f1(&r, o2, a2, 1);
    ck_assert_int_eq(r.invalid, 1);
    ck_assert_double_eq_tol(r.score, 0.0, 1e-12);
    /* "F" is past E: invalid, replaced by B (gold A), so classes A and B, both F1 0 */
    const char *o3[] = {"F"};
    metric_letter_f1(&r, o3, a2, 1);
    ck_assert_int_eq(r.invalid, 1);
    ck_assert_double_eq_tol(r.score, 0.0, 1e-12);
    /* a letter only ever predicted is a class too (scikit-learn's labels are the
     * union of y_true and y_pred): gold A A, outputs A D -> A: tp 1 fn 1 -> 2/3,
     * D: fp 1 -> 0; macro F1 1/3 (2/3 if D were left out) */
    const char *o4[] = {"A", "D"}, *a4[] = {"A", "A"};
    metric_letter_f1(&r, o4, a4, 2);
    ck_assert_double_eq_tol(r.score, 1.0 / 3, 1e-12);
}
END_TEST

/* The authors' script strips with Python's str.strip(), which also removes the
 * Unicode spaces: "yes" + NBSP is "yes", U+3000 + "B" is "B", U+2003 "C"
 * U+2003 is the one letter "C" (each would be invalid under an ASCII strip). */
START_TEST(test_metrics_strip_unicode_spaces) {
    MetricResult r;
    const char *yo[] = {"yes\xc2\xa0"}, *ya[] = {"yes"};
    metric_binary_yes(&r, yo, ya, 1);
    ck_assert_int_eq(r.invalid, 0);
    ck_assert_double_eq_tol(r.score, 1.0, 1e-12);
    const char *lo[] = {"\xe3\x80\x80" "B"}, *la[] = {"B"};
    metric_letter_f1(&r, lo, la, 1);
    ck_assert_int_eq(r.invalid, 0);
    ck_assert_double_eq_tol(r.score, 1.0, 1e-12);
    const char *so[] = {"\xe2\x80\x83" "C" "\xe2\x80\x83"}, *sa[] = {"C"};
    metric_recall1(&r, so, sa, 1);
    ck_assert_int_eq(r.invalid, 0);
    ck_assert_double_eq_tol(r.score, 1.0, 1e-12);
}
END_TEST

START_TEST(test_recall1) {
    /* "C"=C right; " A " strips to A, right; "T." two chars: invalid; "" invalid;
     * "U" outside A-T: invalid; "B" vs gold "D": wrong.  R@1 = 2/6. */
    const char *out[] = {"C", " A ", "T.", "", "U", "B"};
    const char *ans[] = {"C", "A", "T", "B", "U", "D"};
    MetricResult r;
    metric_recall1(&r, out, ans, N_OF(out));
    ck_assert_double_eq_tol(r.score, 2.0 / 6, 1e-12);
    ck_assert_int_eq(r.invalid, 3);
    /* the gold must be that one letter too: "A" against "AB" is wrong, not invalid */
    const char *o2[] = {"A"}, *a2[] = {"AB"};
    metric_recall1(&r, o2, a2, 1);
    ck_assert_double_eq_tol(r.score, 0.0, 1e-12);
    ck_assert_int_eq(r.invalid, 0);
}
END_TEST

static int match_s(const char *p, const char *g) {
    Json a, b;
    ck_assert_int_eq(json_parse(&a, p, strlen(p), "p"), 0);
    ck_assert_int_eq(json_parse(&b, g, strlen(g), "g"), 0);
    int m = ave_match(&a, &b);
    json_free(&a);
    json_free(&b);
    return m;
}

START_TEST(test_ave_rules) {
    const char *g = "{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}";
    ck_assert_int_eq(match_s("{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}", g), 1);
    /* value and source each a substring of the other, either way */
    ck_assert_int_eq(match_s("{\"attribute\": \"color\", \"value\": \"dark red\", \"source\": \"title\"}", g), 1);
    ck_assert_int_eq(match_s("{\"attribute\": \"color\", \"value\": \"re\", \"source\": \"product title\"}", g), 1);
    /* source unrelated, attribute different, a key missing: no hit */
    ck_assert_int_eq(match_s("{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"description\"}", g), 0);
    ck_assert_int_eq(match_s("{\"attribute\": \"colour\", \"value\": \"red\", \"source\": \"title\"}", g), 0);
    ck_assert_int_eq(match_s("{\"attribute\": \"color\", \"value\": \"red\"}", g), 0);
    /* null value: only the exact branch can match */
    const char *gn = "{\"attribute\": \"a\", \"value\": null, \"source\": \"t\"}";
    ck_assert_int_eq(match_s("{\"attribute\": \"a\", \"value\": null, \"source\": \"t\"}", gn), 1);
    ck_assert_int_eq(match_s("{\"attribute\": \"a\", \"value\": null, \"source\": \"t\"}",
                             "{\"attribute\": \"a\", \"value\": \"x\", \"source\": \"t\"}"), 0);
    /* numbers compare as Python's str(): 2 is a substring of "2 kg" */
    ck_assert_int_eq(match_s("{\"attribute\": \"w\", \"value\": \"2 kg\", \"source\": \"t\"}",
                             "{\"attribute\": \"w\", \"value\": 2, \"source\": \"t\"}"), 1);
    /* json.loads reads 1.0 as a float, str "1.0", which is not in "10"; 1 is an int, "1", which is; and
     * 0.1 is "0.1" (not 0.10000000000000001), which is in "0.1 oz" */
    ck_assert_int_eq(match_s("{\"attribute\": \"w\", \"value\": \"10\", \"source\": \"t\"}",
                             "{\"attribute\": \"w\", \"value\": 1.0, \"source\": \"t\"}"), 0);
    ck_assert_int_eq(match_s("{\"attribute\": \"w\", \"value\": \"10\", \"source\": \"t\"}",
                             "{\"attribute\": \"w\", \"value\": 1, \"source\": \"t\"}"), 1);
    ck_assert_int_eq(match_s("{\"attribute\": \"w\", \"value\": 0.1, \"source\": \"t\"}",
                             "{\"attribute\": \"w\", \"value\": \"0.1 oz\", \"source\": \"t\"}"), 1);
}
END_TEST

/* py_float_repr against Python's repr(), values and strings as Python 3.11 prints them. */
START_TEST(test_py_float_repr) {
    const double x[] = {1.0, 0.1, 100.0, 1e15, 1e16, 1.5e16, 0.0001, 1e-05, 123.456, -0.1, -2.5e-07, 1.0 / 3,
                        1e22, 5e-324, 1.7976931348623157e308, -0.0, 12345678901234567890.0, 9999999999999998.0};
    const char *want[] = {"1.0", "0.1", "100.0", "1000000000000000.0", "1e+16", "1.5e+16", "0.0001", "1e-05",
                          "123.456", "-0.1", "-2.5e-07", "0.3333333333333333", "1e+22", "5e-324",
                          "1.7976931348623157e+308", "-0.0", "1.2345678901234567e+19", "9999999999999998.0"};
    char b[64];
    for (int i = 0; i < N_OF(x); i++) {
        py_float_repr(b, sizeof b, x[i]);
        ck_assert_msg(!strcmp(b, want[i]), "repr of %.17g: got %s, Python prints %s", x[i], b, want[i]);
    }
}
END_TEST

START_TEST(test_ave_f1) {
    /* record 1: gold color/red/title, size/XL/description; predictions
     *   color/"dark red"/title (hits color), size/L/title ("L" in "XL" but the
     *   sources differ: no hit), brand/Acme/title (no gold).
     * record 2: output not JSON: invalid, gold 1.
     * record 3: gold weight/2/description; predictions weight/2/description
     *   (exact) and weight/"2 kg"/description (substring) - both match it.
     * record 4: the answer is not JSON: skipped.
     * correct: hits 1 + 0 + 1 = 2, predicted 3 + 0 + 2 = 5, gold 2 + 1 + 1 = 4:
     *   P = 2/5, R = 2/4, F1 = 2 (0.4)(0.5) / 0.9 = 4/9.
     * code: every (gold, prediction) pair: record 1 counts 2 x 3 = 6
     *   predictions and 1 hit, record 3 counts 1 x 2 = 2 and 2 hits:
     *   P = 3/8, R = 3/4, F1 = 2 (3/8)(3/4) / (9/8) = 1/2 (up to the 1e-6 terms). */
    const char *ans[] = {
        "[{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}, "
        "{\"attribute\": \"size\", \"value\": \"XL\", \"source\": \"description\"}]",
        "[{\"attribute\": \"material\", \"value\": \"cotton\", \"source\": \"title\"}]",
        "[{\"attribute\": \"weight\", \"value\": 2, \"source\": \"description\"}]",
        "not json"};
    const char *out[] = {
        "[{\"attribute\": \"color\", \"value\": \"dark red\", \"source\": \"title\"}, "
        "{\"attribute\": \"size\", \"value\": \"L\", \"source\": \"title\"}, "
        "{\"attribute\": \"brand\", \"value\": \"Acme\", \"source\": \"title\"}]",
        "material: cotton",
        "[{\"attribute\": \"weight\", \"value\": 2, \"source\": \"description\"}, "
        "{\"attribute\": \"weight\", \"value\": \"2 kg\", \"source\": \"description\"}]",
        "[]"};
    MetricResult r;
    metric_ave(&r, out, ans, 4, AVE_PREC_CORRECT);
    ck_assert_double_eq_tol(r.precision, 0.4, 1e-12);
    ck_assert_double_eq_tol(r.recall, 0.5, 1e-12);
    ck_assert_double_eq_tol(r.score, 4.0 / 9, 1e-12);
    ck_assert_int_eq(r.invalid, 1);
    ck_assert_int_eq(r.skipped, 1);
    ck_assert_int_eq(r.n, 3);
    metric_ave(&r, out, ans, 4, AVE_PREC_CODE);
    ck_assert_double_eq_tol(r.precision, 3.0 / 8, 1e-6);
    ck_assert_double_eq_tol(r.recall, 0.75, 1e-12);
    ck_assert_double_eq_tol(r.score, 0.5, 1e-5);
    ck_assert_int_eq(r.invalid, 1);
    /* One prediction that matches two gold triples (color/red/title exactly,
     * color/"dark red"/title by substrings).  correct: it is used once, so
     * hits 1 of 1 predicted and 2 gold: P = 1, R = 1/2, F1 = 2/3.  code: both
     * pairs hit, 2 counted: P = 2/2, R = 2/2, F1 = 1 (up to the 1e-6 terms). */
    const char *ans2[] = {"[{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}, "
                          "{\"attribute\": \"color\", \"value\": \"dark red\", \"source\": \"title\"}]"};
    const char *out2[] = {"[{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}]"};
    metric_ave(&r, out2, ans2, 1, AVE_PREC_CORRECT);
    ck_assert_double_eq_tol(r.precision, 1.0, 1e-12);
    ck_assert_double_eq_tol(r.recall, 0.5, 1e-12);
    ck_assert_double_eq_tol(r.score, 2.0 / 3, 1e-12);
    metric_ave(&r, out2, ans2, 1, AVE_PREC_CODE);
    ck_assert_double_eq_tol(r.precision, 1.0, 1e-5);
    ck_assert_double_eq_tol(r.recall, 1.0, 1e-12);
    ck_assert_double_eq_tol(r.score, 1.0, 1e-5);
}
END_TEST

/* tests/fixtures/metrics/token_f1.jsonl: 620 (prediction, gold) pairs and the
 * F1 of SQuAD's own compute_f1 (tests/reference/make_metric_fixtures.py). */
START_TEST(test_token_f1_squad_fixture) {
    char *text;
    size_t len;
    ck_assert_msg(rf_read_file("tests/fixtures/metrics/token_f1.jsonl", &text, &len) == 0, "%s", rf_last_error());
    int cases = 0;
    for (char *line = text; *line;) {
        char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        Json v;
        ck_assert_msg(json_parse(&v, line, n, "token_f1.jsonl") == 0, "%s", rf_last_error());
        const Json *p = json_get(&v, "pred"), *g = json_get(&v, "gold"), *f = json_get(&v, "f1");
        ck_assert(p && g && f);
        double got = token_f1(p->string, g->string);
        ck_assert_msg(fabs(got - f->number) <= 1e-12, "case %d: token_f1(\"%s\", \"%s\") = %.15g, SQuAD's %.15g",
                      cases + 1, p->string, g->string, got, f->number);
        json_free(&v);
        cases++;
        line += n + (eol ? 1 : 0);
    }
    ck_assert_int_eq(cases, 620);
    free(text);
}
END_TEST

START_TEST(test_token_f1) {
    /* pred tokens (articles dropped): cat sat on mat (4); gold: cat sat on red
     * mat (5); common 4: P = 1, R = 4/5, F1 = 2 (4/5) / (9/5) = 8/9. */
    ck_assert_double_eq_tol(token_f1("The cat sat on the mat.", "A cat sat on a red mat"), 8.0 / 9, 1e-12);
    /* bags: pred {hello, world}, gold {hello x2, world}: common 2, P 1, R 2/3, F1 0.8 */
    ck_assert_double_eq_tol(token_f1("Hello, WORLD", "hello world hello"), 0.8, 1e-12);
    ck_assert_double_eq_tol(token_f1("", ""), 1.0, 1e-12);
    ck_assert_double_eq_tol(token_f1("", "x"), 0.0, 1e-12);
    ck_assert_double_eq_tol(token_f1("a b c", "d e"), 0.0, 1e-12);
    /* "an" is an article too: {apple} against {apple} */
    ck_assert_double_eq_tol(token_f1("An apple", "apple"), 1.0, 1e-12);
    /* SQuAD's normalize_answer deletes punctuation inside a word, it does not
     * split there: "don't" is "dont", "e-mail" "email", "3.5" "35"; so these
     * pairs are equal (F1 1), where splitting would give {don, t, stop} against
     * {dont, stop}: F1 2 (1/3)(1/2) / (5/6) = 0.4 */
    ck_assert_double_eq_tol(token_f1("Don't stop", "dont stop"), 1.0, 1e-12);
    ck_assert_double_eq_tol(token_f1("e-mail me", "email me"), 1.0, 1e-12);
    ck_assert_double_eq_tol(token_f1("3.5 inch", "35 inch"), 1.0, 1e-12);
    /* "the-end" is "theend", not the article and "end": {theend} against {end}: 0 */
    ck_assert_double_eq_tol(token_f1("the-end", "end"), 0.0, 1e-12);
    /* a token of punctuation only vanishes: {red, mug} against {red, mug} */
    ck_assert_double_eq_tol(token_f1("red -- mug !", "red mug"), 1.0, 1e-12);
    /* Python's split() also cuts at NBSP and U+3000: {red, mug} */
    ck_assert_double_eq_tol(token_f1("red\xc2\xa0mug", "red mug"), 1.0, 1e-12);
    ck_assert_double_eq_tol(token_f1("red\xe3\x80\x80mug", "mug red"), 1.0, 1e-12);
    const char *out[] = {"The cat sat on the mat.", "a b c"}, *ans[] = {"A cat sat on a red mat", "d e"};
    MetricResult r;
    metric_token_f1(&r, out, ans, 2);
    ck_assert_double_eq_tol(r.score, 4.0 / 9, 1e-12);
}
END_TEST

/* ------------------------------------------------------------ ranking */

START_TEST(test_mrr_ndcg) {
    /* positive (index 0) scores 0.3 against 0.9 and 0.5: rank 3, MRR 1/3; @2: 0 */
    float s1[] = {0.3f, 0.9f, 0.5f, 0.1f};
    int r1[] = {1, 0, 0, 0};
    ck_assert_double_eq_tol(rank_mrr(s1, r1, 4, 0), 1.0 / 3, 1e-12);
    ck_assert_double_eq_tol(rank_mrr(s1, r1, 4, 2), 0.0, 1e-12);
    /* a tie puts the positive after the negative (reversed argsort): rank 2 */
    float s2[] = {0.5f, 0.5f, 0.2f};
    int r2[] = {1, 0, 0};
    ck_assert_double_eq_tol(rank_mrr(s2, r2, 3, 0), 0.5, 1e-12);
    /* relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal 1 + 1/log2(3) */
    float s3[] = {0.9f, 0.8f, 0.7f, 0.6f};
    int r3[] = {0, 1, 0, 1};
    double l3 = 1 / log2(3.0), l5 = 1 / log2(5.0);
    ck_assert_double_eq_tol(rank_ndcg(s3, r3, 4, 0), (l3 + l5) / (1 + l3), 1e-12);
    /* @2: only rank 2 counts, the ideal still has both relevant in the top 2 */
    ck_assert_double_eq_tol(rank_ndcg(s3, r3, 4, 2), l3 / (1 + l3), 1e-12);
    /* all relevant first: 1 */
    float s4[] = {0.1f, 0.9f, 0.8f};
    int r4[] = {0, 1, 1};
    ck_assert_double_eq_tol(rank_ndcg(s4, r4, 3, 0), 1.0, 1e-12);
}
END_TEST

/* ------------------------------------------------- Table 3's protocols */

/* A hand-made embedder: the text "x y" is the vector (x, y).  Every query
 * below is "1 0", so a candidate's score is its x. */
static int xy_embedder(void *ctx, float *out, const char *const *instr, const char *const *text, int n, int task,
                       EmbFormat fmt, long *dropped, const char *what) {
    (void)ctx, (void)instr, (void)task, (void)fmt, (void)dropped, (void)what;
    for (int i = 0; i < n; i++) {
        char *end;
        out[2 * i] = strtof(text[i], &end);
        out[2 * i + 1] = strtof(end, NULL);
    }
    return 0;
}

static void push_rec(Pool *p, const char *json, long line) {
    Record r;
    int bad;
    ck_assert_msg(record_parse(&r, json, strlen(json), "test", &bad) == 0, "%s", rf_last_error());
    r.line = line;
    ck_assert_int_eq(pool_push(p, &r), 0);
}

#define EMB_REC(task, src, pos, neg)                                                              \
    "{\"query\": [\"q\", \"1 0\"], \"pos\": [[\"p\", " pos "]], \"neg\": [[\"n\", " neg "]], " \
    "\"task\": \"" task "\", \"source\": \"" src "\"}"

/* The records, by hand (x of each text):
 *   I2I (item_embedding_test.json), all of source A, each with the same six
 *   negatives 0.7 0.1 0.3 0.05 0.95 0.99 (only the first five count):
 *     I1 positives 0.9 0.5;  I2 positive 0.2;  I3 positive 0.98
 *   U2I / Q2I (the jsonl; line in brackets):
 *     U1 [1] A: pos 0.6, neg 0.8     Q1 [2] A: pos 0.5, neg 0.4
 *     U2 [3] A: pos 0.3, neg 0.2     U3 [4] B: pos 0.9, neg 0.1
 *     U4 [5] A: pos 0.05, neg 0.8 (the same text as U1's)
 *
 * The authors' pools, every record, 3 negatives: a record draws 3 of the
 * kept records of its task and source (itself included), so the 3 records of
 * U2I/A and of I2I/A each draw all of theirs (the order does not matter here),
 * and U3 (alone in B) and Q1 (alone) are skipped.
 *   U2I: negatives 0.8 0.2 0.8: U1 0.6 ranks 3rd, U2 0.3 3rd, U4 0.05 4th:
 *        MRR (1/3 + 1/3 + 1/4) / 3 = 11/36;  3 scored, 1 skipped
 *   I2I: negatives 0.7 0.1 0.3 0.05 0.95 (the drawn record's first five):
 *        I1: 0.95 0.9* 0.7 0.5* ...: NDCG (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
 *        I2: 0.95 0.7 0.3 0.2*:      NDCG 1/log2 5
 *        I3: 0.98* first:            NDCG 1
 * Every second record, in the order I1 I2 I3 U1 Q1 U2 U3 U4 (I2I, then the
 * jsonl by line): I1 I3 Q1 U3 are kept; each has fewer than 3 kept records of
 * its task and source, so all four are skipped.
 *
 * Full corpus, U2I: the distinct candidate texts 0.9 0.8 0.6 0.3 0.2 0.1 0.05
 * (7: U4's negative is U1's).  U1's positive ranks 3rd, U2's 4th, U3's 1st,
 * U4's 7th: MRR@20 (1/3 + 1/4 + 1 + 1/7) / 4, NDCG@20 (1/log2 4 + 1/log2 5 +
 * 1 + 1/log2 8) / 4.  I2I: 0.99 0.98 0.95 0.9 0.7 0.5 0.3 0.2 0.1 0.05 (10):
 * I1's positives rank 4th and 6th, I2's 8th, I3's 2nd. */
START_TEST(test_emb_protocols) {
    Pool i2i = {0};
    Dataset d;
    memset(&d, 0, sizeof d);
    const char *negs = "[\"0.7 0\", \"0.1 0\", \"0.3 0\", \"0.05 0\", \"0.95 0\", \"0.99 0\"]";
    char json[1024];
    const char *i2i_pos[3] = {"[\"0.9 0\", \"0.5 0\"]", "[\"0.2 0\"]", "[\"0.98 0\"]"};
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof json,
                 "{\"query\": [\"q\", \"1 0\"], \"pos\": [[\"p\", %s]], \"neg\": [[\"n\", %s]], "
                 "\"task\": \"Emb_item\", \"source\": \"A\"}", i2i_pos[i], negs);
        push_rec(&i2i, json, i + 1);
    }
    push_rec(&d.pool[TASK_U2I], EMB_REC("Emb_user", "A", "\"0.6 0\"", "\"0.8 0\""), 1);
    push_rec(&d.pool[TASK_Q2I], EMB_REC("Emb_query", "A", "\"0.5 0\"", "\"0.4 0\""), 2);
    push_rec(&d.pool[TASK_U2I], EMB_REC("Emb_user", "A", "\"0.3 0\"", "\"0.2 0\""), 3);
    push_rec(&d.pool[TASK_U2I], EMB_REC("Emb_user", "B", "\"0.9 0\"", "\"0.1 0\""), 4);
    push_rec(&d.pool[TASK_U2I], EMB_REC("Emb_user", "A", "\"0.05 0\"", "\"0.8 0\""), 5);

    EmbEval e;
    memset(&e, 0, sizeof e);
    e.embed = xy_embedder, e.dim = 2, e.every = 1, e.negatives = 3, e.seed = 42, e.qfmt = EMB_FMT_CODE_TEST;
    e.code_fmt = 1;
    e.sel[TASK_U2I] = e.sel[TASK_Q2I] = e.sel[TASK_I2I] = 1;
    EmbResult res[N_TASKS];
    memset(res, 0, sizeof res);
    ck_assert_int_eq(emb_code_protocol(&e, &i2i, &d, res), 0);
    double l3 = 1 / log2(3.0), l5 = 1 / log2(5.0);
    ck_assert_double_eq_tol(res[TASK_U2I].code, 11.0 / 36, 1e-6);
    ck_assert_int_eq(res[TASK_U2I].code_n, 3);
    ck_assert_int_eq(res[TASK_U2I].code_skipped, 1);
    ck_assert_int_eq(res[TASK_Q2I].code_n, 0);
    ck_assert_int_eq(res[TASK_Q2I].code_skipped, 1);
    ck_assert_double_eq_tol(res[TASK_I2I].code, ((l3 + l5) / (1 + l3) + l5 + 1) / 3, 1e-6);
    ck_assert_int_eq(res[TASK_I2I].code_n, 3);
    /* U2I alone: the same (the draws do not depend on the tasks chosen) */
    e.sel[TASK_Q2I] = e.sel[TASK_I2I] = 0;
    memset(res, 0, sizeof res);
    ck_assert_int_eq(emb_code_protocol(&e, &i2i, &d, res), 0);
    ck_assert_double_eq_tol(res[TASK_U2I].code, 11.0 / 36, 1e-6);
    ck_assert_int_eq(res[TASK_I2I].code_n + res[TASK_I2I].code_skipped, 0);
    /* every second record */
    e.every = 2;
    e.sel[TASK_Q2I] = e.sel[TASK_I2I] = 1;
    memset(res, 0, sizeof res);
    ck_assert_int_eq(emb_code_protocol(&e, &i2i, &d, res), 0);
    ck_assert_int_eq(res[TASK_I2I].code_skipped, 2);
    ck_assert_int_eq(res[TASK_Q2I].code_skipped, 1);
    ck_assert_int_eq(res[TASK_U2I].code_skipped, 1);
    ck_assert_int_eq(res[TASK_U2I].code_n + res[TASK_Q2I].code_n + res[TASK_I2I].code_n, 0);

    memset(res, 0, sizeof res);
    ck_assert_int_eq(emb_full_protocol(&e, TASK_U2I, &d.pool[TASK_U2I], &res[TASK_U2I]), 0);
    ck_assert_int_eq(res[TASK_U2I].corpus, 7);
    ck_assert_int_eq(res[TASK_U2I].full_n, 4);
    ck_assert_double_eq_tol(res[TASK_U2I].mrr20, (1.0 / 3 + 1.0 / 4 + 1 + 1.0 / 7) / 4, 1e-6);
    ck_assert_double_eq_tol(res[TASK_U2I].ndcg20, (0.5 + l5 + 1 + 1.0 / 3) / 4, 1e-6);
    ck_assert_int_eq(emb_full_protocol(&e, TASK_I2I, &i2i, &res[TASK_I2I]), 0);
    ck_assert_int_eq(res[TASK_I2I].corpus, 10);
    ck_assert_double_eq_tol(res[TASK_I2I].mrr20, (1.0 / 4 + 1.0 / 8 + 1.0 / 2) / 3, 1e-6);
    ck_assert_double_eq_tol(res[TASK_I2I].ndcg20,
                            ((l5 + 1 / log2(7.0)) / (1 + l3) + 1 / log2(9.0) + l3) / 3, 1e-6);
    for (size_t i = 0; i < i2i.n; i++) record_free(&i2i.recs[i]);
    free(i2i.recs);
    dataset_free(&d);
}
END_TEST

/* A generation prompt cut to fit the cache: <s> stays, the oldest go. */
START_TEST(test_fit_prompt) {
    int ids[6] = {1, 10, 11, 12, 13, 14}, max_new = 2;
    ck_assert_int_eq(fit_prompt(ids, 6, 5, &max_new), 3);  /* 5 - 2 = 3 prompt tokens: <s> 13 14 */
    ck_assert(ids[0] == 1 && ids[1] == 13 && ids[2] == 14 && max_new == 2);
    int jds[4] = {1, 10, 11, 12};
    max_new = 2;
    ck_assert_int_eq(fit_prompt(jds, 4, 8, &max_new), 4);  /* room enough: unchanged */
    ck_assert(jds[3] == 12 && max_new == 2);
    int kds[4] = {1, 10, 11, 12};
    max_new = 9;
    ck_assert_int_eq(fit_prompt(kds, 4, 5, &max_new), 4);  /* max_new above the cache: the prompt stays, 1 new */
    ck_assert_int_eq(max_new, 1);
}
END_TEST

START_TEST(test_pool_sample) {
    size_t a[19], b[19];
    Rng r1, r2;
    rng_seed(&r1, 42);
    rng_seed(&r2, 42);
    ck_assert_int_eq(pool_sample(a, 50, 19, &r1), 0);
    ck_assert_int_eq(pool_sample(b, 50, 19, &r2), 0);
    for (int i = 0; i < 19; i++) {
        ck_assert_uint_eq(a[i], b[i]);  /* same seed, same draws */
        ck_assert_uint_lt(a[i], 50);
        for (int j = 0; j < i; j++) ck_assert_uint_ne(a[i], a[j]);  /* without replacement */
    }
    /* the stream moves on: the next draw differs */
    ck_assert_int_eq(pool_sample(b, 50, 19, &r2), 0);
    int same = 1;
    for (int i = 0; i < 19; i++) same &= a[i] == b[i];
    ck_assert(!same);
    /* too small a pool: nothing drawn, the stream does not move */
    uint64_t s = r1.s;
    ck_assert_int_eq(pool_sample(a, 18, 19, &r1), 1);
    ck_assert(r1.s == s);
    /* k = n draws a permutation */
    size_t p[5];
    int seen[5] = {0};
    ck_assert_int_eq(pool_sample(p, 5, 5, &r1), 0);
    for (int i = 0; i < 5; i++) seen[p[i]]++;
    for (int i = 0; i < 5; i++) ck_assert_int_eq(seen[i], 1);
    /* uniform: every one of 3 items is the first pick about a third of the
     * time (3,000 draws: 1,000 expected, standard deviation 26; the bounds
     * are about 4 of them), and every (first, second) order of 3 items about
     * a sixth (3,000 draws: 500 expected, sd 20) */
    int first[3] = {0}, order[3][3] = {{0}};
    for (int d = 0; d < 3000; d++) {
        size_t q[2];
        ck_assert_int_eq(pool_sample(q, 3, 2, &r1), 0);
        first[q[0]]++;
        order[q[0]][q[1]]++;
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(first[i] > 900 && first[i] < 1100, "item %d first %d times of 3000", i, first[i]);
        for (int j = 0; j < 3; j++)
            if (j != i)
                ck_assert_msg(order[i][j] > 420 && order[i][j] < 580, "(%d, %d) %d times of 3000", i, j, order[i][j]);
    }
}
END_TEST

/* ------------------------------------------------------- the decoder */

static void tiny(Model *m, int window) {
    Config c;
    ck_assert_int_eq(config_preset(&c, "tiny", 0), 0);  /* H 4, KV 2: grouped-query */
    c.sliding_window = window;
    ck_assert_int_eq(model_alloc(m, &c), 0);
    model_init_random(m, 3);
    for (size_t i = 0; i < m->total; i++) m->params[i] *= 5.0f;  /* larger weights: less trivial attention */
    for (int i = 0; i < m->n_params; i++)
        if (m->spec[i].ndim == 1)
            for (size_t j = 0; j < m->spec[i].numel; j++) m->params[m->spec[i].offset + j] = 1.0f;
}

/* Causal logits of ids[0..T) by the full forward (model.c). */
static float *full_logits(const Model *m, const Tmole *tm, const int *ids, int T, int task) {
    Acts *a = acts_new(m, 1, T);
    ck_assert_ptr_nonnull(a);
    int len = T;
    Batch b = {.B = 1, .T = T, .ids = ids, .lengths = &len, .tasks = &task};
    model_forward(m, tm, a, &b, ATTN_CAUSAL);
    float *out = malloc((size_t)T * m->cfg.vocab_size * sizeof(float));
    model_logits(m, a, out, T);
    acts_free(a);
    return out;
}

static void check_cache(int window) {
    Model m;
    tiny(&m, window);
    enum { T = 12 };
    int V = m.cfg.vocab_size, ids[T];
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < T; i++) ids[i] = (int)rng_below(&r, V);
    float *want = full_logits(&m, NULL, ids, T, 0), *got = malloc((size_t)T * V * sizeof(float));
    KvDecoder *d = kv_new(&m, 32);
    ck_assert_ptr_nonnull(d);
    for (int t = 0; t < T; t++) ck_assert_int_eq(kv_forward(d, &ids[t], 1, got + (size_t)t * V, 1), 0);
    ck_assert_int_eq(kv_pos(d), T);
    assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "one token at a time");
    /* a prefill of 5 then 7 more in one call */
    kv_reset(d);
    ck_assert_int_eq(kv_forward(d, ids, 5, got, 1), 0);
    ck_assert_int_eq(kv_forward(d, ids + 5, T - 5, got + (size_t)5 * V, 1), 0);
    assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "chunked prefill");
    /* last-only output = the last row */
    kv_reset(d);
    ck_assert_int_eq(kv_forward(d, ids, T, got, 0), 0);
    assert_allclose(got, want + (size_t)(T - 1) * V, V, 1e-4, 1e-5, "last position");
    /* overflowing the cache is an error, not a crash */
    ck_assert_int_eq(kv_forward(d, ids, 32, NULL, 0), -1);
    kv_free(d);
    free(want);
    free(got);
    model_free(&m);
}

START_TEST(test_cache_vs_full) { check_cache(0); }
END_TEST

START_TEST(test_cache_sliding_window) { check_cache(5); }  /* window 5 < length 12 */
END_TEST

START_TEST(test_greedy_vs_recompute) {
    Model m;
    tiny(&m, 0);
    int V = m.cfg.vocab_size, prompt[4] = {1, 17, 42, 99}, *gen, n_gen, seq[16];
    KvDecoder *d = kv_new(&m, 16);
    ck_assert_int_eq(generate_greedy(d, prompt, 4, 6, -1, &gen, &n_gen), 0);
    ck_assert_int_eq(n_gen, 6);
    memcpy(seq, prompt, sizeof prompt);
    for (int j = 0; j < 6; j++) {
        float *lg = full_logits(&m, NULL, seq, 4 + j, 0), *last = lg + (size_t)(3 + j) * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (last[v] > last[best]) best = v;
        ck_assert_int_eq(gen[j], best);
        seq[4 + j] = best;
        free(lg);
    }
    free(gen);
    /* stopping at eos: make the first generated token the eos */
    kv_reset(d);
    ck_assert_int_eq(generate_greedy(d, prompt, 4, 6, seq[4], &gen, &n_gen), 0);
    ck_assert_int_eq(n_gen, 0);
    free(gen);
    kv_free(d);
    model_free(&m);
}
END_TEST

/* bf16 weights (Model) through everything that runs a frozen backbone: the
 * full forward with adapters, the adapters' gradients, folding, and the cached
 * decoder one token at a time and in a chunk: the same bits as the float model
 * holding the same (widened) weights. */
START_TEST(test_bf16_weights_paths) {
    Model m, h;
    tiny(&m, 0);
    bf16_twin(&h, &m);
    TmoleConfig c;
    tmole_config_default(&c);
    c.rank = 4; c.alpha = 8; c.task_dim = 8; c.dropout = 0;
    Tmole tm;
    ck_assert_int_eq(tmole_alloc(&tm, &c, &m.cfg), 0);
    tmole_init(&tm, 9);
    Rng r;
    rng_seed(&r, 11);
    for (size_t i = 0; i < tm.total; i++) tm.params[i] = 0.3f * rng_normal(&r);
    enum { T = 9 };
    int V = m.cfg.vocab_size, ids[T] = {1, 5, 9, 200, 3, 77, 128, 6, 31}, len = T, task = TASK_SR;
    size_t n = (size_t)T * V;
    float *want = full_logits(&m, &tm, ids, T, task), *got = full_logits(&h, &tm, ids, T, task);
    ck_assert_msg(memcmp(got, want, n * 4) == 0, "forward with adapters");
    /* the adapters' gradients through the bf16 backbone */
    Batch b = {.B = 1, .T = T, .ids = ids, .lengths = &len, .tasks = &task};
    float w[T], *g1 = calloc(tm.total, 4), *g2 = calloc(tm.total, 4);
    lm_weights_mean(w, &b);
    Model *both[2] = {&m, &h};
    float *gs[2] = {g1, g2};
    for (int k = 0; k < 2; k++) {
        Acts *a = acts_new(both[k], 1, T);
        model_forward(both[k], &tm, a, &b, ATTN_CAUSAL);
        model_lm_loss(both[k], a, &b, w, NULL, NULL, 1);
        model_backward(both[k], &tm, a, &b, ATTN_CAUSAL, NULL, gs[k]);
        acts_free(a);
    }
    ck_assert(dotd(g1, g1, tm.total) > 0);
    ck_assert_msg(memcmp(g1, g2, tm.total * 4) == 0, "adapter gradients");
    /* folded, then decoded with the cache */
    FoldedModel f1, f2;
    ck_assert_int_eq(fold_task(&f1, &m, &tm, task, ATTN_CAUSAL, "test"), 0);
    ck_assert_int_eq(fold_task(&f2, &h, &tm, task, ATTN_CAUSAL, "test"), 0);
    float *step1 = malloc(n * 4), *step2 = malloc(n * 4);
    for (int chunk = 0; chunk < 2; chunk++) {
        KvDecoder *d1 = kv_new(&f1.m, T), *d2 = kv_new(&f2.m, T);
        if (chunk) {
            ck_assert_int_eq(kv_forward(d1, ids, T, step1, 1), 0);
            ck_assert_int_eq(kv_forward(d2, ids, T, step2, 1), 0);
        } else {
            for (int t = 0; t < T; t++) {
                ck_assert_int_eq(kv_forward(d1, &ids[t], 1, step1 + (size_t)t * V, 1), 0);
                ck_assert_int_eq(kv_forward(d2, &ids[t], 1, step2 + (size_t)t * V, 1), 0);
            }
        }
        ck_assert_msg(memcmp(step1, step2, n * 4) == 0, "cached decoder, %s", chunk ? "one chunk" : "token by token");
        kv_free(d1);
        kv_free(d2);
    }
    /* and the plain backbone (nothing folded) through the cache */
    KvDecoder *d1 = kv_new(&m, T), *d2 = kv_new(&h, T);
    ck_assert_int_eq(kv_forward(d1, ids, T, step1, 1), 0);
    ck_assert_int_eq(kv_forward(d2, ids, T, step2, 1), 0);
    ck_assert_msg(memcmp(step1, step2, n * 4) == 0, "cached decoder without adapters");
    kv_free(d1);
    kv_free(d2);
    fold_free(&f1);
    fold_free(&f2);
    free(want); free(got); free(g1); free(g2); free(step1); free(step2);
    tmole_free(&tm);
    model_free(&h);
    model_free(&m);
}
END_TEST

START_TEST(test_fold_vs_adapters) {
    Model m;
    tiny(&m, 0);
    TmoleConfig c;
    tmole_config_default(&c);
    c.rank = 4; c.alpha = 8; c.task_dim = 8;
    Tmole tm;
    ck_assert_int_eq(tmole_alloc(&tm, &c, &m.cfg), 0);
    tmole_init(&tm, 9);
    Rng r;
    rng_seed(&r, 10);
    for (size_t i = 0; i < tm.total; i++) tm.params[i] = 0.3f * rng_normal(&r);  /* B != 0 */
    double sum0 = 0;
    for (size_t i = 0; i < m.total; i++) sum0 += m.params[i];
    enum { T = 9 };
    int V = m.cfg.vocab_size, ids[T] = {1, 5, 9, 200, 3, 77, 128, 6, 31};
    for (int task = TASK_QR; task <= TASK_AG; task += 4) {
        float *want = full_logits(&m, &tm, ids, T, task);
        FoldedModel f;
        ck_assert_int_eq(fold_task(&f, &m, &tm, task, ATTN_CAUSAL, "test"), 0);
        float *got = full_logits(&f.m, NULL, ids, T, task);
        assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "folded vs adapters");
        /* and the cached decoder on the folded model */
        KvDecoder *d = kv_new(&f.m, T);
        ck_assert_int_eq(kv_forward(d, ids, T, got, 1), 0);
        assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "cached folded vs adapters");
        /* the adapters left unfolded (fold_task's fallback when memory is short):
         * the cached decoder adds them after each adapted projection */
        FoldedModel u;
        ck_assert_int_eq(unfold_task(&u, &m, &tm, task, ATTN_CAUSAL), 0);
        KvDecoder *du = kv_new_folded(&u, T);
        ck_assert_int_eq(kv_forward(du, ids, T, got, 1), 0);
        assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "cached unfolded vs adapters, one chunk");
        kv_reset(du);
        for (int t = 0; t < T; t++) ck_assert_int_eq(kv_forward(du, &ids[t], 1, got + (size_t)t * V, 1), 0);
        assert_allclose(got, want, (size_t)T * V, 1e-4, 1e-5, "cached unfolded vs adapters, token by token");
        kv_free(du);
        fold_free(&u);
        /* the adapters matter: the plain backbone differs */
        float *plain = full_logits(&m, NULL, ids, T, task);
        ck_assert(nerr(plain, want, (size_t)T * V) > 1e-6);
        kv_free(d);
        fold_free(&f);
        free(want); free(got); free(plain);
    }
    double sum1 = 0;
    for (size_t i = 0; i < m.total; i++) sum1 += m.params[i];
    ck_assert(sum0 == sum1);  /* the backbone is untouched */
    tmole_free(&tm);
    model_free(&m);
}
END_TEST

/* ----------------------------------------------------- commands */

static char *slurp(const char *path) {
    char *s;
    size_t n;
    ck_assert_msg(rf_read_file(path, &s, &n) == 0, "%s", rf_last_error());
    return s;
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(s, f);
    fclose(f);
}

START_TEST(test_metrics_cmd) {
    char dir[] = "/tmp/rf_evalm_XXXXXX", in[256], js[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(in, sizeof in, "%s/outputs.jsonl", dir);
    snprintf(js, sizeof js, "%s/scores.json", dir);
    /* PM: yes/yes TP, no/yes FN, "sure"/no invalid -> FP: F1 = 2/(2+1+1) = 1/2.
     * SR: C/C, "CD"/A invalid: R@1 = 1/2.  One line of an unknown task is ignored. */
    write_text(in,
               "{\"output\": \"yes\", \"answer\": \"yes\", \"source\": \"x\", \"task\": \"Product_Matching\"}\n"
               "{\"output\": \"no\", \"answer\": \"yes\", \"source\": null, \"task\": \"Product_Matching\"}\n"
               "{\"output\": \"sure\", \"answer\": \"no\", \"source\": \"x\", \"task\": \"Product_Matching\"}\n"
               "{\"output\": \"C\", \"answer\": \"C\", \"source\": \"x\", \"task\": \"Sequential_Recommendation\"}\n"
               "{\"output\": \"CD\", \"answer\": \"A\", \"source\": \"x\", \"task\": \"Sequential_Recommendation\"}\n"
               "{\"output\": \"q\", \"answer\": \"q\", \"source\": \"x\", \"task\": \"Emb_user\"}\n");
    char *argv[] = {"metrics", "--outputs", in, "--out", js, NULL};
    ck_assert_msg(metrics_main(5, argv) == 0, "%s", rf_last_error());
    char *s = slurp(js);
    Json j;
    ck_assert_int_eq(json_parse(&j, s, strlen(s), js), 0);
    const Json *g = json_get(&j, "generative"), *pm = json_get(g, "PM"), *sr = json_get(g, "SR");
    ck_assert_ptr_nonnull(pm);
    ck_assert_ptr_nonnull(sr);
    ck_assert_double_eq_tol(json_get(pm, "score")->number, 0.5, 1e-6);
    ck_assert_int_eq((int)json_get(pm, "invalid")->number, 1);
    ck_assert_double_eq_tol(json_get(sr, "score")->number, 0.5, 1e-6);
    ck_assert_int_eq((int)json_get(sr, "invalid")->number, 1);
    json_free(&j);
    free(s);
    /* a bad line is one error naming the file and line */
    write_text(in, "{\"output\": \"yes\"}\n");
    ck_assert_int_eq(metrics_main(5, argv), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "line 1"));
    /* a file without records is an error too, not an empty table */
    write_text(in, "");
    ck_assert_int_eq(metrics_main(5, argv), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "no records to score"));
    unlink(in);
    unlink(js);
    rmdir(dir);
}
END_TEST

START_TEST(test_eval_end_to_end) {
    char dir[] = "/tmp/rf_evale_XXXXXX", data[256], mdir[256], adir[256], tokp[300], js[256], outp[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    snprintf(adir, sizeof adir, "%s/adapter", dir);
    snprintf(js, sizeof js, "%s/res/scores.json", dir);
    snprintf(outp, sizeof outp, "%s/res/outputs.jsonl", dir);
    char *sargv[] = {"synth", "--out", data, "--scale", "0.005", NULL};
    ck_assert_msg(synth_main(5, sargv) == 0, "%s", rf_last_error());
    const char *texts[] = {"<s><|user|>\nWhich product matches? Answer yes or no.\n<|assistant|>\nyes</s>",
                           "<s><|embed|>\ntitle: Zenix Compact Yellow Glass coaster set, Model J291",
                           "[{\"attribute\": \"color\", \"value\": \"red\", \"source\": \"title\"}]",
                           "The user buys garden products from Novico. A B C D E"};
    Tokenizer tok;
    ck_assert_int_eq(tok_train(&tok, texts, NULL, 4, 320), 0);
    Config c;
    ck_assert_int_eq(config_preset(&c, "tiny", tok.n_vocab), 0);
    Model m;
    ck_assert_int_eq(model_alloc(&m, &c), 0);
    model_init_random(&m, 1);
    ck_assert_msg(model_save(&m, mdir) == 0, "%s", rf_last_error());
    snprintf(tokp, sizeof tokp, "%s/tokenizer.json", mdir);
    ck_assert_int_eq(tok_save(&tok, tokp), 0);
    TmoleConfig tc;
    tmole_config_default(&tc);
    tc.rank = 4; tc.task_dim = 16;
    Tmole tm;
    ck_assert_int_eq(tmole_alloc(&tm, &tc, &c), 0);
    tmole_init(&tm, 2);
    ck_assert_msg(tmole_save(&tm, adir) == 0, "%s", rf_last_error());
    char res[256];
    snprintf(res, sizeof res, "%s/res", dir);
    ck_assert_int_eq(rf_mkdirs(res), 0);
    char *argv[] = {"eval", "--model", mdir, "--adapter", adir, "--data", data, "--split", "test", "--out", js,
                    "--limit", "2", "--max-len", "256", "--every", "1", "--negatives", "2", NULL};
    ck_assert_msg(eval_main(19, argv) == 0, "%s", rf_last_error());
    /* outputs.jsonl beside --out: 10 generative tasks x 2 records, the authors' fields */
    char *s = slurp(outp), *line = s;
    int lines = 0;
    while (*line) {
        char *nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        Json j;
        ck_assert_msg(json_parse(&j, line, (size_t)(nl - line), "outputs") == 0, "%s", rf_last_error());
        const Json *t = json_get(&j, "task");
        ck_assert(json_get(&j, "output") && json_get(&j, "output")->type == JSON_STRING);
        ck_assert(json_get(&j, "answer") && json_get(&j, "answer")->type == JSON_STRING);
        ck_assert_ptr_nonnull(json_get(&j, "source"));
        ck_assert(t && t->type == JSON_STRING && task_by_name(t->string) >= TASK_QR);
        json_free(&j);
        lines++;
        line = nl + 1;
    }
    ck_assert_int_eq(lines, 20);
    free(s);
    s = slurp(js);
    Json j;
    ck_assert_int_eq(json_parse(&j, s, strlen(s), js), 0);
    const Json *e = json_get(&j, "embedding"), *u = json_get(e, "U2I");
    ck_assert_ptr_nonnull(json_get(json_get(&j, "generative"), "AVE"));
    ck_assert_ptr_nonnull(u);
    const Json *full = json_get(u, "full");
    ck_assert_ptr_nonnull(full);
    ck_assert_int_eq((int)json_get(full, "n")->number, 2);
    double mrr = json_get(full, "mrr@20")->number;
    ck_assert(mrr >= 0 && mrr <= 1);
    json_free(&j);
    free(s);
    /* metrics on the file eval wrote */
    char *margv[] = {"metrics", "--outputs", outp, "--ave-precision", "code", NULL};
    ck_assert_msg(metrics_main(5, margv) == 0, "%s", rf_last_error());
    /* BERTScore-style F1: a text against itself scores 1, against another less */
    char bsp[300], bsj[300];
    snprintf(bsp, sizeof bsp, "%s/bs.jsonl", dir);
    snprintf(bsj, sizeof bsj, "%s/bs.json", dir);
    write_text(bsp, "{\"output\": \"red garden hose\", \"answer\": \"red garden hose\", \"source\": null, \"task\": \"Query_Rewriting\"}\n"
                    "{\"output\": \"Novico\", \"answer\": \"coaster set, Model J291\", \"source\": null, \"task\": \"item_profile\"}\n");
    char *bargv[] = {"metrics", "--outputs", bsp, "--bertscore-model", mdir, "--bertscore-layer", "1", "--out", bsj, NULL};
    ck_assert_msg(metrics_main(9, bargv) == 0, "%s", rf_last_error());
    s = slurp(bsj);
    ck_assert_int_eq(json_parse(&j, s, strlen(s), bsj), 0);
    const Json *bs = json_get(&j, "bertscore_f1");
    ck_assert_double_eq_tol(json_get(bs, "QR")->number, 1.0, 1e-5);
    ck_assert(json_get(bs, "IP")->number < 0.999);
    json_free(&j);
    free(s);
    /* generate on one prompt */
    char *gargv[] = {"generate", "--model", mdir, "--adapter", adir, "--task", "PM", "--prompt", "Same product?", NULL};
    ck_assert_msg(generate_main(9, gargv) == 0, "%s", rf_last_error());
    tmole_free(&tm);
    model_free(&m);
    tok_free(&tok);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

Suite *eval_suite(void) {
    Suite *s = suite_create("eval");
    TCase *tm = tcase_create("metrics");
    tcase_add_test(tm, test_binary_yes);
    tcase_add_test(tm, test_letter_macro_f1);
    tcase_add_test(tm, test_recall1);
    tcase_add_test(tm, test_ave_rules);
    tcase_add_test(tm, test_py_float_repr);
    tcase_add_test(tm, test_ave_f1);
    tcase_add_test(tm, test_metrics_strip_unicode_spaces);
    tcase_add_test(tm, test_token_f1);
    tcase_add_test(tm, test_token_f1_squad_fixture);
    suite_add_tcase(s, tm);
    TCase *tr = tcase_create("ranking");
    tcase_add_test(tr, test_mrr_ndcg);
    tcase_add_test(tr, test_pool_sample);
    tcase_add_test(tr, test_fit_prompt);
    tcase_add_test(tr, test_emb_protocols);
    suite_add_tcase(s, tr);
    TCase *td = tcase_create("decoder");
    tcase_add_test(td, test_cache_vs_full);
    tcase_add_test(td, test_cache_sliding_window);
    tcase_add_test(td, test_greedy_vs_recompute);
    tcase_add_test(td, test_fold_vs_adapters);
    tcase_add_test(td, test_bf16_weights_paths);
    tcase_set_timeout(td, 30);
    suite_add_tcase(s, td);
    TCase *tc = tcase_create("commands");
    tcase_add_test(tc, test_metrics_cmd);
    tcase_add_test(tc, test_eval_end_to_end);
    tcase_set_timeout(tc, 40);
    suite_add_tcase(s, tc);
    return s;
}
