/*
 * eval.c - §5 of the paper: how RecFound is evaluated.
 *
 *   metrics    the scores of the authors' evaluation scripts (official-code.md
 *              §8): binary F1, macro F1, Recall@1, AVE triple F1, and a token
 *              F1 in place of BERTScore for the free-text tasks
 *   ranking    MRR and NDCG, the authors' candidate pools and full-corpus
 *              retrieval @20 (Table 3)
 *   decoding   greedy generation with a KV cache on a model whose TMoLE
 *              mixture for the task is folded into W0 (eq. 2 at inference)
 *   commands   `recfound eval`, `recfound metrics`, `recfound generate`
 */
#include "recfound.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ metrics */

/* Python's s.strip(): [*b, *e) of s without leading and trailing whitespace,
 * the Unicode spaces included (NBSP, U+3000, ...), as the authors' scoring
 * script strips its outputs. */
static void strip_range(const char *s, size_t *b, size_t *e) { py_strip(s, strlen(s), b, e); }

/* 1 when s.lower().strip() == word (word in lower case). */
static int equals_lower_stripped(const char *s, const char *word) {
    size_t b, e, n = strlen(word);
    strip_range(s, &b, &e);
    if (e - b != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s[b + i]) != word[i]) return 0;
    return 1;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/* AP, PM.  As the authors' script: an output other than yes/no (after lower()
 * and strip()) is replaced by the wrong answer ("no" when the gold is "yes",
 * else "yes"), then precision, recall and F1 of the class "yes":
 *   F1 = 2 tp / (2 tp + fp + fn)   (0 when nothing is predicted or gold "yes"). */
void metric_binary_yes(MetricResult *r, const char *const *out, const char *const *ans, long n) {
    memset(r, 0, sizeof *r);
    long tp = 0, fp = 0, fn = 0, correct = 0;
    for (long i = 0; i < n; i++) {
        int gold = equals_lower_stripped(ans[i], "yes"), pred;
        if (equals_lower_stripped(out[i], "yes")) pred = 1;
        else if (equals_lower_stripped(out[i], "no")) pred = 0;
        else { pred = !gold; r->invalid++; }
        tp += pred && gold;
        fp += pred && !gold;
        fn += !pred && gold;
        correct += pred == gold;
    }
    r->n = n;
    r->precision = ratio(tp, tp + fp);
    r->recall = ratio(tp, tp + fn);
    r->score = ratio(2.0 * tp, 2.0 * tp + fp + fn);
    r->accuracy = ratio(correct, n);
}

/* SA, PRP.  The prediction is the first character of the stripped output when
 * it is a letter A-E; otherwise (empty output included) the output is invalid
 * and replaced by a wrong letter ('B' when the gold letter is 'A', else 'A').
 * The gold is the first character of the stripped answer.  Macro F1 is the
 * mean of the per-class F1 = 2 tp / (2 tp + fp + fn) over every letter that
 * occurs as gold or prediction (scikit-learn's average="macro"). */
void metric_letter_f1(MetricResult *r, const char *const *out, const char *const *ans, long n) {
    memset(r, 0, sizeof *r);
    long tp[256] = {0}, fp[256] = {0}, fn[256] = {0}, correct = 0;
    int seen[256] = {0};
    for (long i = 0; i < n; i++) {
        size_t b, e;
        strip_range(ans[i], &b, &e);
        unsigned char gold = e > b ? (unsigned char)ans[i][b] : 0, pred;
        strip_range(out[i], &b, &e);
        if (e > b && out[i][b] >= 'A' && out[i][b] <= 'E') pred = (unsigned char)out[i][b];
        else { pred = gold == 'A' ? 'B' : 'A'; r->invalid++; }
        seen[gold] = seen[pred] = 1;
        if (pred == gold) { tp[gold]++; correct++; }
        else { fp[pred]++; fn[gold]++; }
    }
    int classes = 0;
    double f1 = 0, p = 0, rc = 0;
    for (int c = 0; c < 256; c++)
        if (seen[c]) {
            classes++;
            f1 += ratio(2.0 * tp[c], 2.0 * tp[c] + fp[c] + fn[c]);
            p += ratio(tp[c], tp[c] + fp[c]);
            rc += ratio(tp[c], tp[c] + fn[c]);
        }
    r->n = n;
    r->score = ratio(f1, classes);
    r->precision = ratio(p, classes);
    r->recall = ratio(rc, classes);
    r->accuracy = ratio(correct, n);
}

/* SR: the stripped output must be exactly one letter A-T (else invalid, and
 * wrong); Recall@1 = the fraction equal to the stripped gold letter. */
void metric_recall1(MetricResult *r, const char *const *out, const char *const *ans, long n) {
    memset(r, 0, sizeof *r);
    long correct = 0;
    for (long i = 0; i < n; i++) {
        size_t b, e, gb, ge;
        strip_range(out[i], &b, &e);
        strip_range(ans[i], &gb, &ge);
        if (e - b != 1 || out[i][b] < 'A' || out[i][b] > 'T') { r->invalid++; continue; }
        correct += ge - gb == 1 && ans[i][gb] == out[i][b];
    }
    r->n = n;
    r->score = r->accuracy = ratio(correct, n);
}

/* ---------------------------------------------------------------- AVE */

static int json_equal(const Json *a, const Json *b) {
    if (!a || !b || a->type != b->type) return 0;
    switch (a->type) {
    case JSON_NULL: return 1;
    case JSON_BOOL: return a->boolean == b->boolean;
    case JSON_NUMBER: return a->number == b->number;
    case JSON_STRING: return a->len == b->len && !memcmp(a->string, b->string, a->len);
    case JSON_ARRAY:
    case JSON_OBJECT:
        if (a->count != b->count) return 0;
        for (size_t i = 0; i < a->count; i++) {
            if (a->type == JSON_OBJECT && strcmp(a->keys[i], b->keys[i])) return 0;
            if (!json_equal(&a->items[i], &b->items[i])) return 0;
        }
        return 1;
    }
    return 0;
}

/* Python's repr() (= str()) of a float: the shortest digits that read back as
 * x, in fixed notation with at least one decimal when 1e-4 <= |x| < 1e16
 * ("1.0", "0.0001", "1234.5"), else in scientific notation with an exponent
 * of two digits at least ("1e-05", "1.5e+16"); "inf", "-inf" (json.loads reads
 * 1e999 as inf).  buf holds at least 32 bytes. */
void py_float_repr(char *buf, size_t n, double x) {
    if (isinf(x)) { snprintf(buf, n, "%sinf", x < 0 ? "-" : ""); return; }
    if (isnan(x)) { snprintf(buf, n, "nan"); return; }
    if (x == 0) { snprintf(buf, n, "%s0.0", signbit(x) ? "-" : ""); return; }
    char e[40], d[24], out[64];
    for (int prec = 1;; prec++) {  /* the fewest significant digits that read back as x (17 always do) */
        snprintf(e, sizeof e, "%.*e", prec - 1, x);
        if (prec == 17 || strtod(e, NULL) == x) break;
    }
    int nd = 0;
    for (const char *c = e + (x < 0); *c != 'e'; c++)
        if (*c != '.') d[nd++] = *c;
    d[nd] = 0;
    int exp10 = atoi(strchr(e, 'e') + 1), decpt = exp10 + 1, k = 0;  /* x = 0.d * 10^decpt */
    if (x < 0) out[k++] = '-';
    if (decpt > -4 && decpt <= 16) {  /* fixed */
        if (decpt <= 0) {
            out[k++] = '0', out[k++] = '.';
            for (int z = 0; z < -decpt; z++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = d[i];
        } else {
            for (int i = 0; i < decpt; i++) out[k++] = i < nd ? d[i] : '0';
            out[k++] = '.';
            if (decpt >= nd) out[k++] = '0';
            for (int i = decpt; i < nd; i++) out[k++] = d[i];
        }
        out[k] = 0;
    } else {                         /* scientific */
        out[k++] = d[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = d[i];
        }
        snprintf(out + k, sizeof out - k, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    snprintf(buf, n, "%s", out);
}

/* Python's str() of a scalar JSON value, for the substring test: json.loads
 * reads a number written without fraction or exponent as an int ("7"), any
 * other as a float ("7.0", "0.1", "1e-05"). */
static int py_str(const Json *v, char *buf, size_t n, const char **s) {
    if (v->type == JSON_STRING) { *s = v->string; return 1; }
    if (v->type == JSON_BOOL) snprintf(buf, n, "%s", v->boolean ? "True" : "False");
    else if (v->type == JSON_NUMBER && v->integer && fabs(v->number) < 9007199254740992.0)
        snprintf(buf, n, "%.0f", v->number == 0 ? 0.0 : v->number);  /* "-0" is the int 0 */
    else if (v->type == JSON_NUMBER) py_float_repr(buf, n, v->number);
    else return 0;
    *s = buf;
    return 1;
}

static int mutual_substring(const char *a, const char *b) { return strstr(a, b) || strstr(b, a); }

/* The authors' hit rule: the predicted object has attribute, value and source;
 * same attribute, and either value and source both equal, or neither null and
 * str(value), source each a substring of the other's. */
int ave_match(const Json *pred, const Json *gold) {
    if (!pred || !gold || pred->type != JSON_OBJECT || gold->type != JSON_OBJECT) return 0;
    const Json *pa = json_get(pred, "attribute"), *pv = json_get(pred, "value"), *ps = json_get(pred, "source");
    const Json *ga = json_get(gold, "attribute"), *gv = json_get(gold, "value"), *gs = json_get(gold, "source");
    if (!pa || !pv || !ps || !ga || !gv || !gs || !json_equal(pa, ga)) return 0;
    if (json_equal(pv, gv) && json_equal(ps, gs)) return 1;
    if (pv->type == JSON_NULL || ps->type == JSON_NULL) return 0;
    char b1[64], b2[64];
    const char *v1, *v2;
    if (!py_str(pv, b1, sizeof b1, &v1) || !py_str(gv, b2, sizeof b2, &v2) || !mutual_substring(v1, v2)) return 0;
    return ps->type == JSON_STRING && gs->type == JSON_STRING && mutual_substring(ps->string, gs->string);
}

/* AVE, micro F1 over the test set.  An output that is not a JSON list is
 * invalid (no predictions).  Records whose answer is not a JSON list are
 * skipped, as the authors' script does.
 *
 * AVE_PREC_CORRECT (default): each predicted element and each gold triple
 * counts once; a gold triple is hit by at most one prediction (greedy, gold
 * order, first unused matching prediction):
 *   P = hits / #predicted,  R = hits / #gold,  F1 = 2PR / (P + R).
 * AVE_PREC_CODE, the authors' script: it loops over gold triples and, inside,
 * over the record's predictions, so a prediction is counted once PER GOLD
 * TRIPLE of its record (the "inflated" precision denominator: a record with 3
 * gold triples and 2 predictions adds 6), only predictions of records that
 * have at least one gold triple count, and every matching (gold, prediction)
 * pair is a hit; then P = hits / (#counted + 1e-6), R = hits / #gold,
 * F1 = 2PR / (P + R + 1e-6). */
void metric_ave(MetricResult *r, const char *const *out, const char *const *ans, long n, int prec_mode) {
    memset(r, 0, sizeof *r);
    double hits = 0, n_pred = 0, n_gold = 0;
    for (long i = 0; i < n; i++) {
        Json gold, pred;
        if (json_parse(&gold, ans[i], strlen(ans[i]), "answer")) { r->skipped++; rf_clear_error(); continue; }
        if (gold.type != JSON_ARRAY) { json_free(&gold); r->skipped++; continue; }
        int ok = !json_parse(&pred, out[i], strlen(out[i]), "output");
        if (!ok) rf_clear_error();
        if (ok && pred.type != JSON_ARRAY) { json_free(&pred); ok = 0; }
        if (!ok) { r->invalid++; memset(&pred, 0, sizeof pred); pred.type = JSON_ARRAY; }
        r->n++;
        n_gold += gold.count;
        if (prec_mode == AVE_PREC_CODE) {
            for (size_t g = 0; g < gold.count; g++)
                for (size_t p = 0; p < pred.count; p++) {
                    if (pred.items[p].type == JSON_OBJECT && json_get(&pred.items[p], "attribute")) n_pred++;
                    hits += ave_match(&pred.items[p], &gold.items[g]);
                }
        } else {
            char *used = calloc(pred.count ? pred.count : 1, 1);
            n_pred += pred.count;
            for (size_t g = 0; used && g < gold.count; g++)
                for (size_t p = 0; p < pred.count; p++)
                    if (!used[p] && ave_match(&pred.items[p], &gold.items[g])) {
                        used[p] = 1;
                        hits++;
                        break;
                    }
            free(used);
        }
        json_free(&gold);
        if (ok) json_free(&pred);
    }
    if (prec_mode == AVE_PREC_CODE) {
        r->recall = ratio(hits, n_gold);
        r->precision = hits / (n_pred + 1e-6);
        r->score = 2 * r->recall * r->precision / (r->recall + r->precision + 1e-6);
    } else {
        r->recall = ratio(hits, n_gold);
        r->precision = ratio(hits, n_pred);
        r->score = ratio(2 * r->precision * r->recall, r->precision + r->recall);
    }
}

/* ---------------------------------------------------------- token F1 */

/* SQuAD's normalize_answer(s).split() (the official evaluation script, v1.1
 * and v2.0): lower-case, delete ASCII punctuation (string.punctuation: "don't"
 * becomes "dont", "e-mail" "email"), drop the articles a / an / the, split at
 * whitespace.  Differences, outside ASCII only: Python's lower() also maps
 * non-ASCII capitals (here they stay), and its article regex \b(a|an|the)\b
 * also cuts at non-ASCII symbols ("the\u2014end"); whitespace is Python's
 * (py_space_at).  Tokens go into buf (at least strlen(s) + 1 bytes), one
 * pointer each in tok; returns their number. */
static int squad_tokens(const char *s, char *buf, const char **tok, int max_tok) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), k = 0;
    int count = 0;
    for (size_t i = 0; i < n;) {
        int sp;
        while (i < n && (sp = py_space_at(u + i, n - i)) > 0) i += sp;
        if (i >= n) break;
        const char *t = buf + k;
        while (i < n && py_space_at(u + i, n - i) == 0) {
            if (u[i] < 128 && ispunct(u[i])) { i++; continue; }  /* deleted, not a separator */
            buf[k++] = (char)(u[i] < 128 ? tolower(u[i]) : u[i]);
            i++;
        }
        buf[k++] = 0;
        if (!t[0] || !strcmp(t, "a") || !strcmp(t, "an") || !strcmp(t, "the")) { k = (size_t)(t - buf); continue; }
        if (count < max_tok) tok[count++] = t;
    }
    return count;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* F1 of the bags of tokens: common = |pred ∩ gold| as multisets,
 * P = common / |pred|, R = common / |gold|, F1 = 2PR / (P + R); when either
 * side has no token, 1 if both have none, else 0 (as SQuAD v2.0's
 * compute_f1; v1.1's f1_score gives 0 when both have none). */
double token_f1(const char *pred, const char *gold) {
    size_t lp = strlen(pred), lg = strlen(gold);
    char *bp = malloc(lp + 1), *bg = malloc(lg + 1);
    const char **tp = malloc((lp + 1) * sizeof *tp), **tg = malloc((lg + 1) * sizeof *tg);
    double f1 = 0;
    if (!bp || !bg || !tp || !tg) goto done;
    int np = squad_tokens(pred, bp, tp, (int)lp + 1), ng = squad_tokens(gold, bg, tg, (int)lg + 1);
    if (!np || !ng) { f1 = np == ng; goto done; }
    qsort(tp, np, sizeof *tp, cmp_str);
    qsort(tg, ng, sizeof *tg, cmp_str);
    int common = 0;
    for (int i = 0, j = 0; i < np && j < ng;) {  /* merge of the two sorted bags */
        int c = strcmp(tp[i], tg[j]);
        if (c == 0) { common++; i++; j++; }
        else if (c < 0) i++;
        else j++;
    }
    if (common) {
        double p = (double)common / np, r = (double)common / ng;
        f1 = 2 * p * r / (p + r);
    }
done:
    free(bp); free(bg); free(tp); free(tg);
    return f1;
}

void metric_token_f1(MetricResult *r, const char *const *out, const char *const *ans, long n) {
    memset(r, 0, sizeof *r);
    double s = 0;
    for (long i = 0; i < n; i++) s += token_f1(out[i], ans[i]);
    r->n = n;
    r->score = ratio(s, n);
}

void metric_for_task(MetricResult *r, int task, const char *const *out, const char *const *ans, long n,
                     int ave_prec) {
    switch (task) {
    case TASK_AP: case TASK_PM: metric_binary_yes(r, out, ans, n); break;
    case TASK_SA: case TASK_PRP: metric_letter_f1(r, out, ans, n); break;
    case TASK_SR: metric_recall1(r, out, ans, n); break;
    case TASK_AVE: metric_ave(r, out, ans, n, ave_prec); break;
    default: metric_token_f1(r, out, ans, n); break;
    }
}

/* ================================================================ ranking */

typedef struct { float s; int rel, i; } Ranked;

/* Descending score; ties: irrelevant first, then the higher index first (the
 * authors' np.argsort(...)[::-1] on [positives..., negatives...]). */
static int cmp_ranked(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? 1 : -1;
    if (x->rel != y->rel) return x->rel - y->rel;
    return y->i - x->i;
}

static Ranked *rank_sort(const float *score, const int *rel, int n) {
    Ranked *r = malloc((n ? n : 1) * sizeof *r);
    if (!r) return NULL;
    for (int i = 0; i < n; i++) r[i] = (Ranked){score[i], rel[i] != 0, i};
    qsort(r, n, sizeof *r, cmp_ranked);
    return r;
}

/* 1 / rank of the first relevant candidate, 0 when it is below rank k. */
double rank_mrr(const float *score, const int *rel, int n, int k) {
    Ranked *r = rank_sort(score, rel, n);
    double v = 0;
    if (!r) return NAN;
    for (int i = 0; i < n && (k <= 0 || i < k); i++)
        if (r[i].rel) { v = 1.0 / (i + 1); break; }
    free(r);
    return v;
}

/* Binary relevance: DCG = sum over relevant ranks i (1-based, i <= k) of
 * 1 / log2(i + 1); NDCG = DCG / DCG of the ideal order (0 without relevant). */
double rank_ndcg(const float *score, const int *rel, int n, int k) {
    Ranked *r = rank_sort(score, rel, n);
    if (!r) return NAN;
    double dcg = 0, idcg = 0;
    int n_rel = 0;
    for (int i = 0; i < n; i++) n_rel += rel[i] != 0;
    for (int i = 0; i < n && (k <= 0 || i < k); i++) {
        if (r[i].rel) dcg += 1.0 / log2(i + 2.0);
        if (i < n_rel) idcg += 1.0 / log2(i + 2.0);
    }
    free(r);
    return idcg > 0 ? dcg / idcg : 0.0;
}

/* Partial Fisher-Yates: the first k entries of a shuffled 0..n-1. */
int pool_sample(size_t *pick, size_t n, int k, Rng *r) {
    if (k < 0 || n < (size_t)k) return 1;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return rf_error("out of memory");
    for (size_t i = 0; i < n; i++) idx[i] = i;
    for (int i = 0; i < k; i++) {
        size_t j = i + (size_t)rng_below(r, n - i), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        pick[i] = idx[i];
    }
    free(idx);
    return 0;
}

/* ========================================================= generation */

/* Maximum new tokens of the authors' inference script (official-code.md §8). */
int gen_max_new(int task) {
    switch (task) {
    case TASK_SR: case TASK_PRP: case TASK_PM: case TASK_SA: case TASK_AP: return 1;
    case TASK_QR: case TASK_AVE: return 256;
    default: return 2048;
    }
}

/* f->m: base's tensors, with its own tables of layer pointers (fold_free frees them). */
static int fold_setup(FoldedModel *f, const Model *base) {
    memset(f, 0, sizeof *f);
    f->m = *base;
    int L = base->cfg.n_layers;
    f->m.layer = malloc((size_t)L * P_PER_LAYER * sizeof *f->m.layer);
    f->m.layer16 = NULL;
    f->m.params = NULL;  /* shared with base: never freed through f */
    if (f->m.layer) memcpy(f->m.layer, base->layer, (size_t)L * P_PER_LAYER * sizeof *f->m.layer);
    if (f->m.layer && base->layer16) { /* bf16 weights: a folded projection is float, the others stay bf16 */
        f->m.layer16 = malloc((size_t)L * P_PER_LAYER * sizeof *f->m.layer16);
        if (f->m.layer16) memcpy(f->m.layer16, base->layer16, (size_t)L * P_PER_LAYER * sizeof *f->m.layer16);
    }
    if (!f->m.layer || (base->layer16 && !f->m.layer16)) {
        fold_free(f);
        return rf_error("out of memory for a folded model");
    }
    return 0;
}

/* f (set up) keeps the adapters of `task` and `pass` unfolded, for kv_new_folded. */
static int keep_unfolded(FoldedModel *f, const Tmole *tm, int task, AttnMode pass) {
    f->tm = tm;
    f->task = task;
    f->pass = pass;
    return 0;
}

int unfold_task(FoldedModel *f, const Model *base, const Tmole *tm, int task, AttnMode pass) {
    return fold_setup(f, base) ? -1 : keep_unfolded(f, tm, task, pass);
}

/* Eq. (2) at inference: with dropout off and the routing v fixed by the task,
 * W0 x + sum_j v_j (alpha/r) B_j A_j x = (W0 + sum_j v_j (alpha/r) B_j A_j) x,
 * so each adapted projection becomes one matrix and the decoder needs only
 * the plain backbone ops. */
int fold_task(FoldedModel *f, const Model *base, const Tmole *tm, int task, AttnMode pass, const char *who) {
    if (fold_setup(f, base)) return -1;
    if (!tm) return 0;
    static const int slot[N_PROJ] = {P_Q, P_K, P_V, P_O};
    int L = base->cfg.n_layers;
    size_t total = 0, n_sites = 0;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const TmoleSite *s = tmole_site(tm, l, p);
            if (s) total += (size_t)s->in * s->out, n_sites++;
        }
    /* Linux hands out more memory than it has and kills the process when the
     * pages are touched: check first, and keep the adapters unfolded when the
     * folded projections would not fit (a 7B model in bf16 on a small machine). */
    double need = (double)total * sizeof(float), avail = mem_available();
    if (avail >= 0 && need > avail) {
        fprintf(stderr, "%s: folding the adapters into the %zu adapted projections would need %.1f GiB of float32, "
                "more than the %.1f GiB of memory available: they stay unfolded (eq. 2 as in training)\n", who,
                n_sites, need / 1073741824.0, avail / 1073741824.0);
        return keep_unfolded(f, tm, task, pass);
    }
    f->own = malloc((total ? total : 1) * sizeof(float));
    if (!f->own) { fold_free(f); return rf_error("out of memory for the folded projections (%zu floats)", total); }
    size_t off = 0;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const TmoleSite *s = tmole_site(tm, l, p);
            if (!s) continue;
            float *W = f->own + off;
            off += (size_t)s->in * s->out;
            int at = l * P_PER_LAYER + slot[p];
            size_t n = (size_t)s->in * s->out;
            if (base->layer16) {
                for (size_t i = 0; i < n; i++) W[i] = bf16_to_float(base->layer16[at][i]);
                f->m.layer16[at] = NULL;
            } else {
                memcpy(W, base->layer[at], n * sizeof(float));
            }
            tmole_fold(tm, s, task, pass, W);
            f->m.layer[at] = W;
        }
    return 0;
}

void fold_free(FoldedModel *f) {
    free(f->m.layer);
    free(f->m.layer16);
    free(f->own);
    memset(f, 0, sizeof *f);
}

/* The decoder of model.c, one chunk of new tokens at a time, with the keys
 * (after RoPE) and values of every earlier position kept per layer. */
struct KvDecoder {
    const Model *m;
    const FoldedModel *unfolded;               /* adapters to add after q, k, v, o, or NULL */
    float *u;                                  /* [chunk][rank]: one expert's A_j x */
    int cap, pos, chunk;
    int C, I, H, KV, hd, qd, kvd, V, L;
    float *kc, *vc;                            /* [L][cap][kvd] */
    float *x, *ln, *q, *atty, *gate, *up, *rstd; /* [chunk][...] */
    float *cos_t, *sin_t;                      /* [cap][hd/2] */
};

#define KV_CHUNK 64

void kv_free(KvDecoder *d) {
    if (!d) return;
    float *all[] = {d->kc, d->vc, d->x, d->ln, d->q, d->atty, d->gate, d->up, d->rstd, d->cos_t, d->sin_t, d->u};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    free(d);
}

KvDecoder *kv_new(const Model *m, int cap) {
    const Config *c = &m->cfg;
    KvDecoder *d = calloc(1, sizeof *d);
    if (!d || cap < 1) { free(d); rf_error("kv cache: out of memory or empty capacity"); return NULL; }
    d->m = m; d->cap = cap; d->chunk = KV_CHUNK;
    d->C = c->hidden_size; d->I = c->intermediate_size; d->H = c->n_heads; d->KV = c->n_kv_heads;
    d->hd = c->head_dim; d->qd = d->H * d->hd; d->kvd = d->KV * d->hd; d->V = c->vocab_size; d->L = c->n_layers;
    size_t L = d->L, n = d->chunk, half = d->hd / 2;
    d->kc = malloc(L * cap * d->kvd * sizeof(float));
    d->vc = malloc(L * cap * d->kvd * sizeof(float));
    d->x = malloc(n * d->C * sizeof(float));
    d->ln = malloc(n * d->C * sizeof(float));
    d->q = malloc(n * d->qd * sizeof(float));
    d->atty = malloc(n * d->qd * sizeof(float));
    d->gate = malloc(n * d->I * sizeof(float));
    d->up = malloc(n * d->I * sizeof(float));
    d->rstd = malloc(n * sizeof(float));
    d->cos_t = malloc((size_t)cap * half * sizeof(float));
    d->sin_t = malloc((size_t)cap * half * sizeof(float));
    if (!d->kc || !d->vc || !d->x || !d->ln || !d->q || !d->atty || !d->gate || !d->up || !d->rstd || !d->cos_t ||
        !d->sin_t) {
        kv_free(d);
        rf_error("kv cache: out of memory for %d positions (%.2f GiB)", cap, 2.0 * L * cap * c->n_kv_heads * c->head_dim * 4 / 1073741824.0);
        return NULL;
    }
    /* the same RoPE tables as model.c: inv_freq_i = theta^(-2i/hd) kept in float32 */
    for (int t = 0; t < cap; t++)
        for (size_t i = 0; i < half; i++) {
            double inv_freq = pow((double)c->rope_theta, -2.0 * i / d->hd);
            double ang = (double)t * (float)inv_freq;
            d->cos_t[t * half + i] = (float)cos(ang);
            d->sin_t[t * half + i] = (float)sin(ang);
        }
    return d;
}

KvDecoder *kv_new_folded(const FoldedModel *f, int cap) {
    KvDecoder *d = kv_new(&f->m, cap);
    if (!d || !f->tm) return d;
    d->unfolded = f;
    d->u = malloc((size_t)d->chunk * f->tm->cfg.rank * sizeof(float));
    if (!d->u) { kv_free(d); rf_error("kv cache: out of memory for the unfolded adapters"); return NULL; }
    return d;
}

void kv_reset(KvDecoder *d) { d->pos = 0; }
int kv_pos(const KvDecoder *d) { return d->pos; }

/* y[M,N] (+)= x[M,K] W[N,K]^T; one row (a decoding step) as a plain parallel
 * matrix-vector product, which reads W once without packing it. */
static void linear(float *y, const float *x, const float *W, const uint16_t *W16, int M, int K, int N, int acc) {
    if (M > 1) { weight_nt(y, x, W, W16, M, K, N, acc); return; }
    /* one token: threads only pay off when the matrix is large (a 7B layer, not a small model's) */
#pragma omp parallel for schedule(static) if ((size_t)K * N >= (size_t)1 << 20)
    for (int j = 0; j < N; j++) {
        /* 16 partial sums: a vector register's worth, so the compiler can vectorise
         * the dot product (a single running sum fixes the order and forbids it) */
        float part[16] = {0}, s = 0;
        int k = 0;
        if (W16) { /* bf16 weights (Model): the same sums of the widened values */
            const uint16_t *w = W16 + (size_t)j * K;
            for (; k + 16 <= K; k += 16)
                for (int u = 0; u < 16; u++) part[u] += x[k + u] * bf16_to_float(w[k + u]);
            for (; k < K; k++) s += x[k] * bf16_to_float(w[k]);
        } else {
            const float *w = W + (size_t)j * K;
            for (; k + 16 <= K; k += 16)
                for (int u = 0; u < 16; u++) part[u] += x[k + u] * w[k + u];
            for (; k < K; k++) s += x[k] * w[k];
        }
        for (int u = 0; u < 16; u++) s += part[u];
        y[j] = acc ? y[j] + s : s;
    }
}

/* Causal attention of rows at positions p0 .. p0+n-1 over the cache: query
 * head h reads kv head h / (H/KV); position p sees keys j in [p - W + 1, p]
 * (the whole prefix when the model has no sliding window W). */
static int kv_attention(KvDecoder *d, int l, int p0, int n) {
    int H = d->H, hd = d->hd, qd = d->qd, kvd = d->kvd, group = d->H / d->KV, W = d->m->cfg.sliding_window;
    const float *K = d->kc + (size_t)l * d->cap * kvd, *Vc = d->vc + (size_t)l * d->cap * kvd;
    float scale = 1.0f / sqrtf((float)hd);
    int fail = 0;
#pragma omp parallel if ((size_t)n * (p0 + n) * H * hd >= (size_t)1 << 18)
    {
        float *sc = malloc((size_t)(p0 + n) * sizeof(float));
        if (!sc) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for collapse(2) schedule(static)
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                if (!sc) continue;
                int p = p0 + i, lo = (W > 0 && p - W + 1 > 0) ? p - W + 1 : 0, kh = h / group;
                const float *q = d->q + (size_t)i * qd + h * hd;
                float *o = d->atty + (size_t)i * qd + h * hd, mx = -INFINITY, sum = 0;
                for (int j = lo; j <= p; j++) {
                    const float *k = K + (size_t)j * kvd + kh * hd;
                    float s = 0;
                    for (int c = 0; c < hd; c++) s += q[c] * k[c];
                    sc[j] = s;
                    if (s > mx) mx = s;
                }
                for (int c = 0; c < hd; c++) o[c] = 0;
                for (int j = lo; j <= p; j++) {
                    float e = expf((sc[j] - mx) * scale);
                    const float *v = Vc + (size_t)j * kvd + kh * hd;
                    sum += e;
                    for (int c = 0; c < hd; c++) o[c] += e * v[c];
                }
                for (int c = 0; c < hd; c++) o[c] /= sum;
            }
        free(sc);
    }
    return fail ? rf_error("kv cache: out of memory for attention scores") : 0;
}

/* Eq. (2) with the routing fixed by the task, unfolded (see fold_task): the
 * adapters' term for the adapted projection `proj` of layer l, added to y. */
static void kv_adapter(KvDecoder *d, int l, int proj, float *y, const float *x, int n) {
    const FoldedModel *f = d->unfolded;
    const TmoleSite *s = f ? tmole_site(f->tm, l, proj) : NULL;
    if (s) tmole_apply(f->tm, s, f->task, f->pass, y, x, n, d->u);
}

/* kv_forward, or with stop > 0 the residual stream after layer `stop` (the
 * hidden_states[stop] of Hugging Face) into hid[n*C], skipping the rest. */
static int kv_run(KvDecoder *d, const int *ids, int n, float *out, int all, int stop, float *hid) {
    const Model *m = d->m;
    const Config *c = &m->cfg;
    int C = d->C, I = d->I, qd = d->qd, kvd = d->kvd, half = d->hd / 2;
    if (d->pos + n > d->cap) return rf_error("kv cache: %d positions do not fit in %d", d->pos + n, d->cap);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= d->V) return rf_error("token id %d outside the vocabulary of %d", ids[i], d->V);
    for (int r0 = 0; r0 < n; r0 += d->chunk) {
        int nc = n - r0 < d->chunk ? n - r0 : d->chunk, p0 = d->pos;
        model_embed(m, d->x, ids + r0, nc);
        int L = stop > 0 && stop < d->L ? stop : d->L;
        for (int l = 0; l < L; l++) {
            float *const *W = m->layer + l * P_PER_LAYER;
            const uint16_t *H[P_PER_LAYER];
            layer_bf16(m, l, H);
            float *k = d->kc + ((size_t)l * d->cap + p0) * kvd, *v = d->vc + ((size_t)l * d->cap + p0) * kvd;
            rmsnorm_forward(d->ln, d->rstd, d->x, W[P_ATTN_NORM], nc, C, c->rms_norm_eps);
            linear(d->q, d->ln, W[P_Q], H[P_Q], nc, C, qd, 0);
            linear(k, d->ln, W[P_K], H[P_K], nc, C, kvd, 0);
            linear(v, d->ln, W[P_V], H[P_V], nc, C, kvd, 0);
            kv_adapter(d, l, PROJ_Q, d->q, d->ln, nc);
            kv_adapter(d, l, PROJ_K, k, d->ln, nc);
            kv_adapter(d, l, PROJ_V, v, d->ln, nc);
            rope_apply(d->q, d->cos_t + (size_t)p0 * half, d->sin_t + (size_t)p0 * half, 1, nc, d->H, d->hd, +1);
            rope_apply(k, d->cos_t + (size_t)p0 * half, d->sin_t + (size_t)p0 * half, 1, nc, d->KV, d->hd, +1);
            if (kv_attention(d, l, p0, nc)) return -1;
            linear(d->x, d->atty, W[P_O], H[P_O], nc, qd, C, 1);       /* h = x + o_proj(attn) */
            kv_adapter(d, l, PROJ_O, d->x, d->atty, nc);
            rmsnorm_forward(d->ln, d->rstd, d->x, W[P_MLP_NORM], nc, C, c->rms_norm_eps);
            linear(d->gate, d->ln, W[P_GATE], H[P_GATE], nc, C, I, 0);
            linear(d->up, d->ln, W[P_UP], H[P_UP], nc, C, I, 0);
            swiglu_forward(d->gate, d->gate, d->up, (size_t)nc * I);
            linear(d->x, d->gate, W[P_DOWN], H[P_DOWN], nc, I, C, 1);  /* x = h + down(silu(gate) up) */
        }
        d->pos += nc;
        if (stop > 0) { memcpy(hid + (size_t)r0 * C, d->x, (size_t)nc * C * sizeof(float)); continue; }
        if (!out) continue;
        rmsnorm_forward(d->ln, d->rstd, d->x, m->final_norm, nc, C, c->rms_norm_eps);
        if (all) linear(out + (size_t)r0 * d->V, d->ln, m->lm_head, m->lm_head16, nc, C, d->V, 0);
        else if (r0 + nc == n) linear(out, d->ln + (size_t)(nc - 1) * C, m->lm_head, m->lm_head16, 1, C, d->V, 0);
    }
    return 0;
}

int kv_forward(KvDecoder *d, const int *ids, int n, float *out, int all) { return kv_run(d, ids, n, out, all, 0, NULL); }

int kv_hidden(KvDecoder *d, const int *ids, int n, int layer, float *hid) {
    if (layer < 1 || layer > d->L) return rf_error("hidden states: layer %d outside 1..%d", layer, d->L);
    return kv_run(d, ids, n, NULL, 0, layer, hid);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Greedy decoding (the authors' do_sample=False): feed the prompt, then the
 * argmax token of each step, until eos or max_new tokens. */
int generate_greedy(KvDecoder *d, const int *prompt, int n, int max_new, int eos, int **gen, int *n_gen) {
    *gen = NULL;
    *n_gen = 0;
    if (n < 1) return rf_error("generate: empty prompt");
    float *logits = malloc((size_t)d->V * sizeof(float));
    int *g = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int));
    if (!logits || !g) { free(logits); free(g); return rf_error("generate: out of memory"); }
    int rc = kv_forward(d, prompt, n, logits, 0), k = 0;
    while (!rc && k < max_new) {
        int t = argmax(logits, d->V);
        if (t == eos) break;
        g[k++] = t;
        if (k == max_new || d->pos >= d->cap) break;
        rc = kv_forward(d, &t, 1, logits, 0);
    }
    free(logits);
    if (rc) { free(g); return -1; }
    *gen = g;
    *n_gen = k;
    return 0;
}

/* ========================================================== embeddings */

typedef struct { int len, i; } LenIdx;

/* Longest first, then by position: similar lengths share a batch (less padding). */
static int cmp_len_desc(const void *a, const void *b) {
    const LenIdx *x = a, *y = b;
    return x->len != y->len ? y->len - x->len : x->i - y->i;
}

static void order_by_length(int *idx, int n, const Sample *s) {
    LenIdx *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return;  /* the given order is as correct, only slower */
    for (int i = 0; i < n; i++) v[i] = (LenIdx){s[idx[i]].len, idx[i]};
    qsort(v, n, sizeof *v, cmp_len_desc);
    for (int i = 0; i < n; i++) idx[i] = v[i].i;
    free(v);
}

int embed_texts(float *emb, const Model *m, const Tmole *tm, const Tokenizer *tok, const char *const *instr,
                const char *const *text, int n, int task, EmbFormat fmt, int max_len, int batch,
                long *dropped, const char *progress) {
    int C = m->cfg.hidden_size, rc = 0;
    if (batch < 1) batch = 1;
    Sample *smp = calloc(n ? n : 1, sizeof *smp);
    int *idx = malloc((n ? n : 1) * sizeof *idx), *keep = malloc((n ? n : 1) * sizeof *keep), nk = 0;
    Sample **rows = malloc((size_t)batch * sizeof *rows);
    float *tmp = malloc((size_t)batch * C * sizeof(float)), *norms = malloc((size_t)batch * sizeof(float));
    Acts *a = NULL;
    TokBatch tb = {0};
    if (!smp || !idx || !keep || !rows || !tmp || !norms) { rc = rf_error("embed: out of memory"); goto done; }
    memset(emb, 0, (size_t)n * C * sizeof(float));
    for (int i = 0; i < n; i++) {
        int k = sample_emb(&smp[i], tok, instr[i] ? instr[i] : "", text[i], task, max_len, fmt, NULL);
        if (k < 0) { rc = -1; goto done; }
        if (k == 1) keep[nk++] = i;
        else if (dropped) (*dropped)++;
    }
    for (int i = 0; i < nk; i++) idx[i] = keep[i];
    order_by_length(idx, nk, smp);
    double t0 = rf_now();
    if (batch_alloc(&tb, batch, max_len)) { rc = -1; goto done; }
    for (int r0 = 0; r0 < nk; r0 += batch) {
        int B = nk - r0 < batch ? nk - r0 : batch;
        for (int i = 0; i < B; i++) rows[i] = &smp[idx[r0 + i]];
        Batch b = batch_fill(&tb, rows, B, tok->bos_id >= 0 ? tok->bos_id : 0);
        if ((rc = acts_ensure_forward(&a, m, B, b.T))) break;
        model_forward(m, tm, a, &b, ATTN_BIDIRECTIONAL);
        pool_forward(tmp, norms, acts_hidden(a), &b, tb.start, C);
        for (int i = 0; i < B; i++) memcpy(emb + (size_t)idx[r0 + i] * C, tmp + (size_t)i * C, C * sizeof(float));
        if (progress) rf_progress("%s: %d/%d embedded (%.0f s)", progress, r0 + B, nk, rf_now() - t0);
    }
    if (progress) rf_progress_end();
done:
    for (int i = 0; i < n && smp; i++) sample_free(&smp[i]);
    free(smp); free(idx); free(keep); free(rows); free(tmp); free(norms);
    batch_free(&tb);
    acts_free(a);
    return rc;
}

/* ========================================================== commands */

static int task_arg(const char *s) {
    int t = task_by_short(s);
    return t >= 0 ? t : task_by_name(s);
}

/* The paper's RecFound rows (Table 2 and Table 3; official-code.md §9), by task id. */
static double paper_value(int task) {
    static const double v[N_TASKS] = {0.570, 0.988, 0.824, 0.973, 0.251, 0.462, 0.533, 0.344,
                                      0.994, 0.895, 0.903, 0.830, 0.853};
    return v[task];
}
static const int TABLE2[] = {TASK_QR, TASK_AVE, TASK_AG, TASK_SR, TASK_SA, TASK_UP, TASK_AP, TASK_PRP, TASK_PM, TASK_IP};
static const int TABLE3[] = {TASK_I2I, TASK_Q2I, TASK_U2I};

static const char *metric_name(int task) {
    switch (task) {
    case TASK_AP: case TASK_PM: return "F1(yes)";
    case TASK_SA: case TASK_PRP: return "macroF1";
    case TASK_SR: return "R@1";
    case TASK_AVE: return "tripleF1";
    default: return "tokenF1";
    }
}

/* The tasks the authors score with BERTScore. */
static int free_text(int t) { return t == TASK_QR || t == TASK_AG || t == TASK_UP || t == TASK_IP; }

static const char BERT_NOTE[] =
    "QR, AG, UP, IP: token F1 (SQuAD-style) here; the paper's numbers are BERTScore-F1 with a\n"
    "Longformer-large model (layer 14), so those columns are not comparable.\n";

/* Table 2's layout: one column per generative task, the paper's RecFound row
 * above ours; res[t].n == 0 marks a task not evaluated. */
static void print_table2(FILE *f, const MetricResult *res) {
    fprintf(f, "Generative tasks (paper Table 2 layout)\n%-18s", "");
    for (int i = 0; i < 10; i++) fprintf(f, " %8s", TASKS[TABLE2[i]].short_name);
    fprintf(f, "\n%-18s", "metric");
    for (int i = 0; i < 10; i++) fprintf(f, " %8s", metric_name(TABLE2[i]));
    fprintf(f, "\n%-18s", "RecFound (paper)");
    for (int i = 0; i < 10; i++) fprintf(f, " %8.3f", paper_value(TABLE2[i]));
    fprintf(f, "\n%-18s", "this run");
    for (int i = 0; i < 10; i++)
        if (res[TABLE2[i]].n) fprintf(f, " %8.3f", res[TABLE2[i]].score);
        else fprintf(f, " %8s", "-");
    fprintf(f, "\n%-18s", "records");
    for (int i = 0; i < 10; i++) fprintf(f, " %8ld", res[TABLE2[i]].n);
    fprintf(f, "\n%-18s", "invalid outputs");
    for (int i = 0; i < 10; i++) fprintf(f, " %8ld", res[TABLE2[i]].invalid);
    fprintf(f, "\n%s", BERT_NOTE);
}

static void json_metric(RfBuf *b, int task, const MetricResult *r) {
    buf_printf(b, "\"%s\": {\"task\": \"%s\", \"metric\": \"%s\", \"score\": %.6f, \"precision\": %.6f, "
                  "\"recall\": %.6f, \"accuracy\": %.6f, \"n\": %ld, \"invalid\": %ld, \"skipped\": %ld, "
                  "\"paper\": %.3f}",
               TASKS[task].short_name, TASKS[task].name, metric_name(task), r->score, r->precision, r->recall,
               r->accuracy, r->n, r->invalid, r->skipped, paper_value(task));
}

/* Outputs of one file, grouped by task: out/ans point into the parsed lines. */
typedef struct {
    char **out[N_TASKS], **ans[N_TASKS];
    long n[N_TASKS], cap[N_TASKS];
    long unknown_task;
} OutputSet;

static void outset_free(OutputSet *s) {
    for (int t = 0; t < N_TASKS; t++) {
        for (long i = 0; i < s->n[t]; i++) { free(s->out[t][i]); free(s->ans[t][i]); }
        free(s->out[t]);
        free(s->ans[t]);
    }
    memset(s, 0, sizeof *s);
}

static int outset_add(OutputSet *s, int t, const char *out, const char *ans) {
    if (s->n[t] == s->cap[t]) {
        long c = s->cap[t] ? 2 * s->cap[t] : 64;
        char **o = realloc(s->out[t], c * sizeof *o), **a;
        if (!o) return rf_error("out of memory");
        s->out[t] = o;
        if (!(a = realloc(s->ans[t], c * sizeof *a))) return rf_error("out of memory");
        s->ans[t] = a;
        s->cap[t] = c;
    }
    s->out[t][s->n[t]] = strdup(out);
    s->ans[t][s->n[t]] = strdup(ans);
    if (!s->out[t][s->n[t]] || !s->ans[t][s->n[t]]) return rf_error("out of memory");
    s->n[t]++;
    return 0;
}

/* Read an outputs.jsonl: {"output", "answer", "source", "task"} per line. */
static int outset_read(OutputSet *s, const char *path) {
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f) return rf_error("%s: cannot open", path);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t b, e;
        strip_range(line, &b, &e);
        if (e == b) continue;
        Json j;
        char where[4200];
        snprintf(where, sizeof where, "%s: line %ld", path, lineno);
        if (json_parse(&j, line, (size_t)len, where)) { rc = -1; break; }
        const Json *o = json_get(&j, "output"), *a = json_get(&j, "answer"), *t = json_get(&j, "task");
        if (!o || !a || !t || o->type != JSON_STRING || a->type != JSON_STRING || t->type != JSON_STRING) {
            rc = rf_error("%s: line %ld: want string fields \"output\", \"answer\" and \"task\"", path, lineno);
        } else {
            int task = task_by_name(t->string);
            if (task < 0) task = task_by_short(t->string);
            if (task < 0 || TASKS[task].kind != KIND_GEN) s->unknown_task++;
            else rc = outset_add(s, task, o->string, a->string);
        }
        json_free(&j);
    }
    free(line);
    fclose(f);
    if (rc) outset_free(s);
    return rc;
}

/* ------------------------------------------------------------ generate */

/* See recfound.h: ids[0] stays, the oldest tokens after it go. */
int fit_prompt(int *ids, int n, int cap, int *max_new) {
    int keep = cap - *max_new;
    if (keep < 2) { keep = n < cap - 1 ? n : cap - 1; *max_new = cap - keep; }
    if (n <= keep) return n;
    memmove(ids + 1, ids + 1 + (n - keep), (size_t)(keep - 1) * sizeof(int));
    return keep;
}

/* The answer to one user prompt: the training prompt of official-code.md §3
 * ("<s><|user|>\n{user}\n<|assistant|>\n"), greedy, decoded without </s>.
 * A prompt too long for the cache loses its oldest tokens after <s> (fit_prompt). */
static int gen_answer(KvDecoder *d, const Tokenizer *tok, int eos, const char *user, int max_new, char **answer,
                      long *truncated, long *dropped) {
    RfBuf prompt = {0}, unused = {0};
    format_gen(&prompt, &unused, user, "");
    buf_free(&unused);
    int *ids = NULL, n = 0, *gen = NULL, n_gen = 0;
    *answer = NULL;
    int rc = prompt.data ? tok_encode(tok, prompt.data, prompt.len, 0, &ids, &n) : rf_error("out of memory");
    buf_free(&prompt);
    if (rc) return -1;
    int fit = fit_prompt(ids, n, d->cap, &max_new);
    if (fit < n && truncated) (*truncated)++;
    n = fit;
    kv_reset(d);
    rc = generate_greedy(d, ids, n, max_new, eos, &gen, &n_gen);
    free(ids);
    /* A model's vocabulary can be larger than its tokenizer's (padded, or a
     * tokenizer of another version): ids with no token are dropped, as Hugging
     * Face's decode drops them, and counted. */
    int kept = 0;
    for (int i = 0; !rc && i < n_gen; i++) {
        if (gen[i] >= 0 && gen[i] < tok->n_vocab) gen[kept++] = gen[i];
        else if (dropped) (*dropped)++;
    }
    if (!rc) rc = tok_decode(tok, gen, kept, answer, NULL);
    free(gen);
    return rc;
}

/* Model, tokenizer and (optional) adapters of a command. */
typedef struct { Model m; Tokenizer tok; Tmole tm; int has_tm, has_tok, has_m; } Loaded;

/* One line for the generated ids gen_answer dropped (no token for them). */
static void warn_dropped(const char *cmd, const char *task, long dropped, const Loaded *L) {
    fprintf(stderr, "%s: %s%s%ld generated token%s with an id past the tokenizer's %d (the model has %d) dropped from the "
            "text\n", cmd, task ? task : "", task ? ": " : "", dropped, dropped == 1 ? "" : "s", L->tok.n_vocab,
            L->m.cfg.vocab_size);
}

static void loaded_free(Loaded *L) {
    if (L->has_tm) tmole_free(&L->tm);
    if (L->has_tok) tok_free(&L->tok);
    if (L->has_m) model_free(&L->m);
    memset(L, 0, sizeof *L);
}

static int loaded_open(Loaded *L, const char *who, const char *model, const char *adapter, const char *tokp) {
    char path[4096];
    memset(L, 0, sizeof *L);
    if (model_load_frozen(&L->m, model, who)) return -1;
    L->has_m = 1;
    if (!tokp) { snprintf(path, sizeof path, "%s/tokenizer.json", model); tokp = path; }
    if (tok_load(&L->tok, tokp)) { loaded_free(L); return -1; }
    L->has_tok = 1;
    if (adapter) {
        if (tmole_load(&L->tm, adapter, &L->m.cfg)) { loaded_free(L); return -1; }
        L->has_tm = 1;
    }
    return 0;
}

static int eos_of(const Loaded *L) { return L->tok.eos_id >= 0 ? L->tok.eos_id : L->m.cfg.eos_token_id; }

static int kv_capacity(const Model *m, long max_len) {
    long cap = m->cfg.max_position_embeddings > 0 ? m->cfg.max_position_embeddings : max_len;
    return (int)(max_len > 0 && max_len < cap ? max_len : cap);
}

int generate_main(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *tokp = NULL, *task_s = NULL, *prompt = NULL;
    long max_new = -1, max_len = 4096;
    Flag o[] = {{"--model", 's', &model, "backbone folder (config.json + model.safetensors)"},
               {"--adapter", 's', &adapter, "TMoLE adapter folder; its mixture for --task is folded into W0"},
               {"--task", 's', &task_s, "task (short or long name, e.g. SR or Sequential_Recommendation)"},
               {"--tokenizer", 's', &tokp, "tokenizer.json (default MODEL/tokenizer.json)"},
               {"--prompt", 's', &prompt, "the user turn (text[0] of a record)"},
               {"--max-new", 'i', &max_new, "new tokens at most (default: the authors' limit of the task, else 256)"},
               {"--max-len", 'i', &max_len, "prompt + answer tokens at most (default 4096, capped by the model)"}};
    int r = parse_flags(argc, argv, o, 7, "--model DIR [--adapter DIR --task NAME] [--tokenizer FILE] --prompt TEXT [--max-new N]");
    if (r) return r > 0 ? 0 : -1;
    if (!model || !prompt) return rf_error("generate: --model and --prompt are required (see recfound generate --help)");
    int task = task_s ? task_arg(task_s) : -1;
    if (task_s && (task < 0 || TASKS[task].kind != KIND_GEN))
        return rf_error("generate: --task %s is not a generative task", task_s);
    if (adapter && task < 0) return rf_error("generate: --adapter needs --task (the routing depends on it)");
    if (max_new != -1 && check_range("--max-new", max_new, 0, 0, INFINITY)) return -1;  /* -1: the default */
    if (max_new < 0) max_new = task >= 0 ? gen_max_new(task) : 256;
    if (check_range("--max-len", max_len, 2, 0, RF_MAX_LEN)) return -1;
    Loaded L;
    if (loaded_open(&L, "generate", model, adapter, tokp)) return -1;
    FoldedModel fm;
    KvDecoder *d = NULL;
    char *answer = NULL;
    int rc = fold_task(&fm, &L.m, L.has_tm ? &L.tm : NULL, task, ATTN_CAUSAL, "generate");
    if (!rc && !(d = kv_new_folded(&fm, kv_capacity(&L.m, max_len)))) rc = -1;
    long dropped = 0, cut = 0;
    if (!rc) rc = gen_answer(d, &L.tok, eos_of(&L), prompt, (int)max_new, &answer, &cut, &dropped);
    if (cut)
        fprintf(stderr, "generate: warning: the prompt was cut (its oldest tokens after <s> left out) so that it and "
                "the answer fit in %d tokens (--max-len, at most max_position_embeddings)\n", d->cap);
    if (dropped) warn_dropped("generate", NULL, dropped, &L);
    if (!rc) printf("%s\n", answer);
    free(answer);
    kv_free(d);
    if (fm.m.layer) fold_free(&fm);
    loaded_free(&L);
    return rc;
}

/* ---------------------------------------------------------------- eval */

/* eval's settings: the embedding protocols' (e: limit, every, ... and the
 * model as embedder) and the rest. */
typedef struct {
    EmbEval e;
    const Loaded *L;
    long max_len, batch, max_new;
} EvalCfg;

/* Growing list of (instruction, text) pairs to embed. */
typedef struct { const char **instr, **text; int n, cap; } TextList;

static int tl_add(TextList *l, const char *instr, const char *text) {
    if (l->n == l->cap) {
        int c = l->cap ? 2 * l->cap : 256;
        const char **a = realloc(l->instr, c * sizeof *a), **b;
        if (!a) return rf_error("out of memory");
        l->instr = a;
        if (!(b = realloc(l->text, c * sizeof *b))) return rf_error("out of memory");
        l->text = b;
        l->cap = c;
    }
    l->instr[l->n] = instr;
    l->text[l->n++] = text;
    return 0;
}

static void tl_free(TextList *l) { free(l->instr); free(l->text); memset(l, 0, sizeof *l); }

/* eval's embedder (EmbedFn): the model's embedding pass; `what` names the
 * texts on the progress line ("queries", "candidates"). */
static int model_embedder(void *ctx, float *out, const char *const *instr, const char *const *text, int n, int task,
                          EmbFormat fmt, long *dropped, const char *what) {
    const EvalCfg *ec = ctx;
    char label[64];
    snprintf(label, sizeof label, "eval: %s %s", TASKS[task].short_name, what);
    return embed_texts(out, &ec->L->m, ec->L->has_tm ? &ec->L->tm : NULL, &ec->L->tok, instr, text, n, task, fmt,
                       (int)ec->max_len, (int)ec->batch, dropped, label);
}

/* The vectors of a list of texts (e->dim floats each), or NULL with rf_error set. */
static float *tl_embed(const EmbEval *e, const TextList *l, int task, EmbFormat fmt, long *dropped, const char *what) {
    float *v = malloc(((size_t)l->n * e->dim + 1) * sizeof(float));
    if (!v) { rf_error("out of memory for %d embeddings", l->n); return NULL; }
    if (e->embed(e->ctx, v, l->instr, l->text, l->n, task, fmt, dropped, what)) { free(v); return NULL; }
    return v;
}

static float dotf(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static int cmp_line(const void *a, const void *b) {
    long x = (*(const Record *const *)a)->line, y = (*(const Record *const *)b)->line;
    return (x > y) - (x < y);
}

static int same_source(const Record *a, const Record *b) {
    if (!a->source || !b->source) return !a->source && !b->source;
    return !strcmp(a->source, b->source);
}

/* The authors' protocol (official-code.md §8): the I2I records (of
 * item_embedding_test.json), then the U2I and Q2I records in file order,
 * every `every`-th kept.  Negatives of a kept record: `negatives` draws (seed
 * 42, one stream over the kept records in order) from the first negatives of
 * the kept records of the same task and source, the record's own included as
 * in the authors' script; records with fewer candidates are skipped.  U2I,
 * Q2I: MRR of the first positive among it and the drawn negatives.  I2I: NDCG
 * of all positives against the first 5 negatives of the first drawn record. */
int emb_code_protocol(const EmbEval *e, const Pool *i2i, const Dataset *d, EmbResult *res) {
    int C = e->dim, K = (int)e->negatives, rc = 0;
    size_t nu = d->pool[TASK_U2I].n, nq = d->pool[TASK_Q2I].n, nall = i2i->n + nu + nq, np = 0;
    const Record **all = malloc((nall + 1) * sizeof *all), **pick = malloc((nall + 1) * sizeof *pick);
    int *slot = malloc((nall + 1) * sizeof *slot);
    size_t *draw = malloc(((size_t)K + 1) * sizeof *draw), *members = malloc((nall + 1) * sizeof *members);
    TextList q[N_TASKS] = {{0}}, pos[N_TASKS] = {{0}}, neg[N_TASKS] = {{0}};
    float *eq[N_TASKS] = {0}, *ep[N_TASKS] = {0}, *en[N_TASKS] = {0};
    int *pos_off = malloc((nall + 1) * sizeof(int)), *neg_off = malloc((nall + 1) * sizeof(int));
    int *pos_cnt = malloc((nall + 1) * sizeof(int)), *neg_cnt = malloc((nall + 1) * sizeof(int));
    long scored[N_TASKS] = {0};
    if (!all || !pick || !slot || !draw || !members || !pos_off || !neg_off || !pos_cnt || !neg_cnt) {
        rc = rf_error("out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < i2i->n; i++) all[k++] = &i2i->recs[i];
    size_t mid = k;
    for (size_t i = 0; i < nu; i++) all[k++] = &d->pool[TASK_U2I].recs[i];
    for (size_t i = 0; i < nq; i++) all[k++] = &d->pool[TASK_Q2I].recs[i];
    qsort(all + mid, nu + nq, sizeof *all, cmp_line);
    for (size_t i = 0; i < nall; i += (size_t)e->every) pick[np++] = all[i];
    /* what to embed: queries and positives of the scored records, first negatives of every kept one */
    for (size_t i = 0; i < np; i++) {
        const Record *r = pick[i];
        int t = r->task, lim = t == TASK_I2I ? 5 : 1;
        slot[i] = -1;
        if (!e->sel[t]) continue;
        int cand_instr = !e->code_fmt;
        if (r->n_neg > 0) {
            neg_off[i] = neg[t].n;
            neg_cnt[i] = r->neg[0].n_texts < lim ? r->neg[0].n_texts : lim;
            for (int j = 0; j < neg_cnt[i] && !rc; j++)
                rc = tl_add(&neg[t], cand_instr ? r->neg[0].instr : "", r->neg[0].texts[j]);
        }
        if (r->n_pos > 0 && (e->limit <= 0 || scored[t] < e->limit)) {
            slot[i] = q[t].n;
            scored[t]++;
            rc = rc ? rc : tl_add(&q[t], r->query.instr, r->query.texts[0]);
            pos_off[i] = pos[t].n;
            pos_cnt[i] = t == TASK_I2I ? r->pos[0].n_texts : 1;
            for (int j = 0; j < pos_cnt[i] && !rc; j++)
                rc = tl_add(&pos[t], cand_instr ? r->pos[0].instr : "", r->pos[0].texts[j]);
        }
        if (rc) goto done;
    }
    for (int t = 0; t < N_TASKS; t++) {
        if (!q[t].n) continue;
        fprintf(stderr, "eval: %s embeddings (authors' pools): %d queries, %d positives, %d negatives\n",
                TASKS[t].short_name, q[t].n, pos[t].n, neg[t].n);
        if (!(eq[t] = tl_embed(e, &q[t], t, e->qfmt, &res[t].dropped, "queries")) ||
            !(ep[t] = tl_embed(e, &pos[t], t, EMB_FMT_TRAIN, &res[t].dropped, "positives")) ||
            !(en[t] = tl_embed(e, &neg[t], t, EMB_FMT_TRAIN, &res[t].dropped, "negatives"))) { rc = -1; goto done; }
    }
    /* one random stream over every kept record, whatever the selected tasks */
    Rng rng;
    rng_seed(&rng, (uint64_t)e->seed);
    double sum[N_TASKS] = {0};
    float sc[64];
    int rel[64];
    for (size_t i = 0; i < np; i++) {
        const Record *r = pick[i];
        size_t nm = 0;
        for (size_t j = 0; j < np; j++)
            if (pick[j]->task == r->task && pick[j]->n_neg > 0 && same_source(pick[j], r)) members[nm++] = j;
        int drawn = pool_sample(draw, nm, K, &rng);
        if (drawn < 0) { rc = -1; goto done; }
        if (slot[i] < 0) continue;
        int t = r->task;
        if (drawn == 1 || K < 1) { res[t].code_skipped++; continue; }
        const float *qe = eq[t] + (size_t)slot[i] * C;
        int n = 0;
        if (t != TASK_I2I) {
            sc[n] = dotf(qe, ep[t] + (size_t)pos_off[i] * C, C); rel[n++] = 1;
            for (int j = 0; j < K && n < 64; j++) {
                size_t m = members[draw[j]];
                sc[n] = dotf(qe, en[t] + (size_t)neg_off[m] * C, C); rel[n++] = 0;
            }
            sum[t] += rank_mrr(sc, rel, n, 0);
        } else {
            size_t m = members[draw[0]];
            for (int j = 0; j < pos_cnt[i] && n < 64; j++) { sc[n] = dotf(qe, ep[t] + (size_t)(pos_off[i] + j) * C, C); rel[n++] = 1; }
            for (int j = 0; j < neg_cnt[m] && n < 64; j++) { sc[n] = dotf(qe, en[t] + (size_t)(neg_off[m] + j) * C, C); rel[n++] = 0; }
            sum[t] += rank_ndcg(sc, rel, n, 0);
        }
        res[t].code_n++;
    }
    for (int t = 0; t < N_TASKS; t++) res[t].code = ratio(sum[t], res[t].code_n);
done:
    for (int t = 0; t < N_TASKS; t++) {
        tl_free(&q[t]); tl_free(&pos[t]); tl_free(&neg[t]);
        free(eq[t]); free(ep[t]); free(en[t]);
    }
    free(all); free(pick); free(slot); free(draw); free(members);
    free(pos_off); free(neg_off); free(pos_cnt); free(neg_cnt);
    return rc;
}

typedef struct { const char *text, *instr; int id; } Cand;
static int cmp_cand(const void *a, const void *b) {
    const Cand *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    return c ? c : x->id - y->id;
}

/* Full-corpus retrieval of one task: the corpus is every distinct positive and
 * negative text of the task's records (a text is one candidate, embedded with
 * the instruction of its first occurrence); each query ranks all of it, and
 * its positives are the relevant ones.  MRR@20 and NDCG@20 (binary gains). */
int emb_full_protocol(const EmbEval *e, int t, const Pool *p, EmbResult *res) {
    int C = e->dim, rc = 0;
    size_t nr = p->n;
    if (e->limit > 0 && nr > (size_t)e->limit) nr = (size_t)e->limit;
    size_t nc = 0;
    for (size_t i = 0; i < nr; i++) {
        const Record *r = &p->recs[i];
        for (int j = 0; j < r->n_pos; j++) nc += r->pos[j].n_texts;
        for (int j = 0; j < r->n_neg; j++) nc += r->neg[j].n_texts;
    }
    Cand *c = malloc((nc + 1) * sizeof *c);
    int *uid = malloc((nc + 1) * sizeof *uid), *rel = malloc((nc + 1) * sizeof *rel);
    float *sc = malloc((nc + 1) * sizeof *sc), *eq = NULL, *ecand = NULL;
    TextList q = {0}, corpus = {0};
    if (!c || !uid || !rel || !sc) { rc = rf_error("out of memory"); goto done; }
    size_t k = 0;
    for (size_t i = 0; i < nr; i++) {
        const Record *r = &p->recs[i];
        for (int j = 0; j < r->n_pos + r->n_neg; j++) {
            const Passage *ps = j < r->n_pos ? &r->pos[j] : &r->neg[j - r->n_pos];
            for (int x = 0; x < ps->n_texts; x++, k++) c[k] = (Cand){ps->texts[x], e->code_fmt ? "" : ps->instr, (int)k};
        }
    }
    qsort(c, nc, sizeof *c, cmp_cand);
    /* uid[occurrence] = candidate number; the first occurrence of a text names it */
    int nu = 0;
    for (size_t i = 0; i < nc && !rc; i++) {
        if (i == 0 || strcmp(c[i].text, c[i - 1].text)) {
            size_t j = i, first = i;
            while (j < nc && !strcmp(c[j].text, c[i].text)) { if (c[j].id < c[first].id) first = j; j++; }
            rc = tl_add(&corpus, c[first].instr, c[first].text);
            nu++;
        }
        uid[c[i].id] = nu - 1;
    }
    for (size_t i = 0; i < nr && !rc; i++)
        rc = tl_add(&q, p->recs[i].query.instr, p->recs[i].query.texts[0]);
    if (rc) goto done;
    fprintf(stderr, "eval: %s embeddings (full corpus): %d queries, %d candidates\n", TASKS[t].short_name, q.n, corpus.n);
    if (!(eq = tl_embed(e, &q, t, e->qfmt, &res->dropped, "queries")) ||
        !(ecand = tl_embed(e, &corpus, t, EMB_FMT_TRAIN, &res->dropped, "candidates"))) { rc = -1; goto done; }
    double mrr = 0, ndcg = 0;
    k = 0;
    for (size_t i = 0; i < nr; i++) {
        const Record *r = &p->recs[i];
        memset(rel, 0, nu * sizeof *rel);
        for (int j = 0; j < r->n_pos + r->n_neg; j++) {
            const Passage *ps = j < r->n_pos ? &r->pos[j] : &r->neg[j - r->n_pos];
            for (int x = 0; x < ps->n_texts; x++, k++)
                if (j < r->n_pos) rel[uid[k]] = 1;
        }
        linear(sc, eq + i * C, ecand, NULL, 1, C, nu, 0);
        mrr += rank_mrr(sc, rel, nu, 20);
        ndcg += rank_ndcg(sc, rel, nu, 20);
    }
    res->mrr20 = ratio(mrr, nr);
    res->ndcg20 = ratio(ndcg, nr);
    res->full_n = (long)nr;
    res->corpus = nu;
done:
    free(c); free(uid); free(rel); free(sc); free(eq); free(ecand);
    tl_free(&q);
    tl_free(&corpus);
    return rc;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Where outputs.jsonl goes: beside --out, or in the working folder. */
static void outputs_path(char *buf, size_t n, const char *out) {
    const char *slash = out ? strrchr(out, '/') : NULL;
    if (slash) snprintf(buf, n, "%.*s/outputs.jsonl", (int)(slash - out), out);
    else snprintf(buf, n, "outputs.jsonl");
}

static int eval_generative(const EvalCfg *ec, const Dataset *d, const char *out_path, MetricResult *res, int ave_mode) {
    const Loaded *L = ec->L;
    RfBuf lines = {0};
    OutputSet os;
    memset(&os, 0, sizeof os);
    int rc = 0;
    double t0 = rf_now();
    for (int ti = 0; ti < 10 && !rc; ti++) {
        int t = TABLE2[ti];
        const Pool *p = &d->pool[t];
        if (!ec->e.sel[t] || !p->n) continue;
        long n = (long)p->n, truncated = 0, dropped = 0;
        if (ec->e.limit > 0 && n > ec->e.limit) n = ec->e.limit;
        int max_new = ec->max_new >= 0 ? (int)ec->max_new : gen_max_new(t);
        FoldedModel fm;
        KvDecoder *dec = NULL;
        if ((rc = fold_task(&fm, &L->m, L->has_tm ? &L->tm : NULL, t, ATTN_CAUSAL, "eval"))) break;
        if (!(dec = kv_new_folded(&fm, kv_capacity(&L->m, ec->max_len)))) rc = -1;
        for (long i = 0; i < n && !rc; i++) {
            const Record *r = &p->recs[i];
            const char *gold = r->n_turns > 1 ? r->turns[1] : "";
            char *answer = NULL;
            if ((rc = gen_answer(dec, &L->tok, eos_of(L), r->turns[0], max_new, &answer, &truncated, &dropped)))
                break;
            rc = outset_add(&os, t, answer, gold);
            buf_printf(&lines, "{\"output\": ");
            json_write_string(&lines, answer, strlen(answer));
            buf_printf(&lines, ", \"answer\": ");
            json_write_string(&lines, gold, strlen(gold));
            buf_printf(&lines, ", \"source\": ");
            if (r->source) json_write_string(&lines, r->source, strlen(r->source));
            else buf_printf(&lines, "null");
            buf_printf(&lines, ", \"task\": \"%s\"}\n", TASKS[t].name);
            free(answer);
            rf_progress("eval: %-4s %ld/%ld generated (%.0f s)", TASKS[t].short_name, i + 1, n, rf_now() - t0);
        }
        rf_progress_end();
        if (truncated) fprintf(stderr, "eval: %s: %ld prompts cut to fit --max-len\n", TASKS[t].short_name, truncated);
        if (dropped) warn_dropped("eval", TASKS[t].short_name, dropped, L);
        kv_free(dec);
        fold_free(&fm);
        if (!rc) rc = lines.data ? rf_write_file_atomic(out_path, lines.data, lines.len) : 0;
        if (!rc) metric_for_task(&res[t], t, (const char *const *)os.out[t], (const char *const *)os.ans[t], os.n[t], ave_mode);
    }
    buf_free(&lines);
    outset_free(&os);
    return rc;
}

static void print_table3(FILE *f, const EmbResult *e, const int *sel, int code, int full) {
    fprintf(f, "Embedding tasks (paper Table 3 layout)\n%-26s", "");
    for (int i = 0; i < 3; i++) fprintf(f, " %12s", TASKS[TABLE3[i]].short_name);
    fprintf(f, "\n%-26s", "RecFound (paper) @20");
    for (int i = 0; i < 3; i++) fprintf(f, " %12.3f", paper_value(TABLE3[i]));
    fprintf(f, "   (I2I NDCG@20, Q2I/U2I MRR@20)\n");
    if (code) {
        fprintf(f, "%-26s", "authors' pools (no cutoff)");
        for (int i = 0; i < 3; i++)
            if (sel[TABLE3[i]] && e[TABLE3[i]].code_n) fprintf(f, " %12.3f", e[TABLE3[i]].code);
            else fprintf(f, " %12s", "-");
        fprintf(f, "\n%-26s", "  scored / skipped");
        for (int i = 0; i < 3; i++) fprintf(f, " %7ld/%-4ld", e[TABLE3[i]].code_n, e[TABLE3[i]].code_skipped);
        fprintf(f, "\n");
    }
    if (full) {
        fprintf(f, "%-26s", "full corpus, paper metric");
        for (int i = 0; i < 3; i++) {
            const EmbResult *r = &e[TABLE3[i]];
            if (sel[TABLE3[i]] && r->full_n) fprintf(f, " %12.3f", TABLE3[i] == TASK_I2I ? r->ndcg20 : r->mrr20);
            else fprintf(f, " %12s", "-");
        }
        fprintf(f, "\n%-26s", "  MRR@20");
        for (int i = 0; i < 3; i++) fprintf(f, " %12.3f", e[TABLE3[i]].mrr20);
        fprintf(f, "\n%-26s", "  NDCG@20");
        for (int i = 0; i < 3; i++) fprintf(f, " %12.3f", e[TABLE3[i]].ndcg20);
        fprintf(f, "\n%-26s", "  queries / corpus");
        for (int i = 0; i < 3; i++) fprintf(f, " %6ld/%-5ld", e[TABLE3[i]].full_n, e[TABLE3[i]].corpus);
        fprintf(f, "\n");
    }
}

int eval_main(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *tokp = NULL, *data = NULL, *split = "test", *tasks = NULL;
    const char *out = NULL, *outputs = NULL, *protocol = "both", *prec = "correct", *fmt = "train";
    EvalCfg ec;
    memset(&ec, 0, sizeof ec);
    ec.e.limit = 0; ec.max_len = 4096; ec.batch = 16; ec.e.every = 10; ec.e.negatives = 19; ec.e.seed = 42;
    ec.max_new = -1;
    Flag o[] = {{"--model", 's', &model, "backbone folder"},
               {"--adapter", 's', &adapter, "TMoLE adapter folder (default: the backbone alone)"},
               {"--tokenizer", 's', &tokp, "tokenizer.json (default MODEL/tokenizer.json)"},
               {"--data", 's', &data, "dataset folder (Embedding_/Generative_dataset_SPLIT.jsonl, item_embedding_test.json)"},
               {"--split", 's', &split, "test (default) | eval | train"},
               {"--tasks", 's', &tasks, "comma-separated tasks, e.g. U2I,SR (default: all 13)"},
               {"--out", 's', &out, "scores as JSON; outputs.jsonl is written beside it"},
               {"--outputs", 's', &outputs, "where to write the generations (default: beside --out, or ./outputs.jsonl)"},
               {"--protocol", 's', &protocol, "embedding protocol: code | full | both (default both)"},
               {"--limit", 'i', &ec.e.limit, "records per task at most (default 0 = all)"},
               {"--max-new", 'i', &ec.max_new, "new tokens at most (default: the authors' per-task limit)"},
               {"--max-len", 'i', &ec.max_len, "tokens per prompt + answer / per embedded text (default 4096)"},
               {"--batch", 'i', &ec.batch, "texts per embedding forward (default 16)"},
               {"--every", 'i', &ec.e.every, "authors' pools: keep every N-th test record (default 10)"},
               {"--negatives", 'i', &ec.e.negatives, "authors' pools: negatives drawn per query (default 19)"},
               {"--seed", 'i', &ec.e.seed, "seed of the negative draws (default 42)"},
               {"--emb-format", 's', &fmt, "train (default): every text as in training | code: the authors' test format"},
               {"--ave-precision", 's', &prec, "correct (default) | code: the authors' inflated AVE precision"}};
    int r = parse_flags(argc, argv, o, sizeof o / sizeof o[0],
                       "--model DIR [--adapter DIR] --data DIR --split test|eval [--tasks U2I,SR,...] [--out FILE.json]\n"
                       "       [--protocol code|full|both] [--limit N]");
    if (r) return r > 0 ? 0 : -1;
    if (!model || !data) return rf_error("eval: --model and --data are required (see recfound eval --help)");
    if (strcmp(split, "test") && strcmp(split, "eval") && strcmp(split, "train"))
        return rf_error("eval: --split must be test, eval or train, got '%s'", split);
    int do_code = !strcmp(protocol, "code") || !strcmp(protocol, "both");
    int do_full = !strcmp(protocol, "full") || !strcmp(protocol, "both");
    if (!do_code && !do_full) return rf_error("eval: --protocol must be code, full or both, got '%s'", protocol);
    int ave_mode = !strcmp(prec, "code") ? AVE_PREC_CODE : !strcmp(prec, "correct") ? AVE_PREC_CORRECT : -1;
    if (ave_mode < 0) return rf_error("eval: --ave-precision must be correct or code, got '%s'", prec);
    if (strcmp(fmt, "train") && strcmp(fmt, "code")) return rf_error("eval: --emb-format must be train or code");
    ec.e.code_fmt = !strcmp(fmt, "code");
    ec.e.qfmt = ec.e.code_fmt ? EMB_FMT_CODE_TEST : EMB_FMT_TRAIN;
    if (check_range("--every", ec.e.every, 1, 0, INFINITY) || check_range("--negatives", ec.e.negatives, 1, 0, 60) ||
        check_range("--batch", ec.batch, 1, 0, INFINITY) || check_range("--max-len", ec.max_len, 8, 0, RF_MAX_LEN) ||
        check_range("--limit", ec.e.limit, 0, 0, INFINITY) ||
        (ec.max_new != -1 && check_range("--max-new", ec.max_new, 0, 0, INFINITY)))  /* -1: the default */
        return -1;
    if (tasks) {
        const char *s = tasks;
        while (*s) {
            char name[64];
            size_t n = strcspn(s, ",");
            snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), s);
            int t = task_arg(name);
            if (t < 0) return rf_error("eval: --tasks: unknown task '%s'", name);
            ec.e.sel[t] = 1;
            s += n + (s[n] == ',');
        }
    } else {
        for (int t = 0; t < N_TASKS; t++) ec.e.sel[t] = 1;
    }
    int any_gen = 0, any_emb = 0;
    for (int t = 0; t < N_TASKS; t++) {
        any_gen |= ec.e.sel[t] && TASKS[t].kind == KIND_GEN;
        any_emb |= ec.e.sel[t] && TASKS[t].kind == KIND_EMB;
    }
    Loaded L;
    if (loaded_open(&L, "eval", model, adapter, tokp)) return -1;
    ec.L = &L;
    ec.e.embed = model_embedder, ec.e.ctx = &ec, ec.e.dim = L.m.cfg.hidden_size;
    Dataset gd, ed, items;
    memset(&gd, 0, sizeof gd); memset(&ed, 0, sizeof ed); memset(&items, 0, sizeof items);
    MetricResult gres[N_TASKS];
    EmbResult eres[N_TASKS];
    memset(gres, 0, sizeof gres);
    memset(eres, 0, sizeof eres);
    char path[4096], opath[4096];
    int rc = 0, have_items = 0;
    if (outputs) snprintf(opath, sizeof opath, "%s", outputs);
    else outputs_path(opath, sizeof opath, out);
    if (any_gen) {
        snprintf(path, sizeof path, "%s/Generative_dataset_%s.jsonl", data, split);
        rc = dataset_load_file(&gd, path, 0);
        if (!rc) rc = eval_generative(&ec, &gd, opath, gres, ave_mode);
        if (!rc) fprintf(stderr, "eval: generations written to %s\n", opath);
    }
    if (!rc && any_emb) {
        snprintf(path, sizeof path, "%s/Embedding_dataset_%s.jsonl", data, split);
        rc = dataset_load_file(&ed, path, 0);
        snprintf(path, sizeof path, "%s/item_embedding_test.json", data);
        if (!rc && !strcmp(split, "test") && file_exists(path)) {
            rc = dataset_load_file(&items, path, 0);
            have_items = 1;
        }
        const Pool *i2i = have_items ? &items.pool[TASK_I2I] : &ed.pool[TASK_I2I];
        if (!rc && do_code) rc = emb_code_protocol(&ec.e, i2i, &ed, eres);
        for (int i = 0; i < 3 && !rc && do_full; i++) {
            int t = TABLE3[i];
            if (ec.e.sel[t]) rc = emb_full_protocol(&ec.e, t, t == TASK_I2I ? i2i : &ed.pool[t], &eres[t]);
        }
    }
    if (!rc) {
        if (any_gen) {
            print_table2(stdout, gres);
            if (gres[TASK_AVE].n) printf("AVE precision: %s denominator\n", ave_mode == AVE_PREC_CODE ? "the authors' (inflated)" : "correct");
            printf("\n");
        }
        if (any_emb) {
            print_table3(stdout, eres, ec.e.sel, do_code, do_full);
            printf("I2I records from %s; queries in the %s format\n",
                   have_items ? "item_embedding_test.json" : "the jsonl", ec.e.code_fmt ? "authors' test" : "training");
            long dropped = 0;
            for (int t = 0; t < N_TASKS; t++) dropped += eres[t].dropped;
            if (dropped) printf("%ld texts left no token to pool within --max-len (zero embeddings)\n", dropped);
        }
    }
    if (!rc && out) {
        RfBuf b = {0};
        buf_printf(&b, "{\"split\": \"%s\", \"protocol\": \"%s\", \"ave_precision\": \"%s\", \"emb_format\": \"%s\",\n \"generative\": {",
                   split, protocol, prec, fmt);
        int first = 1;
        for (int t = 0; t < N_TASKS; t++)
            if (TASKS[t].kind == KIND_GEN && gres[t].n) { buf_printf(&b, first ? "\n  " : ",\n  "); json_metric(&b, t, &gres[t]); first = 0; }
        buf_printf(&b, "},\n \"embedding\": {");
        first = 1;
        for (int t = 0; t < N_TASKS; t++) {
            const EmbResult *e = &eres[t];
            if (TASKS[t].kind != KIND_EMB || !ec.e.sel[t]) continue;
            buf_printf(&b, "%s\"%s\": {\"task\": \"%s\", \"paper\": %.3f", first ? "\n  " : ",\n  ", TASKS[t].short_name,
                       TASKS[t].name, paper_value(t));
            if (do_code) buf_printf(&b, ", \"code\": {\"metric\": \"%s\", \"score\": %.6f, \"n\": %ld, \"skipped\": %ld}",
                                    t == TASK_I2I ? "NDCG" : "MRR", e->code, e->code_n, e->code_skipped);
            if (do_full) buf_printf(&b, ", \"full\": {\"mrr@20\": %.6f, \"ndcg@20\": %.6f, \"n\": %ld, \"corpus\": %ld}",
                                    e->mrr20, e->ndcg20, e->full_n, e->corpus);
            buf_printf(&b, "}");
            first = 0;
        }
        buf_printf(&b, "},\n \"note\": \"QR, AG, UP, IP are token F1 here; the paper used BERTScore-F1 with Longformer-large\"}\n");
        rc = b.data ? rf_write_file_atomic(out, b.data, b.len) : rf_error("out of memory");
        buf_free(&b);
    }
    dataset_free(&gd);
    dataset_free(&ed);
    dataset_free(&items);
    loaded_free(&L);
    return rc;
}

/* ------------------------------------------------------------- metrics */

/* A BERTScore-style F1 (Zhang et al. 2020, without idf weighting or baseline
 * rescaling): contextual token embeddings x_i (candidate) and y_j (reference)
 * from layer K, BOS dropped; P = mean_i max_j cos(x_i, y_j), R = mean_j max_i
 * cos(x_i, y_j), F1 = 2PR / (P + R).  The embeddings here come from a causal
 * decoder, the paper's from a bidirectional Longformer-large. */
typedef struct { KvDecoder *d; const Tokenizer *tok; int layer, C; } BertScorer;

static float *bs_embed(BertScorer *b, const char *text, int *n) {
    int *ids = NULL, k = 0;
    *n = 0;
    if (tok_encode(b->tok, text, strlen(text), 1, &ids, &k)) return NULL;
    if (k > b->d->cap) k = b->d->cap;
    float *h = malloc(((size_t)k * b->C + 1) * sizeof(float));
    kv_reset(b->d);
    if (!h || kv_hidden(b->d, ids, k, b->layer, h)) { free(ids); free(h); return NULL; }
    int skip = k > 0 && ids[0] == b->tok->bos_id;
    free(ids);
    *n = k - skip;
    memmove(h, h + (size_t)skip * b->C, (size_t)*n * b->C * sizeof(float));
    for (int i = 0; i < *n; i++) {  /* unit rows: dot = cosine */
        float *x = h + (size_t)i * b->C;
        double ss = 0;
        for (int c = 0; c < b->C; c++) ss += (double)x[c] * x[c];
        float inv = ss > 0 ? (float)(1 / sqrt(ss)) : 0;
        for (int c = 0; c < b->C; c++) x[c] *= inv;
    }
    return h;
}

static int bertscore_f1(BertScorer *b, const char *cand, const char *ref, double *f1) {
    int nx, ny;
    float *x = bs_embed(b, cand, &nx), *y = x ? bs_embed(b, ref, &ny) : NULL;
    if (!x || !y) { free(x); free(y); return -1; }
    *f1 = 0;
    if (nx && ny) {
        double p = 0, r = 0;
        float *rmax = malloc(ny * sizeof(float));
        if (!rmax) { free(x); free(y); return rf_error("out of memory"); }
        for (int j = 0; j < ny; j++) rmax[j] = -2;
        for (int i = 0; i < nx; i++) {
            float best = -2;
            for (int j = 0; j < ny; j++) {
                float c = dotf(x + (size_t)i * b->C, y + (size_t)j * b->C, b->C);
                if (c > best) best = c;
                if (c > rmax[j]) rmax[j] = c;
            }
            p += best;
        }
        for (int j = 0; j < ny; j++) r += rmax[j];
        p /= nx;
        r /= ny;
        *f1 = p + r != 0 ? 2 * p * r / (p + r) : 0;
        free(rmax);
    }
    free(x);
    free(y);
    return 0;
}

int metrics_main(int argc, char **argv) {
    const char *outputs = NULL, *prec = "correct", *json_out = NULL, *bs_model = NULL, *bs_tok = NULL;
    long bs_layer = 14;
    Flag o[] = {{"--outputs", 's', &outputs, "outputs.jsonl with {\"output\", \"answer\", \"source\", \"task\"} lines"},
               {"--ave-precision", 's', &prec, "correct (default) | code: the authors' inflated AVE precision denominator"},
               {"--out", 's', &json_out, "also write the scores as JSON to this file"},
               {"--bertscore-model", 's', &bs_model, "model folder: adds a BERTScore-style F1 for QR, AG, UP, IP"},
               {"--bertscore-layer", 'i', &bs_layer, "its layer K whose hidden states are compared (default 14, capped)"},
               {"--tokenizer", 's', &bs_tok, "tokenizer of --bertscore-model (default MODEL/tokenizer.json)"}};
    int r = parse_flags(argc, argv, o, 6, "--outputs FILE.jsonl [--ave-precision correct|code] [--out FILE.json]\n"
                                         "       [--bertscore-model DIR [--bertscore-layer K]]");
    if (r) return r > 0 ? 0 : -1;
    if (!outputs) return rf_error("metrics: missing required option --outputs (see recfound metrics --help)");
    int mode = !strcmp(prec, "code") ? AVE_PREC_CODE : !strcmp(prec, "correct") ? AVE_PREC_CORRECT : -1;
    if (mode < 0) return rf_error("metrics: --ave-precision must be correct or code, got '%s'", prec);
    OutputSet s;
    if (outset_read(&s, outputs)) return -1;
    long records = 0;
    for (int t = 0; t < N_TASKS; t++) records += s.n[t];
    if (!records) { outset_free(&s); return rf_error("%s: no records to score", outputs); }
    MetricResult res[N_TASKS];
    memset(res, 0, sizeof res);
    printf("%-5s %-30s %-9s %8s %9s %8s %8s %7s %8s\n", "task", "name", "metric", "score", "precision", "recall",
           "records", "invalid", "skipped");
    for (int t = 0; t < N_TASKS; t++) {
        if (!s.n[t]) continue;
        metric_for_task(&res[t], t, (const char *const *)s.out[t], (const char *const *)s.ans[t], s.n[t], mode);
        printf("%-5s %-30s %-9s %8.4f %9.4f %8.4f %8ld %7ld %8ld\n", TASKS[t].short_name, TASKS[t].name,
               metric_name(t), res[t].score, res[t].precision, res[t].recall, res[t].n, res[t].invalid,
               res[t].skipped);
    }
    double bs[N_TASKS];
    int have_bs = 0, rc = 0;
    if (bs_model) {
        Loaded L;
        if (loaded_open(&L, "metrics", bs_model, NULL, bs_tok)) { outset_free(&s); return -1; }
        BertScorer b = {NULL, &L.tok, (int)(bs_layer < L.m.cfg.n_layers ? bs_layer : L.m.cfg.n_layers), L.m.cfg.hidden_size};
        if (!(b.d = kv_new(&L.m, kv_capacity(&L.m, 4096)))) rc = -1;
        printf("\nBERTScore-style F1 (layer %d of %s; the paper used Longformer-large, layer 14):\n", b.layer, bs_model);
        for (int t = 0; t < N_TASKS && !rc; t++) {
            if (!s.n[t] || !free_text(t)) continue;
            double sum = 0, f = 0;
            for (long i = 0; i < s.n[t] && !rc; i++) {
                rc = bertscore_f1(&b, s.out[t][i], s.ans[t][i], &f);
                sum += f;
            }
            bs[t] = sum / s.n[t];
            printf("%-5s %8.4f  (%ld records)\n", TASKS[t].short_name, bs[t], s.n[t]);
        }
        have_bs = 1;
        kv_free(b.d);
        loaded_free(&L);
        if (rc) { outset_free(&s); return -1; }
    }
    if (s.unknown_task) printf("%ld lines of unknown or non-generative tasks ignored\n", s.unknown_task);
    if (s.n[TASK_AVE]) printf("AVE precision: %s denominator\n", mode == AVE_PREC_CODE ? "the authors' (inflated)" : "correct");
    printf("\n");
    print_table2(stdout, res);
    if (json_out) {
        RfBuf b = {0};
        buf_printf(&b, "{\"outputs\": ");
        json_write_string(&b, outputs, strlen(outputs));
        buf_printf(&b, ", \"ave_precision\": \"%s\", \"generative\": {", prec);
        int first = 1;
        for (int t = 0; t < N_TASKS; t++)
            if (s.n[t]) { buf_printf(&b, first ? "" : ", "); json_metric(&b, t, &res[t]); first = 0; }
        buf_printf(&b, "}");
        if (have_bs) {
            buf_printf(&b, ", \"bertscore_f1\": {");
            first = 1;
            for (int t = 0; t < N_TASKS; t++)
                if (s.n[t] && free_text(t)) {
                    buf_printf(&b, "%s\"%s\": %.6f", first ? "" : ", ", TASKS[t].short_name, bs[t]);
                    first = 0;
                }
            buf_printf(&b, "}");
        }
        buf_printf(&b, "}\n");
        rc = b.data ? rf_write_file_atomic(json_out, b.data, b.len) : rf_error("out of memory");
        buf_free(&b);
    }
    outset_free(&s);
    return rc;
}
