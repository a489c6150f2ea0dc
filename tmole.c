/*
 * tmole.c - Task-wise Mixture of Low-rank Experts (TMoLE), paper §4.2.
 *
 * Each adapted projection W0 (q, k, v, o of every layer by default) gets N LoRA
 * experts and a task-wise router:
 *
 *   v_i = Softmax(Mask(MLP(e_i)))                                  eq. (1)
 *   o   = W0 x + sum_j v_ij (alpha / r) B_j A_j dropout_j(x)       eq. (2)
 *
 * e_i is row i of a learnable task-embedding table; routing is per sample (the
 * same for all of its tokens) and depends only on the task and the pass, so it
 * is computed once per task and pass.  The experts come in three groups,
 * embedding | shared | generative; Mask puts -inf on the generative experts in
 * the embedding (bidirectional) pass and on the embedding experts in the
 * generative (causal) pass.  The paper writes A_j B_j with A in R^{d x r}; here,
 * as in PEFT and the authors' code, A_j is [r, in] and B_j is [out, r], so the
 * term is B_j A_j x.
 *
 * Dropout masks are not stored: each element's keep/drop decision is a hash of
 * (the pass's seed, site, expert, position), recomputed in backward.
 */
#include "recfound.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define TMOLE_MAX_WIDTH 4096  /* widest router layer (task embedding or hidden) */
/* Loops over fewer values than this run on one thread (as in model.c). */
#define PARALLEL_MIN ((size_t)1 << 15)

static const char *PROJ_NAMES[N_PROJ] = {"q_proj", "k_proj", "v_proj", "o_proj"};

void tmole_config_default(TmoleConfig *c) {
    memset(c, 0, sizeof *c);
    c->n_emb = 2; c->n_shared = 2; c->n_gen = 2;   /* §5.1: E = 2, S = 2, G = 2 */
    c->rank = 16;
    c->alpha = 64.0f;
    c->dropout = 0.1f;
    c->task_dim = 512;
    c->router = 1;
    c->targets = (1 << PROJ_Q) | (1 << PROJ_K) | (1 << PROJ_V) | (1 << PROJ_O);
}

void tmole_config_lora(TmoleConfig *c) {
    tmole_config_default(c);
    c->n_emb = 0; c->n_shared = 1; c->n_gen = 0;
    c->router = 0;
}

int tmole_n_experts(const TmoleConfig *c) { return c->n_emb + c->n_shared + c->n_gen; }

/* ------------------------------------------------------ parameter table */

static size_t add_param(Tmole *t, const char *name, int rows, int cols) {
    return param_table_add(t->spec, &t->n_params, &t->total, name, rows, cols);
}

int tmole_config_check(const TmoleConfig *c) {
    int N = tmole_n_experts(c);
    if (N < 1 || N > TMOLE_MAX_EXPERTS || c->n_emb < 0 || c->n_shared < 0 || c->n_gen < 0)
        return rf_error("TMoLE: expert split %d/%d/%d must give 1 to %d experts", c->n_emb, c->n_shared, c->n_gen,
                        TMOLE_MAX_EXPERTS);
    if (c->n_emb + c->n_shared < 1 || c->n_gen + c->n_shared < 1)
        return rf_error("TMoLE: expert split %d/%d/%d leaves a pass without an open expert", c->n_emb, c->n_shared,
                        c->n_gen);
    if (c->rank < 1) return rf_error("TMoLE: rank must be positive, got %d", c->rank);
    if (c->router && c->task_dim < 1) return rf_error("TMoLE: task-embedding size must be positive");
    if (c->router && c->task_dim > TMOLE_MAX_WIDTH)
        return rf_error("TMoLE: task-embedding size %d is above %d", c->task_dim, TMOLE_MAX_WIDTH);
    if (c->n_hidden < 0 || c->n_hidden > TMOLE_MAX_HIDDEN)
        return rf_error("TMoLE: at most %d router hidden layers", TMOLE_MAX_HIDDEN);
    if (!(c->dropout >= 0 && c->dropout < 1)) return rf_error("TMoLE: dropout must be in [0, 1)");
    for (int h = 0; c->router && h < c->n_hidden; h++)
        if (c->hidden[h] < 1 || c->hidden[h] > TMOLE_MAX_WIDTH)
            return rf_error("TMoLE: router hidden layer %d has width %d (1 to %d)", h, c->hidden[h],
                            TMOLE_MAX_WIDTH);
    return 0;
}

int tmole_alloc(Tmole *t, const TmoleConfig *c, const Config *mc) {
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    if (tmole_config_check(c)) return -1;
    int N = tmole_n_experts(c);
    t->n_layers = mc->n_layers;
    t->n_sites = mc->n_layers * N_PROJ;
    t->site = calloc(t->n_sites, sizeof *t->site);
    size_t per_site = 2 * N + 2 * (c->n_hidden + 1);
    t->spec = calloc((size_t)t->n_sites * per_site + 1, sizeof *t->spec);
    if (!t->site || !t->spec) return rf_error("TMoLE: out of memory");
    int qd = mc->n_heads * mc->head_dim, kvd = mc->n_kv_heads * mc->head_dim, C = mc->hidden_size;
    int ins[N_PROJ] = {C, C, C, qd}, outs[N_PROJ] = {qd, kvd, kvd, C};
    char name[128];
    for (int l = 0; l < mc->n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            if (!(c->targets & (1 << p))) continue;
            TmoleSite *s = &t->site[l * N_PROJ + p];
            s->layer = l; s->proj = p; s->in = ins[p]; s->out = outs[p];
            const char *pre = "base_model.model.model.layers";
            for (int j = 0; j < N; j++) {
                snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_A.%d.weight", pre, l, PROJ_NAMES[p], j);
                s->A[j] = add_param(t, name, c->rank, s->in);
            }
            for (int j = 0; j < N; j++) {
                snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_B.%d.weight", pre, l, PROJ_NAMES[p], j);
                s->B[j] = add_param(t, name, s->out, c->rank);
            }
            if (!c->router) continue;
            int width = c->task_dim;
            for (int h = 0; h <= c->n_hidden; h++) {
                int rows = h < c->n_hidden ? c->hidden[h] : N;  /* 1 to TMOLE_MAX_WIDTH (tmole_config_check) */
                if (h < c->n_hidden)
                    snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_route.hidden.%d.weight", pre, l, PROJ_NAMES[p], h);
                else
                    snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_route.weight", pre, l, PROJ_NAMES[p]);
                s->hw[h] = add_param(t, name, rows, width);
                if (h < c->n_hidden)
                    snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_route.hidden.%d.bias", pre, l, PROJ_NAMES[p], h);
                else
                    snprintf(name, sizeof name, "%s.%d.self_attn.%s.lora_route.bias", pre, l, PROJ_NAMES[p]);
                s->hb[h] = add_param(t, name, rows, 0);
                width = rows;
            }
        }
    if (c->router) t->task_emb = add_param(t, "task_embedding.weight", TMOLE_TASK_ROWS, c->task_dim);
    t->params = calloc_big(t->total, sizeof(float));
    if (!t->params) return rf_error("TMoLE: out of memory for %zu adapter parameters", t->total);
    return 0;
}

void tmole_free(Tmole *t) {
    free(t->site);
    free(t->spec);
    free_big(t->params);
    memset(t, 0, sizeof *t);
}

const TmoleSite *tmole_site(const Tmole *t, int layer, int proj) {
    if (!t || !(t->cfg.targets & (1 << proj))) return NULL;
    return &t->site[layer * N_PROJ + proj];
}

static void fill_uniform(float *x, size_t n, float bound, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * rng_uniform(r) - 1.0f);
}

void tmole_init(Tmole *t, uint64_t seed) {
    const TmoleConfig *c = &t->cfg;
    int N = tmole_n_experts(c);
    Rng r;
    rng_seed(&r, seed);
    memset(t->params, 0, t->total * sizeof(float));  /* B_j = 0: the adapted model starts as the backbone */
    for (int i = 0; i < t->n_sites; i++) {
        TmoleSite *s = &t->site[i];
        if (!s->in) continue;
        for (int j = 0; j < N; j++)  /* kaiming_uniform(a = sqrt 5): U(-1/sqrt(in), 1/sqrt(in)) */
            fill_uniform(t->params + s->A[j], (size_t)c->rank * s->in, 1.0f / sqrtf((float)s->in), &r);
        if (!c->router) continue;
        int width = c->task_dim;
        for (int h = 0; h <= c->n_hidden; h++) {
            int rows = h < c->n_hidden ? c->hidden[h] : N;
            float *w = t->params + s->hw[h];
            if (h == c->n_hidden)  /* the authors' router: weight N(0, 1) */
                for (size_t k = 0; k < (size_t)rows * width; k++) w[k] = rng_normal(&r);
            else                   /* hidden layers: PyTorch's Linear default */
                fill_uniform(w, (size_t)rows * width, 1.0f / sqrtf((float)width), &r);
            fill_uniform(t->params + s->hb[h], rows, 1.0f / sqrtf((float)width), &r);
            width = rows;
        }
    }
    if (c->router) {  /* xavier_normal: std = sqrt(2 / (fan_in + fan_out)) */
        float sd = sqrtf(2.0f / (TMOLE_TASK_ROWS + c->task_dim));
        float *e = t->params + t->task_emb;
        for (size_t k = 0; k < (size_t)TMOLE_TASK_ROWS * c->task_dim; k++) e[k] = sd * rng_normal(&r);
    }
}

/* ------------------------------------------------------------- routing */

/* Is expert j open in this pass?  Groups: [0, n_emb) embedding, then shared, then generative. */
static int expert_open(const TmoleConfig *c, int j, AttnMode pass) {
    if (j < c->n_emb) return pass == ATTN_BIDIRECTIONAL;
    if (j < c->n_emb + c->n_shared) return 1;
    return pass == ATTN_CAUSAL;
}

/* The router MLP on task row `task`: hidden layers with ReLU, then N logits.
 * pre/post, when given, keep each layer's pre- and post-activation for backward. */
static void router_logits(const Tmole *t, const TmoleSite *s, int task, float *z, float *pre, float *post) {
    const TmoleConfig *c = &t->cfg;
    int N = tmole_n_experts(c), width = c->task_dim;
    float buf[2][TMOLE_MAX_WIDTH];
    const float *in = t->params + t->task_emb + (size_t)task * c->task_dim;
    for (int h = 0; h <= c->n_hidden; h++) {
        int rows = h < c->n_hidden ? c->hidden[h] : N;
        const float *W = t->params + s->hw[h], *bias = t->params + s->hb[h];
        float *out = h == c->n_hidden ? z : buf[h & 1];
        for (int o = 0; o < rows; o++) {
            double acc = bias[o];
            for (int k = 0; k < width; k++) acc += (double)W[(size_t)o * width + k] * in[k];
            out[o] = (float)acc;
        }
        if (h < c->n_hidden) {
            if (pre) memcpy(pre + h * TMOLE_MAX_WIDTH, out, rows * sizeof(float));
            for (int o = 0; o < rows; o++) out[o] = out[o] > 0 ? out[o] : 0;  /* ReLU */
            if (post) memcpy(post + h * TMOLE_MAX_WIDTH, out, rows * sizeof(float));
        }
        in = out;
        width = rows;
    }
}

void tmole_route(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *v) {
    const TmoleConfig *c = &t->cfg;
    int N = tmole_n_experts(c);
    float z[TMOLE_MAX_EXPERTS];
    if (!c->router) {  /* no router: every open expert counts fully (plain LoRA when N = 1) */
        for (int j = 0; j < N; j++) v[j] = expert_open(c, j, pass) ? 1.0f : 0.0f;
        return;
    }
    router_logits(t, s, task, z, NULL, NULL);
    float mx = -INFINITY;
    for (int j = 0; j < N; j++)
        if (expert_open(c, j, pass) && z[j] > mx) mx = z[j];
    double sum = 0;
    for (int j = 0; j < N; j++) {   /* Mask: -inf logits give exactly 0 after the softmax */
        v[j] = expert_open(c, j, pass) ? expf(z[j] - mx) : 0.0f;
        sum += v[j];
    }
    for (int j = 0; j < N; j++) v[j] = (float)(v[j] / sum);
}

/* --------------------------------------------------------- activations */

struct TmoleActs {
    int rows;         /* capacity in B*T rows */
    int N, r, max_in, max_out;
    float *U;         /* [n_sites][rows][N*r]: row n holds A_j dropout_j(x_n) of the used experts, in order */
    float *v;         /* [n_sites][14][N]: routing of this pass per task */
    float *dv;        /* [n_sites][14][N]: d loss / d v, accumulated in backward */
    /* scratch of one site at a time */
    float *xd, *tmp;  /* [rows][max_in] */
    float *Z, *G;     /* [rows][N*r] */
    float *Acat;      /* [N*r][max_in]: A_j of the used experts stacked */
    float *Bcat;      /* [max_out][N*r]: B_j of the used experts side by side */
    float *dcat;      /* [max(max_in, max_out) * N*r]: their gradients */
    uint32_t *bits;   /* [rows][words]: dropout keep bits of one expert */
    int words;        /* 32-bit words per row of bits: ceil(max_in / 32) */
};

TmoleActs *tmole_acts_new(const Tmole *t, int B, int T) {
    TmoleActs *ta = calloc(1, sizeof *ta);
    if (!ta) return NULL;
    ta->rows = B * T;
    ta->N = tmole_n_experts(&t->cfg);
    ta->r = t->cfg.rank;
    for (int i = 0; i < t->n_sites; i++) {
        if (t->site[i].in > ta->max_in) ta->max_in = t->site[i].in;
        if (t->site[i].out > ta->max_out) ta->max_out = t->site[i].out;
    }
    ta->words = (ta->max_in + 31) / 32;
    size_t rows = ta->rows, N = ta->N, r = ta->r, S = t->n_sites, in = ta->max_in, out = ta->max_out;
    size_t wide = in > out ? in : out;
    ta->U = calloc(S * N * rows * r, sizeof(float));
    ta->v = calloc(S * TMOLE_TASK_ROWS * N, sizeof(float));
    ta->dv = calloc(S * TMOLE_TASK_ROWS * N, sizeof(float));
    ta->xd = calloc(rows * in, sizeof(float));
    ta->tmp = calloc(rows * in, sizeof(float));
    ta->Z = calloc(rows * N * r, sizeof(float));
    ta->G = calloc(rows * N * r, sizeof(float));
    ta->Acat = calloc(N * r * in, sizeof(float));
    ta->Bcat = calloc(out * N * r, sizeof(float));
    ta->dcat = calloc(wide * N * r, sizeof(float));
    ta->bits = calloc(rows * ta->words + 1, sizeof(uint32_t));
    if (!ta->U || !ta->v || !ta->dv || !ta->xd || !ta->tmp || !ta->Z || !ta->G || !ta->Acat ||
        !ta->Bcat || !ta->dcat || !ta->bits) {
        tmole_acts_free(ta);
        rf_error("TMoLE: out of memory for adapter activations");
        return NULL;
    }
    return ta;
}

void tmole_acts_free(TmoleActs *ta) {
    if (!ta) return;
    free(ta->U); free(ta->v); free(ta->dv); free(ta->xd); free(ta->tmp); free(ta->Z); free(ta->G);
    free(ta->Acat); free(ta->Bcat); free(ta->dcat); free(ta->bits);
    free(ta);
}

/* Routing of every site for every task row in this pass, and cleared dv. */
void tmole_acts_begin(TmoleActs *ta, const Tmole *t, const Batch *b, AttnMode pass) {
    (void)b;
    int N = ta->N;
    for (int i = 0; i < t->n_sites; i++) {
        if (!t->site[i].in) continue;
        for (int k = 0; k < TMOLE_TASK_ROWS; k++) tmole_route(t, &t->site[i], k, pass, ta->v + ((size_t)i * TMOLE_TASK_ROWS + k) * N);
    }
    memset(ta->dv, 0, (size_t)t->n_sites * TMOLE_TASK_ROWS * N * sizeof(float));
}

static int site_index(const Tmole *t, const TmoleSite *s) { return (int)(s - t->site); }

/* ------------------------------------------------------------- dropout */

/* The splitmix64 finaliser of (seed, site, expert, group of four elements). */
static inline uint64_t dropout_hash(uint64_t seed, int site, int j, uint64_t group) {
    uint64_t z = seed ^ ((uint64_t)site << 40) ^ ((uint64_t)j << 56) ^ (group * 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Keep/drop of element e of expert j at a site: 16 bits of the hash of
 * (seed, site, expert, e / 4), compared with p; one hash serves four
 * elements.  e = ((sample << 16) + token) * in + feature, where `sample` is the
 * row's place in the whole batch (Batch.row_ids), so the decisions do not
 * depend on how a batch is cut into micro-batches or shared between ranks. */
static inline int dropout_keep(uint64_t seed, int site, int j, size_t e, float p) {
    unsigned u = (unsigned)(dropout_hash(seed, site, j, e >> 2) >> (16 * (e & 3))) & 0xFFFFu;
    return u >= (unsigned)(p * 65536.0f);
}

/* dropout_keep of elements key .. key+n-1 as bits: bit i % 32 of bits[i / 32]
 * is 1 when element key + i is kept.  The plain twin asks dropout_keep once
 * per element. */
void tmole_dropout_bits_ref(uint32_t *bits, int n, uint64_t seed, int site, int j, size_t key, float p) {
    memset(bits, 0, (size_t)(n + 31) / 32 * sizeof(uint32_t));
    for (int i = 0; i < n; i++)
        if (dropout_keep(seed, site, j, key + i, p)) bits[i >> 5] |= 1u << (i & 31);
}

/* The same bits, one hash per four elements.  With AVX-512 (DQ, BW) and key a
 * multiple of 4, eight hashes at a time give 32 elements: 16-bit lane l of the
 * eight 64-bit hashes is element l's 16 bits, so one unsigned 16-bit compare
 * with the threshold yields the 32 keep bits in order. */
void tmole_dropout_bits(uint32_t *bits, int n, uint64_t seed, int site, int j, size_t key, float p) {
    unsigned thr = (unsigned)(p * 65536.0f);
    int i = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__)
    if (key % 4 == 0 && thr <= 0xFFFFu) {
        const __m512i base = _mm512_set1_epi64((long long)(seed ^ ((uint64_t)site << 40) ^ ((uint64_t)j << 56)));
        const __m512i golden = _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ULL);
        const __m512i c1 = _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ULL);
        const __m512i c2 = _mm512_set1_epi64((long long)0x94D049BB133111EBULL);
        const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), t16 = _mm512_set1_epi16((short)thr);
        for (; i + 32 <= n; i += 32) {
            __m512i g = _mm512_add_epi64(_mm512_set1_epi64((long long)((key + i) >> 2)), lane);
            __m512i z = _mm512_xor_si512(base, _mm512_mullo_epi64(g, golden));
            z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), c1);
            z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), c2);
            z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
            bits[i >> 5] = (uint32_t)_mm512_cmpge_epu16_mask(z, t16);
        }
    }
#endif
    if (i < n) memset(bits + (i >> 5), 0, (size_t)((n + 31) / 32 - (i >> 5)) * sizeof(uint32_t));
    uint64_t group = 0, z = 0;
    for (int first = 1; i < n; i++, first = 0) {
        size_t e = key + i;
        if (first || (e >> 2) != group) z = dropout_hash(seed, site, j, group = e >> 2);
        if (((unsigned)(z >> (16 * (e & 3))) & 0xFFFFu) >= thr) bits[i >> 5] |= 1u << (i & 31);
    }
}

/* Is there dropout in this pass? */
static int dropout_on(const Tmole *t, const Batch *b) { return b->dropout_seed && t->cfg.dropout > 0; }

/* The key of element 0 of batch row n: ((sample << 16) + token) * in. */
static inline size_t row_key(const Batch *b, int n, int in) {
    size_t sample = b->row_ids ? (size_t)b->row_ids[n / b->T] : (size_t)(n / b->T);
    return ((sample << 16) + (size_t)(n % b->T)) * (size_t)in;
}

/* ta->bits = expert j's keep bits for every row, and (xd != NULL) xd =
 * dropout_j(x): kept values scaled by 1/(1-p) (inverted dropout), others 0. */
static void expert_dropout(TmoleActs *ta, const Tmole *t, const Batch *b, int si, int j, const float *x, float *xd,
                           int rows, int in) {
    float p = t->cfg.dropout, scale = 1.0f / (1.0f - p);
    int words = (in + 31) / 32;
#pragma omp parallel for if ((size_t)rows * in >= PARALLEL_MIN)
    for (int n = 0; n < rows; n++) {
        uint32_t *bits = ta->bits + (size_t)n * words;
        tmole_dropout_bits(bits, in, b->dropout_seed, si, j, row_key(b, n, in), p);
        if (!xd) continue;
        const float *xr = x + (size_t)n * in;
        float *o = xd + (size_t)n * in;
        int i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= in; i += 16)
            _mm512_storeu_ps(o + i, _mm512_maskz_mul_ps((__mmask16)(bits[i >> 5] >> (i & 31)), _mm512_loadu_ps(xr + i),
                                                        _mm512_set1_ps(scale)));
#endif
        for (; i < in; i++) o[i] = (bits[i >> 5] >> (i & 31)) & 1 ? xr[i] * scale : 0.0f;
    }
}

/* ----------------------------------------------------- eq. (2), fast */

/* Row n of the batch belongs to sample n / T, whose task picks the routing row. */
static inline float route_of(const TmoleActs *ta, int si, const Batch *b, int n, int j) {
    int task = b->tasks ? b->tasks[n / b->T] : 0;
    return ta->v[((size_t)si * TMOLE_TASK_ROWS + task) * ta->N + j];
}

/* The experts with a non-zero weight for some row of the batch, in order
 * (masked experts are skipped; the same list in forward and backward).
 * Returns their number. */
static int used_experts(const TmoleActs *ta, int si, const Batch *b, int *J) {
    int nu = 0;
    for (int j = 0; j < ta->N; j++)
        for (int r = 0; r < b->B; r++)
            if (route_of(ta, si, b, r * b->T, j) != 0) {
                J[nu++] = j;
                break;
            }
    return nu;
}

/* This site's U: [rows][nu * r], expert u's r values at columns u*r .. u*r + r-1. */
static float *site_U(const TmoleActs *ta, int si) { return ta->U + (size_t)si * ta->N * ta->rows * ta->r; }

/* Acat [nu*r, in] = the A_j stacked, Bcat [out, nu*r] = the B_j side by side. */
static void gather_experts(const Tmole *t, const TmoleSite *s, const int *J, int nu, float *Acat, float *Bcat) {
    int r = t->cfg.rank, K = nu * r;
    for (int u = 0; u < nu; u++) {
        memcpy(Acat + (size_t)u * r * s->in, t->params + s->A[J[u]], (size_t)r * s->in * sizeof(float));
        const float *B = t->params + s->B[J[u]];
        for (int o = 0; o < s->out; o++) memcpy(Bcat + (size_t)o * K + u * r, B + (size_t)o * r, r * sizeof(float));
    }
}

/* Z = U with expert u's columns of row n scaled by g = (alpha/r) v_{task(n), J[u]}. */
static void scale_by_route(float *Z, const float *U, const TmoleActs *ta, int si, const Batch *b, const int *J, int nu,
                           int rows, float scaling) {
    int r = ta->r, K = nu * r;
#pragma omp parallel for if ((size_t)rows * K >= PARALLEL_MIN)
    for (int n = 0; n < rows; n++)
        for (int u = 0; u < nu; u++) {
            float g = scaling * route_of(ta, si, b, n, J[u]);
            for (int q = 0; q < r; q++) Z[(size_t)n * K + u * r + q] = g * U[(size_t)n * K + u * r + q];
        }
}

/* eq. (2): y += sum_j v_ij (alpha/r) B_j A_j dropout_j(x).  The used experts
 * are stacked, so that B side is one product:
 *   U = [dropout_j(x) A_j^T]_j  (one product without dropout, one per expert with it)
 *   Z = U scaled per row and expert by (alpha/r) v,   y += Z Bcat^T. */
void tmole_forward(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *y, const float *x,
                   const Batch *b, AttnMode pass) {
    (void)pass;
    int si = site_index(t, s), rows = b->B * b->T, r = ta->r, in = s->in, J[TMOLE_MAX_EXPERTS];
    int nu = used_experts(ta, si, b, J), K = nu * r;
    if (!nu) return;
    float *U = site_U(ta, si);
    gather_experts(t, s, J, nu, ta->Acat, ta->Bcat);
    if (!dropout_on(t, b)) {
        matmul_nt(U, x, ta->Acat, rows, in, K, 0);
    } else {
        for (int u = 0; u < nu; u++) {  /* U[:, u r .. u r + r) = dropout_j(x) A_j^T */
            expert_dropout(ta, t, b, si, J[u], x, ta->xd, rows, in);
            matmul_strided(U + u * r, K, ta->xd, in, 1, ta->Acat + (size_t)u * r * in, 1, in, rows, in, r, 0);
        }
    }
    scale_by_route(ta->Z, U, ta, si, b, J, nu, rows, t->cfg.alpha / r);
    matmul_nt(y, ta->Z, ta->Bcat, rows, K, s->out, 1);
}

/* With G = dy Bcat (G_j = dy B_j) and g_n = (alpha/r) v_{task(n), j}:
 *   dv_{task, j} += (alpha/r) sum_n G_j[n] . U_j[n]
 *   dB_j += dy^T (g U_j)                      (all experts: dBcat = dy^T Z)
 *   dA_j += (g G_j)^T dropout_j(x),   dx += dropout_j'((g G_j) A_j)
 * (without dropout the last two are one product each over the stacked experts). */
void tmole_backward(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *dx, float *grads,
                    const float *dy, const float *x, const Batch *b, AttnMode pass) {
    (void)pass;
    int si = site_index(t, s), rows = b->B * b->T, r = ta->r, N = ta->N, in = s->in, out = s->out;
    int J[TMOLE_MAX_EXPERTS], nu = used_experts(ta, si, b, J), K = nu * r;
    if (!nu) return;
    float scaling = t->cfg.alpha / r, *U = site_U(ta, si), *G = ta->G, *dcat = ta->dcat;
    gather_experts(t, s, J, nu, ta->Acat, ta->Bcat);
    matmul_nn(G, dy, ta->Bcat, rows, out, K, 0);                          /* G = dy Bcat */
#pragma omp parallel for if ((size_t)rows * K >= PARALLEL_MIN)
    for (int u = 0; u < nu; u++)          /* each expert its own dv entries, samples in order */
        for (int smp = 0; smp < b->B; smp++) {
            int task = b->tasks ? b->tasks[smp] : 0;
            double d = 0;
            for (int n = smp * b->T; n < (smp + 1) * b->T; n++) {
                const float *g = G + (size_t)n * K + u * r, *un = U + (size_t)n * K + u * r;
                int q = 0;
#if defined(__AVX512F__)
                __m512 acc = _mm512_setzero_ps();
                for (; q + 16 <= r; q += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(g + q), _mm512_loadu_ps(un + q), acc);
                d += _mm512_reduce_add_ps(acc);
#endif
                for (; q < r; q++) d += (double)g[q] * un[q];
            }
            ta->dv[((size_t)si * TMOLE_TASK_ROWS + task) * N + J[u]] += scaling * (float)d;
        }
    scale_by_route(ta->Z, U, ta, si, b, J, nu, rows, scaling);
    matmul_tn(dcat, dy, ta->Z, out, rows, K, 0);                           /* dBcat = dy^T Z */
    for (int u = 0; u < nu; u++) {
        float *dB = grads + s->B[J[u]];
        for (int o = 0; o < out; o++)
            for (int q = 0; q < r; q++) dB[(size_t)o * r + q] += dcat[(size_t)o * K + u * r + q];
    }
    scale_by_route(G, G, ta, si, b, J, nu, rows, scaling);                 /* G <- g G */
    if (!dropout_on(t, b)) {
        matmul_tn(dcat, G, x, K, rows, in, 0);                             /* dAcat = (g G)^T x */
        for (int u = 0; u < nu; u++) {
            float *dA = grads + s->A[J[u]];
            const float *d = dcat + (size_t)u * r * in;
            for (size_t e = 0; e < (size_t)r * in; e++) dA[e] += d[e];
        }
        if (dx) matmul_nn(dx, G, ta->Acat, rows, K, in, 1);                /* dx += (g G) Acat */
        return;
    }
    float keep_scale = 1.0f / (1.0f - t->cfg.dropout);
    int words = (in + 31) / 32;
    for (int u = 0; u < nu; u++) {
        const float *Gu = G + u * r;  /* g G_j: columns u r .. u r + r-1 of G */
        expert_dropout(ta, t, b, si, J[u], x, ta->xd, rows, in);
        matmul_strided(grads + s->A[J[u]], in, Gu, 1, K, ta->xd, in, 1, r, rows, in, 1); /* dA_j += (g G_j)^T dropout_j(x) */
        if (!dx) continue;
        matmul_strided(ta->tmp, in, Gu, K, 1, ta->Acat + (size_t)u * r * in, in, 1, rows, r, in, 0); /* (g G_j) A_j */
        /* through the dropout: only kept elements pass, scaled by 1/(1-p) */
#pragma omp parallel for if ((size_t)rows * in >= PARALLEL_MIN)
        for (int n = 0; n < rows; n++) {
            const uint32_t *bits = ta->bits + (size_t)n * words;
            const float *tr = ta->tmp + (size_t)n * in;
            float *d = dx + (size_t)n * in;
            int i = 0;
#if defined(__AVX512F__)
            for (; i + 16 <= in; i += 16)
                _mm512_storeu_ps(d + i, _mm512_mask3_fmadd_ps(_mm512_loadu_ps(tr + i), _mm512_set1_ps(keep_scale),
                                                              _mm512_loadu_ps(d + i), (__mmask16)(bits[i >> 5] >> (i & 31))));
#endif
            for (; i < in; i++) d[i] += (bits[i >> 5] >> (i & 31)) & 1 ? keep_scale * tr[i] : 0.0f;
        }
    }
}

/* ---------------------------------------------------- eq. (2), plain */

/* The plain twins of tmole_forward / tmole_backward: eq. (2) and its
 * derivatives row by row, dropout_keep asked per element, sums in double.
 * They keep U in the same place, so either backward follows either forward. */
void tmole_forward_ref(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *y, const float *x,
                       const Batch *b, AttnMode pass) {
    (void)pass;
    int si = site_index(t, s), rows = b->B * b->T, r = ta->r, in = s->in, out = s->out, J[TMOLE_MAX_EXPERTS];
    int nu = used_experts(ta, si, b, J), K = nu * r, drop = dropout_on(t, b);
    float p = t->cfg.dropout, keep_scale = 1.0f / (1.0f - p), scaling = t->cfg.alpha / r, *U = site_U(ta, si);
    for (int n = 0; n < rows; n++) {
        size_t key = row_key(b, n, in);
        const float *xr = x + (size_t)n * in;
        for (int u = 0; u < nu; u++) {
            const float *A = t->params + s->A[J[u]];
            for (int q = 0; q < r; q++) {
                double acc = 0;
                for (int i = 0; i < in; i++) {
                    float xd = !drop ? xr[i] : dropout_keep(b->dropout_seed, si, J[u], key + i, p) ? xr[i] * keep_scale : 0.0f;
                    acc += (double)xd * A[(size_t)q * in + i];
                }
                U[(size_t)n * K + u * r + q] = (float)acc;
            }
        }
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int u = 0; u < nu; u++) {
                double g = scaling * route_of(ta, si, b, n, J[u]);
                const float *B = t->params + s->B[J[u]];
                for (int q = 0; q < r; q++) acc += g * U[(size_t)n * K + u * r + q] * B[(size_t)o * r + q];
            }
            y[(size_t)n * out + o] += (float)acc;
        }
    }
}

void tmole_backward_ref(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *dx, float *grads,
                        const float *dy, const float *x, const Batch *b, AttnMode pass) {
    (void)pass;
    int si = site_index(t, s), rows = b->B * b->T, r = ta->r, in = s->in, out = s->out, J[TMOLE_MAX_EXPERTS];
    int nu = used_experts(ta, si, b, J), K = nu * r, drop = dropout_on(t, b);
    float p = t->cfg.dropout, keep_scale = 1.0f / (1.0f - p), scaling = t->cfg.alpha / r, *U = site_U(ta, si);
    double *G = malloc((size_t)r * sizeof(double));
    if (!G) return;
    for (int n = 0; n < rows; n++) {
        int task = b->tasks ? b->tasks[n / b->T] : 0;
        size_t key = row_key(b, n, in);
        const float *xr = x + (size_t)n * in, *dyr = dy + (size_t)n * out, *Un = U + (size_t)n * K;
        for (int u = 0; u < nu; u++) {
            int j = J[u];
            double g = scaling * route_of(ta, si, b, n, j);
            const float *A = t->params + s->A[j], *B = t->params + s->B[j];
            float *dA = grads + s->A[j], *dB = grads + s->B[j];
            double d = 0;
            for (int q = 0; q < r; q++) {
                G[q] = 0;
                for (int o = 0; o < out; o++) G[q] += (double)dyr[o] * B[(size_t)o * r + q];
                d += G[q] * Un[u * r + q];
            }
            ta->dv[((size_t)si * TMOLE_TASK_ROWS + task) * ta->N + j] += scaling * (float)d;
            for (int o = 0; o < out; o++)
                for (int q = 0; q < r; q++) dB[(size_t)o * r + q] += (float)(dyr[o] * g * Un[u * r + q]);
            for (int i = 0; i < in; i++) {
                int keep = !drop || dropout_keep(b->dropout_seed, si, j, key + i, p);
                double xd = !drop ? xr[i] : keep ? (double)(xr[i] * keep_scale) : 0.0;
                double acc = 0;
                for (int q = 0; q < r; q++) {
                    dA[(size_t)q * in + i] += (float)(g * G[q] * xd);
                    acc += g * G[q] * A[(size_t)q * in + i];
                }
                if (dx && keep) dx[(size_t)n * in + i] += (float)(drop ? acc * keep_scale : acc);
            }
        }
    }
    free(G);
}

/* Router backward for every site and task row that received a gradient:
 *   softmax: dz_j = v_j (dv_j - sum_k v_k dv_k)   (zero on masked experts, where v = 0)
 *   Linear layers: dW += dz h^T, db += dz, dh = W^T dz; ReLU passes where pre > 0;
 *   finally the task-embedding row: de_task += dh_0. */
void tmole_backward_router(const Tmole *t, TmoleActs *ta, float *grads, AttnMode pass) {
    (void)pass;
    const TmoleConfig *c = &t->cfg;
    if (!c->router) return;
    int N = ta->N;
    float z[TMOLE_MAX_EXPERTS];
    float *pre = malloc(sizeof(float) * (2 * TMOLE_MAX_HIDDEN + 2) * TMOLE_MAX_WIDTH);
    if (!pre) return;  /* tiny allocation; without it there is nothing to update */
    float *post = pre + TMOLE_MAX_HIDDEN * TMOLE_MAX_WIDTH, *dcur = post + TMOLE_MAX_HIDDEN * TMOLE_MAX_WIDTH;
    float *dnext = dcur + TMOLE_MAX_WIDTH;
    for (int i = 0; i < t->n_sites; i++) {
        const TmoleSite *s = &t->site[i];
        if (!s->in) continue;
        for (int k = 0; k < TMOLE_TASK_ROWS; k++) {
            const float *v = ta->v + ((size_t)i * TMOLE_TASK_ROWS + k) * N;
            const float *dv = ta->dv + ((size_t)i * TMOLE_TASK_ROWS + k) * N;
            int any = 0;
            for (int j = 0; j < N; j++) any |= dv[j] != 0;
            if (!any) continue;
            router_logits(t, s, k, z, pre, post);
            double dot = 0;
            for (int j = 0; j < N; j++) dot += (double)v[j] * dv[j];
            for (int j = 0; j < N; j++) dcur[j] = v[j] * (dv[j] - (float)dot);
            for (int h = c->n_hidden; h >= 0; h--) {
                int rows = h < c->n_hidden ? c->hidden[h] : N;
                int width = h > 0 ? c->hidden[h - 1] : c->task_dim;
                const float *in = h > 0 ? post + (h - 1) * TMOLE_MAX_WIDTH : t->params + t->task_emb + (size_t)k * c->task_dim;
                const float *W = t->params + s->hw[h];
                float *dW = grads + s->hw[h], *db = grads + s->hb[h];
                for (int o = 0; o < rows; o++) {
                    db[o] += dcur[o];
                    for (int q = 0; q < width; q++) dW[(size_t)o * width + q] += dcur[o] * in[q];
                }
                for (int q = 0; q < width; q++) {
                    double acc = 0;
                    for (int o = 0; o < rows; o++) acc += (double)W[(size_t)o * width + q] * dcur[o];
                    dnext[q] = (float)acc;
                }
                if (h > 0)  /* through the ReLU of the layer below */
                    for (int q = 0; q < width; q++) dnext[q] = pre[(h - 1) * TMOLE_MAX_WIDTH + q] > 0 ? dnext[q] : 0.0f;
                memcpy(dcur, dnext, width * sizeof(float));
            }
            float *de = grads + t->task_emb + (size_t)k * c->task_dim;
            for (int q = 0; q < c->task_dim; q++) de[q] += dcur[q];
        }
    }
    free(pre);
}

void tmole_fold(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *W) {
    int N = tmole_n_experts(&t->cfg), r = t->cfg.rank;
    float v[TMOLE_MAX_EXPERTS], scaling = t->cfg.alpha / r;
    tmole_route(t, s, task, pass, v);
    for (int j = 0; j < N; j++) {
        if (v[j] == 0) continue;
        const float *A = t->params + s->A[j], *B = t->params + s->B[j];
        for (int o = 0; o < s->out; o++)
            for (int q = 0; q < r; q++) {
                float g = v[j] * scaling * B[(size_t)o * r + q];
                const float *a = A + (size_t)q * s->in;
                float *w = W + (size_t)o * s->in;
                for (int i = 0; i < s->in; i++) w[i] += g * a[i];
            }
    }
}

void tmole_apply(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *y, const float *x, int n,
                 float *u) {
    int N = tmole_n_experts(&t->cfg), r = t->cfg.rank;
    float v[TMOLE_MAX_EXPERTS], scaling = t->cfg.alpha / r;
    tmole_route(t, s, task, pass, v);
    for (int j = 0; j < N; j++) {
        if (v[j] == 0) continue;
        matmul_nt(u, x, t->params + s->A[j], n, s->in, r, 0);          /* u = x A_j^T */
        for (size_t i = 0; i < (size_t)n * r; i++) u[i] *= v[j] * scaling;
        matmul_nt(y, u, t->params + s->B[j], n, r, s->out, 1);         /* y += u B_j^T */
    }
}

/* ---------------------------------------------------------- checkpoints */

/* adapter_config.json: the TMoLE settings, in PEFT's spelling where PEFT has one. */
static int tmole_config_save(const TmoleConfig *c, const char *path) {
    RfBuf b = {0};
    buf_printf(&b, "{\n  \"peft_type\": \"TMOLE\",\n  \"r\": %d,\n  \"lora_alpha\": %.9g,\n  \"lora_dropout\": %.9g,\n",
               c->rank, c->alpha, c->dropout);
    buf_printf(&b, "  \"target_modules\": [");
    int first = 1;
    for (int p = 0; p < N_PROJ; p++)
        if (c->targets & (1 << p)) {
            buf_printf(&b, "%s\"%s\"", first ? "" : ", ", PROJ_NAMES[p]);
            first = 0;
        }
    buf_printf(&b, "],\n  \"num_embedding_experts\": %d,\n  \"num_shared_experts\": %d,\n"
               "  \"num_generative_experts\": %d,\n  \"router\": %s,\n  \"task_embedding_dim\": %d,\n"
               "  \"num_task_rows\": %d,\n  \"router_hidden\": [",
               c->n_emb, c->n_shared, c->n_gen, c->router ? "true" : "false", c->task_dim, TMOLE_TASK_ROWS);
    for (int h = 0; h < c->n_hidden; h++) buf_printf(&b, "%s%d", h ? ", " : "", c->hidden[h]);
    buf_printf(&b, "]\n}\n");
    int rc = b.data ? rf_write_file_atomic(path, b.data, b.len) : rf_error("%s: out of memory", path);
    buf_free(&b);
    return rc;
}

static int json_int_field(const Json *o, const char *key, int *out, const char *path) {
    const Json *v = json_get(o, key);
    if (!v || v->type != JSON_NUMBER || v->number != (int)v->number)
        return rf_error("%s: key \"%s\" is missing or not a whole number", path, key);
    *out = (int)v->number;
    return 0;
}

static int tmole_config_load(TmoleConfig *c, const char *path) {
    char *text;
    size_t len;
    Json o;
    if (rf_read_file(path, &text, &len)) return -1;
    int rc = json_parse(&o, text, len, path);
    free(text);
    if (rc) return -1;
    tmole_config_default(c);
    c->targets = 0;
    const Json *v;
    rc = -1;
    if (o.type != JSON_OBJECT) { rf_error("%s: not a JSON object", path); goto done; }
    if (json_int_field(&o, "r", &c->rank, path) || json_int_field(&o, "num_embedding_experts", &c->n_emb, path) ||
        json_int_field(&o, "num_shared_experts", &c->n_shared, path) ||
        json_int_field(&o, "num_generative_experts", &c->n_gen, path) ||
        json_int_field(&o, "task_embedding_dim", &c->task_dim, path))
        goto done;
    if (!(v = json_get(&o, "lora_alpha")) || v->type != JSON_NUMBER) { rf_error("%s: key \"lora_alpha\" is missing or not a number", path); goto done; }
    c->alpha = (float)v->number;
    if ((v = json_get(&o, "lora_dropout")) && v->type == JSON_NUMBER) c->dropout = (float)v->number;
    if ((v = json_get(&o, "router")) && v->type == JSON_BOOL) c->router = v->boolean;
    if (!(v = json_get(&o, "target_modules")) || v->type != JSON_ARRAY) { rf_error("%s: key \"target_modules\" is missing or not a list", path); goto done; }
    for (size_t i = 0; i < v->count; i++) {
        int found = 0;
        for (int p = 0; p < N_PROJ; p++)
            if (v->items[i].type == JSON_STRING && !strcmp(v->items[i].string, PROJ_NAMES[p])) c->targets |= 1 << p, found = 1;
        if (!found) { rf_error("%s: target module %zu is not one of q_proj, k_proj, v_proj, o_proj", path, i); goto done; }
    }
    if ((v = json_get(&o, "router_hidden")) && v->type == JSON_ARRAY) {
        if (v->count > TMOLE_MAX_HIDDEN) { rf_error("%s: at most %d router hidden layers", path, TMOLE_MAX_HIDDEN); goto done; }
        c->n_hidden = (int)v->count;
        for (size_t i = 0; i < v->count; i++) c->hidden[i] = v->items[i].type == JSON_NUMBER ? (int)v->items[i].number : 0;
    }
    rc = 0;
done:
    json_free(&o);
    return rc;
}

int tmole_save(const Tmole *t, const char *dir) {
    char path[4096];
    if (rf_mkdirs(dir)) return -1;
    StOut *outs = calloc(t->n_params ? t->n_params : 1, sizeof *outs);
    if (!outs) return rf_error("%s: out of memory", dir);
    for (int i = 0; i < t->n_params; i++) {
        const ParamSpec *p = &t->spec[i];
        outs[i].name = p->name;
        outs[i].ndim = p->ndim;
        outs[i].shape[0] = p->shape[0];
        outs[i].shape[1] = p->shape[1];
        outs[i].data = t->params + p->offset;
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    int rc = st_write(path, outs, t->n_params);
    free(outs);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    return rc ? rc : tmole_config_save(&t->cfg, path);
}

int tmole_load(Tmole *t, const char *dir, const Config *model) {
    char path[4096];
    TmoleConfig c;
    StFile f;
    memset(t, 0, sizeof *t);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (tmole_config_load(&c, path) || tmole_alloc(t, &c, model)) { tmole_free(t); return -1; }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_open(&f, path)) { tmole_free(t); return -1; }
    int rc = 0;
    for (int i = 0; i < t->n_params && !rc; i++) {
        const ParamSpec *p = &t->spec[i];
        const StTensor *st = st_find(&f, p->name);
        if (!st) { rc = rf_error("%s: tensor %s is missing", path, p->name); break; }
        int ok = st->ndim == p->ndim && st->shape[0] == p->shape[0] && (p->ndim == 1 || st->shape[1] == p->shape[1]);
        if (!ok) { rc = rf_error("%s: tensor %s has a shape that disagrees with adapter_config.json and the model", path, p->name); break; }
        rc = st_read_f32(&f, st, t->params + p->offset);
    }
    st_close(&f);
    if (rc) tmole_free(t);
    return rc;
}

/* ------------------------------------------------------ recfound route */

/* The projection widths a model must have for these adapters, read off the
 * lora_A / lora_B shapes, so routing can be inspected without the backbone.
 * Only the products n_heads * head_dim and n_kv_heads * head_dim matter here. */
static int shapes_from_adapter(Config *mc, const char *dir) {
    char path[4096];
    StFile f;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_open(&f, path)) return -1;
    memset(mc, 0, sizeof *mc);
    int q = 0, kv = 0, C = 0, layers = 0;
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.tensors[i];
        int l;
        char proj[8];
        if (sscanf(t->name, "base_model.model.model.layers.%d.self_attn.%7[a-z]_proj.lora_", &l, proj) != 2) continue;
        if (l + 1 > layers) layers = l + 1;
        int is_a = strstr(t->name, ".lora_A.") != NULL, is_b = strstr(t->name, ".lora_B.") != NULL;
        if (t->ndim != 2 || (!is_a && !is_b)) continue;
        int in = is_a ? (int)t->shape[1] : 0, out = is_b ? (int)t->shape[0] : 0;
        if (!strcmp(proj, "q")) { if (in) C = in; if (out) q = out; }
        if (!strcmp(proj, "k") || !strcmp(proj, "v")) { if (in) C = in; if (out) kv = out; }
        if (!strcmp(proj, "o")) { if (in) q = in; if (out) C = out; }
    }
    st_close(&f);
    if (!layers || !C) return rf_error("%s: no TMoLE adapter tensors found", path);
    mc->n_layers = layers;
    mc->hidden_size = C;
    mc->head_dim = 1;
    mc->n_heads = q ? q : C;
    mc->n_kv_heads = kv ? kv : C;
    return 0;
}

/* `recfound route --adapter DIR [--out PREFIX]`: each adapted projection's
 * routing distribution (eq. 1) for every task in its own pass, and the
 * task-by-task cosine similarity of the routing vectors (all projections
 * concatenated), the paper's Figure 2, as PREFIX.csv and PREFIX.svg. */
int route_main(int argc, char **argv) {
    const char *dir = NULL, *prefix = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: recfound route --adapter DIR [--out PREFIX]\n\n"
                   "  --adapter DIR   TMoLE adapter folder (adapter_model.safetensors + adapter_config.json)\n"
                   "  --out PREFIX    also write PREFIX.csv and PREFIX.svg: the task-by-task cosine similarity\n"
                   "                  of the routing distributions (the paper's Figure 2)\n\n"
                   "Prints CSV: layer,proj,task,pass,v_0..v_{N-1} for every adapted projection and task.\n");
            return 0;
        }
        if (i + 1 >= argc) return rf_error("route: option %s needs a value", argv[i]);
        if (!strcmp(argv[i], "--adapter")) dir = argv[++i];
        else if (!strcmp(argv[i], "--out")) prefix = argv[++i];
        else return rf_error("route: unknown option '%s' (see recfound route --help)", argv[i]);
    }
    if (!dir) return rf_error("route: missing required option --adapter");
    if (prefix && !*prefix) return rf_error("route: --out needs a non-empty PREFIX (it writes PREFIX.csv and PREFIX.svg)");
    Config mc;
    Tmole t;
    if (shapes_from_adapter(&mc, dir) || tmole_load(&t, dir, &mc)) return -1;
    if (!t.cfg.router) {
        tmole_free(&t);
        return rf_error("%s: these adapters have no router (plain LoRA): every open expert has weight 1", dir);
    }
    int N = tmole_n_experts(&t.cfg), sites = 0;
    for (int i = 0; i < t.n_sites; i++) sites += t.site[i].in > 0;
    size_t dim = (size_t)sites * N;
    double *vec = calloc((size_t)N_TASKS * dim, sizeof(double));
    if (!vec) { tmole_free(&t); return rf_error("out of memory"); }
    printf("layer,proj,task,pass");
    for (int j = 0; j < N; j++) printf(",v_%d", j);
    printf("\n");
    static const char *proj_names[N_PROJ] = {"q", "k", "v", "o"};
    int k = 0;
    for (int i = 0; i < t.n_sites; i++) {
        const TmoleSite *s = &t.site[i];
        if (!s->in) continue;
        for (int task = 0; task < N_TASKS; task++) {
            AttnMode pass = TASKS[task].kind == KIND_EMB ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
            float v[TMOLE_MAX_EXPERTS];
            tmole_route(&t, s, task, pass, v);
            printf("%d,%s,%s,%s", s->layer, proj_names[s->proj], TASKS[task].short_name,
                   pass == ATTN_BIDIRECTIONAL ? "embedding" : "generative");
            for (int j = 0; j < N; j++) {
                printf(",%.9g", v[j]);
                vec[(size_t)task * dim + (size_t)k * N + j] = v[j];
            }
            printf("\n");
        }
        k++;
    }
    int rc = 0;
    if (prefix) {
        double sim[N_TASKS * N_TASKS];
        for (int a = 0; a < N_TASKS; a++)
            for (int b = 0; b < N_TASKS; b++) {
                double dot = 0, na = 0, nb = 0;
                for (size_t x = 0; x < dim; x++) {
                    dot += vec[a * dim + x] * vec[b * dim + x];
                    na += vec[a * dim + x] * vec[a * dim + x];
                    nb += vec[b * dim + x] * vec[b * dim + x];
                }
                sim[a * N_TASKS + b] = dot / sqrt(na * nb);
            }
        const char *names[N_TASKS];
        for (int a = 0; a < N_TASKS; a++) names[a] = TASKS[a].short_name;
        RfBuf csv = {0};
        buf_printf(&csv, "task");
        for (int a = 0; a < N_TASKS; a++) buf_printf(&csv, ",%s", names[a]);
        buf_printf(&csv, "\n");
        for (int a = 0; a < N_TASKS; a++) {
            buf_printf(&csv, "%s", names[a]);
            for (int b = 0; b < N_TASKS; b++) buf_printf(&csv, ",%.6f", sim[a * N_TASKS + b]);
            buf_printf(&csv, "\n");
        }
        char path[4096];
        snprintf(path, sizeof path, "%s.csv", prefix);
        rc = csv.data ? rf_write_file_atomic(path, csv.data, csv.len) : rf_error("out of memory");
        buf_free(&csv);
        snprintf(path, sizeof path, "%s.svg", prefix);
        if (!rc) rc = svg_heatmap(path, "Routing similarity between tasks (cosine, Figure 2)", N_TASKS, N_TASKS, names,
                                  names, sim, 0.0, 1.0);
        if (!rc) fprintf(stderr, "route: wrote %s.csv and %s.svg\n", prefix, prefix);
    }
    free(vec);
    tmole_free(&t);
    return rc;
}
