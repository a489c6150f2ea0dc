/*
 * tokenizer.c - Hugging Face tokenizer.json of the Llama/Mistral kind: BPE with
 * byte fallback, loaded, encoded, decoded, trained and saved.
 *
 * The pipeline follows the Hugging Face `tokenizers` library step by step:
 *
 *   1. added tokens ("<s>", "</s>", "<unk>", ...) are matched as whole strings
 *      in the raw text, leftmost-longest, and emitted as their ids;
 *   2. every other piece is normalised on its own: Mistral's normalizer is
 *      Prepend("▁") then Replace(" " -> "▁"), so "Hello world" becomes
 *      "▁Hello▁world" and "a<s>b" becomes "▁a", <s>, "▁b" (Prepend applies to
 *      each non-empty piece, also after an added token).  The older form, a
 *      Metaspace pre-tokenizer (prepend_scheme first/always, split or not),
 *      is supported too;
 *   3. BPE: the piece starts as one symbol per UTF-8 character (a character
 *      missing from the vocabulary becomes its bytes <0xXX>); then the
 *      adjacent pair with the lowest merge rank is merged, the leftmost one
 *      on ties, until no pair has a merge.  Example with merges
 *      ["▁ t", "h e", "▁t he"]:  ▁ t h e -> ▁t h e -> ▁t he -> ▁the;
 *   4. the post-processor (TemplateProcessing) puts <s> in front on request.
 *
 * Decoding runs the decoder chain: Replace("▁" -> " "), ByteFallback (runs of
 * <0xXX> become their bytes; an invalid UTF-8 run becomes one U+FFFD per
 * byte, as in the Rust library), Fuse, Strip(" ", 1, 0).
 *
 * tok_train learns a small vocabulary of the same kind (most-frequent-pair
 * BPE over "▁"-prefixed words) and writes it as tokenizer.json text, which
 * is then loaded by the same loader, so a trained tokenizer and its saved
 * file can never disagree.
 */
#include "recfound.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------- helpers */

typedef struct { int *v; int n, cap; } IntVec;

static int iv_push(IntVec *a, int x) {
    if (a->n == a->cap) {
        int nc = a->cap ? 2 * a->cap : 16;
        int *nv = realloc(a->v, (size_t)nc * sizeof *nv);
        if (!nv) return rf_error("out of memory (%d ids)", nc);
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {  /* splitmix64 finaliser */
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* Bytes of the UTF-8 character starting with byte c (1 for a stray byte). */
static size_t utf8_char_len(const char *s, size_t avail) {
    unsigned char c = (unsigned char)s[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    return n > avail ? avail : n;
}

/* Strict UTF-8 check (no overlong forms, no surrogates, <= U+10FFFF): the
 * rule of Rust's String::from_utf8 used by the ByteFallback decoder. */
static int utf8_is_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return 0;
        if (i + len > n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static void put(RfBuf *b, const char *s) { buf_append(b, s, strlen(s)); }

static char *dup_bytes(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Compact JSON text of a parsed value (kept verbatim for tok_save). */
static void json_dump(RfBuf *b, const Json *v) {
    switch (v->type) {
    case JSON_NULL: buf_append(b, "null", 4); break;
    case JSON_BOOL: buf_append(b, v->boolean ? "true" : "false", v->boolean ? 4 : 5); break;
    case JSON_NUMBER:
        /* range first: converting a double outside long long's range is undefined */
        if (v->number < 1e15 && v->number > -1e15 && v->number == (double)(long long)v->number)
            buf_printf(b, "%lld", (long long)v->number);
        else if (isinf(v->number))  /* 1e999 parses as inf; "inf" would not read back */
            buf_printf(b, "%s", v->number > 0 ? "1e999" : "-1e999");
        else
            buf_printf(b, "%.17g", v->number);
        break;
    case JSON_STRING: json_write_string(b, v->string, v->len); break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        buf_append(b, v->type == JSON_ARRAY ? "[" : "{", 1);
        for (size_t i = 0; i < v->count; i++) {
            if (i) buf_append(b, ",", 1);
            if (v->type == JSON_OBJECT) {
                json_write_string(b, v->keys[i], strlen(v->keys[i]));
                buf_append(b, ":", 1);
            }
            json_dump(b, &v->items[i]);
        }
        buf_append(b, v->type == JSON_ARRAY ? "]" : "}", 1);
        break;
    }
}

/* ------------------------------------------------------------ the tables */

typedef enum { NORM_PREPEND, NORM_REPLACE } NormKind;
typedef struct { NormKind kind; char *a, *b; size_t alen, blen; } NormStep;

typedef enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE } DecKind;
typedef struct {
    DecKind kind;
    char *a, *b;        /* Replace: pattern, content; Strip/Metaspace: the character */
    size_t alen, blen;
    int start, stop;    /* Strip */
    int prefix;         /* Metaspace: the first token's replacement characters are dropped */
} DecStep;

typedef enum { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS } PrependScheme;

typedef struct { char *content; size_t len; int id, special; } AddedTok;

struct TokTables {
    int *vslot;                 /* piece -> id, open addressing (-1 = empty) */
    size_t vmask;
    uint64_t *mkey;             /* (a << 32 | b) -> rank, open addressing */
    int *mrank;
    size_t mmask;
    int *merge_new;             /* merge_new[rank] = id of piece[a] + piece[b] */
    unsigned char *in_model;    /* 1 when the id is in model.vocab */
    char *unk_token;            /* model.unk_token (NULL when null) */
    int model_unk;              /* its id, -1 when absent */
    int unk_missing;            /* unk_token named but not in the vocabulary */
    NormStep *norm;
    int n_norm;
    int metaspace, ms_split;    /* Metaspace pre-tokenizer */
    PrependScheme ms_scheme;
    char *ms_repl;
    size_t ms_len;
    DecStep *dec;
    int n_dec, has_decoder;
    AddedTok *added;
    int n_added;
    unsigned char added_first[256];
    IntVec post_pre, post_suf;  /* TemplateProcessing "single": ids before / after A */
    /* the four pipeline sections as compact JSON text ("null" when absent) */
    char *js_normalizer, *js_pre, *js_post, *js_decoder;
};

static int vocab_find(const Tokenizer *t, const char *s, size_t n) {
    const TokTables *T = t->tab;
    for (size_t i = hash_bytes(s, n) & T->vmask;; i = (i + 1) & T->vmask) {
        int id = T->vslot[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && !memcmp(t->piece[id], s, n)) return id;
    }
}

static void vocab_insert(Tokenizer *t, int id) {  /* the first id of a piece wins */
    TokTables *T = t->tab;
    if (vocab_find(t, t->piece[id], (size_t)t->piece_len[id]) >= 0) return;
    size_t i = hash_bytes(t->piece[id], (size_t)t->piece_len[id]) & T->vmask;
    while (T->vslot[i] >= 0) i = (i + 1) & T->vmask;
    T->vslot[i] = id;
}

/* Id of a piece of the BPE model's vocabulary (added-only tokens excluded). */
static int model_find(const Tokenizer *t, const char *s, size_t n) {
    int id = vocab_find(t, s, n);
    return id >= 0 && t->tab->in_model[id] ? id : -1;
}

static int merge_rank(const TokTables *T, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = hash_u64(key) & T->mmask;; i = (i + 1) & T->mmask) {
        if (T->mrank[i] < 0) return -1;
        if (T->mkey[i] == key) return T->mrank[i];
    }
}

/* A repeated pair keeps the later rank, as both the Rust and JS loaders do. */
static void merge_insert(TokTables *T, int a, int b, int rank) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = hash_u64(key) & T->mmask;
    while (T->mrank[i] >= 0 && T->mkey[i] != key) i = (i + 1) & T->mmask;
    T->mkey[i] = key;
    T->mrank[i] = rank;
}

int tok_id(const Tokenizer *t, const char *piece, size_t len) {
    return t->tab ? vocab_find(t, piece, len) : -1;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    if (t->piece)
        for (int i = 0; i < t->n_vocab; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->merge_a);
    free(t->merge_b);
    TokTables *T = t->tab;
    if (T) {
        free(T->vslot);
        free(T->mkey);
        free(T->mrank);
        free(T->merge_new);
        free(T->in_model);
        free(T->unk_token);
        for (int i = 0; i < T->n_norm; i++) free(T->norm[i].a), free(T->norm[i].b);
        free(T->norm);
        free(T->ms_repl);
        for (int i = 0; i < T->n_dec; i++) free(T->dec[i].a), free(T->dec[i].b);
        free(T->dec);
        for (int i = 0; i < T->n_added; i++) free(T->added[i].content);
        free(T->added);
        free(T->post_pre.v);
        free(T->post_suf.v);
        free(T->js_normalizer);
        free(T->js_pre);
        free(T->js_post);
        free(T->js_decoder);
        free(T);
    }
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------ the loader */

static const char *jstr(const Json *v) { return v && v->type == JSON_STRING ? v->string : NULL; }

/* Optional boolean field; 0 when absent or null. */
static int jbool(const Json *obj, const char *key, int *out, const char *name, const char *where) {
    const Json *v = json_get(obj, key);
    *out = 0;
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_BOOL) return rf_error("%s: %s.%s is not true/false", name, where, key);
    *out = v->boolean;
    return 0;
}

static int jint(const Json *v, int *out) {
    if (!v || v->type != JSON_NUMBER || v->number < 0 || v->number >= INT_MAX ||
        v->number != (double)(int)v->number)
        return -1;
    *out = (int)v->number;
    return 0;
}

static char *section_text(const Json *v) {
    RfBuf b = {0};
    if (!v) buf_append(&b, "null", 4);
    else json_dump(&b, v);
    return b.data;
}

/* A Replace pattern: only {"String": s} (a Regex pattern is not supported). */
static int replace_pattern(const Json *step, const char **pat, size_t *plen, const char *name, const char *where) {
    const Json *p = json_get(step, "pattern");
    const Json *s = json_get(p, "String");
    if (!s || s->type != JSON_STRING || s->len == 0)
        return rf_error("%s: %s: Replace needs a non-empty {\"String\": ...} pattern (Regex patterns are not supported)",
                        name, where);
    *pat = s->string;
    *plen = s->len;
    return 0;
}

static int add_norm(TokTables *T, NormKind kind, const char *a, size_t alen, const char *b, size_t blen) {
    NormStep *n = realloc(T->norm, (size_t)(T->n_norm + 1) * sizeof *n);
    if (!n) return rf_error("out of memory");
    T->norm = n;
    NormStep *s = &T->norm[T->n_norm++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->a = dup_bytes(a, alen);
    s->alen = alen;
    if (b) s->b = dup_bytes(b, blen), s->blen = blen;
    if (!s->a || (b && !s->b)) return rf_error("out of memory");
    return 0;
}

static int parse_normalizer(TokTables *T, const Json *n, const char *name) {
    if (!n || n->type == JSON_NULL) return 0;
    const char *type = jstr(json_get(n, "type"));
    if (!type) return rf_error("%s: normalizer without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const Json *list = json_get(n, "normalizers");
        if (!list || list->type != JSON_ARRAY) return rf_error("%s: normalizer Sequence without a \"normalizers\" list", name);
        for (size_t i = 0; i < list->count; i++)
            if (parse_normalizer(T, &list->items[i], name)) return -1;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const Json *p = json_get(n, "prepend");
        if (!p || p->type != JSON_STRING) return rf_error("%s: normalizer Prepend without a \"prepend\" string", name);
        return add_norm(T, NORM_PREPEND, p->string, p->len, NULL, 0);
    }
    if (!strcmp(type, "Replace")) {
        const char *pat = NULL;
        size_t plen = 0;
        if (replace_pattern(n, &pat, &plen, name, "normalizer")) return -1;
        const Json *c = json_get(n, "content");
        if (!c || c->type != JSON_STRING) return rf_error("%s: normalizer Replace without a \"content\" string", name);
        return add_norm(T, NORM_REPLACE, pat, plen, c->string, c->len);
    }
    return rf_error("%s: normalizer \"%s\" is not supported (only Sequence, Prepend, Replace)", name, type);
}

/* Metaspace's scheme: "prepend_scheme" (newer files) or "add_prefix_space". */
static int metaspace_scheme(const Json *m, PrependScheme *out, const char *name, const char *where) {
    const char *ps = jstr(json_get(m, "prepend_scheme"));
    const Json *aps = json_get(m, "add_prefix_space");
    *out = PREPEND_ALWAYS;
    if (ps) {
        if (!strcmp(ps, "always")) *out = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *out = PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *out = PREPEND_NEVER;
        else return rf_error("%s: %s Metaspace: unknown prepend_scheme \"%s\"", name, where, ps);
    } else if (aps && aps->type == JSON_BOOL) {
        *out = aps->boolean ? PREPEND_ALWAYS : PREPEND_NEVER;
    }
    return 0;
}

static int metaspace_char(const Json *m, const char **s, size_t *n, const char *name, const char *where) {
    const Json *r = json_get(m, "replacement");
    if (!r || r->type != JSON_STRING || r->len == 0 || utf8_char_len(r->string, r->len) != r->len)
        return rf_error("%s: %s Metaspace: \"replacement\" must be one character", name, where);
    *s = r->string;
    *n = r->len;
    return 0;
}

static int parse_pre_tokenizer(TokTables *T, const Json *p, const char *name) {
    if (!p || p->type == JSON_NULL) return 0;
    const char *type = jstr(json_get(p, "type"));
    if (!type || strcmp(type, "Metaspace"))
        return rf_error("%s: pre_tokenizer \"%s\" is not supported (only Metaspace or null)", name, type ? type : "?");
    const char *r = NULL;
    size_t rl = 0;
    if (metaspace_char(p, &r, &rl, name, "pre_tokenizer") || metaspace_scheme(p, &T->ms_scheme, name, "pre_tokenizer"))
        return -1;
    const Json *split = json_get(p, "split");
    T->ms_split = split && split->type == JSON_BOOL ? split->boolean : 1;  /* the library's default */
    T->metaspace = 1;
    T->ms_repl = dup_bytes(r, rl);
    T->ms_len = rl;
    return T->ms_repl ? 0 : rf_error("out of memory");
}

static int parse_post_processor(Tokenizer *t, const Json *p, const char *name) {
    TokTables *T = t->tab;
    if (!p || p->type == JSON_NULL) return 0;
    const char *type = jstr(json_get(p, "type"));
    if (!type || strcmp(type, "TemplateProcessing"))
        return rf_error("%s: post_processor \"%s\" is not supported (only TemplateProcessing or null)", name,
                        type ? type : "?");
    const Json *single = json_get(p, "single"), *specials = json_get(p, "special_tokens");
    if (!single || single->type != JSON_ARRAY)
        return rf_error("%s: post_processor TemplateProcessing without a \"single\" list", name);
    int after = 0;
    for (size_t i = 0; i < single->count; i++) {
        const Json *it = &single->items[i], *sp = json_get(it, "SpecialToken"), *seq = json_get(it, "Sequence");
        if (seq) {
            const char *sid = jstr(json_get(seq, "id"));
            if (!sid || strcmp(sid, "A"))
                return rf_error("%s: post_processor: the single template may only hold sequence \"A\"", name);
            after = 1;
            continue;
        }
        const char *key = jstr(json_get(sp, "id"));
        const Json *ids = json_get(json_get(specials, key ? key : ""), "ids");
        if (!key || !ids || ids->type != JSON_ARRAY)
            return rf_error("%s: post_processor: template item %zu names no known special token", name, i);
        for (size_t k = 0; k < ids->count; k++) {
            int id;
            if (jint(&ids->items[k], &id) || id >= t->n_vocab)
                return rf_error("%s: post_processor: special token \"%s\" has an invalid id", name, key);
            if (iv_push(after ? &T->post_suf : &T->post_pre, id)) return -1;
        }
    }
    return 0;
}

static DecStep *add_dec(TokTables *T, DecKind kind) {
    DecStep *d = realloc(T->dec, (size_t)(T->n_dec + 1) * sizeof *d);
    if (!d) return NULL;
    T->dec = d;
    memset(&d[T->n_dec], 0, sizeof *d);
    d[T->n_dec].kind = kind;
    return &d[T->n_dec++];
}

static int parse_decoder(TokTables *T, const Json *d, const char *name) {
    const char *type = jstr(json_get(d, "type"));
    if (!type) return rf_error("%s: decoder without a \"type\"", name);
    if (!strcmp(type, "Sequence")) {
        const Json *list = json_get(d, "decoders");
        if (!list || list->type != JSON_ARRAY) return rf_error("%s: decoder Sequence without a \"decoders\" list", name);
        for (size_t i = 0; i < list->count; i++)
            if (parse_decoder(T, &list->items[i], name)) return -1;
        return 0;
    }
    DecStep *s;
    if (!strcmp(type, "Replace")) {
        const char *pat = NULL;
        size_t plen = 0;
        const Json *c = json_get(d, "content");
        if (replace_pattern(d, &pat, &plen, name, "decoder")) return -1;
        if (!c || c->type != JSON_STRING) return rf_error("%s: decoder Replace without a \"content\" string", name);
        if (!(s = add_dec(T, DEC_REPLACE))) return rf_error("out of memory");
        s->a = dup_bytes(pat, plen), s->alen = plen;
        s->b = dup_bytes(c->string, c->len), s->blen = c->len;
        return s->a && s->b ? 0 : rf_error("out of memory");
    }
    if (!strcmp(type, "ByteFallback")) return add_dec(T, DEC_BYTE_FALLBACK) ? 0 : rf_error("out of memory");
    if (!strcmp(type, "Fuse")) return add_dec(T, DEC_FUSE) ? 0 : rf_error("out of memory");
    if (!strcmp(type, "Strip")) {
        const Json *c = json_get(d, "content");
        int start, stop;
        if (!c || c->type != JSON_STRING || c->len == 0 || utf8_char_len(c->string, c->len) != c->len ||
            jint(json_get(d, "start"), &start) || jint(json_get(d, "stop"), &stop))
            return rf_error("%s: decoder Strip needs one \"content\" character and integer \"start\", \"stop\"", name);
        if (!(s = add_dec(T, DEC_STRIP))) return rf_error("out of memory");
        s->a = dup_bytes(c->string, c->len), s->alen = c->len;
        s->start = start, s->stop = stop;
        return s->a ? 0 : rf_error("out of memory");
    }
    if (!strcmp(type, "Metaspace")) {
        const char *r = NULL;
        size_t rl = 0;
        PrependScheme sc;
        if (metaspace_char(d, &r, &rl, name, "decoder") || metaspace_scheme(d, &sc, name, "decoder")) return -1;
        if (!(s = add_dec(T, DEC_METASPACE))) return rf_error("out of memory");
        s->a = dup_bytes(r, rl), s->alen = rl;
        s->prefix = sc != PREPEND_NEVER;
        return s->a ? 0 : rf_error("out of memory");
    }
    return rf_error("%s: decoder \"%s\" is not supported (only Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace)",
                    name, type);
}

/* The model section: vocabulary, merges and flags. */
static int load_model(Tokenizer *t, const Json *root, const char *name) {
    TokTables *T = t->tab;
    const Json *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT) return rf_error("%s: no \"model\" object", name);
    const Json *type = json_get(model, "type");
    if (type && (type->type != JSON_STRING || strcmp(type->string, "BPE")))
        return rf_error("%s: model type \"%s\" is not supported (only \"BPE\")", name,
                        type->type == JSON_STRING ? type->string : "?");
    const Json *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
    if (!vocab || vocab->type != JSON_OBJECT) return rf_error("%s: model.vocab is missing or not an object", name);
    if (!merges || merges->type != JSON_ARRAY) return rf_error("%s: model.merges is missing or not a list", name);

    const Json *added = json_get(root, "added_tokens");
    if (added && added->type != JSON_ARRAY && added->type != JSON_NULL)
        return rf_error("%s: added_tokens is not a list", name);
    size_t n_added = added && added->type == JSON_ARRAY ? added->count : 0;

    /* ids: the model's and the added tokens' */
    int max_id = -1;
    for (size_t i = 0; i < vocab->count; i++) {
        int id;
        if (jint(&vocab->items[i], &id))
            return rf_error("%s: model.vocab[\"%s\"] is not a non-negative integer id", name, vocab->keys[i]);
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; i < n_added; i++) {
        int id;
        const Json *c = json_get(&added->items[i], "content");
        if (jint(json_get(&added->items[i], "id"), &id) || !c || c->type != JSON_STRING || c->len == 0)
            return rf_error("%s: added_tokens[%zu] needs an integer \"id\" and a non-empty \"content\"", name, i);
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return rf_error("%s: the vocabulary is empty", name);
    /* ids number the tokens from 0 (the added ones may repeat vocabulary
     * ids): one beyond the count leaves a gap, and a table sized by it could
     * be gigabytes for a file of a few bytes */
    if ((size_t)max_id >= vocab->count + n_added)
        return rf_error("%s: token id %d, but there are only %zu tokens (ids must number them from 0)", name,
                        max_id, vocab->count + n_added);
    t->n_vocab = max_id + 1;
    t->piece = calloc((size_t)t->n_vocab, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab, sizeof *t->piece_len);
    T->in_model = calloc((size_t)t->n_vocab, 1);
    T->vmask = pow2_at_least(2 * (size_t)t->n_vocab) - 1;
    T->vslot = malloc((T->vmask + 1) * sizeof *T->vslot);
    if (!t->piece || !t->piece_len || !T->in_model || !T->vslot) return rf_error("out of memory");
    memset(T->vslot, 0xff, (T->vmask + 1) * sizeof *T->vslot);

    for (size_t i = 0; i < vocab->count; i++) {
        int id = (int)vocab->items[i].number;
        if (t->piece[id])
            return rf_error("%s: model.vocab: \"%s\" and \"%s\" share id %d", name, t->piece[id], vocab->keys[i], id);
        size_t len = strlen(vocab->keys[i]);
        if (!(t->piece[id] = dup_bytes(vocab->keys[i], len))) return rf_error("out of memory");
        t->piece_len[id] = (int)len;
        T->in_model[id] = 1;
        vocab_insert(t, id);
    }

    /* added tokens: matched in the raw text before normalisation */
    if (n_added && !(T->added = calloc(n_added, sizeof *T->added))) return rf_error("out of memory");
    for (size_t i = 0; i < n_added; i++) {
        const Json *a = &added->items[i], *c = json_get(a, "content");
        int id = (int)json_get(a, "id")->number, special, lstrip, rstrip, single, normalized;
        if (jbool(a, "special", &special, name, "added_tokens") || jbool(a, "lstrip", &lstrip, name, "added_tokens") ||
            jbool(a, "rstrip", &rstrip, name, "added_tokens") ||
            jbool(a, "single_word", &single, name, "added_tokens") ||
            jbool(a, "normalized", &normalized, name, "added_tokens"))
            return -1;
        if (lstrip || rstrip || single || normalized)
            return rf_error("%s: added token \"%s\": lstrip, rstrip, single_word and normalized must be false "
                            "(other settings are not supported)", name, c->string);
        if (t->piece[id] && ((size_t)t->piece_len[id] != c->len || memcmp(t->piece[id], c->string, c->len)))
            return rf_error("%s: added token \"%s\" has id %d, which the vocabulary gives to \"%s\"", name, c->string,
                            id, t->piece[id]);
        if (!t->piece[id]) {
            if (!(t->piece[id] = dup_bytes(c->string, c->len))) return rf_error("out of memory");
            t->piece_len[id] = (int)c->len;
            vocab_insert(t, id);
        }
        AddedTok *at = &T->added[T->n_added++];
        if (!(at->content = dup_bytes(c->string, c->len))) return rf_error("out of memory");
        at->len = c->len;
        at->id = id;
        at->special = special;
        T->added_first[(unsigned char)c->string[0]] = 1;
    }

    /* flags */
    if (jbool(model, "byte_fallback", &t->byte_fallback, name, "model") ||
        jbool(model, "fuse_unk", &t->fuse_unk, name, "model") ||
        jbool(model, "ignore_merges", &t->ignore_merges, name, "model"))
        return -1;
    const Json *dropout = json_get(model, "dropout");
    if (dropout && dropout->type != JSON_NULL && !(dropout->type == JSON_NUMBER && dropout->number == 0))
        return rf_error("%s: model.dropout must be null (BPE dropout is not supported)", name);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const Json *v = json_get(model, affixes[k]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->len == 0))
            return rf_error("%s: model.%s must be null (not supported)", name, affixes[k]);
    }
    const Json *unk = json_get(model, "unk_token");
    T->model_unk = -1;
    if (unk && unk->type == JSON_STRING) {
        if (!(T->unk_token = dup_bytes(unk->string, unk->len))) return rf_error("out of memory");
        T->model_unk = model_find(t, unk->string, unk->len);
        T->unk_missing = T->model_unk < 0;
    } else if (unk && unk->type != JSON_NULL) {
        return rf_error("%s: model.unk_token is not a string", name);
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = model_find(t, s, 6);
    }

    /* merges: "a b" strings (older files) or [a, b] pairs (tokenizers >= 0.20) */
    int nm = (int)merges->count;
    t->merge_a = malloc(((size_t)nm + 1) * sizeof *t->merge_a);
    t->merge_b = malloc(((size_t)nm + 1) * sizeof *t->merge_b);
    T->merge_new = malloc(((size_t)nm + 1) * sizeof *T->merge_new);
    T->mmask = pow2_at_least(2 * (size_t)nm + 2) - 1;
    T->mkey = malloc((T->mmask + 1) * sizeof *T->mkey);
    T->mrank = malloc((T->mmask + 1) * sizeof *T->mrank);
    if (!t->merge_a || !t->merge_b || !T->merge_new || !T->mkey || !T->mrank) return rf_error("out of memory");
    memset(T->mrank, 0xff, (T->mmask + 1) * sizeof *T->mrank);
    RfBuf cat = {0};
    for (int r = 0; r < nm; r++) {
        const Json *m = &merges->items[r];
        const char *a, *b;
        size_t al, bl;
        if (m->type == JSON_STRING) {
            const char *sp = memchr(m->string, ' ', m->len);
            if (!sp || memchr(sp + 1, ' ', m->len - (size_t)(sp + 1 - m->string))) {
                buf_free(&cat);
                return rf_error("%s: model.merges[%d] \"%s\" is not two tokens separated by one space", name, r,
                                m->string);
            }
            a = m->string, al = (size_t)(sp - m->string);
            b = sp + 1, bl = m->len - al - 1;
        } else if (m->type == JSON_ARRAY && m->count == 2 && m->items[0].type == JSON_STRING &&
                   m->items[1].type == JSON_STRING) {
            a = m->items[0].string, al = m->items[0].len;
            b = m->items[1].string, bl = m->items[1].len;
        } else {
            buf_free(&cat);
            return rf_error("%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", name, r);
        }
        int ia = model_find(t, a, al), ib = model_find(t, b, bl);
        cat.len = 0;
        buf_append(&cat, a, al);
        buf_append(&cat, b, bl);
        if (!cat.data) return rf_error("out of memory");
        int ic = model_find(t, cat.data, cat.len);
        if (ia < 0 || ib < 0 || ic < 0) {
            const char *bad = ia < 0 ? a : ib < 0 ? b : cat.data;
            int badlen = (int)(ia < 0 ? al : ib < 0 ? bl : cat.len);
            rf_error("%s: model.merges[%d] (\"%.*s\" + \"%.*s\"): token \"%.*s\" is not in the vocabulary", name, r,
                     (int)al, a, (int)bl, b, badlen, bad);
            buf_free(&cat);
            return -1;
        }
        t->merge_a[r] = ia;
        t->merge_b[r] = ib;
        T->merge_new[r] = ic;
        merge_insert(T, ia, ib, r);
    }
    buf_free(&cat);
    t->n_merges = nm;
    return 0;
}

int tok_load_json(Tokenizer *t, const Json *root, const char *name) {
    memset(t, 0, sizeof *t);
    t->unk_id = t->bos_id = t->eos_id = -1;
    if (!root || root->type != JSON_OBJECT) return rf_error("%s: the top level is not a JSON object", name);
    if (!(t->tab = calloc(1, sizeof *t->tab))) return rf_error("out of memory");
    TokTables *T = t->tab;
    if (load_model(t, root, name) || parse_normalizer(T, json_get(root, "normalizer"), name) ||
        parse_pre_tokenizer(T, json_get(root, "pre_tokenizer"), name) ||
        parse_post_processor(t, json_get(root, "post_processor"), name))
        goto fail;
    const Json *dec = json_get(root, "decoder");
    if (dec && dec->type != JSON_NULL) {
        T->has_decoder = 1;
        if (parse_decoder(T, dec, name)) goto fail;
    }
    T->js_normalizer = section_text(json_get(root, "normalizer"));
    T->js_pre = section_text(json_get(root, "pre_tokenizer"));
    T->js_post = section_text(json_get(root, "post_processor"));
    T->js_decoder = section_text(dec);
    if (!T->js_normalizer || !T->js_pre || !T->js_post || !T->js_decoder) {
        rf_error("out of memory");
        goto fail;
    }
    t->unk_id = T->model_unk >= 0 ? T->model_unk : vocab_find(t, "<unk>", 5);
    t->bos_id = vocab_find(t, "<s>", 3);
    t->eos_id = vocab_find(t, "</s>", 4);
    return 0;
fail:
    tok_free(t);
    t->unk_id = t->bos_id = t->eos_id = -1;
    return -1;
}

int tok_load(Tokenizer *t, const char *path) {
    char *text;
    size_t len;
    Json root;
    memset(t, 0, sizeof *t);
    if (rf_read_file(path, &text, &len)) return -1;
    int rc = json_parse(&root, text, len, path);
    free(text);
    if (rc) return -1;
    rc = tok_load_json(t, &root, path);
    json_free(&root);
    return rc;
}

/* ------------------------------------------------------------- the encoder */

/* Scratch space of one encode call (never shared, so encoding is reentrant). */
typedef struct {
    RfBuf norm, tmp;
    int *sym, *prev, *next;   /* symbols of the word being merged (a linked list) */
    uint64_t *heap;           /* (rank << 32 | position), a binary min-heap */
    int cap, nheap;
} Work;

static void work_free(Work *w) {
    buf_free(&w->norm);
    buf_free(&w->tmp);
    free(w->sym), free(w->prev), free(w->next), free(w->heap);
}

static int work_reserve(Work *w, size_t n) {
    if (n <= (size_t)w->cap) return 0;
    if (n > INT_MAX / 2) return rf_error("text too long to encode (%zu symbols)", n);
    int c = (int)n * 2;
    int *s = realloc(w->sym, (size_t)c * sizeof *s);
    if (s) w->sym = s;
    int *p = realloc(w->prev, (size_t)c * sizeof *p);
    if (p) w->prev = p;
    int *x = realloc(w->next, (size_t)c * sizeof *x);
    if (x) w->next = x;
    uint64_t *h = realloc(w->heap, (size_t)c * sizeof *h);
    if (h) w->heap = h;
    if (!s || !p || !x || !h) return rf_error("out of memory (%d symbols)", c);
    w->cap = c;
    return 0;
}

static void heap_push(Work *w, uint64_t key) {
    int i = w->nheap++;
    while (i > 0 && w->heap[(i - 1) / 2] > key) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = key;
}

static uint64_t heap_pop(Work *w) {
    uint64_t top = w->heap[0], last = w->heap[--w->nheap];
    int i = 0, n = w->nheap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && w->heap[c + 1] < w->heap[c]) c++;
        if (w->heap[c] >= last) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void push_pair(const Tokenizer *t, Work *w, int i) {
    int r = merge_rank(t->tab, w->sym[i], w->sym[w->next[i]]);
    if (r >= 0) heap_push(w, (uint64_t)r << 32 | (uint32_t)i);
}

/* BPE of one word s[0..n) (already normalised), ids appended to out. */
static int bpe_word(const Tokenizer *t, const char *s, size_t n, Work *w, IntVec *out) {
    const TokTables *T = t->tab;
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int id = model_find(t, s, n);
        if (id >= 0) return iv_push(out, id);
    }
    /* n bytes give at most n symbols */
    if (work_reserve(w, n + 1)) return -1;
    int ns = 0, last_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_char_len(s + i, n - i);
        int id = model_find(t, s + i, cl);
        if (id >= 0) {
            w->sym[ns++] = id;
            last_unk = 0;
        } else {
            int ok = t->byte_fallback;
            for (size_t k = 0; ok && k < cl; k++) ok = t->byte_id[(unsigned char)s[i + k]] >= 0;
            if (ok) {
                for (size_t k = 0; k < cl; k++) w->sym[ns++] = t->byte_id[(unsigned char)s[i + k]];
                last_unk = 0;
            } else if (T->unk_missing) {
                return rf_error("the unknown token \"%s\" is not in the vocabulary", T->unk_token);
            } else if (T->model_unk >= 0) {
                if (!(t->fuse_unk && last_unk)) w->sym[ns++] = T->model_unk;
                last_unk = 1;
            } /* no unk_token: the character is dropped, as in the Rust library */
        }
        i += cl;
    }
    if (ns == 0) return 0;  /* every character dropped: no symbols, nothing to emit */
    for (int i = 0; i < ns; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < ns ? i + 1 : -1;
    }
    /* merge the lowest-rank pair, leftmost first, until none is left */
    w->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) push_pair(t, w, i);
    while (w->nheap) {
        uint64_t top = heap_pop(w);
        int rank = (int)(top >> 32), i = (int)(uint32_t)top;
        int j = w->next[i];
        if (w->sym[i] < 0 || j < 0 || merge_rank(T, w->sym[i], w->sym[j]) != rank) continue;  /* stale */
        w->sym[i] = T->merge_new[rank];
        w->next[i] = w->next[j];
        if (w->next[j] >= 0) w->prev[w->next[j]] = i;
        w->sym[j] = -1;
        if (w->prev[i] >= 0) push_pair(t, w, w->prev[i]);
        if (w->next[i] >= 0) push_pair(t, w, i);
    }
    for (int i = 0; i >= 0; i = w->next[i])
        if (iv_push(out, w->sym[i])) return -1;
    return 0;
}

/* Replace every `pat` in src by `rep` into dst. */
static void replace_all(RfBuf *dst, const char *src, size_t n, const char *pat, size_t plen, const char *rep,
                        size_t rlen) {
    size_t i = 0, from = 0;
    dst->len = 0;
    buf_append(dst, "", 0);
    if (n == 0) return;
    while (plen && i + plen <= n) {
        if (!memcmp(src + i, pat, plen)) {
            buf_append(dst, src + from, i - from);
            buf_append(dst, rep, rlen);
            i += plen;
            from = i;
        } else {
            i++;
        }
    }
    buf_append(dst, src + from, n - from);
}

/* One piece of text between added tokens: normalise, pre-tokenise, BPE.
 * at_start: the piece begins the text (Metaspace "first"). */
static int encode_piece(const Tokenizer *t, const char *s, size_t n, int at_start, Work *w, IntVec *out) {
    const TokTables *T = t->tab;
    RfBuf *cur = &w->norm, *tmp = &w->tmp;
    cur->len = 0;
    buf_append(cur, s, n);
    for (int k = 0; k < T->n_norm; k++) {
        const NormStep *st = &T->norm[k];
        if (st->kind == NORM_PREPEND) {
            if (cur->len == 0) continue;  /* Prepend leaves an empty string empty */
            tmp->len = 0;
            buf_append(tmp, st->a, st->alen);
            buf_append(tmp, cur->data, cur->len);
        } else {
            replace_all(tmp, cur->data, cur->len, st->a, st->alen, st->b, st->blen);
        }
        RfBuf x = *cur;
        *cur = *tmp;
        *tmp = x;
    }
    if (T->metaspace) {
        replace_all(tmp, cur->data, cur->len, " ", 1, T->ms_repl, T->ms_len);
        RfBuf x = *cur;
        *cur = *tmp;
        *tmp = x;
        int starts = cur->len >= T->ms_len && !memcmp(cur->data, T->ms_repl, T->ms_len);
        if (!starts && (T->ms_scheme == PREPEND_ALWAYS || (T->ms_scheme == PREPEND_FIRST && at_start))) {
            tmp->len = 0;
            buf_append(tmp, T->ms_repl, T->ms_len);
            buf_append(tmp, cur->data, cur->len);
            x = *cur;
            *cur = *tmp;
            *tmp = x;
        }
    }
    if (cur->len && !cur->data) return rf_error("out of memory");
    if (!T->metaspace || !T->ms_split) return bpe_word(t, cur->data, cur->len, w, out);
    /* split before every replacement character (it starts the next word) */
    size_t from = 0;
    for (size_t i = 1; i + T->ms_len <= cur->len; i++) {
        if (!memcmp(cur->data + i, T->ms_repl, T->ms_len)) {
            if (bpe_word(t, cur->data + from, i - from, w, out)) return -1;
            from = i;
        }
    }
    return bpe_word(t, cur->data + from, cur->len - from, w, out);
}

/* Longest added token starting at text[i], or -1. */
static int match_added(const TokTables *T, const char *text, size_t len, size_t i, size_t *mlen) {
    int best = -1;
    *mlen = 0;
    if (!T->added_first[(unsigned char)text[i]]) return -1;
    for (int k = 0; k < T->n_added; k++) {
        const AddedTok *a = &T->added[k];
        if (a->len > *mlen && a->len <= len - i && !memcmp(text + i, a->content, a->len)) {
            best = k;
            *mlen = a->len;
        }
    }
    return best;
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int add_special, int **ids, int *n_ids) {
    const TokTables *T = t->tab;
    IntVec out = {0};
    Work w = {0};
    int rc = 0;
    *ids = NULL;
    *n_ids = 0;
    if (add_special)
        for (int k = 0; k < T->post_pre.n && !rc; k++) rc = iv_push(&out, T->post_pre.v[k]);
    size_t from = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t mlen;
        int k = match_added(T, text, len, i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        if (i > from) rc = encode_piece(t, text + from, i - from, from == 0, &w, &out);
        if (!rc) rc = iv_push(&out, T->added[k].id);
        i += mlen;
        from = i;
    }
    if (!rc && from < len) rc = encode_piece(t, text + from, len - from, from == 0, &w, &out);
    if (add_special)
        for (int k = 0; k < T->post_suf.n && !rc; k++) rc = iv_push(&out, T->post_suf.v[k]);
    work_free(&w);
    if (rc) {
        free(out.v);
        return -1;
    }
    if (!out.v && !(out.v = malloc(sizeof(int)))) return rf_error("out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}

/* ------------------------------------------------------------- the decoder */

typedef struct { RfBuf *s; int n, cap; } StrList;

static int sl_push(StrList *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 16;
        RfBuf *ns = realloc(l->s, (size_t)nc * sizeof *ns);
        if (!ns) return rf_error("out of memory");
        l->s = ns;
        l->cap = nc;
    }
    RfBuf *b = &l->s[l->n++];
    memset(b, 0, sizeof *b);
    buf_append(b, s, n);
    return b->data ? 0 : rf_error("out of memory");
}

static void sl_free(StrList *l) {
    for (int i = 0; i < l->n; i++) buf_free(&l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* "<0xXX>" -> the byte, else -1 (the ByteFallback decoder's test). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int flush_bytes(StrList *out, RfBuf *bytes) {
    int rc = 0;
    if (!bytes->len) return 0;
    if (utf8_is_valid((const unsigned char *)bytes->data, bytes->len)) {
        rc = sl_push(out, bytes->data, bytes->len);
    } else {
        for (size_t k = 0; k < bytes->len && !rc; k++) rc = sl_push(out, "\xEF\xBF\xBD", 3);  /* U+FFFD per byte */
    }
    bytes->len = 0;
    return rc;
}

/* Apply one decoder step to the token list in place. */
static int decode_step(const DecStep *d, StrList *l) {
    StrList out = {0};
    RfBuf tmp = {0};
    int rc = 0;
    switch (d->kind) {
    case DEC_REPLACE:
        for (int i = 0; i < l->n && !rc; i++) {
            replace_all(&tmp, l->s[i].data, l->s[i].len, d->a, d->alen, d->b, d->blen);
            rc = sl_push(&out, tmp.data, tmp.len);
        }
        break;
    case DEC_BYTE_FALLBACK:
        for (int i = 0; i < l->n && !rc; i++) {
            int b = byte_token(l->s[i].data, l->s[i].len);
            if (b >= 0) {
                char c = (char)b;
                buf_append(&tmp, &c, 1);
                if (!tmp.data) rc = rf_error("out of memory");
                continue;
            }
            rc = flush_bytes(&out, &tmp);
            if (!rc) rc = sl_push(&out, l->s[i].data, l->s[i].len);
        }
        if (!rc) rc = flush_bytes(&out, &tmp);
        break;
    case DEC_FUSE:
        for (int i = 0; i < l->n; i++) buf_append(&tmp, l->s[i].data, l->s[i].len);
        rc = sl_push(&out, tmp.data ? tmp.data : "", tmp.len);
        break;
    case DEC_STRIP:  /* drop up to `start` leading and `stop` trailing copies of one character */
        for (int i = 0; i < l->n && !rc; i++) {
            const char *s = l->s[i].data;
            size_t a = 0, b = l->s[i].len, c = d->alen;
            for (int k = 0; k < d->start && b - a >= c && !memcmp(s + a, d->a, c); k++) a += c;
            for (int k = 0; k < d->stop && b - a >= c && !memcmp(s + b - c, d->a, c); k++) b -= c;
            rc = sl_push(&out, s + a, b - a);
        }
        break;
    case DEC_METASPACE:  /* replacement -> " ", dropped in the first token */
        for (int i = 0; i < l->n && !rc; i++) {
            replace_all(&tmp, l->s[i].data, l->s[i].len, d->a, d->alen, " ", (i == 0 && d->prefix) ? 0 : 1);
            rc = sl_push(&out, tmp.data, tmp.len);
        }
        break;
    }
    buf_free(&tmp);
    if (rc) {
        sl_free(&out);
        return -1;
    }
    sl_free(l);
    *l = out;
    return 0;
}

int tok_decode(const Tokenizer *t, const int *ids, int n_ids, char **out, size_t *out_len) {
    const TokTables *T = t->tab;
    StrList l = {0};
    RfBuf res = {0};
    *out = NULL;
    if (out_len) *out_len = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab || !t->piece[ids[i]]) {
            sl_free(&l);
            return rf_error("token id %d is not in the vocabulary (size %d)", ids[i], t->n_vocab);
        }
        if (sl_push(&l, t->piece[ids[i]], (size_t)t->piece_len[ids[i]])) {
            sl_free(&l);
            return -1;
        }
    }
    for (int k = 0; k < T->n_dec; k++)
        if (decode_step(&T->dec[k], &l)) {
            sl_free(&l);
            return -1;
        }
    buf_append(&res, "", 0);
    for (int i = 0; i < l.n; i++) {
        if (!T->has_decoder && i) buf_append(&res, " ", 1);  /* no decoder: tokens joined by spaces */
        buf_append(&res, l.s[i].data, l.s[i].len);
    }
    sl_free(&l);
    if (!res.data) return rf_error("out of memory");
    *out = res.data;
    if (out_len) *out_len = res.len;
    return 0;
}

/* ------------------------------------------------------------ tokenizer.json */

/* The Mistral-7B v0.1 pipeline sections, written for trained tokenizers. */
static const char MISTRAL_NORMALIZER[] =
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}";
static const char MISTRAL_POST[] =
    "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":1}},"
    "{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],"
    "\"tokens\":[\"<s>\"]}}}";
static const char MISTRAL_DECODER[] =
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},"
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
    "\"start\":1,\"stop\":0}]}";

/* Everything tok_save writes, from plain arrays (shared with tok_train). */
typedef struct {
    int n_vocab;
    char *const *piece;
    const int *piece_len;
    const unsigned char *in_model;   /* NULL: every id */
    const AddedTok *added;
    int n_added;
    const int *merge_a, *merge_b;
    int n_merges;
    const char *unk_token;           /* NULL: null */
    int byte_fallback, fuse_unk, ignore_merges;
    const char *normalizer, *pre_tokenizer, *post_processor, *decoder;  /* JSON text */
} TokJson;

static void write_tokenizer_json(RfBuf *b, const TokJson *j) {
    put(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int i = 0; i < j->n_added; i++) {
        buf_printf(b, "%s\n    {\"id\": %d, \"content\": ", i ? "," : "", j->added[i].id);
        json_write_string(b, j->added[i].content, j->added[i].len);
        buf_printf(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                      "\"special\": %s}", j->added[i].special ? "true" : "false");
    }
    buf_printf(b, "%s],\n  \"normalizer\": %s,\n  \"pre_tokenizer\": %s,\n  \"post_processor\": %s,\n"
                  "  \"decoder\": %s,\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
                  "    \"unk_token\": ",
               j->n_added ? "\n  " : "", j->normalizer, j->pre_tokenizer, j->post_processor, j->decoder);
    if (j->unk_token) json_write_string(b, j->unk_token, strlen(j->unk_token));
    else buf_append(b, "null", 4);
    buf_printf(b, ",\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                  "    \"fuse_unk\": %s,\n    \"byte_fallback\": %s,\n",
               j->fuse_unk ? "true" : "false", j->byte_fallback ? "true" : "false");
    if (j->ignore_merges) put(b, "    \"ignore_merges\": true,\n");
    put(b, "    \"vocab\": {");
    int first = 1;
    for (int id = 0; id < j->n_vocab; id++) {
        if (!j->piece[id] || (j->in_model && !j->in_model[id])) continue;
        put(b, first ? "\n      " : ",\n      ");
        json_write_string(b, j->piece[id], (size_t)j->piece_len[id]);
        buf_printf(b, ": %d", id);
        first = 0;
    }
    /* "a b" strings are readable by every version of the library; pairs are
     * needed only when a token holds a space. */
    int pairs = 0;
    for (int r = 0; r < j->n_merges && !pairs; r++)
        pairs = memchr(j->piece[j->merge_a[r]], ' ', (size_t)j->piece_len[j->merge_a[r]]) ||
                memchr(j->piece[j->merge_b[r]], ' ', (size_t)j->piece_len[j->merge_b[r]]);
    put(b, "\n    },\n    \"merges\": [");
    for (int r = 0; r < j->n_merges; r++) {
        int a = j->merge_a[r], c = j->merge_b[r];
        put(b, r ? ",\n      " : "\n      ");
        if (pairs) {
            buf_append(b, "[", 1);
            json_write_string(b, j->piece[a], (size_t)j->piece_len[a]);
            buf_append(b, ", ", 2);
            json_write_string(b, j->piece[c], (size_t)j->piece_len[c]);
            buf_append(b, "]", 1);
        } else {
            RfBuf m = {0};
            buf_append(&m, j->piece[a], (size_t)j->piece_len[a]);
            buf_append(&m, " ", 1);
            buf_append(&m, j->piece[c], (size_t)j->piece_len[c]);
            json_write_string(b, m.data ? m.data : "", m.len);
            buf_free(&m);
        }
    }
    put(b, "\n    ]\n  }\n}\n");
}

int tok_save(const Tokenizer *t, const char *path) {
    const TokTables *T = t->tab;
    TokJson j = {t->n_vocab, t->piece, t->piece_len, T->in_model, T->added, T->n_added, t->merge_a, t->merge_b,
                 t->n_merges, T->unk_token, t->byte_fallback, t->fuse_unk, t->ignore_merges,
                 T->js_normalizer, T->js_pre, T->js_post, T->js_decoder};
    RfBuf b = {0};
    write_tokenizer_json(&b, &j);
    if (!b.data) return rf_error("%s: out of memory", path);
    int rc = rf_write_file_atomic(path, b.data, b.len);
    buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- training */

/* A set of byte strings with a count each (words, characters, pieces). */
typedef struct {
    char **key;
    size_t *len;
    long *count;
    int n, cap;
    int *slot;
    size_t mask;
} StrSet;

static int ss_find(const StrSet *s, const char *k, size_t n) {
    if (!s->slot) return -1;
    for (size_t i = hash_bytes(k, n) & s->mask;; i = (i + 1) & s->mask) {
        int x = s->slot[i];
        if (x < 0) return -1;
        if (s->len[x] == n && !memcmp(s->key[x], k, n)) return x;
    }
}

static int ss_rehash(StrSet *s, size_t nslots) {
    int *slot = malloc(nslots * sizeof *slot);
    if (!slot) return rf_error("out of memory");
    memset(slot, 0xff, nslots * sizeof *slot);
    for (int x = 0; x < s->n; x++) {
        size_t i = hash_bytes(s->key[x], s->len[x]) & (nslots - 1);
        while (slot[i] >= 0) i = (i + 1) & (nslots - 1);
        slot[i] = x;
    }
    free(s->slot);
    s->slot = slot;
    s->mask = nslots - 1;
    return 0;
}

/* Index of k, added with count 0 when new; -1 on out of memory. */
static int ss_add(StrSet *s, const char *k, size_t n) {
    int x = ss_find(s, k, n);
    if (x >= 0) return x;
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 64;
        char **nk = realloc(s->key, (size_t)nc * sizeof *nk);
        if (nk) s->key = nk;
        size_t *nl = realloc(s->len, (size_t)nc * sizeof *nl);
        if (nl) s->len = nl;
        long *ncnt = realloc(s->count, (size_t)nc * sizeof *ncnt);
        if (ncnt) s->count = ncnt;
        if (!nk || !nl || !ncnt) return rf_error("out of memory");
        s->cap = nc;
    }
    if (!s->slot || 2 * (size_t)(s->n + 1) > s->mask + 1)
        if (ss_rehash(s, pow2_at_least(4 * (size_t)(s->n + 1)))) return -1;
    if (!(s->key[s->n] = dup_bytes(k, n))) return rf_error("out of memory");
    s->len[s->n] = n;
    s->count[s->n] = 0;
    size_t i = hash_bytes(k, n) & s->mask;
    while (s->slot[i] >= 0) i = (i + 1) & s->mask;
    s->slot[i] = s->n;
    return s->n++;
}

static void ss_free(StrSet *s) {
    for (int i = 0; i < s->n; i++) free(s->key[i]);
    free(s->key), free(s->len), free(s->count), free(s->slot);
    memset(s, 0, sizeof *s);
}

/* Pairs of adjacent symbols with their counts and the words holding them. */
typedef struct {
    int *a, *b;
    long *count;
    IntVec *words;
    int n, cap;
    uint64_t *key;
    int *slot;
    size_t mask;
} PairSet;

static int ps_find(const PairSet *p, int a, int b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    if (!p->slot) return -1;
    for (size_t i = hash_u64(k) & p->mask;; i = (i + 1) & p->mask) {
        if (p->slot[i] < 0) return -1;
        if (p->key[i] == k) return p->slot[i];
    }
}

static int ps_add(PairSet *p, int a, int b) {
    int x = ps_find(p, a, b);
    if (x >= 0) return x;
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 1024;
        int *na = realloc(p->a, (size_t)nc * sizeof *na);
        if (na) p->a = na;
        int *nb = realloc(p->b, (size_t)nc * sizeof *nb);
        if (nb) p->b = nb;
        long *ncnt = realloc(p->count, (size_t)nc * sizeof *ncnt);
        if (ncnt) p->count = ncnt;
        IntVec *nw = realloc(p->words, (size_t)nc * sizeof *nw);
        if (nw) p->words = nw;
        if (!na || !nb || !ncnt || !nw) return rf_error("out of memory");
        p->cap = nc;
    }
    if (!p->slot || 2 * (size_t)(p->n + 1) > p->mask + 1) {
        size_t ns = pow2_at_least(4 * (size_t)(p->n + 1));
        uint64_t *key = malloc(ns * sizeof *key);
        int *slot = malloc(ns * sizeof *slot);
        if (!key || !slot) {
            free(key), free(slot);
            return rf_error("out of memory");
        }
        memset(slot, 0xff, ns * sizeof *slot);
        for (int y = 0; y < p->n; y++) {
            uint64_t k = (uint64_t)(uint32_t)p->a[y] << 32 | (uint32_t)p->b[y];
            size_t i = hash_u64(k) & (ns - 1);
            while (slot[i] >= 0) i = (i + 1) & (ns - 1);
            slot[i] = y, key[i] = k;
        }
        free(p->key), free(p->slot);
        p->key = key, p->slot = slot, p->mask = ns - 1;
    }
    x = p->n++;
    p->a[x] = a, p->b[x] = b, p->count[x] = 0;
    memset(&p->words[x], 0, sizeof p->words[x]);
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = hash_u64(k) & p->mask;
    while (p->slot[i] >= 0) i = (i + 1) & p->mask;
    p->slot[i] = x, p->key[i] = k;
    return x;
}

static void ps_free(PairSet *p) {
    for (int i = 0; i < p->n; i++) free(p->words[i].v);
    free(p->a), free(p->b), free(p->count), free(p->words), free(p->key), free(p->slot);
    memset(p, 0, sizeof *p);
}

/* The trainer's state: the vocabulary being built and the corpus as words. */
typedef struct {
    StrSet vocab;          /* piece -> id (ids in order of creation) */
    int n_words;
    int **sym;             /* sym[w]: the symbols of word w (-1: character left to byte fallback) */
    int *nsym;
    long *wcount;
    PairSet pairs;
    PairSet done;          /* pairs already merged or refused: never merged (again) */
    struct HeapItem { long count; int pair; } *heap;
    int nheap, capheap;
    /* pairs whose count changed during one merge, with their count before it */
    int *tstamp, stamp;
    long *before;
    size_t stamp_cap;
    IntVec touched;
} Trainer;

/* Heap order: higher count first; ties by the pieces' bytes, so that the
 * result never depends on hash order. */
static int pair_before(const Trainer *tr, struct HeapItem x, struct HeapItem y) {
    if (x.count != y.count) return x.count > y.count;
    const StrSet *v = &tr->vocab;
    int pa[2] = {tr->pairs.a[x.pair], tr->pairs.b[x.pair]}, pb[2] = {tr->pairs.a[y.pair], tr->pairs.b[y.pair]};
    for (int k = 0; k < 2; k++) {
        size_t la = v->len[pa[k]], lb = v->len[pb[k]];
        int c = memcmp(v->key[pa[k]], v->key[pb[k]], la < lb ? la : lb);
        if (c) return c < 0;
        if (la != lb) return la < lb;
    }
    return 0;
}

static int theap_push(Trainer *tr, int pair) {
    if (tr->nheap == tr->capheap) {
        int nc = tr->capheap ? 2 * tr->capheap : 1024;
        struct HeapItem *nh = realloc(tr->heap, (size_t)nc * sizeof *nh);
        if (!nh) return rf_error("out of memory");
        tr->heap = nh;
        tr->capheap = nc;
    }
    struct HeapItem it = {tr->pairs.count[pair], pair};
    int i = tr->nheap++;
    while (i > 0 && pair_before(tr, it, tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = it;
    return 0;
}

static struct HeapItem theap_pop(Trainer *tr) {
    struct HeapItem top = tr->heap[0], last = tr->heap[--tr->nheap];
    int i = 0, n = tr->nheap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(tr, tr->heap[c + 1], tr->heap[c])) c++;
        if (!pair_before(tr, tr->heap[c], last)) break;
        tr->heap[i] = tr->heap[c];
        i = c;
    }
    if (n) tr->heap[i] = last;
    return top;
}

static void trainer_free(Trainer *tr) {
    ss_free(&tr->vocab);
    for (int w = 0; w < tr->n_words; w++) free(tr->sym[w]);
    free(tr->sym), free(tr->nsym), free(tr->wcount), free(tr->heap);
    ps_free(&tr->pairs);
    ps_free(&tr->done);
    free(tr->tstamp), free(tr->before), free(tr->touched.v);
}

/* Split a text as the encoder would: around "<unk>", "<s>", "</s>"; each
 * piece gets "▁" in front and " " -> "▁"; then words start at every "▁"
 * ("▁the▁cat" -> "▁the", "▁cat"), and every "\n" is a word of its own
 * ("▁A:\nyes" -> "▁A:", "\n", "yes").  So no merge crosses a space or a line
 * break, as in SentencePiece's vocabularies (Mistral's): otherwise a prompt
 * ending in "<|assistant|>\n" and its answer "yes" could fuse into one token,
 * and a model would never see the prompt alone as it is at generation time.
 * Words are counted in `words`. */
static int count_words(StrSet *words, const char *text, size_t len) {
    static const char *const specials[] = {"<unk>", "<s>", "</s>"};
    RfBuf norm = {0};
    size_t from = 0, i = 0;
    int rc = 0;
    while (!rc) {
        size_t mlen = 0;
        for (; i < len && !mlen; i += mlen ? 0 : 1)
            for (int k = 0; k < 3; k++) {
                size_t sl = strlen(specials[k]);
                if (sl <= len - i && sl > mlen && !memcmp(text + i, specials[k], sl)) mlen = sl;
            }
        if (i > from) {
            norm.len = 0;
            put(&norm, "\xE2\x96\x81");
            for (size_t k = from; k < i; k++) {
                if (text[k] == ' ') put(&norm, "\xE2\x96\x81");
                else buf_append(&norm, text + k, 1);
            }
            if (!norm.data) rc = rf_error("out of memory");
            size_t ws = 0;
            for (size_t k = 1; !rc && k <= norm.len; k++) {
                int cut = k == norm.len || norm.data[k] == '\n' || norm.data[k - 1] == '\n' ||
                          (k + 3 <= norm.len && !memcmp(norm.data + k, "\xE2\x96\x81", 3));
                if (cut && k > ws) {
                    int x = ss_add(words, norm.data + ws, k - ws);
                    if (x < 0) rc = -1;
                    else words->count[x]++;
                    ws = k;
                }
            }
        }
        if (i >= len) break;
        i += mlen;
        from = i;
    }
    buf_free(&norm);
    return rc;
}

/* Add (sign = +1) or remove (-1) the pairs of word w to the counts.  With
 * `track`, each changed pair is noted once per merge with its count before.
 * A pair holding the new symbol c is new in the word: w joins its list. */
static int word_pairs(Trainer *tr, int w, int sign, int c, int track) {
    const int *s = tr->sym[w];
    size_t need = (size_t)tr->pairs.n + (size_t)tr->nsym[w] + 1;
    if (track && need > tr->stamp_cap) {
        size_t nc = 2 * need;
        int *ns = realloc(tr->tstamp, nc * sizeof *ns);
        if (ns) tr->tstamp = ns;
        long *nb = realloc(tr->before, nc * sizeof *nb);
        if (nb) tr->before = nb;
        if (!ns || !nb) return rf_error("out of memory");
        memset(tr->tstamp + tr->stamp_cap, 0, (nc - tr->stamp_cap) * sizeof *ns);
        tr->stamp_cap = nc;
    }
    for (int i = 0; i + 1 < tr->nsym[w]; i++) {
        if (s[i] < 0 || s[i + 1] < 0) continue;
        int p = sign > 0 ? ps_add(&tr->pairs, s[i], s[i + 1]) : ps_find(&tr->pairs, s[i], s[i + 1]);
        if (p < 0) return -1;
        if (track && tr->tstamp[p] != tr->stamp) {
            tr->tstamp[p] = tr->stamp;
            tr->before[p] = tr->pairs.count[p];
            if (iv_push(&tr->touched, p)) return -1;
        }
        tr->pairs.count[p] += sign * tr->wcount[w];
        if (sign > 0 && (c < 0 || s[i] == c || s[i + 1] == c))
            if (iv_push(&tr->pairs.words[p], w)) return -1;
    }
    return 0;
}

/* Merge pair p = (a, b) into symbol c in every word holding it. */
static int apply_merge(Trainer *tr, int p, int c, int *wstamp) {
    int a = tr->pairs.a[p], b = tr->pairs.b[p], rc = 0;
    IntVec list = tr->pairs.words[p];  /* taken: the pair set may grow meanwhile */
    memset(&tr->pairs.words[p], 0, sizeof list);
    tr->stamp++;
    tr->touched.n = 0;
    for (int k = 0; k < list.n && !rc; k++) {
        int w = list.v[k];
        if (wstamp[w] == tr->stamp) continue;
        wstamp[w] = tr->stamp;
        int *s = tr->sym[w], ns = tr->nsym[w], has = 0;
        for (int i = 0; i + 1 < ns && !has; i++) has = s[i] == a && s[i + 1] == b;
        if (!has) continue;  /* a stale entry of the list */
        if ((rc = word_pairs(tr, w, -1, c, 1))) break;
        int o = 0;
        for (int i = 0; i < ns; i++) {
            if (i + 1 < ns && s[i] == a && s[i + 1] == b) s[o++] = c, i++;
            else s[o++] = s[i];
        }
        tr->nsym[w] = o;
        rc = word_pairs(tr, w, +1, c, 1);
    }
    free(list.v);
    /* every pair whose count grew gets a fresh heap entry; lowered ones are
     * found stale when popped */
    for (int k = 0; k < tr->touched.n && !rc; k++) {
        int q = tr->touched.v[k];
        if (tr->pairs.count[q] > tr->before[q]) rc = theap_push(tr, q);
    }
    return rc;
}

int tok_train(Tokenizer *t, const char *const *texts, const size_t *lens, int n, int vocab_size) {
    static const char *const specials[] = {"<unk>", "<s>", "</s>"};
    Trainer tr;
    StrSet words = {0}, chars = {0};
    IntVec merge_a = {0}, merge_b = {0};
    int *wstamp = NULL, *order = NULL, *plen = NULL;
    RfBuf cat = {0}, js = {0};
    int rc = -1;
    memset(&tr, 0, sizeof tr);
    memset(t, 0, sizeof *t);
    t->unk_id = t->bos_id = t->eos_id = -1;
    if (vocab_size < 260 || vocab_size > 1000000)
        return rf_error("tokenizer train: vocab size %d must be between 260 and 1000000 "
                        "(3 special + 256 byte tokens come first)", vocab_size);

    for (int i = 0; i < n; i++)
        if (count_words(&words, texts[i], lens ? lens[i] : strlen(texts[i]))) goto done;

    /* the base vocabulary: specials, bytes, then characters by frequency */
    for (int k = 0; k < 3; k++)
        if (ss_add(&tr.vocab, specials[k], strlen(specials[k])) < 0) goto done;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        if (ss_add(&tr.vocab, s, 6) < 0) goto done;
    }
    for (int w = 0; w < words.n; w++)
        for (size_t i = 0; i < words.len[w];) {
            size_t cl = utf8_char_len(words.key[w] + i, words.len[w] - i);
            int x = ss_add(&chars, words.key[w] + i, cl);
            if (x < 0) goto done;
            chars.count[x] += words.count[w];
            i += cl;
        }
    if (!(order = malloc(((size_t)chars.n + 1) * sizeof *order))) goto oom;
    for (int i = 0; i < chars.n; i++) order[i] = i;
    for (int i = 1; i < chars.n; i++) {  /* insertion sort: count desc, then bytes */
        int x = order[i], j = i - 1;
        while (j >= 0) {
            int y = order[j], y_first = chars.count[y] > chars.count[x];
            if (chars.count[y] == chars.count[x]) {
                size_t m = chars.len[y] < chars.len[x] ? chars.len[y] : chars.len[x];
                int c = memcmp(chars.key[y], chars.key[x], m);
                y_first = c < 0 || (c == 0 && chars.len[y] < chars.len[x]);
            }
            if (y_first) break;
            order[j + 1] = y;
            j--;
        }
        order[j + 1] = x;
    }
    for (int i = 0; i < chars.n && tr.vocab.n < vocab_size; i++)
        if (ss_add(&tr.vocab, chars.key[order[i]], chars.len[order[i]]) < 0) goto done;

    /* the corpus as symbol sequences; a character outside the vocabulary is
     * a barrier (-1): the encoder gives it byte tokens, which no merge joins */
    tr.n_words = words.n;
    tr.sym = calloc((size_t)words.n + 1, sizeof *tr.sym);
    tr.nsym = calloc((size_t)words.n + 1, sizeof *tr.nsym);
    tr.wcount = calloc((size_t)words.n + 1, sizeof *tr.wcount);
    wstamp = calloc((size_t)words.n + 1, sizeof *wstamp);
    if (!tr.sym || !tr.nsym || !tr.wcount || !wstamp) goto oom;
    for (int w = 0; w < words.n; w++) {
        if (!(tr.sym[w] = malloc((words.len[w] + 1) * sizeof(int)))) goto oom;
        tr.wcount[w] = words.count[w];
        for (size_t i = 0; i < words.len[w];) {
            size_t cl = utf8_char_len(words.key[w] + i, words.len[w] - i);
            int id = ss_find(&tr.vocab, words.key[w] + i, cl);
            tr.sym[w][tr.nsym[w]++] = id >= 259 ? id : -1;
            i += cl;
        }
        if (word_pairs(&tr, w, +1, -1, 0)) goto done;
    }
    for (int p = 0; p < tr.pairs.n; p++)
        if (theap_push(&tr, p)) goto done;

    /* the most frequent pair first, until the vocabulary is full */
    while (tr.vocab.n < vocab_size && tr.nheap) {
        struct HeapItem top = theap_pop(&tr);
        int p = top.pair, a = tr.pairs.a[p], b = tr.pairs.b[p];
        long cur = tr.pairs.count[p];
        if (cur != top.count) {  /* stale: a raised count has its own entry, a lowered one is re-queued */
            if (cur > 0 && cur < top.count && theap_push(&tr, p)) goto done;
            continue;
        }
        if (cur <= 0 || ps_find(&tr.done, a, b) >= 0) continue;
        if (ps_add(&tr.done, a, b) < 0) goto done;
        cat.len = 0;
        buf_append(&cat, tr.vocab.key[a], tr.vocab.len[a]);
        buf_append(&cat, tr.vocab.key[b], tr.vocab.len[b]);
        if (!cat.data) goto oom;
        /* a merge that would spell a special or byte token ("<0x41>") is
         * refused, so such text decodes back to itself */
        int c = ss_find(&tr.vocab, cat.data, cat.len);
        if (c >= 0 && c < 259) continue;
        if (c < 0 && (c = ss_add(&tr.vocab, cat.data, cat.len)) < 0) goto done;  /* else the piece is reused */
        if (iv_push(&merge_a, a) || iv_push(&merge_b, b) || apply_merge(&tr, p, c, wstamp)) goto done;
    }

    /* write tokenizer.json text and load it with the ordinary loader */
    AddedTok added[3];
    for (int k = 0; k < 3; k++) {
        added[k].content = (char *)specials[k];
        added[k].len = strlen(specials[k]);
        added[k].id = k;
        added[k].special = 1;
    }
    if (!(plen = malloc(((size_t)tr.vocab.n + 1) * sizeof *plen))) goto oom;
    for (int i = 0; i < tr.vocab.n; i++) plen[i] = (int)tr.vocab.len[i];
    TokJson j = {tr.vocab.n, tr.vocab.key, plen, NULL, added, 3, merge_a.v, merge_b.v, merge_a.n, "<unk>",
                 1, 1, 0, MISTRAL_NORMALIZER, "null", MISTRAL_POST, MISTRAL_DECODER};
    write_tokenizer_json(&js, &j);
    if (!js.data) goto oom;
    Json root;
    if (json_parse(&root, js.data, js.len, "trained tokenizer") == 0) {
        rc = tok_load_json(t, &root, "trained tokenizer");
        json_free(&root);
    }
    goto done;
oom:
    rf_error("tokenizer train: out of memory");
done:
    trainer_free(&tr);
    ss_free(&words);
    ss_free(&chars);
    free(merge_a.v), free(merge_b.v), free(wstamp), free(order), free(plen);
    buf_free(&cat);
    buf_free(&js);
    return rc;
}

/* ------------------------------------------------------------ command line */

static const char TOKENIZER_USAGE[] =
    "usage: recfound tokenizer encode --tokenizer FILE (--text STRING | --jsonl FILE) [--bos]\n"
    "       recfound tokenizer decode --tokenizer FILE --ids FILE\n"
    "       recfound tokenizer train (--corpus FILE.jsonl | --data DIR) --vocab N --out PATH/tokenizer.json\n"
    "\n"
    "  encode  prints the token ids of each input, space-separated, one line per input\n"
    "          (--jsonl: each line of FILE is one JSON string; --bos: add <s> as the\n"
    "          tokenizer's post-processor does)\n"
    "  decode  prints each line of ids of FILE (space-separated) as a JSON string\n"
    "  train   learns a BPE vocabulary of N tokens (Mistral scheme: <unk> <s> </s>,\n"
    "          256 byte tokens, characters, merges) from a corpus of JSON strings, or\n"
    "          from every training text of a dataset folder (--data: its train split,\n"
    "          formatted with the RecFound prompt formats)\n";

/* Each line of a .jsonl file holding one JSON string; calls fn on it.  Blank
 * lines are skipped when skip_blank, else an error (encode keeps one output
 * line per input line). */
static int for_each_jsonl_string(const char *path, int skip_blank, int (*fn)(void *, const char *, size_t),
                                 void *ctx) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return rf_error("%s: cannot open", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    while (!rc && (got = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n == 0) {
            if (skip_blank) continue;
            rc = rf_error("%s: line %ld: empty line (expected a JSON string)", path, lineno);
            break;
        }
        Json v;
        if (json_parse(&v, line, n, path)) {
            /* the parser counts lines within this one line: put the file's line in */
            char msg[512];
            const char *e = rf_last_error();
            size_t pl = strlen(path);
            if (!strncmp(e, path, pl) && !strncmp(e + pl, ": line 1, ", 10)) e += pl + 10;
            snprintf(msg, sizeof msg, "%s", e);
            rc = rf_error("%s: line %ld, %s", path, lineno, msg);
        } else {
            if (v.type != JSON_STRING) rc = rf_error("%s: line %ld: expected a JSON string", path, lineno);
            else rc = fn(ctx, v.string, v.len);
            json_free(&v);
        }
    }
    free(line);
    fclose(fp);
    return rc;
}

typedef struct { const Tokenizer *t; int bos; RfBuf out; } EncodeCtx;

static int encode_one(void *vctx, const char *s, size_t n) {
    EncodeCtx *c = vctx;
    int *ids, nid;
    if (tok_encode(c->t, s, n, c->bos, &ids, &nid)) return -1;
    for (int i = 0; i < nid; i++) buf_printf(&c->out, i ? " %d" : "%d", ids[i]);
    buf_append(&c->out, "\n", 1);
    free(ids);
    if (!c->out.data) return rf_error("out of memory");
    if (c->out.len > (1 << 20)) {
        fwrite(c->out.data, 1, c->out.len, stdout);
        c->out.len = 0;
    }
    return 0;
}

typedef struct { const char **texts; size_t *lens; int n, cap; } Corpus;

static int corpus_add(void *vctx, const char *s, size_t n) {
    Corpus *c = vctx;
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 1024;
        const char **nt = realloc(c->texts, (size_t)nc * sizeof *nt);
        if (nt) c->texts = nt;
        size_t *nl = realloc(c->lens, (size_t)nc * sizeof *nl);
        if (nl) c->lens = nl;
        if (!nt || !nl) return rf_error("out of memory");
        c->cap = nc;
    }
    char *d = dup_bytes(s, n);
    if (!d) return rf_error("out of memory");
    c->texts[c->n] = d;
    c->lens[c->n++] = n;
    return 0;
}

static int cmd_encode_decode(int argc, char **argv, int decode) {
    const char *tok_path = NULL, *text = NULL, *jsonl = NULL, *ids_path = NULL;
    int bos = 0;
    Flag enc[] = {
        {"--tokenizer", 's', &tok_path, "tokenizer.json"},
        {"--text", 's', &text, "one text to encode"},
        {"--jsonl", 's', &jsonl, "a file with one JSON string per line, each encoded"},
        {"--bos", 'b', &bos, "start with <s>, as the tokenizer's post-processor does"},
    };
    Flag dec[] = {
        {"--tokenizer", 's', &tok_path, "tokenizer.json"},
        {"--ids", 's', &ids_path, "a file of space-separated token ids, one sequence per line"},
    };
    argv[0] = decode ? "tokenizer decode" : "tokenizer encode";
    int r = decode ? parse_flags(argc, argv, dec, 2, "--tokenizer FILE --ids FILE\n\nprints each line of ids as a JSON string")
                   : parse_flags(argc, argv, enc, 4, "--tokenizer FILE (--text STRING | --jsonl FILE) [--bos]\n\n"
                                 "prints the token ids of each input, space-separated, one line per input");
    if (r) return r > 0 ? 0 : -1;
    if (!tok_path) return rf_error("tokenizer %s: --tokenizer FILE is required", argv[0]);
    if (!decode && !text == !jsonl) return rf_error("tokenizer encode: give exactly one of --text or --jsonl");
    if (decode && !ids_path) return rf_error("tokenizer decode: --ids FILE is required");
    Tokenizer t;
    if (tok_load(&t, tok_path)) return -1;
    int rc = 0;
    if (!decode) {
        EncodeCtx c = {&t, bos, {0}};
        rc = text ? encode_one(&c, text, strlen(text)) : for_each_jsonl_string(jsonl, 0, encode_one, &c);
        if (c.out.len) fwrite(c.out.data, 1, c.out.len, stdout);
        buf_free(&c.out);
    } else {
        FILE *fp = fopen(ids_path, "rb");
        if (!fp) {
            tok_free(&t);
            return rf_error("%s: cannot open", ids_path);
        }
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        IntVec ids = {0};
        RfBuf out = {0};
        while (!rc && getline(&line, &cap, fp) >= 0) {
            lineno++;
            ids.n = 0;
            char *p = line, *end;
            for (;;) {
                while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
                if (!*p) break;
                long v = strtol(p, &end, 10);
                if (end == p || v < 0 || v > INT_MAX) {
                    rc = rf_error("%s: line %ld: \"%.20s\" is not a token id", ids_path, lineno, p);
                    break;
                }
                if ((rc = iv_push(&ids, (int)v))) break;
                p = end;
            }
            char *s;
            size_t n;
            if (!rc && tok_decode(&t, ids.v, ids.n, &s, &n)) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", rf_last_error());
                rc = rf_error("%s: line %ld: %s", ids_path, lineno, msg);
            }
            if (rc) break;
            out.len = 0;
            json_write_string(&out, s, n);
            buf_append(&out, "\n", 1);
            free(s);
            if (!out.data) rc = rf_error("out of memory");
            else fwrite(out.data, 1, out.len, stdout);
        }
        free(line), free(ids.v);
        buf_free(&out);
        fclose(fp);
    }
    tok_free(&t);
    return rc;
}

static int cmd_train(int argc, char **argv) {
    const char *corpus = NULL, *out = NULL, *data = NULL;
    long vocab = 0;
    Flag f[] = {
        {"--corpus", 's', &corpus, "a .jsonl file with one JSON string (a training text) per line"},
        {"--data", 's', &data, "instead: every training text of a dataset folder, formatted as the model sees it"},
        {"--vocab", 'i', &vocab, "tokens in the vocabulary (required)"},
        {"--out", 's', &out, "where to write tokenizer.json (required; not an existing file)"},
    };
    argv[0] = "tokenizer train";
    int r = parse_flags(argc, argv, f, 4, "(--corpus FILE.jsonl | --data DIR) --vocab N --out PATH/tokenizer.json\n\n"
                        "learns a BPE vocabulary of N tokens (Mistral scheme: <unk> <s> </s>, 256 byte tokens,\n"
                        "characters, merges)");
    if (r) return r > 0 ? 0 : -1;
    if ((!corpus == !data) || !out || !vocab)
        return rf_error("tokenizer train: --vocab, --out and one of --corpus or --data are required");
    if (vocab < 260 || vocab > 1000000)  /* tok_train's range, checked before any text is read */
        return rf_error("tokenizer train: --vocab must be in [260, 1000000] (3 special and 256 byte tokens come "
                        "first), got %ld", vocab);
    if (rf_new_output(out, NULL) || rf_can_make_folder_of(out)) return -1;
    Corpus c = {0};
    Tokenizer t;
    int rc = corpus ? for_each_jsonl_string(corpus, 1, corpus_add, &c) : 0;
    if (!rc && data) {  /* the training split of a dataset folder, formatted as the model sees it */
        Dataset d = {0};
        rc = dataset_load_split(&d, data, "train", 0);
        if (!rc) rc = dataset_for_each_text(&d, corpus_add, &c);
        dataset_free(&d);
    }
    if (!rc && c.n == 0) rc = rf_error("%s: no training texts", corpus ? corpus : data);
    if (!rc) rc = tok_train(&t, c.texts, c.lens, c.n, (int)(vocab > INT_MAX ? INT_MAX : vocab));
    if (!rc) {
        rc = tok_save(&t, out);
        if (!rc)
            fprintf(stderr, "tokenizer train: %d texts, %d tokens, %d merges -> %s\n", c.n, t.n_vocab, t.n_merges, out);
        tok_free(&t);
    }
    for (int i = 0; i < c.n; i++) free((char *)c.texts[i]);
    free(c.texts), free(c.lens);
    return rc;
}

int tokenizer_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(TOKENIZER_USAGE, stdout);
        return argc < 2 ? rf_error("tokenizer: missing command (encode, decode or train)") : 0;
    }
    if (!strcmp(argv[1], "encode")) return cmd_encode_decode(argc - 1, argv + 1, 0);
    if (!strcmp(argv[1], "decode")) return cmd_encode_decode(argc - 1, argv + 1, 1);
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    return rf_error("tokenizer: unknown command \"%s\" (encode, decode or train)", argv[1]);
}
