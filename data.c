/*
 * data.c - the RecFound dataset (paper §3 and Appendix B).
 *
 *   - the 13 tasks with the ids, names and metrics of the authors' code;
 *   - records of the published files (Embedding_dataset_*.jsonl,
 *     Generative_dataset_*.jsonl, item_embedding_test.json): a streaming
 *     reader, per-task pools and writers of the same format;
 *   - the prompt formats of training (official-code.md §3);
 *   - seeded shuffling of the per-task pools;
 *   - `recfound synth`: a synthetic dataset of all 13 tasks drawn from one
 *     latent world of items and users, so that knowledge sharing is real;
 *   - `recfound build-data`: the same format built from the public raw sources.
 */
#include "recfound.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ task table */

/* Ids and names as the code's task table; sizes as the paper's Table 1. */
const TaskInfo TASKS[N_TASKS] = {
    {0, "Emb_user", "U2I", KIND_EMB, "MRR@20", {86000, 3500, 4800}},
    {1, "Emb_query", "Q2I", KIND_EMB, "MRR@20", {40000, 2600, 4000}},
    {2, "Emb_item", "I2I", KIND_EMB, "NDCG@20", {83680, 3340, 4800}},
    {3, "Query_Rewriting", "QR", KIND_GEN, "BERTScore-F1", {3260, 500, 124}},
    {4, "Sequential_Recommendation", "SR", KIND_GEN, "Recall@1", {20000, 500, 1334}},
    {5, "Product_Relation_Prediction", "PRP", KIND_GEN, "macro-F1", {20000, 500, 1333}},
    {6, "Sentiment_Analysis", "SA", KIND_GEN, "macro-F1", {20000, 500, 1334}},
    {7, "Attribute_Value_Extraction", "AVE", KIND_GEN, "micro-F1", {20000, 500, 1334}},
    {8, "Product_Matching", "PM", KIND_GEN, "binary-F1", {4000, 500, 168}},
    {9, "user_profile", "UP", KIND_GEN, "BERTScore-F1", {20000, 500, 227}},
    {10, "item_profile", "IP", KIND_GEN, "BERTScore-F1", {15000, 500, 266}},
    {11, "Answerability_Prediction", "AP", KIND_GEN, "binary-F1", {15000, 500, 1334}},
    {12, "Answer_Generation", "AG", KIND_GEN, "BERTScore-F1", {20000, 500, 1332}},
};
const char *const SPLIT_NAMES[N_SPLITS] = {"train", "eval", "test"};
const char *const BAD_NAMES[N_BAD] = {"bad JSON", "missing or mistyped field", "unknown task",
                                      "invalid UTF-8", "empty answer"};

int task_by_name(const char *name) {
    for (int t = 0; t < N_TASKS; t++)
        if (!strcmp(TASKS[t].name, name)) return t;
    return -1;
}

int task_by_short(const char *short_name) {
    for (int t = 0; t < N_TASKS; t++) {
        const char *a = TASKS[t].short_name, *b = short_name;
        while (*a && *b && toupper((unsigned char)*a) == toupper((unsigned char)*b)) a++, b++;
        if (!*a && !*b) return t;
    }
    return -1;
}

/* ------------------------------------------------------------ small helpers */

static char *xstrndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}
static char *xstrdup(const char *s) { return s ? xstrndup(s, strlen(s)) : NULL; }

/* Length of a UTF-8 sequence starting at s[0..n) that is valid (RFC 3629:
 * no overlong forms, no surrogates, at most U+10FFFF), or 0. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if ((size_t)len > n) return 0;
    unsigned cp = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Offset of the first invalid UTF-8 byte of s[0..n), or n when valid. */
static size_t utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq(u + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

/* Bytes of Python whitespace (str.isspace) at s (forward) - ASCII space,
 * \t\n\v\f\r, \x1c-\x1f, and the Unicode spaces U+0085, U+00A0, U+1680,
 * U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 - or 0. */
int py_space_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x1F)) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3;
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3;
    return 0;
}

/* Python's s.strip(): the range [*b, *e) of s without leading and trailing
 * whitespace.  Example: "  yes\n" -> "yes"; "\xc2\xa0no" (NBSP + no) -> "no". */
void py_strip(const char *s, size_t n, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, j = n;
    int k;
    while (i < j && (k = py_space_at(u + i, j - i)) > 0) i += k;
    while (j > i) {
        /* step back to the start of the last character, then test it */
        size_t c = j - 1;
        while (c > i && (u[c] & 0xC0) == 0x80 && j - c < 4) c--;
        k = py_space_at(u + c, j - c);
        if (k > 0 && c + (size_t)k == j) j = c;
        else break;
    }
    *b = i, *e = j;
}

/* s.strip(chars) for an ASCII set of characters. */
static void strip_chars(const char *s, size_t n, const char *chars, size_t *b, size_t *e) {
    size_t i = 0, j = n;
    while (i < j && strchr(chars, s[i])) i++;
    while (j > i && strchr(chars, s[j - 1])) j--;
    *b = i, *e = j;
}

/* ------------------------------------------------------------ records */

static void passage_free(Passage *p) {
    free(p->instr);
    for (int i = 0; i < p->n_texts; i++) free(p->texts[i]);
    free(p->texts);
    memset(p, 0, sizeof *p);
}

void record_free(Record *r) {
    passage_free(&r->query);
    for (int i = 0; i < r->n_pos; i++) passage_free(&r->pos[i]);
    for (int i = 0; i < r->n_neg; i++) passage_free(&r->neg[i]);
    free(r->pos);
    free(r->neg);
    for (int i = 0; i < r->n_turns; i++) free(r->turns[i]);
    free(r->turns);
    free(r->id);
    free(r->source);
    memset(r, 0, sizeof *r);
}

static int passage_copy(Passage *d, const Passage *s) {
    *d = *s;
    d->instr = xstrdup(s->instr);
    d->texts = calloc(s->n_texts ? s->n_texts : 1, sizeof *d->texts);
    if (!d->instr || !d->texts) return -1;
    for (int i = 0; i < s->n_texts; i++)
        if (!(d->texts[i] = xstrdup(s->texts[i]))) return -1;
    return 0;
}

int record_copy(Record *d, const Record *s) {
    memset(d, 0, sizeof *d);
    d->task = s->task, d->kind = s->kind, d->line = s->line, d->id_is_number = s->id_is_number;
    int bad = 0;
    if (s->kind == KIND_EMB) {
        d->pos = calloc(s->n_pos ? s->n_pos : 1, sizeof *d->pos);
        d->neg = calloc(s->n_neg ? s->n_neg : 1, sizeof *d->neg);
        if (!d->pos || !d->neg || passage_copy(&d->query, &s->query)) bad = 1;
        for (int i = 0; !bad && i < s->n_pos; i++, d->n_pos++) bad = passage_copy(&d->pos[i], &s->pos[i]);
        for (int i = 0; !bad && i < s->n_neg; i++, d->n_neg++) bad = passage_copy(&d->neg[i], &s->neg[i]);
    } else {
        d->turns = calloc(s->n_turns ? s->n_turns : 1, sizeof *d->turns);
        if (!d->turns) bad = 1;
        for (int i = 0; !bad && i < s->n_turns; i++, d->n_turns++) bad = !(d->turns[i] = xstrdup(s->turns[i]));
    }
    if (!bad && s->id && !(d->id = xstrdup(s->id))) bad = 1;
    if (!bad && s->source && !(d->source = xstrdup(s->source))) bad = 1;
    if (bad) {
        record_free(d);
        return rf_error("record_copy: out of memory");
    }
    return 0;
}

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static int passage_equal(const Passage *a, const Passage *b) {
    if (!str_eq(a->instr, b->instr) || a->n_texts != b->n_texts || a->is_list != b->is_list ||
        a->is_string != b->is_string) return 0;
    for (int i = 0; i < a->n_texts; i++)
        if (!str_eq(a->texts[i], b->texts[i])) return 0;
    return 1;
}

int record_equal(const Record *a, const Record *b) {
    if (a->task != b->task || a->kind != b->kind || !str_eq(a->id, b->id) ||
        a->id_is_number != b->id_is_number || !str_eq(a->source, b->source)) return 0;
    if (a->kind == KIND_EMB) {
        if (!passage_equal(&a->query, &b->query) || a->n_pos != b->n_pos || a->n_neg != b->n_neg) return 0;
        for (int i = 0; i < a->n_pos; i++)
            if (!passage_equal(&a->pos[i], &b->pos[i])) return 0;
        for (int i = 0; i < a->n_neg; i++)
            if (!passage_equal(&a->neg[i], &b->neg[i])) return 0;
        return 1;
    }
    if (a->n_turns != b->n_turns) return 0;
    for (int i = 0; i < a->n_turns; i++)
        if (!str_eq(a->turns[i], b->turns[i])) return 0;
    return 1;
}

/* ------------------------------------------------------------ writing */

static void put_str(RfBuf *b, const char *s) { json_write_string(b, s, strlen(s)); }

static void passage_to_json(RfBuf *b, const Passage *p) {
    if (p->is_string) {
        put_str(b, p->n_texts ? p->texts[0] : "");
        return;
    }
    buf_append(b, "[", 1);
    put_str(b, p->instr ? p->instr : "");
    buf_append(b, ", ", 2);
    if (p->is_list) {
        buf_append(b, "[", 1);
        for (int i = 0; i < p->n_texts; i++) {
            if (i) buf_append(b, ", ", 2);
            put_str(b, p->texts[i]);
        }
        buf_append(b, "]", 1);
    } else {
        put_str(b, p->n_texts ? p->texts[0] : "");
    }
    buf_append(b, "]", 1);
}

static void passages_to_json(RfBuf *b, const Passage *p, int n) {
    buf_append(b, "[", 1);
    for (int i = 0; i < n; i++) {
        if (i) buf_append(b, ", ", 2);
        passage_to_json(b, &p[i]);
    }
    buf_append(b, "]", 1);
}

/* Keys in the order of the published files, separators as Python's json.dumps:
 * {"query": [instr, text], "pos": [...], "neg": [...], "task": ..., "id": ..., "source": ...}
 * {"text": [prompt, answer], "task": ..., "id": ..., "source": ...} */
void record_to_json(RfBuf *b, const Record *r) {
    if (r->kind == KIND_EMB) {
        buf_append(b, "{\"query\": ", 10);
        passage_to_json(b, &r->query);
        buf_append(b, ", \"pos\": ", 9);
        passages_to_json(b, r->pos, r->n_pos);
        buf_append(b, ", \"neg\": ", 9);
        passages_to_json(b, r->neg, r->n_neg);
    } else {
        buf_append(b, "{\"text\": [", 10);
        for (int i = 0; i < r->n_turns; i++) {
            if (i) buf_append(b, ", ", 2);
            put_str(b, r->turns[i]);
        }
        buf_append(b, "]", 1);
    }
    buf_append(b, ", \"task\": ", 10);
    put_str(b, TASKS[r->task].name);
    if (r->id) {
        buf_append(b, ", \"id\": ", 8);
        if (r->id_is_number) buf_append(b, r->id, strlen(r->id));
        else put_str(b, r->id);
    }
    if (r->source) {
        buf_append(b, ", \"source\": ", 12);
        put_str(b, r->source);
    }
    buf_append(b, "}", 1);
}

int data_writer_open(DataWriter *w, const char *path, int is_array) {
    memset(w, 0, sizeof *w);
    size_t n = strlen(path) + 32;
    w->path = xstrdup(path);
    w->tmp = malloc(n);
    if (!w->path || !w->tmp) {
        free(w->path);
        free(w->tmp);
        memset(w, 0, sizeof *w);
        return rf_error("%s: out of memory", path);
    }
    snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) {
        int e = errno;
        free(w->path);
        free(w->tmp);
        memset(w, 0, sizeof *w);
        return rf_error("%s: cannot create: %s", path, strerror(e));
    }
    w->is_array = is_array;
    if (is_array) fputs("[", w->fp);
    return 0;
}

int data_writer_put(DataWriter *w, const Record *r) {
    RfBuf b = {0};
    if (w->is_array) buf_append(&b, w->n ? ",\n" : "\n", w->n ? 2 : 1);
    record_to_json(&b, r);
    if (!w->is_array) buf_append(&b, "\n", 1);
    size_t ok = fwrite(b.data, 1, b.len, w->fp);
    int fail = ok != b.len;
    buf_free(&b);
    if (fail) return rf_error("%s: write failed: %s", w->path, strerror(errno));
    w->n++;
    return 0;
}

void data_writer_abort(DataWriter *w) {
    if (w->fp) fclose(w->fp);
    if (w->tmp) remove(w->tmp);
    free(w->path);
    free(w->tmp);
    memset(w, 0, sizeof *w);
}

int data_writer_close(DataWriter *w) {
    if (w->is_array) fputs(w->n ? "\n]\n" : "]\n", w->fp);
    int fail = fflush(w->fp) != 0 || fsync(fileno(w->fp)) != 0;
    fail |= fclose(w->fp) != 0;
    w->fp = NULL;
    if (fail || rename(w->tmp, w->path) != 0) {
        int e = errno;
        char *p = xstrdup(w->path);
        data_writer_abort(w);
        int rc = rf_error("%s: cannot write: %s", p ? p : "?", strerror(e));
        free(p);
        return rc;
    }
    free(w->path);
    free(w->tmp);
    memset(w, 0, sizeof *w);
    return 0;
}

/* ------------------------------------------------------------ parsing */

/* A JSON string as a fresh C string; NULL when v is not a string or holds \0. */
static char *json_cstr(const Json *v) {
    if (!v || v->type != JSON_STRING || strlen(v->string) != v->len) return NULL;
    return xstrndup(v->string, v->len);
}

/* [instruction, text] / [instruction, [text, ...]] / "text". */
static int parse_passage(Passage *p, const Json *v, int allow_list) {
    memset(p, 0, sizeof *p);
    if (v->type == JSON_STRING) {
        p->is_string = 1;
        p->instr = xstrdup("");
        p->texts = calloc(1, sizeof *p->texts);
        if (!p->instr || !p->texts || !(p->texts[0] = json_cstr(v))) return -1;
        p->n_texts = 1;
        return 0;
    }
    if (v->type != JSON_ARRAY || v->count != 2) return -1;
    if (!(p->instr = json_cstr(&v->items[0]))) return -1;
    const Json *t = &v->items[1];
    if (t->type == JSON_STRING) {
        p->texts = calloc(1, sizeof *p->texts);
        if (!p->texts || !(p->texts[0] = json_cstr(t))) return -1;
        p->n_texts = 1;
        return 0;
    }
    if (!allow_list || t->type != JSON_ARRAY || t->count == 0) return -1;
    p->is_list = 1;
    p->texts = calloc(t->count, sizeof *p->texts);
    if (!p->texts) return -1;
    for (size_t i = 0; i < t->count; i++, p->n_texts++)
        if (!(p->texts[i] = json_cstr(&t->items[i]))) return -1;
    return 0;
}

static int parse_passages(Passage **out, int *n, const Json *v, int allow_list, int min_count) {
    if (!v || v->type != JSON_ARRAY || v->count < (size_t)min_count) return -1;
    *out = calloc(v->count ? v->count : 1, sizeof **out);
    if (!*out) return -1;
    for (size_t i = 0; i < v->count; i++) {
        (*n)++;
        if (parse_passage(&(*out)[i], &v->items[i], allow_list)) return -1;
    }
    return 0;
}

#define BAD(kind, ...) (*bad = (kind), record_free(r), rf_error(__VA_ARGS__))

/* Check and convert one parsed JSON record (fields as Record in recfound.h). */
static int record_from_json(Record *r, const Json *v, const char *where, int *bad) {
    memset(r, 0, sizeof *r);
    if (v->type != JSON_OBJECT) return BAD(BAD_FIELD, "%s: a record must be a JSON object", where);
    const Json *task = json_get(v, "task");
    if (!task) return BAD(BAD_FIELD, "%s: missing field \"task\"", where);
    if (task->type != JSON_STRING) return BAD(BAD_FIELD, "%s: field \"task\" is not a string", where);
    r->task = task_by_name(task->string);
    if (r->task < 0) return BAD(BAD_TASK, "%s: unknown task \"%.60s\"", where, task->string);
    r->kind = TASKS[r->task].kind;
    if (r->kind == KIND_EMB) {
        const Json *q = json_get(v, "query"), *pos = json_get(v, "pos"), *neg = json_get(v, "neg");
        if (!q) return BAD(BAD_FIELD, "%s: missing field \"query\" (task %s)", where, task->string);
        if (parse_passage(&r->query, q, 0))
            return BAD(BAD_FIELD, "%s: field \"query\" is not [instruction, text] or a string", where);
        if (!pos) return BAD(BAD_FIELD, "%s: missing field \"pos\"", where);
        if (parse_passages(&r->pos, &r->n_pos, pos, 1, 1))
            return BAD(BAD_FIELD, "%s: field \"pos\" is not a non-empty list of [instruction, text]", where);
        if (!neg) return BAD(BAD_FIELD, "%s: missing field \"neg\"", where);
        if (parse_passages(&r->neg, &r->n_neg, neg, 1, 0))
            return BAD(BAD_FIELD, "%s: field \"neg\" is not a list of [instruction, text]", where);
    } else {
        const Json *t = json_get(v, "text");
        if (!t) return BAD(BAD_FIELD, "%s: missing field \"text\" (task %s)", where, task->string);
        if (t->type != JSON_ARRAY || t->count < 2)
            return BAD(BAD_FIELD, "%s: field \"text\" is not a list [prompt, answer, ...]", where);
        r->turns = calloc(t->count, sizeof *r->turns);
        if (!r->turns) return BAD(BAD_FIELD, "%s: out of memory", where);
        for (size_t i = 0; i < t->count; i++, r->n_turns++)
            if (!(r->turns[i] = json_cstr(&t->items[i])))
                return BAD(BAD_FIELD, "%s: text[%zu] is not a string", where, i);
        size_t b, e;
        py_strip(r->turns[0], strlen(r->turns[0]), &b, &e);
        if (b == e) return BAD(BAD_EMPTY, "%s: empty prompt text[0]", where);
        py_strip(r->turns[1], strlen(r->turns[1]), &b, &e);
        if (b == e) return BAD(BAD_EMPTY, "%s: empty answer text[1]", where);
    }
    const Json *id = json_get(v, "id");
    if (id && id->type == JSON_STRING) {
        if (!(r->id = json_cstr(id))) return BAD(BAD_FIELD, "%s: field \"id\" holds \\u0000", where);
    } else if (id && id->type == JSON_NUMBER) {
        char tmp[40];
        if (!isfinite(id->number))  /* 1e999: its text "inf" would not read back as JSON */
            return BAD(BAD_FIELD, "%s: field \"id\" is a number out of range", where);
        if (id->number == floor(id->number) && fabs(id->number) < 1e15) snprintf(tmp, sizeof tmp, "%.0f", id->number);
        else snprintf(tmp, sizeof tmp, "%.17g", id->number);
        r->id = xstrdup(tmp);
        r->id_is_number = 1;
    } else if (id && id->type != JSON_NULL) {
        return BAD(BAD_FIELD, "%s: field \"id\" is not a string or number", where);
    }
    const Json *src = json_get(v, "source");
    if (src && src->type != JSON_NULL && !(r->source = json_cstr(src)))
        return BAD(BAD_FIELD, "%s: field \"source\" is not a string", where);
    return 0;
}

int record_parse(Record *r, const char *text, size_t len, const char *where, int *bad) {
    memset(r, 0, sizeof *r);
    size_t off = utf8_check(text, len);
    if (off < len) {
        *bad = BAD_UTF8;
        return rf_error("%s: invalid UTF-8 byte 0x%02X at column %zu", where, (unsigned char)text[off], off + 1);
    }
    Json v;
    if (json_parse(&v, text, len, "json")) {
        char msg[256];
        const char *e = rf_last_error();
        if (!strncmp(e, "json: ", 6)) e += 6;
        snprintf(msg, sizeof msg, "%s", e);
        *bad = BAD_JSON;
        return rf_error("%s: bad JSON (%s)", where, msg);
    }
    int rc = record_from_json(r, &v, where, bad);
    json_free(&v);
    return rc;
}

/* ------------------------------------------------------------ reading */

int data_open(DataReader *rd, const char *path, int skip_bad) {
    memset(rd, 0, sizeof *rd);
    rd->skip_bad = skip_bad;
    rd->path = xstrdup(path);
    rd->fp = fopen(path, "rb");
    if (!rd->fp) {
        int e = errno;
        free(rd->path);
        rd->path = NULL;
        return rf_error("%s: cannot open: %s", path, strerror(e));
    }
    /* A file whose first non-blank byte is '[' is one JSON array of records
     * (item_embedding_test.json); anything else is JSON lines. */
    int c;
    while ((c = fgetc(rd->fp)) != EOF && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) {}
    if (c != '[') {
        rewind(rd->fp);
        return 0;
    }
    fclose(rd->fp);
    rd->fp = NULL;
    rd->is_array = 1;
    char *text;
    size_t len;
    if (rf_read_file(path, &text, &len)) return -1;
    size_t off = utf8_check(text, len);
    if (off < len) {
        long line = 1;
        for (size_t i = 0; i < off; i++) line += text[i] == '\n';
        unsigned byte = (unsigned char)text[off];
        free(text);
        rd->is_array = 0;
        data_close(rd);
        return rf_error("%s: line %ld: invalid UTF-8 byte 0x%02X", path, line, byte);
    }
    int rc = json_parse(&rd->arr, text, len, path);
    free(text);
    if (rc) {
        rd->is_array = 0;
        data_close(rd);
        return -1;
    }
    return 0;
}

int data_next(DataReader *rd, Record *r) {
    char where[600];
    int bad = 0;
    memset(r, 0, sizeof *r);
    for (;;) {
        if (rd->is_array) {
            if (rd->arr_i >= rd->arr.count) return 0;
            size_t i = rd->arr_i++;
            snprintf(where, sizeof where, "%s: element %zu", rd->path, i + 1);
            if (record_from_json(r, &rd->arr.items[i], where, &bad) == 0) {
                r->line = (long)i + 1;
                return 1;
            }
        } else {
            ssize_t n = getline(&rd->line, &rd->cap, rd->fp);
            if (n < 0) {
                if (ferror(rd->fp)) return rf_error("%s: line %ld: read error", rd->path, rd->lineno + 1);
                return 0;
            }
            rd->lineno++;
            while (n > 0 && (rd->line[n - 1] == '\n' || rd->line[n - 1] == '\r')) rd->line[--n] = 0;
            size_t k = 0;
            while (k < (size_t)n && (rd->line[k] == ' ' || rd->line[k] == '\t')) k++;
            if (k == (size_t)n) continue; /* blank line */
            snprintf(where, sizeof where, "%s: line %ld", rd->path, rd->lineno);
            if (record_parse(r, rd->line, (size_t)n, where, &bad) == 0) {
                r->line = rd->lineno;
                return 1;
            }
        }
        if (!rd->skip_bad) return -1;
        rd->n_bad[bad]++;
    }
}

void data_close(DataReader *rd) {
    if (rd->fp) fclose(rd->fp);
    if (rd->is_array) json_free(&rd->arr);
    free(rd->line);
    free(rd->path);
    memset(rd, 0, sizeof *rd);
}

void data_report_skipped(const DataReader *rd, FILE *out) {
    long total = 0;
    for (int k = 0; k < N_BAD; k++) total += rd->n_bad[k];
    if (!total) return;
    fprintf(out, "warning: skipped %ld bad record%s in %s:", total, total == 1 ? "" : "s",
            rd->path ? rd->path : "?");
    const char *sep = " ";
    for (int k = 0; k < N_BAD; k++)
        if (rd->n_bad[k]) fprintf(out, "%s%ld %s", sep, rd->n_bad[k], BAD_NAMES[k]), sep = ", ";
    fprintf(out, "\n");
}

/* ------------------------------------------------------------ pools */

int pool_push(Pool *p, const Record *r) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        Record *nr = realloc(p->recs, cap * sizeof *nr);
        if (!nr) return rf_error("pool: out of memory");
        p->recs = nr, p->cap = cap;
    }
    p->recs[p->n++] = *r;
    return 0;
}

int dataset_load_file(Dataset *d, const char *path, int skip_bad) {
    DataReader rd;
    if (data_open(&rd, path, skip_bad)) return -1;
    Record r;
    int rc;
    while ((rc = data_next(&rd, &r)) == 1) {
        if (pool_push(&d->pool[r.task], &r)) {
            record_free(&r);
            rc = -1;
            break;
        }
    }
    for (int k = 0; k < N_BAD; k++) d->n_bad[k] += rd.n_bad[k];
    data_close(&rd);
    return rc < 0 ? -1 : 0;
}

int dataset_load_split(Dataset *d, const char *dir, const char *split, int skip_bad) {
    char path[4096];
    snprintf(path, sizeof path, "%s/Embedding_dataset_%s.jsonl", dir, split);
    if (dataset_load_file(d, path, skip_bad)) return -1;
    snprintf(path, sizeof path, "%s/Generative_dataset_%s.jsonl", dir, split);
    return dataset_load_file(d, path, skip_bad);
}

void dataset_free(Dataset *d) {
    for (int t = 0; t < N_TASKS; t++) {
        for (size_t i = 0; i < d->pool[t].n; i++) record_free(&d->pool[t].recs[i]);
        free(d->pool[t].recs);
    }
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------ prompt formats */

/* Generative training text (official-code.md §3), split where the loss starts:
 *   prompt = "<s><|user|>\n" + user + "\n<|assistant|>\n"
 *   answer = answer_text.strip() + "</s>"
 * so the full text is prompt + answer and only the answer part (with "</s>")
 * carries loss.  Example: user "Is it blue?", answer " yes\n" ->
 *   prompt "<s><|user|>\nIs it blue?\n<|assistant|>\n", answer "yes</s>". */
void format_gen(RfBuf *prompt, RfBuf *answer, const char *user, const char *answer_text) {
    size_t b, e;
    buf_printf(prompt, "<s><|user|>\n%s\n<|assistant|>\n", user);
    py_strip(answer_text, strlen(answer_text), &b, &e);
    buf_append(answer, answer_text + b, e - b);
    buf_append(answer, "</s>", 4);
}

/* Embedding text, split where pooling starts (the prefix is attended to but
 * excluded from the mean).
 * EMB_FMT_TRAIN (official-code.md §3): the instruction is stripped of
 * "\t\n :" at both ends, then
 *   prefix = "<s><|user|>\n" + instruction + "\n<|embed|>\n", or "<s><|embed|>\n"
 *   when the stripped instruction is empty;  text = passage.
 *   Example: ("Represent this user query to find a matching item: ", "red mug")
 *   -> prefix "<s><|user|>\nRepresent this user query to find a matching item\n<|embed|>\n",
 *      text "red mug".
 * EMB_FMT_CODE_TEST, the authors' test-time query format: no markers, the
 *   unstripped instruction and the passage joined by "\n" form the text and
 *   are all pooled; the prefix is only "<s>".
 *   Example: ("Find the item:", "red mug") -> prefix "<s>", text "Find the item:\nred mug". */
void format_emb(RfBuf *prefix, RfBuf *text, const char *instr, const char *passage, EmbFormat fmt) {
    if (fmt == EMB_FMT_CODE_TEST) {
        buf_append(prefix, "<s>", 3);
        buf_printf(text, "%s\n%s", instr ? instr : "", passage);
        return;
    }
    size_t b = 0, e = 0;
    if (instr) strip_chars(instr, strlen(instr), "\t\n :", &b, &e);
    if (e > b) {
        buf_append(prefix, "<s><|user|>\n", 12);
        buf_append(prefix, instr + b, e - b);
        buf_append(prefix, "\n<|embed|>\n", 11);
    } else {
        buf_append(prefix, "<s><|embed|>\n", 13);
    }
    buf_append(text, passage, strlen(passage));
}

/* ------------------------------------------------------------ shuffling */

/* Uniform integer in [0, n) by rejection (no modulo bias). */
uint64_t rng_below(Rng *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

/* Fisher-Yates (Durstenfeld): for i = n-1 .. 1 swap idx[i] with idx[j],
 * j uniform in [0, i].  Example: n = 3 draws j for i = 2 then i = 1. */
void shuffle_idx(size_t *idx, size_t n, Rng *r) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(r, i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

int pool_iter_init(PoolIter *it, size_t n, uint64_t seed) {
    memset(it, 0, sizeof *it);
    it->order = malloc((n ? n : 1) * sizeof *it->order);
    if (!it->order) return rf_error("pool iterator: out of memory for %zu items", n);
    it->n = n;
    rng_seed(&it->rng, seed);
    for (size_t i = 0; i < n; i++) it->order[i] = i;
    shuffle_idx(it->order, n, &it->rng);
    return 0;
}

/* Next index of a pool of n records: every index once per epoch, in a fresh
 * order each epoch (the order continues from the previous shuffle). */
size_t pool_iter_next(PoolIter *it) {
    if (it->n == 0) return 0;
    if (it->pos == it->n) {
        shuffle_idx(it->order, it->n, &it->rng);
        it->pos = 0;
        it->epoch++;
    }
    return it->order[it->pos++];
}

void pool_iter_free(PoolIter *it) {
    free(it->order);
    memset(it, 0, sizeof *it);
}

/* ================================================================ synth */
/*
 * `recfound synth`: every task of §3 drawn from ONE latent world, so that
 * what one task teaches (a brand's quality, a user's taste, which products
 * go together) is what another task asks.
 *
 *   catalogue: 8 categories x 3 pairs of complementary product nouns; each
 *     category has 5 brands with a price tier; a product family is (noun,
 *     brand, material, 2 features) sold in 1-3 colours (the items);
 *     every item has a latent quality band 0..4 (very poor .. excellent).
 *   users: a primary and a secondary category, a favourite brand in each,
 *     a favourite colour, gender / age bracket / occupation; purchase
 *     histories follow those tastes (and buy complements after a purchase).
 *
 *   U2I / SR : the next purchase is the favourite brand in the primary
 *              category (SR: the only such option among 20, letters A-T).
 *   Q2I / QR : queries from item attributes; QR repairs misspellings or
 *              resolves "it" in a short dialogue.
 *   I2I      : colour variants of the same family are similar.
 *   PRP      : 5 relations decided by (category, noun, brand), letters A-E.
 *   PM       : one item on two "platforms"; negatives are the same family in
 *              another colour or the same noun of another brand.
 *   SA       : review wording follows the star rating, and the rating is
 *              the item's quality band (so IP's quality word is learnable).
 *   AVE      : material / colour with the field(s) they appear in, as JSON.
 *   AP / AG  : questions about material, features and price against review
 *              documents that do (yes) or do not (no) contain the fact.
 *   UP / IP  : profiles written from the latent truth.
 */

#define N_CAT 8
#define N_BRAND 5
#define N_COLOUR 10
#define N_FEAT 12
#define N_NOUN 6 /* three complementary pairs: (0,1) (2,3) (4,5) */

typedef struct {
    const char *name, *sub;
    const char *noun[N_NOUN];
    const char *material[4];
    const char *use;
} SynCat;

static const SynCat SYN_CATS[N_CAT] = {
    {"Electronics", "Audio & Accessories",
     {"wireless headphones", "headphone stand", "bluetooth speaker", "speaker mount", "phone charger", "charging cable"},
     {"plastic", "aluminum", "silicone", "rubber"}, "music on the go"},
    {"Home & Kitchen", "Kitchen & Dining",
     {"coffee mug", "coaster set", "frying pan", "silicone spatula", "water bottle", "bottle brush"},
     {"ceramic", "stainless steel", "glass", "bamboo"}, "everyday cooking"},
    {"Sports & Outdoors", "Outdoor Recreation",
     {"hiking backpack", "rain cover", "yoga mat", "yoga block", "tennis racket", "tennis ball set"},
     {"nylon", "polyester", "foam", "carbon fiber"}, "weekend trips"},
    {"Toys & Games", "Building Toys",
     {"building block set", "storage bin", "jigsaw puzzle", "puzzle mat", "toy car", "race track"},
     {"wood", "plastic", "cardboard", "metal"}, "family play time"},
    {"Clothing", "Men & Women",
     {"running shoes", "sock pack", "rain jacket", "travel umbrella", "leather belt", "card wallet"},
     {"cotton", "leather", "wool", "polyester"}, "daily wear"},
    {"Office Products", "Office & School Supplies",
     {"spiral notebook", "gel pen set", "desk lamp", "led bulb", "stapler", "staple refill"},
     {"paper", "metal", "plastic", "wood"}, "home office work"},
    {"Pet Supplies", "Dogs",
     {"dog leash", "dog collar", "pet bed", "pet blanket", "food bowl", "feeding mat"},
     {"nylon", "fleece", "stainless steel", "silicone"}, "daily walks"},
    {"Garden & Outdoor", "Gardening",
     {"garden hose", "hose nozzle", "planter pot", "plant saucer", "pruning shears", "garden gloves"},
     {"rubber", "ceramic", "steel", "cotton"}, "backyard gardening"},
};
static const char *const SYN_COLOUR[N_COLOUR] = {"black", "white", "red", "blue", "green",
                                                 "grey", "pink", "yellow", "navy", "brown"};
static const char *const SYN_FEAT[N_FEAT] = {"waterproof", "lightweight", "foldable", "durable",
                                             "eco-friendly", "non-slip", "rechargeable", "portable",
                                             "heavy-duty", "compact", "washable", "adjustable"};
static const char *const SYN_QUALITY[5] = {"very poor", "poor", "average", "good", "excellent"};
static const char *const SYN_AGE[7] = {"under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56 or older"};
static const char *const SYN_JOB[10] = {"student", "engineer", "teacher", "nurse", "artist",
                                        "programmer", "retired", "self-employed", "service staff", "writer"};

typedef struct {
    int cat, noun, brand, material, colour, feat[2], quality, family;
    int mat_in_title, mat_in_desc, col_in_title, col_in_desc;
    double price;
    char *title, *desc, *feature;
} SynItem;

typedef struct {
    int cat[2], brand[2], colour, gender, age, job;
    int *hist, n_hist;      /* item ids, oldest first */
    int next;               /* the held-out next purchase */
} SynUser;

typedef struct {
    char brand_name[N_CAT][N_BRAND][16];
    double brand_tier[N_CAT][N_BRAND];  /* price multiplier: < 0.9 budget, > 1.25 premium */
    double noun_price[N_CAT][N_NOUN];
    SynItem *items;
    int n_items;
    int *by_cb[N_CAT][N_BRAND], n_cb[N_CAT][N_BRAND];    /* items of (category, brand) */
    int *by_cn[N_CAT][N_NOUN], n_cn[N_CAT][N_NOUN];      /* items of (category, noun) */
    int *by_q[5], n_q[5];                                /* items of a quality band */
    SynUser *users;
    int n_users;
} SynWorld;

static int syn_pick(Rng *r, int n) { return (int)rng_below(r, (uint64_t)n); }

/* Users are split 80/10/10 (train/eval/test) so that no user's history is
 * both trained on and tested. */
static int syn_user(const SynWorld *w, Rng *r, int split) {
    int u;
    do u = syn_pick(r, w->n_users);
    while ((split == SPLIT_TEST) != (u % 10 == 0) || (split == SPLIT_EVAL) != (u % 10 == 1));
    return u;
}

static char *buf_take(RfBuf *b) {
    char *s = b->data ? b->data : xstrdup("");
    memset(b, 0, sizeof *b);
    return s;
}

static void cap_first(char *s) {
    if (s && *s >= 'a' && *s <= 'z') *s = (char)(*s - 'a' + 'A');
}

static const char *tier_word(double t) { return t < 0.9 ? "budget" : t > 1.25 ? "premium" : "mid-range"; }

static int push_idx(int **a, int *n, int v) {
    int *p = realloc(*a, (size_t)(*n + 1) * sizeof *p);
    if (!p) return -1;
    p[(*n)++] = v;
    *a = p;
    return 0;
}

static void syn_world_free(SynWorld *w) {
    for (int i = 0; i < w->n_items; i++) {
        free(w->items[i].title);
        free(w->items[i].desc);
        free(w->items[i].feature);
    }
    free(w->items);
    for (int c = 0; c < N_CAT; c++) {
        for (int b = 0; b < N_BRAND; b++) free(w->by_cb[c][b]);
        for (int k = 0; k < N_NOUN; k++) free(w->by_cn[c][k]);
    }
    for (int q = 0; q < 5; q++) free(w->by_q[q]);
    for (int u = 0; u < w->n_users; u++) free(w->users[u].hist);
    free(w->users);
    memset(w, 0, sizeof *w);
}

/* Title, description and feature text of an item, built from its attributes;
 * material and colour appear in a random subset of the three fields (AVE). */
static void syn_item_text(SynWorld *w, SynItem *it, Rng *r) {
    const SynCat *c = &SYN_CATS[it->cat];
    RfBuf b = {0};
    buf_printf(&b, "%s %s", w->brand_name[it->cat][it->brand], SYN_FEAT[it->feat[0]]);
    cap_first(b.data + strlen(w->brand_name[it->cat][it->brand]) + 1);
    if (it->col_in_title) buf_printf(&b, " %c%s", SYN_COLOUR[it->colour][0] - 32, SYN_COLOUR[it->colour] + 1);
    if (it->mat_in_title) buf_printf(&b, " %c%s", c->material[it->material][0] - 32, c->material[it->material] + 1);
    buf_printf(&b, " %s, Model %c%d", c->noun[it->noun], 'A' + it->family % 26, 100 + it->family % 900);
    it->title = buf_take(&b);
    buf_printf(&b, "This %s from %s is designed for %s.", c->noun[it->noun], w->brand_name[it->cat][it->brand], c->use);
    if (it->mat_in_desc) buf_printf(&b, " It is made of %s", c->material[it->material]);
    if (it->mat_in_desc && it->col_in_desc) buf_printf(&b, " and comes in %s.", SYN_COLOUR[it->colour]);
    else if (it->mat_in_desc) buf_printf(&b, ".");
    else if (it->col_in_desc) buf_printf(&b, " It comes in %s.", SYN_COLOUR[it->colour]);
    buf_printf(&b, " A %s choice for anyone who wants a %s %s.", syn_pick(r, 2) ? "great" : "solid",
               SYN_FEAT[it->feat[1]], c->noun[it->noun]);
    it->desc = buf_take(&b);
    buf_printf(&b, "%c%s design; %s build", SYN_FEAT[it->feat[0]][0] - 32, SYN_FEAT[it->feat[0]] + 1, SYN_FEAT[it->feat[1]]);
    if (!it->mat_in_title && !it->mat_in_desc) buf_printf(&b, "; %s construction", c->material[it->material]);
    buf_printf(&b, "; easy to use");
    it->feature = buf_take(&b);
}

static int syn_world_build(SynWorld *w, double scale, uint64_t seed) {
    memset(w, 0, sizeof *w);
    Rng r;
    rng_seed(&r, seed * 0x9E3779B97F4A7C15ULL + 1);
    static const char *const s1[16] = {"Ver", "Kal", "Zen", "Mor", "Tal", "Bri", "Lum", "Nov",
                                       "Quin", "Rex", "Sol", "Tor", "Vix", "Wel", "Yar", "Ost"};
    static const char *const s2[10] = {"ora", "ex", "ix", "ano", "ium", "ent", "ly", "ova", "ico", "ar"};
    for (int c = 0; c < N_CAT; c++)
        for (int b = 0; b < N_BRAND; b++) {
            for (;;) { /* unique names across the world */
                snprintf(w->brand_name[c][b], 16, "%s%s", s1[syn_pick(&r, 16)], s2[syn_pick(&r, 10)]);
                int dup = 0;
                for (int c2 = 0; c2 <= c; c2++)
                    for (int b2 = 0; b2 < (c2 == c ? b : N_BRAND); b2++)
                        dup |= !strcmp(w->brand_name[c][b], w->brand_name[c2][b2]);
                if (!dup) break;
            }
            w->brand_tier[c][b] = 0.6 + 0.2 * b + 0.1 * rng_uniform(&r); /* brand 0 budget .. 4 premium */
        }
    for (int c = 0; c < N_CAT; c++)
        for (int k = 0; k < N_NOUN; k++) w->noun_price[c][k] = 8 + 60 * rng_uniform(&r);

    int want = 400 + (int)(40000 * scale);
    w->items = calloc((size_t)want + 3, sizeof *w->items);
    if (!w->items) return rf_error("synth: out of memory for %d items", want);
    for (int fam = 0; w->n_items < want; fam++) {
        int c = syn_pick(&r, N_CAT), k = syn_pick(&r, N_NOUN), b = syn_pick(&r, N_BRAND);
        int m = syn_pick(&r, 4), f0 = syn_pick(&r, N_FEAT), f1 = (f0 + 1 + syn_pick(&r, N_FEAT - 1)) % N_FEAT;
        int nv = 1 + syn_pick(&r, 3), col0 = syn_pick(&r, N_COLOUR);
        int q = syn_pick(&r, 5); /* the family's quality band */
        for (int v = 0; v < nv; v++) {
            SynItem *it = &w->items[w->n_items];
            it->cat = c, it->noun = k, it->brand = b, it->material = m, it->feat[0] = f0, it->feat[1] = f1;
            it->family = fam, it->quality = q;
            it->colour = (col0 + 3 * v) % N_COLOUR;
            it->price = floor(w->noun_price[c][k] * w->brand_tier[c][b] * (0.9 + 0.2 * rng_uniform(&r))) + 0.99;
            int mp = 1 + syn_pick(&r, 3), cp = 1 + syn_pick(&r, 3); /* bit 1: title, bit 2: description */
            it->mat_in_title = mp & 1, it->mat_in_desc = (mp >> 1) & 1;
            it->col_in_title = cp & 1, it->col_in_desc = (cp >> 1) & 1;
            if (nv > 1) it->col_in_title = 1; /* variants differ visibly by colour */
            syn_item_text(w, it, &r);
            if (!it->title || !it->desc || !it->feature) return rf_error("synth: out of memory");
            int id = w->n_items++;
            if (push_idx(&w->by_cb[c][b], &w->n_cb[c][b], id) || push_idx(&w->by_cn[c][k], &w->n_cn[c][k], id) ||
                push_idx(&w->by_q[q], &w->n_q[q], id))
                return rf_error("synth: out of memory");
        }
    }
    w->n_users = 300 + (int)(30000 * scale);
    w->users = calloc((size_t)w->n_users, sizeof *w->users);
    if (!w->users) return rf_error("synth: out of memory for %d users", w->n_users);
    for (int u = 0; u < w->n_users; u++) {
        SynUser *us = &w->users[u];
        us->cat[0] = syn_pick(&r, N_CAT);
        us->cat[1] = (us->cat[0] + 1 + syn_pick(&r, N_CAT - 1)) % N_CAT;
        for (int j = 0; j < 2; j++) {
            int c = us->cat[j];
            do us->brand[j] = syn_pick(&r, N_BRAND);
            while (w->n_cb[c][us->brand[j]] == 0);
        }
        us->colour = syn_pick(&r, N_COLOUR);
        us->gender = syn_pick(&r, 2), us->age = syn_pick(&r, 7), us->job = syn_pick(&r, 10);
        us->n_hist = 5 + syn_pick(&r, 6);
        us->hist = malloc((size_t)us->n_hist * sizeof *us->hist);
        if (!us->hist) return rf_error("synth: out of memory");
        for (int h = 0; h < us->n_hist; h++) {
            int prev = h ? us->hist[h - 1] : -1, item;
            float x = rng_uniform(&r);
            if (prev >= 0 && x < 0.25f) { /* a complement of the last purchase */
                const SynItem *p = &w->items[prev];
                int k = p->noun ^ 1;
                item = w->n_cn[p->cat][k] ? w->by_cn[p->cat][k][syn_pick(&r, w->n_cn[p->cat][k])] : prev;
            } else {
                int j = x < 0.75f ? 0 : 1, c = us->cat[j];
                if (rng_uniform(&r) < 0.7f) item = w->by_cb[c][us->brand[j]][syn_pick(&r, w->n_cb[c][us->brand[j]])];
                else item = syn_pick(&r, w->n_items);
            }
            us->hist[h] = item;
        }
        int c = us->cat[0], b = us->brand[0];
        us->next = w->by_cb[c][b][syn_pick(&r, w->n_cb[c][b])];
    }
    return 0;
}

/* The instruction paraphrases of Appendix B.2 (several per task). */
static const char *const INS_QR[3] = {
    "Please undertake the task of rephrasing the questions and responses in a given conversation. You will be given a dialogue between two individuals (I will use A: for the first person and B: for the second person). For each query/response, an indication will be provided in parentheses at the end showing whether it requires rewriting. If no rewriting is needed, simply return the original content; if it does, use the preceding context to modify the sentence appropriately, making its meaning clearer, such as by specifying pronouns, adding place names or times, etc.",
    "Please perform the task of rephrasing the questions and answers in a given conversation. You will receive a dialogue between two people (denoted as A: for the first person and B: for the second person). For each question/answer, I will indicate at the end in parentheses whether it needs to be rewritten. If no rewriting is necessary, simply return the original content; if rewriting is necessary, use the context to modify the sentence appropriately to make its meaning clearer, such as by specifying pronouns, adding place names, or times, etc.",
    "Please complete a task of rewriting the queries and replies in a given conversation. You will receive a dialogue between two people (I will use A: to denote the first person and B: to denote the second person). For each query/reply, I will indicate in parentheses at the end whether the sentence needs to be rewritten. If rewriting is not required, you just need to return the original content; if rewriting is required, please use the preceding context to modify the sentence appropriately to make its meaning clearer, such as specifying pronouns, adding place names or times, etc."};
static const char *const INS_AVE[3] = {
    "Given the title, description, feature, price, and brand of a product and a set of target attributes, extract the value of each target attribute from the product information. Output the extracted value and the corresponding source (e.g., title or feature) denoting where the value is extracted.",
    "Extract the value of the target attribute from the given product information and output it along with the corresponding source.",
    "Using the product's title, description, features, price, and brand, identify and retrieve the values associated with a specified set of target attributes. Output the extracted values along with their respective sources (e.g., title or feature) indicating where each value was found."};
static const char *const INS_AG[3] = {
    "Given a question and the related document, and generate the answer to the question based on the information provided in the document.",
    "Generate an answer to the question by utilizing the information contained in the document.",
    "Answer the given question using the supporting document."};
static const char *const INS_SR[3] = {
    "Given the products the user has purchased in history, rank the items in the listed options and output the item that the user is most likely to purchase next. Answer from one of the options.",
    "Based on the user's historical purchases, rank the items in options and predict the next product of the user's interest from the provided options.",
    "Rank items in listed options based on the user's purchase history to determine the item that the user is most likely to purchase next. Output the item with the highest likelihood of being the next purchase."};
static const char *const INS_SA[3] = {
    "Given the user's review, identify the user's sentiment from the listed options. Answer using one of the options.",
    "Assess the user's sentiment in the provided review and select the appropriate sentiment option from the list as the answer.",
    "Determine the sentiment expressed by the user in her review from the provided choices, and respond by selecting one of the available options."};
static const char *const INS_AP[3] = {
    "Given a question and the related document, predict if the question is answerable based on the information provided in the document. Output only yes or no.",
    "Given a question and its related document, determine if the question is answerable by analyzing the information in the document. Output yes if the document addresses the question, or no otherwise.",
    "Output yes if the supporting document can answer the given question. Otherwise, output no."};
static const char *const INS_PRP[3] = {
    "Given the title of two products, predict if the two products are similar, if the two products will be purchased or viewed together. Answer only from the options.",
    "Evaluate the titles of Product 1 and Product 2, then choose the option that best describes the relation between the two products.",
    "Predict whether two products are similar, whether two products are likely to be purchased or viewed together based on their titles. Choose your answer from the provided options."};
static const char *const INS_PM[3] = {
    "Given the title, description, manufacturer, and price of two products, identify if they are the same product. Only output yes or no.",
    "Check the details of the two products to see if they refer to the same product. Output only yes or no.",
    "Compare the details of two given products to determine if they are identical. Output yes if they are identical or no otherwise."};
static const char *const INS_U2I[3] = {
    "Represent this sequence of user actions to predict the next product he/she will purchase (User sequence is in reverse chronological order):",
    "Create an embedding of this user sequence to determine the next product they will purchase (User sequence is in reverse chronological order):",
    "Generate a representation of this user sequence to find the next product this user will buy (User sequence is in reverse chronological order):"};
static const char *const INS_U2I_P[2] = {"Represent this product to match a user sequence:",
                                         "Encode this product to fit a user sequence:"};
static const char *const INS_Q2I[3] = {"Represent this user query to find a matching item:",
                                       "Create an embedding of this user query to retrieve a relevant item:",
                                       "Use the representation of the user query to identify a relevant item:"};
static const char *const INS_Q2I_P[2] = {
    "Utilize the product's title to form a representation that corresponds to a user query:",
    "Represent the given product with a title to match a user query:"};
static const char *const INS_I2I[3] = {
    "Create an embedding for the product using its title and categories to help find similar items",
    "Using the product's title and categories, produce an embedding to retrieve items that are alike:",
    "Given the title of a product and its category, please generate an embedding for the product to retrieve similar items"};
static const char *const INS_I2I_P[2] = {
    "Using the attributes and details of an item, create an embedding to help find similar products:",
    "Based on an item's details and attributes, produce an embedding to identify similar products:"};

static const char *const SA_OPTIONS = "A: very positive\nB: positive\nC: neutral\nD: negative\nE: very negative";
static const char *const SA_ANSWER[5] = {"E: very negative", "D: negative", "C: neutral", "B: positive",
                                         "A: very positive"}; /* by star - 1 */
static const char *const PRP_OPTION[5] = {
    "A: Users who buy product 1 may also buy product 2.", "B: Users who view product 1 may also view product 2.",
    "C: The product 1 is similar with the product 2.", "D: Users who view product 1 may also buy product 2.",
    "E: The product 1 and the product 2 are not related."};

/* Appendix B.1's template: system prompt, instruction, input, options, response. */
static char *syn_prompt(const char *instr, const char *input, const char *options) {
    RfBuf b = {0};
    if (input)
        buf_printf(&b, "Below is an instruction that describes a task, paired with an input that provides further "
                       "context. Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n"
                       "### Input:\n%s\n\n",
                   instr, input);
    else
        buf_printf(&b, "Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n### Instruction:\n%s\n\n",
                   instr);
    if (options) buf_printf(&b, "### Options:\n%s\n\n", options);
    buf_printf(&b, "### Response:");
    return buf_take(&b);
}

/* Lines of one output file, shuffled before writing. */
typedef struct { char **line; size_t n, cap; int fail; } Lines;

static void lines_push(Lines *L, char *s) {
    if (!s) { L->fail = 1; return; }
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 1024;
        char **p = realloc(L->line, cap * sizeof *p);
        if (!p) { free(s); L->fail = 1; return; }
        L->line = p, L->cap = cap;
    }
    L->line[L->n++] = s;
}

static void lines_free(Lines *L) {
    for (size_t i = 0; i < L->n; i++) free(L->line[i]);
    free(L->line);
    memset(L, 0, sizeof *L);
}

static void emit_gen(Lines *L, int task, char *prompt, char *answer, const char *source, int split, long i) {
    char id[48], *turns[2] = {prompt, answer};
    snprintf(id, sizeof id, "%s-%s-%ld", TASKS[task].short_name, SPLIT_NAMES[split], i);
    Record r;
    memset(&r, 0, sizeof r);
    r.task = task, r.kind = KIND_GEN, r.turns = turns, r.n_turns = 2, r.id = id, r.source = (char *)source;
    RfBuf b = {0};
    record_to_json(&b, &r);
    lines_push(L, buf_take(&b));
    free(prompt);
    free(answer);
}

static Passage one_passage(const char *instr, char *text) {
    Passage p;
    memset(&p, 0, sizeof p);
    p.instr = (char *)instr;
    p.texts = malloc(sizeof *p.texts);
    if (p.texts) p.texts[0] = text;
    p.n_texts = 1;
    return p;
}

/* Serialise an embedding record whose texts are owned here (freed after). */
static void emit_emb(Lines *L, DataWriter *arr, int task, Passage q, Passage *pos, int npos, Passage *neg, int nneg,
                     const char *source, int split, long i) {
    char id[48];
    snprintf(id, sizeof id, "%s-%s-%ld", TASKS[task].short_name, SPLIT_NAMES[split], i);
    Record r;
    memset(&r, 0, sizeof r);
    r.task = task, r.kind = KIND_EMB, r.query = q, r.pos = pos, r.n_pos = npos, r.neg = neg, r.n_neg = nneg;
    r.id = id, r.source = (char *)source;
    int ok = q.texts != NULL;
    for (int k = 0; k < npos; k++) ok &= pos[k].texts != NULL;
    for (int k = 0; k < nneg; k++) ok &= neg[k].texts != NULL;
    if (!ok) L->fail = 1;
    else if (arr) {
        if (data_writer_put(arr, &r)) L->fail = 1;
    } else {
        RfBuf b = {0};
        record_to_json(&b, &r);
        lines_push(L, buf_take(&b));
    }
    Passage *all[3] = {&q, pos, neg};
    int cnt[3] = {1, npos, nneg};
    for (int g = 0; g < 3; g++)
        for (int k = 0; k < cnt[g]; k++) {
            if (all[g][k].texts)
                for (int t = 0; t < all[g][k].n_texts; t++) free(all[g][k].texts[t]);
            free(all[g][k].texts);
        }
}

static char *item_line(const SynWorld *w, int id) { /* "Title. Category. Sub. Brand." as Appendix B's SR */
    const SynItem *it = &w->items[id];
    RfBuf b = {0};
    buf_printf(&b, "%s. %s. %s. %s.", it->title, SYN_CATS[it->cat].name, SYN_CATS[it->cat].sub,
               w->brand_name[it->cat][it->brand]);
    return buf_take(&b);
}

static char *item_i2i(const SynWorld *w, int id) { /* "title: X, categories: C" as Appendix B's I2I */
    RfBuf b = {0};
    buf_printf(&b, "title: %s, categories: %s", w->items[id].title, SYN_CATS[w->items[id].cat].name);
    return buf_take(&b);
}

/* A random item of category c different from the user's favourites, or any item. */
static int item_outside(const SynWorld *w, Rng *r, int c0, int c1) {
    for (int t = 0; t < 50; t++) {
        int id = syn_pick(r, w->n_items);
        if (w->items[id].cat != c0 && w->items[id].cat != c1) return id;
    }
    return syn_pick(r, w->n_items);
}

/* A misspelling: drop, double or swap one letter of a word longer than 3. */
static void misspell(RfBuf *b, const char *word, Rng *r) {
    size_t n = strlen(word);
    if (n <= 3) { buf_append(b, word, n); return; }
    size_t k = 1 + (size_t)rng_below(r, n - 2);
    int op = syn_pick(r, 3);
    for (size_t i = 0; i < n; i++) {
        if (i == k && op == 0) continue;
        if (i == k && op == 2) { buf_append(b, word + i + 1, 1); buf_append(b, word + i, 1); i++; continue; }
        buf_append(b, word + i, 1);
        if (i == k && op == 1) buf_append(b, word + i, 1);
    }
}

/* One record of task t, split s, number i.  `label` is the stratified class
 * (i mod the number of classes) for the classification tasks. */
static void syn_record(const SynWorld *w, Lines *L, DataWriter *arr, int t, int s, long i, Rng *r) {
    RfBuf in = {0}, ans = {0};
    const SynItem *it;
    const SynCat *cat;
    switch (t) {
    case TASK_U2I: {
        const SynUser *u = &w->users[syn_user(w, r, s)];
        for (int h = u->n_hist - 1; h >= 0; h--) buf_printf(&in, "%s%s", w->items[u->hist[h]].title, h ? "\n" : "");
        Passage q = one_passage(INS_U2I[syn_pick(r, 3)], buf_take(&in));
        Passage p = one_passage(INS_U2I_P[syn_pick(r, 2)], xstrdup(w->items[u->next].title));
        const SynItem *nx = &w->items[u->next];
        int nid = syn_pick(r, 2) ? item_outside(w, r, u->cat[0], u->cat[1]) /* same noun, maybe other brand */
                                 : w->by_cn[nx->cat][nx->noun][syn_pick(r, w->n_cn[nx->cat][nx->noun])];
        if (w->items[nid].brand == u->brand[0] && w->items[nid].cat == u->cat[0]) nid = item_outside(w, r, u->cat[0], u->cat[1]);
        Passage n = one_passage(INS_U2I_P[syn_pick(r, 2)], xstrdup(w->items[nid].title));
        emit_emb(L, NULL, t, q, &p, 1, &n, 1, SYN_CATS[u->cat[0]].name, s, i);
        return;
    }
    case TASK_Q2I: {
        int id = syn_pick(r, w->n_items);
        it = &w->items[id], cat = &SYN_CATS[it->cat];
        int form = syn_pick(r, 3);
        if (form == 0) buf_printf(&in, "%s %s %s", SYN_COLOUR[it->colour], cat->material[it->material], cat->noun[it->noun]);
        else if (form == 1) buf_printf(&in, "%s %s %s", w->brand_name[it->cat][it->brand], cat->noun[it->noun], SYN_COLOUR[it->colour]);
        else buf_printf(&in, "%s %s %s for %s", SYN_FEAT[it->feat[0]], SYN_COLOUR[it->colour], cat->noun[it->noun], cat->use);
        /* hard negative: same noun, another colour or brand */
        const int *same = w->by_cn[it->cat][it->noun];
        int nid = same[syn_pick(r, w->n_cn[it->cat][it->noun])];
        if (w->items[nid].colour == it->colour) nid = item_outside(w, r, it->cat, it->cat);
        Passage q = one_passage(INS_Q2I[syn_pick(r, 3)], buf_take(&in));
        Passage p = one_passage(INS_Q2I_P[syn_pick(r, 2)], xstrdup(it->title));
        Passage n = one_passage(INS_Q2I_P[syn_pick(r, 2)], xstrdup(w->items[nid].title));
        emit_emb(L, NULL, t, q, &p, 1, &n, 1, cat->name, s, i);
        return;
    }
    case TASK_I2I: {
        /* an item whose family has another colour, or the same noun and brand */
        int id = 0, sim[5], nsim = 0;
        for (int tries = 0; tries < 100 && nsim == 0; tries++) {
            id = syn_pick(r, w->n_items);
            it = &w->items[id];
            const int *same = w->by_cn[it->cat][it->noun];
            for (int k = 0; k < w->n_cn[it->cat][it->noun] && nsim < 5; k++)
                if (same[k] != id && w->items[same[k]].brand == it->brand) sim[nsim++] = same[k];
        }
        if (nsim == 0) sim[nsim++] = id;
        it = &w->items[id];
        Passage q = one_passage(INS_I2I[syn_pick(r, 3)], item_i2i(w, id));
        Passage n[5];
        int nneg = arr ? 5 : 1;
        int negs[5];
        for (int k = 0; k < nneg; k++) {
            /* same category, another noun (hard) or another category */
            int ob = (it->brand + 1 + syn_pick(r, N_BRAND - 1)) % N_BRAND, nob = w->n_cb[it->cat][ob];
            int nid = syn_pick(r, 2) && nob ? w->by_cb[it->cat][ob][syn_pick(r, nob)] : item_outside(w, r, it->cat, it->cat);
            if (w->items[nid].noun == it->noun && w->items[nid].cat == it->cat) nid = item_outside(w, r, it->cat, it->cat);
            negs[k] = nid;
        }
        if (arr) { /* item_embedding_test.json: lists of positives and negatives */
            Passage p = one_passage(INS_I2I_P[0], NULL), ng = one_passage(INS_I2I_P[1], NULL);
            free(p.texts);
            free(ng.texts);
            p.texts = calloc((size_t)nsim, sizeof *p.texts), p.n_texts = nsim, p.is_list = 1;
            ng.texts = calloc(5, sizeof *ng.texts), ng.n_texts = 5, ng.is_list = 1;
            if (p.texts) for (int k = 0; k < nsim; k++) p.texts[k] = item_i2i(w, sim[k]);
            if (ng.texts) for (int k = 0; k < 5; k++) ng.texts[k] = item_i2i(w, negs[k]);
            emit_emb(L, arr, t, q, &p, 1, &ng, 1, SYN_CATS[it->cat].name, s, i);
            return;
        }
        Passage p = one_passage(INS_I2I_P[syn_pick(r, 2)], item_i2i(w, sim[syn_pick(r, nsim)]));
        n[0] = one_passage(INS_I2I_P[syn_pick(r, 2)], item_i2i(w, negs[0]));
        emit_emb(L, NULL, t, q, &p, 1, n, 1, SYN_CATS[it->cat].name, s, i);
        return;
    }
    case TASK_QR: {
        it = &w->items[syn_pick(r, w->n_items)], cat = &SYN_CATS[it->cat];
        const char *brand = w->brand_name[it->cat][it->brand];
        RfBuf dlg = {0};
        if (i % 2 == 0) { /* misspelt search request -> clean one */
            const char *words[4] = {"show", "me", SYN_COLOUR[it->colour], cat->noun[it->noun]};
            RfBuf noisy = {0};
            for (int k = 0; k < 4; k++) {
                if (k) buf_append(&noisy, " ", 1);
                if (k >= 2 && syn_pick(r, 4)) misspell(&noisy, words[k], r);
                else buf_append(&noisy, words[k], strlen(words[k]));
            }
            buf_printf(&dlg, "A: %s (rewrite required: True)\nB: Here are %s %s options. (rewrite required: False)",
                       noisy.data, SYN_COLOUR[it->colour], cat->noun[it->noun]);
            buf_printf(&ans, "A: show me %s %s\nB: Here are %s %s options.", SYN_COLOUR[it->colour], cat->noun[it->noun],
                       SYN_COLOUR[it->colour], cat->noun[it->noun]);
            buf_free(&noisy);
        } else { /* a pronoun resolved from the context */
            const char *col2 = SYN_COLOUR[(it->colour + 3) % N_COLOUR];
            buf_printf(&dlg, "A: I am looking for a %s %s. (rewrite required: False)\n"
                             "B: The %s costs $%.2f. (rewrite required: False)\n"
                             "A: Does it come in %s? (rewrite required: True)",
                       brand, cat->noun[it->noun], it->title, it->price, col2);
            buf_printf(&ans, "A: I am looking for a %s %s.\nB: The %s costs $%.2f.\nA: Does the %s %s come in %s?", brand,
                       cat->noun[it->noun], it->title, it->price, brand, cat->noun[it->noun], col2);
        }
        buf_printf(&in, "%s Now the dialogue you need to rewrite is shown below:\n\n%s\n\nBased on the given dialogue, "
                        "your rewritten result is:",
                   INS_QR[syn_pick(r, 3)], dlg.data);
        buf_free(&dlg);
        emit_gen(L, t, buf_take(&in), buf_take(&ans), cat->name, s, i);
        return;
    }
    case TASK_SR: {
        const SynUser *u = &w->users[syn_user(w, r, s)];
        static const char *const ord[10] = {"1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th"};
        for (int h = 0; h < u->n_hist; h++) {
            char *l = item_line(w, u->hist[h]);
            buf_printf(&in, "%s%s: %s", h ? "\n" : "", ord[h], l ? l : "");
            free(l);
        }
        int answer = (int)(i % 20);
        RfBuf opt = {0};
        for (int k = 0; k < 20; k++) {
            int id = u->next;
            if (k != answer) {
                /* distractors never match (primary category, favourite brand) */
                int mode = syn_pick(r, 3);
                if (mode == 0) { /* same category, another brand */
                    int b = (u->brand[0] + 1 + syn_pick(r, N_BRAND - 1)) % N_BRAND;
                    id = w->n_cb[u->cat[0]][b] ? w->by_cb[u->cat[0]][b][syn_pick(r, w->n_cb[u->cat[0]][b])] : -1;
                } else id = -1;
                if (id < 0) id = item_outside(w, r, u->cat[0], u->cat[0]);
            }
            char *l = item_line(w, id);
            buf_printf(&opt, "%s%c: %s", k ? "\n" : "", 'A' + k, l ? l : "");
            free(l);
        }
        buf_printf(&ans, "%c", 'A' + answer);
        char *p = syn_prompt(INS_SR[syn_pick(r, 3)], in.data, opt.data);
        buf_free(&in);
        buf_free(&opt);
        emit_gen(L, t, p, buf_take(&ans), SYN_CATS[u->cat[0]].name, s, i);
        return;
    }
    case TASK_SA: {
        int star = 1 + (int)(i % 5), band = star - 1;
        int id = w->n_q[band] ? w->by_q[band][syn_pick(r, w->n_q[band])] : syn_pick(r, w->n_items);
        it = &w->items[id], cat = &SYN_CATS[it->cat];
        static const char *const open[5][3] = {
            {"Terrible purchase.", "What a waste of money.", "Absolutely awful."},
            {"Disappointed with this.", "Not great.", "I expected more."},
            {"It's okay.", "Average product.", "Does the job, nothing special."},
            {"Pretty good.", "Nice product.", "Happy with it."},
            {"Absolutely love it!", "Fantastic quality!", "Best purchase this year!"}};
        static const char *const body[5][3] = {
            {"The %s broke after two days and the %s finish peeled off.", "This %s fell apart and the %s smell never went away.", "My %s stopped working and the %s feels cheap."},
            {"The %s works but the %s parts feel flimsy.", "The %s is smaller than shown and the %s looks cheap.", "The %s is hard to use and the %s scratches easily."},
            {"The %s works as described and the %s is fine.", "The %s is usable though the %s is ordinary.", "The %s is acceptable and the %s is neither good nor bad."},
            {"The %s works well and the %s feels solid.", "The %s is well made and the %s looks nice.", "The %s does what I need and the %s is sturdy."},
            {"The %s is perfect and the %s feels premium.", "This %s exceeded my expectations and the %s is gorgeous.", "The %s works flawlessly and the %s is top notch."}};
        static const char *const close[5][3] = {
            {"Avoid.", "Returning it immediately.", "Never again."},
            {"Would not buy again.", "Two stars at best.", "Meh."},
            {"It is fine for the price.", "Might look elsewhere next time.", "Neutral about it."},
            {"Would recommend.", "Good value.", "Worth buying."},
            {"Highly recommend!", "Buying another one!", "Five stars without doubt!"}};
        buf_printf(&in, "%s ", open[band][syn_pick(r, 3)]);
        buf_printf(&in, body[band][syn_pick(r, 3)], cat->noun[it->noun], cat->material[it->material]);
        buf_printf(&in, " %s", close[band][syn_pick(r, 3)]);
        char *p = syn_prompt(INS_SA[syn_pick(r, 3)], in.data, SA_OPTIONS);
        buf_free(&in);
        emit_gen(L, t, p, xstrdup(SA_ANSWER[band]), cat->name, s, i);
        return;
    }
    case TASK_PRP: {
        int rel = (int)(i % 5), a = 0, b = -1;
        for (int tries = 0; tries < 200 && b < 0; tries++) {
            a = syn_pick(r, w->n_items);
            const SynItem *x = &w->items[a];
            int c = x->cat;
            if (rel == 0) { /* also bought: the complementary noun */
                int k = x->noun ^ 1;
                if (w->n_cn[c][k]) b = w->by_cn[c][k][syn_pick(r, w->n_cn[c][k])];
            } else if (rel == 1 || rel == 2) { /* same noun: other brand (viewed) or same brand (similar) */
                int n = w->n_cn[c][x->noun];
                const int *sm = w->by_cn[c][x->noun];
                int st = syn_pick(r, n);
                for (int k = 0; k < n; k++) {
                    int y = sm[(st + k) % n];
                    if (y != a && ((rel == 1) == (w->items[y].brand != x->brand))) { b = y; break; }
                }
            } else if (rel == 3) { /* same brand, unrelated noun of the category */
                int n = w->n_cb[c][x->brand], st = syn_pick(r, n ? n : 1);
                for (int k = 0; k < n; k++) {
                    int y = w->by_cb[c][x->brand][(st + k) % n];
                    if (w->items[y].noun != x->noun && w->items[y].noun != (x->noun ^ 1)) { b = y; break; }
                }
            } else {
                b = item_outside(w, r, c, c);
                if (w->items[b].cat == c) b = -1;
            }
        }
        if (b < 0) b = item_outside(w, r, w->items[a].cat, w->items[a].cat), rel = 4;
        buf_printf(&in, "Product 1:: %s\nProduct 2:: %s", w->items[a].title, w->items[b].title);
        RfBuf opt = {0};
        for (int k = 0; k < 5; k++) buf_printf(&opt, "%s%s", k ? "\n" : "", PRP_OPTION[k]);
        char *p = syn_prompt(INS_PRP[syn_pick(r, 3)], in.data, opt.data);
        buf_free(&in);
        buf_free(&opt);
        buf_printf(&ans, "%c", 'A' + rel);
        emit_gen(L, t, p, buf_take(&ans), SYN_CATS[w->items[a].cat].name, s, i);
        return;
    }
    case TASK_AVE: {
        it = &w->items[syn_pick(r, w->n_items)], cat = &SYN_CATS[it->cat];
        int want = 1 + syn_pick(r, 3); /* bit 1 material, bit 2 colour */
        buf_printf(&in, "Product title: %s.\nProduct description: %s\nProduct feature: %s\nProduct brand: %s\nTarget attributes: ",
                   it->title, it->desc, it->feature, w->brand_name[it->cat][it->brand]);
        buf_printf(&in, "%s", want == 1 ? "Material" : want == 2 ? "Color" : "Material, Color");
        buf_append(&ans, "[", 1);
        int n = 0;
        if (want & 1) {
            const char *v = cat->material[it->material];
            int in_feat = !it->mat_in_title && !it->mat_in_desc;
            const char *src[3] = {"product title", "product description", "product feature"};
            int has[3] = {it->mat_in_title, it->mat_in_desc, in_feat};
            for (int k = 0; k < 3; k++)
                if (has[k]) buf_printf(&ans, "%s{\"attribute\": \"material\", \"value\": \"%s\", \"source\": \"%s\"}", n++ ? ", " : "", v, src[k]);
        }
        if (want & 2) {
            const char *v = SYN_COLOUR[it->colour];
            if (it->col_in_title) buf_printf(&ans, "%s{\"attribute\": \"color\", \"value\": \"%s\", \"source\": \"product title\"}", n++ ? ", " : "", v);
            if (it->col_in_desc) buf_printf(&ans, "%s{\"attribute\": \"color\", \"value\": \"%s\", \"source\": \"product description\"}", n++ ? ", " : "", v);
        }
        buf_append(&ans, "]", 1);
        char *p = syn_prompt(INS_AVE[syn_pick(r, 3)], in.data, NULL);
        buf_free(&in);
        emit_gen(L, t, p, buf_take(&ans), cat->name, s, i);
        return;
    }
    case TASK_PM: {
        int same = (int)(i % 2 == 0), a = syn_pick(r, w->n_items), b = a;
        it = &w->items[a], cat = &SYN_CATS[it->cat];
        if (!same) { /* another colour of the family, or the same noun of another brand */
            const int *sm = w->by_cn[it->cat][it->noun];
            int n = w->n_cn[it->cat][it->noun], st = syn_pick(r, n);
            for (int k = 0; k < n && b == a; k++)
                if (sm[(st + k) % n] != a && w->items[sm[(st + k) % n]].colour != it->colour) b = sm[(st + k) % n];
            if (b == a) b = item_outside(w, r, it->cat, it->cat);
        }
        const SynItem *y = &w->items[b];
        RfBuf t2 = {0};
        buf_printf(&t2, "%s %s %s %s %s", w->brand_name[y->cat][y->brand], SYN_CATS[y->cat].noun[y->noun],
                   SYN_COLOUR[y->colour], SYN_CATS[y->cat].material[y->material], SYN_FEAT[y->feat[0]]);
        for (char *c = t2.data; *c; c++) *c = (char)tolower((unsigned char)*c);
        buf_printf(&in, "\"product 1\": {\"title\": ");
        put_str(&in, it->title);
        buf_printf(&in, ", \"description\": ");
        put_str(&in, it->desc);
        buf_printf(&in, ", \"manufacturer\": \"%s\", \"price\": \"%.2f\"},\n\"product 2\": {\"title\": ",
                   w->brand_name[it->cat][it->brand], it->price);
        put_str(&in, t2.data);
        buf_printf(&in, ", \"description\": \"%s %s in %s, %s and %s.\", \"manufacturer\": \"%s\", \"price\": \"%.2f\"}",
                   syn_pick(r, 2) ? "quality" : "new", SYN_CATS[y->cat].noun[y->noun], SYN_COLOUR[y->colour],
                   SYN_FEAT[y->feat[0]], SYN_FEAT[y->feat[1]], syn_pick(r, 3) ? w->brand_name[y->cat][y->brand] : "nan",
                   floor(y->price * (0.85 + 0.25 * rng_uniform(r))) + 0.5);
        buf_free(&t2);
        char *p = syn_prompt(INS_PM[syn_pick(r, 3)], in.data, NULL);
        buf_free(&in);
        emit_gen(L, t, p, xstrdup(same ? "yes" : "no"), cat->name, s, i);
        return;
    }
    case TASK_AP:
    case TASK_AG: {
        it = &w->items[syn_pick(r, w->n_items)], cat = &SYN_CATS[it->cat];
        int q = syn_pick(r, 3), answerable = t == TASK_AG || i % 2 == 0;
        int askf = syn_pick(r, 2) ? it->feat[syn_pick(r, 2)] : (it->feat[0] + 1 + syn_pick(r, N_FEAT - 1)) % N_FEAT;
        int has_f = askf == it->feat[0] || askf == it->feat[1];
        RfBuf qs = {0}, doc = {0};
        if (q == 0) buf_printf(&qs, "What material is this %s made of?", cat->noun[it->noun]);
        else if (q == 1) buf_printf(&qs, "Is this %s %s?", cat->noun[it->noun], SYN_FEAT[askf]);
        else buf_printf(&qs, "How much did you pay for this %s?", cat->noun[it->noun]);
        /* background sentences never state the asked fact */
        static const char *const filler[4] = {"Shipping was quick and the box was intact.", "My kids use it every day.",
                                              "Setup took a couple of minutes.", "Customer service answered my email fast."};
        buf_printf(&doc, "%s", filler[syn_pick(r, 4)]);
        if (answerable) {
            if (q == 0) buf_printf(&doc, " Mine is %s and it feels well made.", cat->material[it->material]);
            else if (q == 1) buf_printf(&doc, " I checked: it %s %s.", has_f ? "is really" : "is not", SYN_FEAT[askf]);
            else buf_printf(&doc, " I paid $%.2f for it.", it->price);
        } else {
            buf_printf(&doc, " The %s color is exactly as pictured.", SYN_COLOUR[it->colour]);
        }
        buf_printf(&doc, " %s", filler[syn_pick(r, 4)]);
        if (t == TASK_AP) {
            buf_printf(&in, "question: %s\ndocument: %s", qs.data, doc.data);
            char *p = syn_prompt(INS_AP[syn_pick(r, 3)], in.data, NULL);
            emit_gen(L, t, p, xstrdup(answerable ? "yes" : "no"), cat->name, s, i);
        } else {
            buf_printf(&in, "%s\nDocument: %s", qs.data, doc.data);
            if (q == 0) buf_printf(&ans, "It is made of %s.", cat->material[it->material]);
            else if (q == 1) buf_printf(&ans, has_f ? "Yes, it is %s." : "No, it is not %s.", SYN_FEAT[askf]);
            else buf_printf(&ans, "It costs about $%.2f.", it->price);
            char *p = syn_prompt(INS_AG[syn_pick(r, 3)], in.data, NULL);
            emit_gen(L, t, p, buf_take(&ans), cat->name, s, i);
        }
        buf_free(&in);
        buf_free(&qs);
        buf_free(&doc);
        return;
    }
    case TASK_UP: {
        const SynUser *u = &w->users[syn_user(w, r, s)];
        buf_printf(&in, "Given a %s user who is aged %s and %s %s, this user's purchase history over time is listed below. ",
                   u->gender ? "female" : "male", SYN_AGE[u->age], u->job == 6 || u->job == 7 ? "is" : "works as a",
                   SYN_JOB[u->job]);
        int n_fav = 0, n_col = 0;
        for (int h = 0; h < u->n_hist; h++) {
            const SynItem *x = &w->items[u->hist[h]];
            int fav = x->cat == u->cat[0] && x->brand == u->brand[0];
            int star = x->quality + 1 + fav;
            n_fav += fav, n_col += x->colour == u->colour;
            buf_printf(&in, "%s, %d stars; ", x->title, star > 5 ? 5 : star);
        }
        buf_printf(&in, "Analyze the user's preferences on products (consider factors like category, brand, material, "
                        "colour, price range and quality). Provide clear explanations based on relevant details from "
                        "the user's purchase history.");
        const char *b0 = w->brand_name[u->cat[0]][u->brand[0]], *b1 = w->brand_name[u->cat[1]][u->brand[1]];
        buf_printf(&ans, "Based on the purchase history, this user mainly shops for %s products and also buys %s items. ",
                   SYN_CATS[u->cat[0]].name, SYN_CATS[u->cat[1]].name);
        buf_printf(&ans, "The user is loyal to %s, which appears %d times in the history and gets high ratings, and in %s "
                         "prefers %s, a %s brand. ",
                   b0, n_fav, SYN_CATS[u->cat[1]].name, b1, tier_word(w->brand_tier[u->cat[1]][u->brand[1]]));
        buf_printf(&ans, "%s is a %s brand, which suggests a %s budget. The user often completes a purchase with a "
                         "matching accessory, so complementary products are good recommendations; the next purchase is "
                         "most likely another %s product from %s.",
                   b0, tier_word(w->brand_tier[u->cat[0]][u->brand[0]]), tier_word(w->brand_tier[u->cat[0]][u->brand[0]]),
                   SYN_CATS[u->cat[0]].name, b0);
        char *p = syn_prompt(in.data, NULL, NULL);
        buf_free(&in);
        emit_gen(L, t, p, buf_take(&ans), SYN_CATS[u->cat[0]].name, s, i);
        return;
    }
    case TASK_IP: {
        it = &w->items[syn_pick(r, w->n_items)], cat = &SYN_CATS[it->cat];
        buf_printf(&in, "Introduce product %s and describe its attributes (including but not limited to category, brand, "
                        "material, colour, features, price and quality).",
                   it->title);
        buf_printf(&ans, "%s is a %s in the %s > %s category made by %s, a %s brand. It is made of %s and comes in %s. "
                         "It is %s and %s, which makes it suited to %s. It sells for $%.2f. Reviewers rate its quality as "
                         "%s.",
                   it->title, cat->noun[it->noun], cat->name, cat->sub, w->brand_name[it->cat][it->brand],
                   tier_word(w->brand_tier[it->cat][it->brand]), cat->material[it->material], SYN_COLOUR[it->colour],
                   SYN_FEAT[it->feat[0]], SYN_FEAT[it->feat[1]], cat->use, it->price, SYN_QUALITY[it->quality]);
        char *p = syn_prompt(in.data, NULL, NULL);
        buf_free(&in);
        emit_gen(L, t, p, buf_take(&ans), cat->name, s, i);
        return;
    }
    default:
        buf_free(&in);
        buf_free(&ans);
        return;
    }
}

static void shuffle_lines(Lines *L, Rng *r) {
    for (size_t i = L->n; i > 1; i--) {
        size_t j = (size_t)rng_below(r, i);
        char *t = L->line[i - 1];
        L->line[i - 1] = L->line[j];
        L->line[j] = t;
    }
}

static int write_lines(const char *path, const Lines *L) {
    DataWriter w;
    if (data_writer_open(&w, path, 0)) return -1;
    for (size_t i = 0; i < L->n; i++)
        if (fputs(L->line[i], w.fp) == EOF || fputc('\n', w.fp) == EOF) {
            data_writer_abort(&w);
            return rf_error("%s: write failed", path);
        }
    return data_writer_close(&w);
}

/* A JSON array of serialised records, laid out as data_writer_put writes one. */
static int write_array(const char *path, const Lines *L) {
    DataWriter w;
    if (data_writer_open(&w, path, 1)) return -1;
    for (size_t i = 0; i < L->n; i++)
        if (fputs(i ? ",\n" : "\n", w.fp) == EOF || fputs(L->line[i], w.fp) == EOF) {
            data_writer_abort(&w);
            return rf_error("%s: write failed", path);
        }
    w.n = (long)L->n;
    return data_writer_close(&w);
}

/* Records of (task, split) at this scale: Table 1 x scale, at least 10. */
static long syn_count(int t, int s, double scale) {
    long n = (long)floor(TASKS[t].size[s] * scale + 0.5);
    return n < 10 ? 10 : n;
}

static int synth_write(const char *out, double scale, uint64_t seed, int verbose) {
    SynWorld w;
    if (rf_mkdirs(out)) return -1;
    if (syn_world_build(&w, scale, seed)) {
        syn_world_free(&w);
        return -1;
    }
    int rc = 0;
    char path[4096];
    for (int s = 0; s < N_SPLITS && !rc; s++)
        for (int kind = 0; kind < 2 && !rc; kind++) {
            Lines L = {0};
            long counts[N_TASKS] = {0};
            for (int t = 0; t < N_TASKS; t++) {
                if ((int)TASKS[t].kind != kind) continue;
                Rng r;
                rng_seed(&r, seed * 1000003ULL + (uint64_t)(t * 7 + s) * 0x9E3779B97F4A7C15ULL);
                counts[t] = syn_count(t, s, scale);
                for (long i = 0; i < counts[t]; i++) syn_record(&w, &L, NULL, t, s, i, &r);
            }
            Rng r;
            rng_seed(&r, seed + 77 + (uint64_t)(s * 2 + kind));
            shuffle_lines(&L, &r);
            snprintf(path, sizeof path, "%s/%s_dataset_%s.jsonl", out, kind ? "Generative" : "Embedding", SPLIT_NAMES[s]);
            rc = L.fail ? rf_error("%s: out of memory while generating", path) : write_lines(path, &L);
            if (!rc && verbose) {
                printf("%s: %zu records (", path, L.n);
                const char *sep = "";
                for (int t = 0; t < N_TASKS; t++)
                    if (counts[t]) printf("%s%s %ld", sep, TASKS[t].short_name, counts[t]), sep = ", ";
                printf(")\n");
            }
            lines_free(&L);
        }
    if (!rc) { /* I2I test records with lists of positives and negatives */
        snprintf(path, sizeof path, "%s/item_embedding_test.json", out);
        DataWriter dw;
        rc = data_writer_open(&dw, path, 1);
        if (!rc) {
            Rng r;
            rng_seed(&r, seed * 31 + 5);
            Lines L = {0};
            long n = syn_count(TASK_I2I, SPLIT_TEST, scale);
            for (long i = 0; i < n; i++) syn_record(&w, &L, &dw, TASK_I2I, SPLIT_TEST, i, &r);
            if (L.fail) {
                data_writer_abort(&dw);
                rc = rf_error("%s: write failed", path);
            } else {
                rc = data_writer_close(&dw);
                if (!rc && verbose) printf("%s: %ld records (I2I with lists)\n", path, n);
            }
        }
    }
    syn_world_free(&w);
    return rc;
}

static void synth_usage(FILE *f) {
    fprintf(f, "usage: recfound synth --out DIR [--scale S] [--seed N]\n"
               "  Writes a synthetic RecFound dataset of all 13 tasks (paper §3, Appendix B) in the\n"
               "  published format: Embedding_dataset_{train,eval,test}.jsonl,\n"
               "  Generative_dataset_{train,eval,test}.jsonl and item_embedding_test.json.\n"
               "  --out DIR  the dataset folder, new or empty\n"
               "  --scale S  fraction of the paper's Table 1 sizes (default 0.01; at least 10 per task and split)\n"
               "  --seed N   seed of the latent world and of every record (default 42); same seed, same bytes\n");
}

int synth_main(int argc, char **argv) {
    const char *out = NULL;
    double scale = 0.01;
    unsigned long long seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            synth_usage(stderr);
            return rf_error("synth: option %s needs a value", a);
        }
        char *end;
        if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--scale")) {
            scale = strtod(argv[++i], &end);
            if (*end || !(scale > 0) || scale > 100) return rf_error("synth: --scale %s: want a number in (0, 100]", argv[i]);
        } else if (!strcmp(a, "--seed")) {
            errno = 0;
            seed = strtoull(argv[++i], &end, 10);
            if (*end || errno || argv[i][0] == '-') return rf_error("synth: --seed %s: want a non-negative integer", argv[i]);
        } else {
            synth_usage(stderr);
            return rf_error("synth: unknown option %s", a);
        }
    }
    if (!out) {
        synth_usage(stderr);
        return rf_error("synth: --out DIR is required");
    }
    if (rf_new_output(out, NULL)) return -1;
    return synth_write(out, scale, seed, 1);
}

/* ============================================================ build-data */
/*
 * `recfound build-data`: the published format from the public raw sources of
 * /work/shared/data/raw (see its README.md), following Appendix B's examples.
 *
 *   QR  : MuDoCo-QR dialogues (news, weather) with the paper's "(rewrite
 *         required: ...)" annotation; the answer is the rewritten dialogue.
 *   PM  : Amazon-Google products; gold matches are "yes", the Amazon product
 *         with another Google product of the same manufacturer (or a random
 *         one) is "no".
 *   Q2I : ESCI exact matches: query -> product title; negative = the product
 *         of another query.
 *   AG  : AmazonQA questions and answers (no review document exists here).
 *   SR, U2I, UP, IP : MovieLens-100k watch histories by timestamp,
 *         demographics and genres.
 *   SR, U2I, SA : Amazon Reviews 2023 user histories (held-out review).
 *   I2I, PRP : Amazon Reviews 2018 meta files (gzip, read by io.c's
 *         rf_read_file_gz): also_view / also_buy links between the items of
 *         one file; I2I test records also go to item_embedding_test.json.
 *   SA  : Amazon Reviews 2018 5-core reviews, when the 2023 histories are
 *         missing.
 * Splits are 80/10/10 by a hash of the user / dialogue / product / query key,
 * except MuDoCo, which keeps its own split.
 */

typedef struct {
    Lines L[2][N_SPLITS];       /* [kind][split] */
    long count[N_TASKS][N_SPLITS];
    Lines items;                /* item_embedding_test.json: I2I test records with lists */
    long n_items;
    Rng rng;
} Build;

static int bd_split(const char *key) { /* FNV-1a hash: 0 -> test, 1 -> eval */
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    int m = (int)(h % 10);
    return m == 0 ? SPLIT_TEST : m == 1 ? SPLIT_EVAL : SPLIT_TRAIN;
}

static void bd_gen(Build *B, int task, int split, char *prompt, char *answer, const char *source) {
    emit_gen(&B->L[KIND_GEN][split], task, prompt, answer, source, split, B->count[task][split]++);
}

static void bd_emb(Build *B, int task, int split, const char *qi, char *q, const char *pi, char *p, char *n,
                   const char *source) {
    Passage pos = one_passage(pi, p), neg = one_passage(pi, n);
    emit_emb(&B->L[KIND_EMB][split], NULL, task, one_passage(qi, q), &pos, 1, &neg, 1, source, split,
             B->count[task][split]++);
}

/* Latin-1 (ISO-8859-1) to UTF-8 when the text is not valid UTF-8 already. */
static char *to_utf8(char *s, size_t *len) {
    if (utf8_check(s, *len) == *len) return s;
    size_t n = 0;
    for (size_t i = 0; i < *len; i++) n += (unsigned char)s[i] >= 0x80 ? 2 : 1;
    char *o = malloc(n + 1), *q = o;
    if (!o) { free(s); return NULL; }
    for (size_t i = 0; i < *len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) *q++ = (char)c;
        else *q++ = (char)(0xC0 | (c >> 6)), *q++ = (char)(0x80 | (c & 0x3F));
    }
    *q = 0;
    free(s);
    *len = n;
    return o;
}

/* A small CSV reader (RFC 4180): fields separated by commas, quoted fields
 * may hold commas, newlines and "" for a quote.  Returns the number of fields
 * of the next row (0 at the end); fields point into a buffer kept in `row`. */
typedef struct { const char *p, *end; RfBuf cell; char **f; size_t *off; int nf, cap; long line; } Csv;

static int csv_next(Csv *c) {
    if (c->p >= c->end) return 0;
    c->cell.len = 0;
    c->nf = 0;
    for (;;) {
        if (c->nf == c->cap) {
            int cap = c->cap ? 2 * c->cap : 16;
            size_t *o = realloc(c->off, (size_t)cap * sizeof *o);
            char **f = realloc(c->f, (size_t)cap * sizeof *f);
            if (o) c->off = o;
            if (f) c->f = f;
            if (!o || !f) return -1;
            c->cap = cap;
        }
        c->off[c->nf++] = c->cell.len;
        if (c->p < c->end && *c->p == '"') {
            c->p++;
            while (c->p < c->end) {
                if (*c->p == '"') {
                    if (c->p + 1 < c->end && c->p[1] == '"') buf_append(&c->cell, "\"", 1), c->p += 2;
                    else { c->p++; break; }
                } else {
                    if (*c->p == '\n') c->line++;
                    buf_append(&c->cell, c->p++, 1);
                }
            }
        }
        while (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') buf_append(&c->cell, c->p++, 1);
        buf_append(&c->cell, "", 1); /* NUL-terminate the field */
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == '\r') c->p++;
        if (c->p < c->end && *c->p == '\n') c->p++;
        c->line++;
        break;
    }
    for (int i = 0; i < c->nf; i++) c->f[i] = c->cell.data + c->off[i];
    return c->nf;
}

static void csv_free(Csv *c) {
    buf_free(&c->cell);
    free(c->f);
    free(c->off);
}

static int read_text(const char *dir, const char *rel, char **s, size_t *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (rf_read_file_gz(path, s, n)) return -1; /* .gz files are decompressed (io.c) */
    *s = to_utf8(*s, n);
    return *s ? 0 : rf_error("%s: out of memory", path);
}

static int csv_col(Csv *c, const char *name) {
    for (int i = 0; i < c->nf; i++)
        if (!strcmp(c->f[i], name)) return i;
    return -1;
}

/* Python-like s.strip() in place into a new string. */
static char *strip_dup(const char *s) {
    size_t b, e;
    py_strip(s, strlen(s), &b, &e);
    return xstrndup(s + b, e - b);
}

/* ---- QR: MuDoCo-QR ---- */
static int bd_mudoco(Build *B, const char *raw, const char *file, const char *domain) {
    char *text;
    size_t len;
    if (read_text(raw, file, &text, &len)) return -1;
    Json v;
    int rc = json_parse(&v, text, len, file);
    free(text);
    if (rc) return -1;
    const Json *dl = json_get(&v, "dialogs");
    for (size_t d = 0; dl && d < dl->count; d++) {
        const Json *dg = &dl->items[d], *sp = json_get(dg, "split"), *turns = json_get(dg, "turns");
        if (!turns || turns->type != JSON_ARRAY || !sp || sp->type != JSON_STRING) continue;
        int split = !strcmp(sp->string, "test") ? SPLIT_TEST : !strcmp(sp->string, "eval") ? SPLIT_EVAL : SPLIT_TRAIN;
        RfBuf in = {0}, ans = {0};
        int any = 0, ok = 1;
        for (size_t t = 0; t < turns->count; t++) {
            const Json *u = json_get(&turns->items[t], "utterance"), *rw = json_get(&turns->items[t], "rewritten_utterance"),
                       *rq = json_get(&turns->items[t], "rewrite_required");
            if (!u || u->type != JSON_STRING || !rw || rw->type != JSON_STRING || !rq || rq->type != JSON_BOOL) { ok = 0; break; }
            char who = t % 2 ? 'B' : 'A';
            buf_printf(&in, "%s%c: %s (rewrite required: %s)", t ? "\n" : "", who, u->string, rq->boolean ? "True" : "False");
            buf_printf(&ans, "%s%c: %s", t ? "\n" : "", who, rq->boolean ? rw->string : u->string);
            any |= rq->boolean;
        }
        if (!ok || !any || !turns->count) { buf_free(&in); buf_free(&ans); continue; }
        RfBuf p = {0};
        buf_printf(&p, "%s Now the dialogue you need to rewrite is shown below:\n\n%s\n\nBased on the given dialogue, your "
                       "rewritten result is:", INS_QR[(int)(d % 3)], in.data);
        buf_free(&in);
        bd_gen(B, TASK_QR, split, buf_take(&p), buf_take(&ans), domain);
    }
    json_free(&v);
    return 0;
}

/* ---- PM: Amazon-Google ---- */
typedef struct { char *id, *title, *desc, *manu, *price; } BdProd;

static int bd_load_products(const char *raw, const char *file, BdProd **out, int *n) {
    char *text;
    size_t len;
    if (read_text(raw, file, &text, &len)) return -1;
    Csv c = {text, text + len, {0}, 0, 0, 0, 0, 0};
    *out = NULL, *n = 0;
    int cap = 0;
    if (csv_next(&c) < 5) { csv_free(&c); free(text); return rf_error("%s/%s: line 1: expected 5 columns", raw, file); }
    while (csv_next(&c) >= 5) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 1024;
            BdProd *p = realloc(*out, (size_t)cap * sizeof *p);
            if (!p) break;
            *out = p;
        }
        BdProd *p = &(*out)[(*n)++];
        p->id = xstrdup(c.f[0]), p->title = strip_dup(c.f[1]), p->desc = strip_dup(c.f[2]);
        p->manu = strip_dup(c.f[3]), p->price = strip_dup(c.f[4]);
    }
    csv_free(&c);
    free(text);
    return 0;
}

static void bd_prod_free(BdProd *p, int n) {
    for (int i = 0; i < n; i++) free(p[i].id), free(p[i].title), free(p[i].desc), free(p[i].manu), free(p[i].price);
    free(p);
}

static void bd_prod_json(RfBuf *b, const char *label, const BdProd *p) {
    buf_printf(b, "\"%s\": {\"title\": ", label);
    put_str(b, p->title);
    buf_printf(b, ", \"description\": ");
    if (*p->desc) put_str(b, p->desc); else buf_printf(b, "NaN");
    buf_printf(b, ", \"manufacturer\": ");
    put_str(b, *p->manu ? p->manu : "nan");
    buf_printf(b, ", \"price\": ");
    put_str(b, p->price);
    buf_printf(b, "}");
}

static int bd_amazon_google(Build *B, const char *raw) {
    BdProd *a = NULL, *g = NULL;
    int na = 0, ng = 0;
    if (bd_load_products(raw, "amazon_google/Amazon.csv", &a, &na) ||
        bd_load_products(raw, "amazon_google/GoogleProducts.csv", &g, &ng)) {
        bd_prod_free(a, na);
        return -1;
    }
    char *text;
    size_t len;
    if (read_text(raw, "amazon_google/Amzon_GoogleProducts_perfectMapping.csv", &text, &len)) {
        bd_prod_free(a, na), bd_prod_free(g, ng);
        return -1;
    }
    Csv c = {text, text + len, {0}, 0, 0, 0, 0, 0};
    csv_next(&c);
    long k = 0;
    while (csv_next(&c) >= 2) {
        int ia = -1, ig = -1;
        for (int i = 0; i < na && ia < 0; i++) if (!strcmp(a[i].id, c.f[0])) ia = i;
        for (int i = 0; i < ng && ig < 0; i++) if (!strcmp(g[i].id, c.f[1])) ig = i;
        if (ia < 0 || ig < 0) continue;
        int yes = k++ % 2 == 0;
        if (!yes) { /* a non-match: same manufacturer when possible */
            int st = syn_pick(&B->rng, ng), pick = -1;
            for (int i = 0; i < ng && pick < 0; i++) {
                int j = (st + i) % ng;
                if (j != ig && *a[ia].manu && !strcmp(g[j].manu, a[ia].manu)) pick = j;
            }
            ig = pick >= 0 ? pick : (ig + 1 + syn_pick(&B->rng, ng - 1)) % ng;
        }
        RfBuf in = {0};
        bd_prod_json(&in, "product 1", &a[ia]);
        buf_printf(&in, ",\n");
        bd_prod_json(&in, "product 2", &g[ig]);
        char *p = syn_prompt(INS_PM[k % 3], in.data, NULL);
        buf_free(&in);
        bd_gen(B, TASK_PM, bd_split(a[ia].id), p, xstrdup(yes ? "yes" : "no"), "Software");
    }
    csv_free(&c);
    free(text);
    bd_prod_free(a, na), bd_prod_free(g, ng);
    return 0;
}

/* ---- Q2I: ESCI exact matches ---- */
static int bd_esci(Build *B, const char *raw) {
    char *text;
    size_t len;
    if (read_text(raw, "esci/esci_us_exact_sample_with_product_text.csv", &text, &len)) return -1;
    Csv c = {text, text + len, {0}, 0, 0, 0, 0, 0};
    csv_next(&c);
    int cq = csv_col(&c, "query"), ct = csv_col(&c, "product_title");
    if (cq < 0 || ct < 0) { csv_free(&c); free(text); return rf_error("%s/esci: missing query/product_title column", raw); }
    /* keep (query, title) pairs, then pair each with a title of another query */
    char **q = NULL, **t = NULL;
    int n = 0, cap = 0;
    while (csv_next(&c) > (cq > ct ? cq : ct)) {  /* both columns present in the row */
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            char **q2 = realloc(q, (size_t)cap * sizeof *q2);
            if (q2) q = q2;
            char **t2 = realloc(t, (size_t)cap * sizeof *t2);
            if (t2) t = t2;
            if (!q2 || !t2) break;
        }
        q[n] = strip_dup(c.f[cq]), t[n] = strip_dup(c.f[ct]);
        if (*q[n] && *t[n]) n++;
        else free(q[n]), free(t[n]);
    }
    csv_free(&c);
    free(text);
    for (int i = 0; i < n; i++) {
        int j = i;
        for (int tries = 0; tries < 20 && !strcmp(q[j], q[i]); tries++) j = syn_pick(&B->rng, n);
        if (!strcmp(q[j], q[i])) continue;
        bd_emb(B, TASK_Q2I, bd_split(q[i]), INS_Q2I[i % 3], xstrdup(q[i]), INS_Q2I_P[i % 2], xstrdup(t[i]),
               xstrdup(t[j]), "ESCI");
    }
    for (int i = 0; i < n; i++) free(q[i]), free(t[i]);
    free(q), free(t);
    return 0;
}

/* ---- AG: AmazonQA questions and answers ---- */
static int bd_amazonqa(Build *B, const char *raw) {
    char *text;
    size_t len;
    if (read_text(raw, "amazonqa_partial/question_answers_Toys_and_Games.csv", &text, &len)) return -1;
    Csv c = {text, text + len, {0}, 0, 0, 0, 0, 0};
    csv_next(&c);
    int cq = csv_col(&c, "questionText"), ca = csv_col(&c, "answerText");
    if (cq < 0 || ca < 0) { csv_free(&c); free(text); return rf_error("%s/amazonqa: missing columns", raw); }
    char last[2048] = "";
    while (csv_next(&c) > (cq > ca ? cq : ca)) {  /* both columns present in the row */
        char *qs = strip_dup(c.f[cq]), *as = strip_dup(c.f[ca]);
        /* the first answer of each question only */
        if (!*qs || !*as || !strcmp(qs, last)) { free(qs), free(as); continue; }
        snprintf(last, sizeof last, "%s", qs);
        RfBuf in = {0};
        buf_printf(&in, "%s\nDocument: (none)", qs);
        char *p = syn_prompt(INS_AG[strlen(qs) % 3], in.data, NULL);
        buf_free(&in);
        bd_gen(B, TASK_AG, bd_split(qs), p, as, "Toys_and_Games");
        free(qs);
    }
    csv_free(&c);
    free(text);
    return 0;
}

/* ---- MovieLens-100k ---- */
static int bd_movielens(Build *B, const char *raw) {
    char *ut, *it, *dt;
    size_t ul, il, dl;
    if (read_text(raw, "movielens/ml-100k/u.user", &ut, &ul)) return -1;
    if (read_text(raw, "movielens/ml-100k/u.item", &it, &il)) { free(ut); return -1; }
    if (read_text(raw, "movielens/ml-100k/u.data", &dt, &dl)) { free(ut), free(it); return -1; }
    static const char *const genre[19] = {"unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                                          "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
                                          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"};
    enum { NU = 944, NI = 1683 };
    char *title[NI] = {0};
    int genres[NI] = {0}, age[NU] = {0};
    char gender[NU] = {0}, job[NU][32];
    memset(job, 0, sizeof job);
    for (char *l = strtok(it, "\n"); l; l = strtok(NULL, "\n")) {
        char *f[24];
        int nf = 0;
        for (char *p = l; nf < 24;) {
            f[nf++] = p;
            char *b = strchr(p, '|');
            if (!b) break;
            *b = 0, p = b + 1;
        }
        int id = atoi(f[0]);
        if (nf < 24 || id <= 0 || id >= NI) continue;
        title[id] = f[1];
        for (int g = 0; g < 19; g++) genres[id] |= (f[5 + g][0] == '1') << g;
    }
    for (char *l = strtok(ut, "\n"); l; l = strtok(NULL, "\n")) {
        int id, a;
        char g, j[32];
        if (sscanf(l, "%d|%d|%c|%31[^|]", &id, &a, &g, j) == 4 && id > 0 && id < NU)
            age[id] = a, gender[id] = g, snprintf(job[id], 32, "%s", j);
    }
    /* ratings grouped by user, ordered by timestamp */
    typedef struct { int u, i, r; long ts; } Rt;
    Rt *rt = malloc(100001 * sizeof *rt);
    int nr = 0;
    if (!rt) { free(ut), free(it), free(dt); return rf_error("build-data: out of memory"); }
    for (char *l = strtok(dt, "\n"); l && nr < 100001; l = strtok(NULL, "\n")) {
        Rt x;
        if (sscanf(l, "%d %d %d %ld", &x.u, &x.i, &x.r, &x.ts) == 4 && x.u > 0 && x.u < NU && x.i > 0 && x.i < NI && title[x.i])
            rt[nr++] = x;
    }
    /* insertion into per-user lists, then sort each by time (stable by item) */
    int *cnt = calloc(NU, sizeof *cnt), *start = calloc(NU + 1, sizeof *start);
    Rt *by = malloc((size_t)(nr ? nr : 1) * sizeof *by);
    if (!cnt || !start || !by) { free(cnt), free(start), free(by), free(rt), free(ut), free(it), free(dt); return rf_error("build-data: out of memory"); }
    for (int k = 0; k < nr; k++) cnt[rt[k].u]++;
    for (int u = 1; u < NU; u++) start[u + 1] = start[u] + cnt[u];
    memset(cnt, 0, NU * sizeof *cnt);
    for (int k = 0; k < nr; k++) by[start[rt[k].u] + cnt[rt[k].u]++] = rt[k];
    for (int u = 1; u < NU; u++)
        for (int a = start[u] + 1; a < start[u + 1]; a++) {
            Rt x = by[a];
            int b = a - 1;
            while (b >= start[u] && (by[b].ts > x.ts || (by[b].ts == x.ts && by[b].i > x.i))) by[b + 1] = by[b], b--;
            by[b + 1] = x;
        }
    /* options and negatives are titled movies the user never rated: a user who rated them all is skipped */
    int n_titled = 0;
    for (int i = 1; i < NI; i++) n_titled += title[i] != NULL;
    static unsigned char rated[NI];
    static const char *const ages[] = {"under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56 or older"};
    for (int u = 1; u < NU; u++) {
        int n = start[u + 1] - start[u];
        if (n < 12) continue;
        const Rt *h = by + start[u];
        int n_rated = 0;
        memset(rated, 0, sizeof rated);
        for (int m = 0; m < n; m++) {
            n_rated += !rated[h[m].i];
            rated[h[m].i] = 1;
        }
        if (n_rated >= n_titled) continue;
        char key[32];
        snprintf(key, sizeof key, "ml-%d", u);
        int split = bd_split(key), H = 10, nx = h[H].i;
        RfBuf in = {0}, ans = {0}, opt = {0};
        /* SR: the next movie among 20 options (19 movies the user never rated) */
        for (int k = 0; k < H; k++) buf_printf(&in, "%s%d: %s, %d stars", k ? "\n" : "", k + 1, title[h[k].i], h[k].r);
        int answer = syn_pick(&B->rng, 20);
        for (int k = 0; k < 20; k++) {
            int id = nx;
            if (k != answer)
                for (;;) {
                    id = 1 + syn_pick(&B->rng, NI - 1);
                    int seen = !title[id];
                    for (int m = 0; m < n && !seen; m++) seen = h[m].i == id;
                    if (!seen) break;
                }
            buf_printf(&opt, "%s%c: %s", k ? "\n" : "", 'A' + k, title[id]);
        }
        buf_printf(&ans, "%c", 'A' + answer);
        bd_gen(B, TASK_SR, split, syn_prompt(INS_SR[u % 3], in.data, opt.data), buf_take(&ans), "Movies");
        buf_free(&opt);
        /* U2I: history (reverse chronological) -> next movie; negative: an unseen movie */
        RfBuf q = {0};
        for (int k = H - 1; k >= 0; k--) buf_printf(&q, "%s%s", k < H - 1 ? "\n" : "", title[h[k].i]);
        int neg;
        for (;;) {
            neg = 1 + syn_pick(&B->rng, NI - 1);
            int seen = !title[neg];
            for (int m = 0; m < n && !seen; m++) seen = h[m].i == neg;
            if (!seen) break;
        }
        bd_emb(B, TASK_U2I, split, INS_U2I[u % 3], buf_take(&q), INS_U2I_P[u % 2], xstrdup(title[nx]),
               xstrdup(title[neg]), "Movies");
        /* UP: demographics and history -> the genres the user rates highly */
        buf_free(&in);
        int score[19] = {0}, seen_g[19] = {0};
        for (int k = 0; k < n; k++)
            for (int g = 0; g < 19; g++)
                if (genres[h[k].i] >> g & 1) seen_g[g]++, score[g] += h[k].r >= 4;
        int a = age[u] < 18 ? 0 : age[u] < 25 ? 1 : age[u] < 35 ? 2 : age[u] < 45 ? 3 : age[u] < 50 ? 4 : age[u] < 56 ? 5 : 6;
        buf_printf(&in, "Given a %s user who is aged %s and works as %s, this user's movie viewing history over time is "
                        "listed below. ", gender[u] == 'F' ? "female" : "male", ages[a], job[u]);
        for (int k = 0; k < (n < 20 ? n : 20); k++) buf_printf(&in, "%s, %d stars; ", title[h[k].i], h[k].r);
        buf_printf(&in, "Analyze user's preferences on movies (consider factors like genre, time period and critical "
                        "acclaim). Provide clear explanations based on relevant details from the user's movie viewing "
                        "history.");
        int best[3] = {-1, -1, -1};
        for (int g = 1; g < 19; g++)
            for (int b = 0; b < 3; b++)
                if (best[b] < 0 || score[g] > score[best[b]]) {
                    for (int m = 2; m > b; m--) best[m] = best[m - 1];
                    best[b] = g;
                    break;
                }
        double mean = 0;
        for (int k = 0; k < n; k++) mean += h[k].r;
        mean /= n;
        buf_printf(&ans, "Based on %d rated movies, the user most enjoys %s, %s and %s films (%d, %d and %d of them rated 4 "
                         "or 5 stars). The average rating is %.1f stars, so the user is %s.",
                   n, genre[best[0]], genre[best[1]], genre[best[2]], score[best[0]], score[best[1]], score[best[2]], mean,
                   mean >= 3.8 ? "generous with ratings" : mean <= 3.2 ? "a demanding viewer" : "a balanced rater");
        bd_gen(B, TASK_UP, split, syn_prompt(in.data, NULL, NULL), buf_take(&ans), "Movies");
        buf_free(&in);
    }
    /* IP: a movie's year and genres, with its mean rating */
    double sum[NI] = {0};
    int num[NI] = {0};
    for (int k = 0; k < nr; k++) sum[rt[k].i] += rt[k].r, num[rt[k].i]++;
    for (int i = 1; i < NI; i++) {
        if (!title[i] || num[i] < 20) continue;
        RfBuf in = {0}, ans = {0};
        char key[32];
        snprintf(key, sizeof key, "mli-%d", i);
        buf_printf(&in, "Introduce movie %s and describe its attributes (including but not limited to genre, time "
                        "period and critical acclaim).", title[i]);
        buf_printf(&ans, "%s is a", title[i]);
        int first = 1;
        for (int g = 1; g < 19; g++)
            if (genres[i] >> g & 1) buf_printf(&ans, "%s%s", first ? " " : ", ", genre[g]), first = 0;
        buf_printf(&ans, "%s film. MovieLens users rated it %.1f out of 5 on average over %d ratings.", first ? " movie" : "",
                   sum[i] / num[i], num[i]);
        bd_gen(B, TASK_IP, bd_split(key), syn_prompt(in.data, NULL, NULL), buf_take(&ans), "Movies");
        buf_free(&in);
    }
    free(cnt), free(start), free(by), free(rt), free(ut), free(it), free(dt);
    return 0;
}

/* ---- Amazon Reviews 2023 user histories ---- */
static const char *jstr(const Json *o, const char *k) {
    const Json *v = json_get(o, k);
    return v && v->type == JSON_STRING ? v->string : NULL;
}

/* Append every line of RAW/REL (one JSON value per line, .gz or not) to
 * (*v)[*n ..], growing the array (*cap entries); a line that does not parse
 * is an error naming "RAW/REL: line K". */
static int read_json_lines(const char *raw, const char *rel, Json **v, int *n, int *cap) {
    char *text;
    size_t len;
    if (read_text(raw, rel, &text, &len)) return -1;
    int rc = 0;
    long line = 0;
    for (char *l = strtok(text, "\n"); l && !rc; l = strtok(NULL, "\n")) {
        line++;
        char where[600];
        snprintf(where, sizeof where, "%s/%s: line %ld", raw, rel, line);
        if (*n == *cap) {
            int grown = *cap ? 2 * *cap : 256;
            Json *p = realloc(*v, (size_t)grown * sizeof *p);
            if (!p) { rc = rf_error("%s: out of memory", where); break; }
            *v = p, *cap = grown;
        }
        if (json_parse(&(*v)[*n], l, strlen(l), where)) rc = -1;
        else (*n)++;
    }
    free(text);
    return rc;
}

static int bd_amazon2023(Build *B, const char *raw) {
    static const char *const files[3] = {"training.jsonl", "validation.jsonl", "test.jsonl"};
    /* every product title seen, as negatives */
    char **pool = NULL;
    int npool = 0, cap = 0;
    Json *users = NULL;
    int nu = 0, ucap = 0;
    int rc = 0;
    for (int f = 0; f < 3 && !rc; f++) {
        char rel[256];
        snprintf(rel, sizeof rel, "amazon_reviews/2023_user_histories_sample/%s", files[f]);
        rc = read_json_lines(raw, rel, &users, &nu, &ucap);
    }
    for (int u = 0; u < nu && !rc; u++) {
        const Json *h = json_get(&users[u], "history"), *ho = json_get(&users[u], "heldout");
        for (size_t k = 0; h && k <= h->count; k++) {
            const Json *rv = k < h->count ? &h->items[k] : ho;
            const Json *pr = rv ? json_get(rv, "product") : NULL;
            const char *t = pr ? jstr(pr, "title") : NULL;
            if (!t) continue;
            if (npool == cap) {
                cap = cap ? 2 * cap : 1024;
                char **p = realloc(pool, (size_t)cap * sizeof *p);
                if (!p) { rc = -1; break; }
                pool = p;
            }
            pool[npool++] = (char *)t;
        }
    }
    /* options and negatives must differ from the next title: a pool of two distinct titles guarantees one */
    int distinct = 0;
    for (int i = 1; i < npool && !distinct; i++) distinct = strcmp(pool[i], pool[0]) != 0;
    for (int u = 0; u < nu && !rc && distinct; u++) {
        const Json *h = json_get(&users[u], "history"), *ho = json_get(&users[u], "heldout");
        const char *uid = jstr(&users[u], "user_id"), *cat = jstr(&users[u], "category");
        if (!h || h->type != JSON_ARRAY || !h->count || !ho || !uid) continue;
        const Json *hp = json_get(ho, "product");
        const char *next = hp ? jstr(hp, "title") : NULL;
        if (!next) continue;
        int split = bd_split(uid);
        RfBuf in = {0}, q = {0}, opt = {0}, ans = {0};
        int ok = 1;
        for (size_t k = 0; k < h->count; k++) {
            const Json *pr = json_get(&h->items[k], "product");
            const char *t = pr ? jstr(pr, "title") : NULL;
            if (!t) { ok = 0; break; }
            buf_printf(&in, "%s%zu: %s", k ? "\n" : "", k + 1, t);
            buf_printf(&q, "%s%s", k ? "\n" : "", jstr(json_get(&h->items[h->count - 1 - k], "product"), "title") ? jstr(json_get(&h->items[h->count - 1 - k], "product"), "title") : "");
        }
        if (!ok) { buf_free(&in), buf_free(&q); continue; }
        int answer = syn_pick(&B->rng, 20);
        for (int k = 0; k < 20; k++) {
            const char *t = next;
            while (k != answer && (t == next || !strcmp(t, next))) t = pool[syn_pick(&B->rng, npool)];
            buf_printf(&opt, "%s%c: %s", k ? "\n" : "", 'A' + k, t);
        }
        buf_printf(&ans, "%c", 'A' + answer);
        bd_gen(B, TASK_SR, split, syn_prompt(INS_SR[u % 3], in.data, opt.data), buf_take(&ans), cat ? cat : "Amazon");
        const char *neg = next;
        while (!strcmp(neg, next)) neg = pool[syn_pick(&B->rng, npool)];
        bd_emb(B, TASK_U2I, split, INS_U2I[u % 3], buf_take(&q), INS_U2I_P[u % 2], xstrdup(next), xstrdup(neg),
               cat ? cat : "Amazon");
        buf_free(&in), buf_free(&opt);
        /* SA: every review with its star rating */
        for (size_t k = 0; k <= h->count; k++) {
            const Json *rv = k < h->count ? &h->items[k] : ho, *rt = json_get(rv, "rating");
            const char *txt = jstr(rv, "review_full");
            if (!txt || !rt || rt->type != JSON_NUMBER || rt->number < 1 || rt->number > 5) continue;
            char *clean = strip_dup(txt);
            if (!*clean) { free(clean); continue; }
            char *p = syn_prompt(INS_SA[(u + (int)k) % 3], clean, SA_OPTIONS);
            free(clean);
            bd_gen(B, TASK_SA, split, p, xstrdup(SA_ANSWER[(int)rt->number - 1]), cat ? cat : "Amazon");
        }
    }
    free(pool);
    for (int u = 0; u < nu; u++) json_free(&users[u]);
    free(users);
    return rc;
}

/* ---- Amazon Reviews 2018: I2I and PRP from the meta files, SA from the 5-core reviews ---- */

/* Plain text of a field that may hold HTML: tags dropped, the common entities
 * decoded, every run of whitespace one space, at most max_words words (0: no
 * limit).  "Arts, Music &amp; Photography" -> "Arts, Music & Photography". */
static char *plain_text(const char *s, int max_words) {
    static const struct { const char *name, *text; } ENT[] = {
        {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&apos;", "'"}, {"&nbsp;", " "}};
    RfBuf b = {0};
    int words = 0, gap = 1;  /* gap: whitespace or a tag since the last character kept */
    for (const char *p = s; *p;) {
        const char *piece = p, *close;
        size_t len = 1;
        if (*p == '<' && (close = strchr(p, '>'))) {
            p = close + 1, gap = 1;
            continue;
        }
        for (size_t k = 0; *p == '&' && k < sizeof ENT / sizeof *ENT; k++)
            if (!strncmp(p, ENT[k].name, strlen(ENT[k].name))) {
                piece = ENT[k].text, len = strlen(piece);
                p += strlen(ENT[k].name) - 1;
                break;
            }
        p++;
        if (len == 1 && isspace((unsigned char)*piece)) {
            gap = 1;
            continue;
        }
        if (gap) {
            if (max_words && words == max_words) break;
            if (words) buf_append(&b, " ", 1);
            words++, gap = 0;
        }
        buf_append(&b, piece, len);
    }
    return buf_take(&b);
}

/* An item of a meta file, reduced to what I2I and PRP use. */
enum { REL_BUY, REL_VIEW };  /* also_buy, also_view */
typedef struct {
    char *asin;
    char *name;     /* the title, or "publisher: first sentence of the description" when the title is broken HTML */
    char *cats;     /* the category path below the top level, as "A, B" */
    char **rel[2];  /* the ASINs of also_buy and also_view, as read */
    int nrel[2];
    int *link[2];   /* the same as indices of items of this file: self, unknown ASINs and repeats dropped */
    int nlink[2];
    int gid;        /* the item's name, as a number (MetaNames) */
    long line;
} MetaItem;

static void meta_clear(MetaItem *m) {
    free(m->asin), free(m->name), free(m->cats);
    for (int r = 0; r < 2; r++) {
        for (int k = 0; k < m->nrel[r]; k++) free(m->rel[r][k]);
        free(m->rel[r]), free(m->link[r]);
    }
}

static void meta_free(MetaItem *it, int n) {
    for (int i = 0; i < n; i++) meta_clear(&it[i]);
    free(it);
}

static int meta_cmp(const void *a, const void *b) {
    const MetaItem *x = a, *y = b;
    int c = strcmp(x->asin, y->asin);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

static int meta_find(const MetaItem *it, int n, const char *asin) { /* binary search of the sorted items */
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(it[mid].asin, asin);
        if (!c) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int has_idx(const int *a, int n, int v) {
    for (int i = 0; i < n; i++)
        if (a[i] == v) return 1;
    return 0;
}

/* Some ASINs share a name ("Amazon eGift Card" is many items) and a reader of
 * the text cannot tell them apart, so "unrelated" is decided between names:
 * items of one name share `gid`, and rel[g] lists the names related to name g
 * (also bought or also viewed, in either direction). */
typedef struct { int **rel, *n, count; } MetaNames;
typedef struct { const char *name; int i; } NameIdx;

static int name_idx_cmp(const void *a, const void *b) {
    const NameIdx *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->i - y->i;
}

static void meta_names_free(MetaNames *nm) {
    for (int g = 0; g < nm->count; g++) free(nm->rel[g]);
    free(nm->rel), free(nm->n);
    memset(nm, 0, sizeof *nm);
}

static int meta_names(MetaNames *nm, MetaItem *it, int n) {
    memset(nm, 0, sizeof *nm);
    NameIdx *s = malloc(((size_t)n + 1) * sizeof *s);
    if (!s) return -1;
    for (int i = 0; i < n; i++) s[i].name = it[i].name, s[i].i = i;
    qsort(s, (size_t)n, sizeof *s, name_idx_cmp);
    for (int k = 0; k < n; k++) {
        if (k == 0 || strcmp(s[k].name, s[k - 1].name)) nm->count++;
        it[s[k].i].gid = nm->count - 1;
    }
    free(s);
    nm->rel = calloc((size_t)nm->count + 1, sizeof *nm->rel);
    nm->n = calloc((size_t)nm->count + 1, sizeof *nm->n);
    if (!nm->rel || !nm->n) { meta_names_free(nm); return -1; }
    for (int i = 0; i < n; i++)
        for (int r = 0; r < 2; r++)
            for (int k = 0; k < it[i].nlink[r]; k++) {
                int g = it[i].gid, h = it[it[i].link[r][k]].gid;
                if ((!has_idx(nm->rel[g], nm->n[g], h) && push_idx(&nm->rel[g], &nm->n[g], h)) ||
                    (!has_idx(nm->rel[h], nm->n[h], g) && push_idx(&nm->rel[h], &nm->n[h], g))) {
                    meta_names_free(nm);
                    return -1;
                }
            }
    return 0;
}

/* A random item whose name is neither a's nor related to it, or -1 after 100 draws. */
static int meta_unrelated(Build *B, const MetaItem *it, int n, const MetaNames *nm, int a) {
    int g = it[a].gid;
    for (int t = 0; t < 100; t++) {
        int j = syn_pick(&B->rng, n);
        if (it[j].gid != g && !has_idx(nm->rel[g], nm->n[g], it[j].gid)) return j;
    }
    return -1;
}

/* The item's name: its title, or, for a title that is an HTML fragment (most
 * Magazine_Subscriptions titles, see PROVENANCE.md), the brand (the
 * publisher) and the description's first sentence.  NULL when neither exists. */
static char *meta_name(const Json *v) {
    const char *title = jstr(v, "title"), *brand = jstr(v, "brand"), *desc = NULL;
    if (title && !strchr(title, '<')) {
        char *t = plain_text(title, 0);
        if (t && *t) return t;
        free(t);
    }
    const Json *d = json_get(v, "description");
    for (size_t i = 0; d && d->type == JSON_ARRAY && i < d->count && !desc; i++)
        if (d->items[i].type == JSON_STRING && d->items[i].len) desc = d->items[i].string;
    char *b = plain_text(brand ? brand : "", 0), *s = plain_text(desc ? desc : "", 25);
    if (!b || !s) {
        free(b), free(s);
        return NULL;
    }
    for (char *p = s; *p; p++) /* the first sentence, when it ends within the 25 words */
        if ((*p == '.' || *p == '!' || *p == '?') && p[1] == ' ' && p - s >= 10) {
            p[1] = 0;
            break;
        }
    RfBuf o = {0};
    if (*b && *s) buf_printf(&o, "%s: %s", b, s);
    else if (*b || *s) buf_printf(&o, "%s", *b ? b : s);
    free(b), free(s);
    return o.data; /* NULL when empty */
}

/* The category path without its top level (the file's category): entries that
 * are not category names (HTML left-overs, sentences, repeats) are skipped;
 * an item with no other entry keeps the top level. */
static char *meta_cats(const Json *v, const char *fallback) {
    const Json *c = json_get(v, "category");
    RfBuf o = {0};
    char *top = c && c->type == JSON_ARRAY && c->count && c->items[0].type == JSON_STRING
                    ? plain_text(c->items[0].string, 0) : xstrdup(fallback);
    char *last = NULL;
    for (size_t i = 1; c && c->type == JSON_ARRAY && i < c->count; i++) {
        if (c->items[i].type != JSON_STRING) continue;
        char *e = plain_text(c->items[i].string, 0);
        if (!e || !top) { free(e); continue; }
        size_t n = strlen(e);
        if (n && n <= 40 && !strpbrk(e, "<>") && e[n - 1] != '.' && strcmp(e, top) && (!last || strcmp(e, last))) {
            buf_printf(&o, "%s%s", o.len ? ", " : "", e);
            free(last);
            last = e;
        } else free(e);
    }
    free(last);
    if (!o.len) buf_printf(&o, "%s", top && *top ? top : fallback);
    free(top);
    return buf_take(&o);
}

/* Read one meta file (one JSON object per line) into items sorted by ASIN,
 * the first line of an ASIN kept, and resolve also_buy/also_view. */
static int bd_load_meta(const char *raw, const char *rel, const char *category, MetaItem **out, int *n_out) {
    char *text;
    size_t len;
    *out = NULL, *n_out = 0;
    if (read_text(raw, rel, &text, &len)) return -1;
    MetaItem *it = NULL;
    int n = 0, cap = 0, rc = 0;
    long line = 0;
    for (char *l = strtok(text, "\n"); l && !rc; l = strtok(NULL, "\n")) {
        line++;
        char where[600];
        snprintf(where, sizeof where, "%s/%s: line %ld", raw, rel, line);
        Json v;
        if (json_parse(&v, l, strlen(l), where)) { rc = -1; break; }
        const char *asin = jstr(&v, "asin");
        char *name = asin && *asin ? meta_name(&v) : NULL;
        if (!name) { json_free(&v); continue; }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            MetaItem *p = realloc(it, (size_t)cap * sizeof *p);
            if (!p) { free(name), json_free(&v); rc = rf_error("%s: out of memory", where); break; }
            it = p;
        }
        MetaItem *m = &it[n++];
        memset(m, 0, sizeof *m);
        m->asin = xstrdup(asin), m->name = name, m->cats = meta_cats(&v, category), m->line = line;
        if (!m->asin || !m->cats) rc = rf_error("%s: out of memory", where);
        static const char *const key[2] = {"also_buy", "also_view"};
        for (int r = 0; r < 2; r++) {
            const Json *a = json_get(&v, key[r]);
            if (!a || a->type != JSON_ARRAY || !a->count) continue;
            m->rel[r] = calloc(a->count, sizeof *m->rel[r]);
            for (size_t k = 0; m->rel[r] && k < a->count; k++)
                if (a->items[k].type == JSON_STRING && (m->rel[r][m->nrel[r]] = xstrdup(a->items[k].string))) m->nrel[r]++;
        }
        json_free(&v);
    }
    free(text);
    if (rc) { meta_free(it, n); return -1; }
    if (n) qsort(it, (size_t)n, sizeof *it, meta_cmp);
    int k = 0; /* keep the first line of each ASIN (Magazine_Subscriptions repeats 1,065 of them) */
    for (int i = 0; i < n; i++) {
        if (k && !strcmp(it[i].asin, it[k - 1].asin)) meta_clear(&it[i]);
        else it[k++] = it[i];
    }
    n = k;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < 2; r++) {
            it[i].link[r] = malloc(((size_t)it[i].nrel[r] + 1) * sizeof(int));
            for (int j = 0; it[i].link[r] && j < it[i].nrel[r]; j++) {
                int b = meta_find(it, n, it[i].rel[r][j]);
                if (b >= 0 && b != i && !has_idx(it[i].link[r], it[i].nlink[r], b)) it[i].link[r][it[i].nlink[r]++] = b;
            }
        }
    *out = it, *n_out = n;
    return 0;
}

/* "title: NAME, categories: A, B" as Appendix B's I2I example. */
static char *meta_i2i_text(const MetaItem *m) {
    RfBuf b = {0};
    buf_printf(&b, "title: %s, categories: %s", m->name, m->cats);
    return buf_take(&b);
}

/* One meta file (`category` as in its name, e.g. "Gift_Cards"):
 *   I2I: query an item, positive an item it lists as also viewed (the
 *        closest the raw data comes to "similar"), negative an item related
 *        to it in neither direction; test items also go to
 *        item_embedding_test.json with every also-viewed item as positives
 *        (at most 10) and 5 unrelated negatives;
 *   PRP: the item with one item it lists as also bought but not also viewed
 *        ("A"), one listed as also viewed but not also bought ("B"), and, when
 *        it had either, one unrelated item ("E"); the five options of the
 *        synthetic world, of which C and D do not occur here.
 * Splits by a hash of the item's ASIN; links stay within the file. */
static int bd_amazon2018_meta(Build *B, const char *raw, const char *category) {
    char rel[256], label[64];
    const char *source = category; /* as the 2023 histories name their categories */
    snprintf(rel, sizeof rel, "amazon_reviews/2018_meta/meta_%s.json.gz", category);
    snprintf(label, sizeof label, "%s", category);
    for (char *p = label; *p; p++) if (*p == '_') *p = ' ';
    MetaItem *it;
    int n;
    if (bd_load_meta(raw, rel, label, &it, &n)) return -1;
    MetaNames nm;
    if (meta_names(&nm, it, n)) {
        meta_free(it, n);
        return rf_error("%s/%s: out of memory", raw, rel);
    }
    RfBuf opt = {0};
    for (int k = 0; k < 5; k++) buf_printf(&opt, "%s%s", k ? "\n" : "", PRP_OPTION[k]);
    int *cand = malloc(((size_t)n + 1) * sizeof *cand);
    for (int a = 0; a < n && cand; a++) {
        const MetaItem *m = &it[a];
        int split = bd_split(m->asin);
        /* I2I */
        int neg = m->nlink[REL_VIEW] ? meta_unrelated(B, it, n, &nm, a) : -1;
        if (neg >= 0) {
            int pos = m->link[REL_VIEW][syn_pick(&B->rng, m->nlink[REL_VIEW])];
            bd_emb(B, TASK_I2I, split, INS_I2I[a % 3], meta_i2i_text(m), INS_I2I_P[a % 2], meta_i2i_text(&it[pos]),
                   meta_i2i_text(&it[neg]), source);
            int negs[5], neg_names[5], nn = 0; /* 5 negatives of 5 names */
            for (int t = 0; t < 100 && nn < 5 && split == SPLIT_TEST; t++) {
                int j = meta_unrelated(B, it, n, &nm, a);
                if (j >= 0 && !has_idx(neg_names, nn, it[j].gid)) negs[nn] = j, neg_names[nn++] = it[j].gid;
            }
            if (nn == 5) {
                int np = m->nlink[REL_VIEW] < 10 ? m->nlink[REL_VIEW] : 10;
                Passage p = one_passage(INS_I2I_P[0], NULL), ng = one_passage(INS_I2I_P[1], NULL);
                free(p.texts), free(ng.texts);
                p.texts = calloc((size_t)np, sizeof *p.texts), p.n_texts = np, p.is_list = 1;
                ng.texts = calloc(5, sizeof *ng.texts), ng.n_texts = 5, ng.is_list = 1;
                for (int k = 0; p.texts && k < np; k++) p.texts[k] = meta_i2i_text(&it[m->link[REL_VIEW][k]]);
                for (int k = 0; ng.texts && k < 5; k++) ng.texts[k] = meta_i2i_text(&it[negs[k]]);
                emit_emb(&B->items, NULL, TASK_I2I, one_passage(INS_I2I[a % 3], meta_i2i_text(m)), &p, 1, &ng, 1, source,
                         SPLIT_TEST, B->n_items++);
            }
        }
        /* PRP */
        int emitted = 0;
        for (int r = 0; r < 2; r++) {
            int nc = 0;
            for (int k = 0; k < m->nlink[r]; k++)
                if (!has_idx(m->link[1 - r], m->nlink[1 - r], m->link[r][k])) cand[nc++] = m->link[r][k];
            if (!nc) continue;
            RfBuf in = {0};
            buf_printf(&in, "Product 1:: %s\nProduct 2:: %s", m->name, it[cand[syn_pick(&B->rng, nc)]].name);
            bd_gen(B, TASK_PRP, split, syn_prompt(INS_PRP[(a + r) % 3], in.data, opt.data), xstrdup(r == REL_BUY ? "A" : "B"),
                   source);
            buf_free(&in);
            emitted = 1;
        }
        int other = emitted ? meta_unrelated(B, it, n, &nm, a) : -1;
        if (other >= 0) {
            RfBuf in = {0};
            buf_printf(&in, "Product 1:: %s\nProduct 2:: %s", m->name, it[other].name);
            bd_gen(B, TASK_PRP, split, syn_prompt(INS_PRP[(a + 2) % 3], in.data, opt.data), xstrdup("E"), source);
            buf_free(&in);
        }
    }
    int rc = cand ? 0 : rf_error("%s/%s: out of memory", raw, rel);
    free(cand);
    buf_free(&opt);
    meta_names_free(&nm);
    meta_free(it, n);
    return rc;
}

/* SA from one 5-core review file (`category` as in its name): every review
 * with a text and a whole star rating, split by reviewer.  Used when the
 * Amazon 2023 histories gave no SA record. */
static int bd_amazon2018_reviews(Build *B, const char *raw, const char *category) {
    char rel[256];
    const char *source = category;
    snprintf(rel, sizeof rel, "amazon_reviews/2018_5core/%s_5.json.gz", category);
    /* parse every line first, so that a bad line adds no record */
    Json *rv = NULL;
    int n = 0, cap = 0;
    int rc = read_json_lines(raw, rel, &rv, &n, &cap);
    for (int i = 0; i < n && !rc; i++) {
        const Json *st = json_get(&rv[i], "overall");
        const char *txt = jstr(&rv[i], "reviewText"), *who = jstr(&rv[i], "reviewerID");
        if (!txt || !who || !st || st->type != JSON_NUMBER || !(st->number >= 1 && st->number <= 5) ||
            st->number != floor(st->number))
            continue;
        char *clean = strip_dup(txt);
        if (clean && *clean)
            bd_gen(B, TASK_SA, bd_split(who), syn_prompt(INS_SA[i % 3], clean, SA_OPTIONS),
                   xstrdup(SA_ANSWER[(int)st->number - 1]), source);
        free(clean);
    }
    for (int i = 0; i < n; i++) json_free(&rv[i]);
    free(rv);
    return rc;
}

int build_data_main(int argc, char **argv) {
    const char *raw = NULL, *out = NULL;
    long seed = 42;
    Flag f[] = {
        {"--raw", 's', &raw, "folder of the public raw sources (e.g. ../shared/data/raw)"},
        {"--out", 's', &out, "dataset folder to write; new or empty"},
        {"--seed", 'i', &seed, "seed of the splits, negatives and shuffles (default 42)"},
    };
    int r = parse_flags(argc, argv, f, 3, "--raw DIR --out DIR [--seed N]\n\n"
                        "Builds the published RecFound format from the public raw sources in DIR (MovieLens-100k,\n"
                        "MuDoCo-QR, Amazon-Google products, ESCI, AmazonQA, Amazon Reviews 2023 user histories,\n"
                        "Amazon Reviews 2018 meta files and 5-core reviews, .json.gz) and prints which tasks could\n"
                        "not be built and why.");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("build-data", "--raw", raw) || need_flag("build-data", "--out", out)) return -1;
    if (rf_new_output(out, NULL)) return -1;
    Build *B = calloc(1, sizeof *B);
    if (!B) return rf_error("build-data: out of memory");
    rng_seed(&B->rng, seed);
    static const struct { const char *name, *what; } srcs[9] = {
        {"mudoco", "QR"}, {"mudoco-weather", "QR"}, {"amazon_google", "PM"}, {"esci", "Q2I"},
        {"amazonqa_partial", "AG"}, {"movielens/ml-100k", "SR, U2I, UP, IP"}, {"amazon_reviews/2023", "SR, U2I, SA"},
        {"amazon_reviews/2018_meta/Gift_Cards", "I2I, PRP"}, {"amazon_reviews/2018_meta/Magazine_Subscriptions", "I2I, PRP"}};
    for (int s = 0; s < 9; s++) {
        int rc = s == 0 ? bd_mudoco(B, raw, "mudoco/qr_mudoco_news.json", "news")
               : s == 1 ? bd_mudoco(B, raw, "mudoco/qr_mudoco_weather.json", "weather")
               : s == 2 ? bd_amazon_google(B, raw)
               : s == 3 ? bd_esci(B, raw)
               : s == 4 ? bd_amazonqa(B, raw)
               : s == 5 ? bd_movielens(B, raw)
               : s == 6 ? bd_amazon2023(B, raw)
               : s == 7 ? bd_amazon2018_meta(B, raw, "Gift_Cards")
                        : bd_amazon2018_meta(B, raw, "Magazine_Subscriptions");
        if (rc) printf("skipped %s (%s): %s\n", srcs[s].name, srcs[s].what, rf_last_error());
    }
    /* SA from the 2018 5-core reviews where the 2023 histories gave none */
    static const char *const CORE5[5] = {"Gift_Cards", "Magazine_Subscriptions", "All_Beauty", "AMAZON_FASHION",
                                         "Appliances"};
    int no_sa = !(B->count[TASK_SA][0] + B->count[TASK_SA][1] + B->count[TASK_SA][2]);
    for (int f = 0; f < 5 && no_sa; f++)
        if (bd_amazon2018_reviews(B, raw, CORE5[f]))
            printf("skipped amazon_reviews/2018_5core/%s (SA): %s\n", CORE5[f], rf_last_error());
    long built = 0;
    for (int k = 0; k < 2; k++)
        for (int sp = 0; sp < N_SPLITS; sp++) built += (long)B->L[k][sp].n;
    int rc = built ? rf_mkdirs(out) : rf_error("%s: no source could be read (see the lines above); nothing written", raw);
    char path[4096];
    for (int k = 0; k < 2 && !rc; k++)
        for (int s = 0; s < N_SPLITS && !rc; s++) {
            Lines *L = &B->L[k][s];
            snprintf(path, sizeof path, "%s/%s_dataset_%s.jsonl", out, k ? "Generative" : "Embedding", SPLIT_NAMES[s]);
            rc = L->fail ? rf_error("%s: out of memory", path) : write_lines(path, L);
            if (!rc) printf("%s: %zu records\n", path, L->n);
        }
    if (!rc && B->items.n) { /* I2I test records with lists, as the published item_embedding_test.json */
        snprintf(path, sizeof path, "%s/item_embedding_test.json", out);
        rc = B->items.fail ? rf_error("%s: out of memory", path) : write_array(path, &B->items);
        if (!rc) printf("%s: %zu records (I2I with lists)\n", path, B->items.n);
    }
    for (int t = 0; t < N_TASKS && !rc; t++) {
        long n = B->count[t][0] + B->count[t][1] + B->count[t][2];
        if (n) printf("  %-4s %6ld train %5ld eval %5ld test\n", TASKS[t].short_name, B->count[t][0], B->count[t][1],
                      B->count[t][2]);
    }
    static const char *const why[N_TASKS] = {
        [TASK_I2I] = "Amazon 2018 meta files (also_view links) missing",
        [TASK_PRP] = "Amazon 2018 meta files (also_buy/also_view links) missing",
        [TASK_AVE] = "no attribute-value labels in the raw sources (MAVE is not included)",
        [TASK_AP] = "AmazonQA here has no review snippets and no is_answerable label",
        [TASK_Q2I] = "ESCI file missing",
        [TASK_QR] = "MuDoCo files missing",
        [TASK_PM] = "Amazon-Google files missing",
        [TASK_AG] = "AmazonQA file missing",
        [TASK_SR] = "MovieLens and Amazon 2023 files missing",
        [TASK_U2I] = "MovieLens and Amazon 2023 files missing",
        [TASK_UP] = "MovieLens files missing",
        [TASK_IP] = "MovieLens files missing",
        [TASK_SA] = "Amazon 2023 histories and 2018 5-core reviews missing",
    };
    for (int t = 0; t < N_TASKS && !rc; t++)
        if (!(B->count[t][0] + B->count[t][1] + B->count[t][2]))
            printf("not built: %s (%s): %s\n", TASKS[t].short_name, TASKS[t].name, why[t]);
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < N_SPLITS; s++) lines_free(&B->L[k][s]);
    lines_free(&B->items);
    free(B);
    return rc;
}

/* ---------------------------------------------------- tokenised samples */

/* Tokens of `text`; the markers "<s>" and "</s>" inside it become the special
 * tokens, as the prompt formats above spell them out. */
static int encode(const Tokenizer *tok, const char *text, size_t len, int **ids, int *n) {
    return tok_encode(tok, text, len, 0, ids, n);
}

/* Encode head + tail as one string and find where the tail starts: the
 * length of enc(head), or, when the tokenizer merged across the boundary, the
 * longest common prefix of enc(head) and enc(head + tail) (counted in *merged). */
static int encode_split(const Tokenizer *tok, const RfBuf *head, const RfBuf *tail, int **ids, int *n, int *start,
                        long *merged) {
    RfBuf all = {0};
    int *hid = NULL, nh = 0;
    buf_append(&all, head->data ? head->data : "", head->len);
    buf_append(&all, tail->data ? tail->data : "", tail->len);
    if (!all.data) return rf_error("out of memory while tokenising");
    int rc = encode(tok, all.data, all.len, ids, n);
    if (!rc) rc = encode(tok, head->data ? head->data : "", head->len, &hid, &nh);
    if (!rc) {
        int k = 0;
        while (k < nh && k < *n && hid[k] == (*ids)[k]) k++;
        if (k < nh && merged) (*merged)++;
        *start = k;
    }
    free(hid);
    buf_free(&all);
    return rc;
}

void sample_free(Sample *s) {
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* Generative sample (official-code.md §3): prompt tokens [0, start), answer
 * tokens and </s> [start, len).  Too long for max_len: the prompt loses its
 * oldest tokens after <s> (the answer and the end of the prompt, with its
 * instruction to answer, stay); when not even the answer fits, the sample is
 * dropped.  Returns 1 (kept), 0 (dropped, st->dropped counts it) or -1. */
int sample_gen(Sample *s, const Tokenizer *tok, const Record *r, int max_len, SampleStats *st) {
    memset(s, 0, sizeof *s);
    if (r->n_turns < 2) return rf_error("record of line %ld has no answer", r->line);
    RfBuf prompt = {0}, answer = {0};
    format_gen(&prompt, &answer, r->turns[0], r->turns[1]);
    int rc = encode_split(tok, &prompt, &answer, &s->ids, &s->len, &s->start, st ? &st->boundary_merges : NULL);
    buf_free(&prompt);
    buf_free(&answer);
    if (rc) return -1;
    s->task = r->task;
    if (s->len <= max_len) return 1;
    int n_answer = s->len - s->start, keep_prompt = max_len - n_answer;
    if (keep_prompt < 2) {  /* room for <s> and at least one prompt token, or nothing */
        if (st) st->dropped++;
        sample_free(s);
        return 0;
    }
    /* keep ids[0] (<s>), drop the oldest prompt tokens after it */
    int cut = s->start - keep_prompt;
    memmove(s->ids + 1, s->ids + 1 + cut, (size_t)(s->len - 1 - cut) * sizeof(int));
    s->len -= cut;
    s->start -= cut;
    if (st) st->truncated++;
    return 1;
}

/* Embedding sample: prefix tokens [0, start) (attended to, not pooled), text
 * tokens [start, len).  Too long: the text is cut at max_len; a prefix that
 * leaves no text token drops the sample. */
int sample_emb(Sample *s, const Tokenizer *tok, const char *instr, const char *text, int task, int max_len,
               EmbFormat fmt, SampleStats *st) {
    memset(s, 0, sizeof *s);
    RfBuf prefix = {0}, body = {0};
    format_emb(&prefix, &body, instr, text, fmt);
    int rc = encode_split(tok, &prefix, &body, &s->ids, &s->len, &s->start, st ? &st->boundary_merges : NULL);
    buf_free(&prefix);
    buf_free(&body);
    if (rc) return -1;
    s->task = task;
    if (s->start >= s->len || s->start >= max_len) {
        if (st) st->dropped++;
        sample_free(s);
        return 0;
    }
    if (s->len > max_len) {
        s->len = max_len;
        if (st) st->truncated++;
    }
    return 1;
}

int batch_alloc(TokBatch *tb, int rows, int max_len) {
    memset(tb, 0, sizeof *tb);
    tb->cap_rows = rows;
    tb->cap_len = max_len;
    tb->ids = calloc((size_t)rows * max_len, sizeof(int));
    tb->lengths = calloc(rows, sizeof(int));
    tb->tasks = calloc(rows, sizeof(int));
    tb->start = calloc(rows, sizeof(int));
    tb->weights = calloc((size_t)rows * max_len, sizeof(float));
    if (!tb->ids || !tb->lengths || !tb->tasks || !tb->start || !tb->weights) {
        batch_free(tb);
        return rf_error("out of memory for a batch of %d x %d tokens", rows, max_len);
    }
    return 0;
}

void batch_free(TokBatch *tb) {
    free(tb->ids); free(tb->lengths); free(tb->tasks); free(tb->start); free(tb->weights);
    memset(tb, 0, sizeof *tb);
}

/* Right-pad samples[0..n) into tb (pad id `pad`) and describe them as a Batch.
 * weights[b, t] = 1 where token t + 1 is an answer token (t in [start-1, len-1)),
 * for generative samples; scaled later by the caller. */
Batch batch_fill(TokBatch *tb, Sample *const *samples, int n, int pad) {
    int T = 1;
    for (int i = 0; i < n; i++)
        if (samples[i]->len > T) T = samples[i]->len;
    for (int i = 0; i < n; i++) {
        const Sample *s = samples[i];
        tb->lengths[i] = s->len;
        tb->tasks[i] = s->task;
        tb->start[i] = s->start;
        for (int t = 0; t < T; t++) {
            tb->ids[i * T + t] = t < s->len ? s->ids[t] : pad;
            tb->weights[i * T + t] = (t >= s->start - 1 && t < s->len - 1) ? 1.0f : 0.0f;
        }
    }
    Batch b = {.B = n, .T = T, .ids = tb->ids, .lengths = tb->lengths, .tasks = tb->tasks};
    return b;
}

/* Every training text of a dataset as the model sees it (the formats above,
 * markers included): generative prompt + answer, and the query, positive and
 * negative texts of embedding records.  fn(ctx, text, len) is called on each;
 * a non-zero return stops the walk.  This is the corpus of `tokenizer train
 * --data` and of `pretrain --data`. */
int dataset_for_each_text(const Dataset *d, int (*fn)(void *ctx, const char *s, size_t n), void *ctx) {
    RfBuf a = {0}, b = {0};
    int rc = 0;
    for (int t = 0; t < N_TASKS && !rc; t++)
        for (size_t i = 0; i < d->pool[t].n && !rc; i++) {
            const Record *r = &d->pool[t].recs[i];
            if (r->kind == KIND_GEN) {
                if (r->n_turns < 2) continue;
                a.len = b.len = 0;
                format_gen(&a, &b, r->turns[0], r->turns[1]);
                buf_append(&a, b.data ? b.data : "", b.len);
                rc = a.data ? fn(ctx, a.data, a.len) : rf_error("out of memory");
                continue;
            }
            for (int k = -1; k < r->n_pos + r->n_neg && !rc; k++) {  /* k = -1: the query */
                const Passage *p = k < 0 ? &r->query : k < r->n_pos ? &r->pos[k] : &r->neg[k - r->n_pos];
                for (int x = 0; x < p->n_texts && !rc; x++) {
                    a.len = b.len = 0;
                    format_emb(&a, &b, p->instr, p->texts[x], EMB_FMT_TRAIN);
                    buf_append(&a, b.data ? b.data : "", b.len);
                    rc = a.data ? fn(ctx, a.data, a.len) : rf_error("out of memory");
                }
            }
        }
    buf_free(&a);
    buf_free(&b);
    return rc;
}
