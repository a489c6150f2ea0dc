/*
 * model.c - the Llama/Mistral decoder (as Hugging Face `modeling_mistral`),
 * forward and backward on plain float arrays, llm.c style.
 *
 *   x = embed[ids]
 *   per layer:  h = x + o_proj(attn(rope(q(rms(x))), rope(k(rms(x))), v(rms(x))))
 *               x = h + down(silu(gate(rms(h))) * up(rms(h)))
 *   hidden = rms(x) ;  logits = hidden . lm_head^T
 *
 * Attention is causal (generation) or bidirectional (embeddings, as GritLM and
 * RecFound do), with grouped-query heads, an optional sliding window and a
 * padding mask for right-padded rows.  Every *_forward has its *_backward next
 * to it; backward functions accumulate into gradients.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "recfound.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Elementwise loops below this many values run on one thread: starting a
 * parallel region costs more than the work (one generated token, tiny tests). */
#define PARALLEL_MIN ((size_t)1 << 15)

/* Threads a parallel region started here may use (1 without OpenMP). */
static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---------------------------------------------------------------- memory */

/* calloc for the large float arrays (parameters, gradients, optimiser moments,
 * activations).  A block of 2 MiB or more is mapped on its own, starts on a
 * 2 MiB boundary and is offered to Linux as transparent huge pages: the
 * products and the elementwise passes stride over tens of MiB, and with 4 KiB
 * pages the training step of the small preset runs about 6% slower.  Pages
 * are still given (zero) only when first touched.  A smaller block comes
 * from posix_memalign, 64-byte aligned (one cache line, one AVX-512 vector).
 * A 64-byte header in front of every block tells free_big how to release it. */
#define HUGE_PAGE ((size_t)2 << 20)
#define BIG_HEAD 64

typedef struct {
    void *base;    /* what mmap or posix_memalign returned */
    size_t mapped; /* bytes mapped, 0 for a posix_memalign block */
} BigHead;

void *calloc_big(size_t n, size_t size) {
    if (size && n > ((size_t)-1 - 2 * HUGE_PAGE) / size) return NULL;
    size_t bytes = n * size;
    char *p;
    BigHead h = {NULL, 0};
#if defined(MAP_ANONYMOUS) && defined(MADV_HUGEPAGE)
    if (bytes >= HUGE_PAGE) {
        /* map one huge page more than needed, so that a 2 MiB boundary with
         * room for the header before it lies inside */
        size_t len = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE + HUGE_PAGE;
        void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return NULL;
        p = (char *)(((uintptr_t)base + BIG_HEAD + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
        madvise(p, len - (size_t)(p - (char *)base), MADV_HUGEPAGE); /* advice: a refusal changes nothing */
        h.base = base;
        h.mapped = len;
        memcpy(p - BIG_HEAD, &h, sizeof h);
        return p;
    }
#endif
    if (posix_memalign(&h.base, 64, bytes + BIG_HEAD)) return NULL;
    memset(h.base, 0, bytes + BIG_HEAD);
    p = (char *)h.base + BIG_HEAD; /* 64-byte aligned, like the large blocks */
    memcpy(p - BIG_HEAD, &h, sizeof h);
    return p;
}

void free_big(void *p) {
    if (!p) return;
    BigHead h;
    memcpy(&h, (char *)p - BIG_HEAD, sizeof h);
#if defined(MAP_ANONYMOUS) && defined(MADV_HUGEPAGE)
    if (h.mapped) {
        munmap(h.base, h.mapped);
        return;
    }
#endif
    free(h.base);
}

/* ------------------------------------------------------------------ rng */

/* splitmix64: small, fast, and good enough for initialisation and sampling. */
void rng_seed(Rng *r, uint64_t seed) { r->s = seed; }

uint64_t rng_next(Rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

float rng_uniform(Rng *r) { return (float)((rng_next(r) >> 40) * (1.0 / 16777216.0)); }

/* Box-Muller; one draw per call keeps the stream easy to reason about. */
float rng_normal(Rng *r) {
    double u1 = ((rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* -------------------------------------------------------- configuration */

int config_preset(Config *c, const char *name, int vocab) {
    memset(c, 0, sizeof *c);
    strcpy(c->model_type, "mistral");
    c->rms_norm_eps = 1e-5f;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    if (!strcmp(name, "tiny")) {             /* for tests: runs in milliseconds */
        c->vocab_size = 256; c->hidden_size = 64; c->intermediate_size = 160;
        c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2;
        c->max_position_embeddings = 512; c->rope_theta = 10000.0f;
        c->tie_word_embeddings = 1;
    } else if (!strcmp(name, "small")) {     /* a few million parameters: CPU experiments */
        c->vocab_size = 4096; c->hidden_size = 256; c->intermediate_size = 688;
        c->n_layers = 4; c->n_heads = 8; c->n_kv_heads = 4;
        c->max_position_embeddings = 2048; c->rope_theta = 10000.0f;
        c->tie_word_embeddings = 1;
    } else if (!strcmp(name, "mistral-7b")) { /* Mistral-7B-Instruct-v0.3, the paper's backbone */
        c->vocab_size = 32768; c->hidden_size = 4096; c->intermediate_size = 14336;
        c->n_layers = 32; c->n_heads = 32; c->n_kv_heads = 8;
        c->max_position_embeddings = 32768; c->rope_theta = 1000000.0f;
        c->tie_word_embeddings = 0;
    } else {
        return rf_error("unknown preset '%s' (known: tiny, small, mistral-7b)", name);
    }
    c->head_dim = c->hidden_size / c->n_heads;
    if (vocab > 0) c->vocab_size = vocab;
    return 0;
}

/* ------------------------------------------------------ parameter table */

/* Append a tensor to a parameter table (spec[*n]) at the end of a flat buffer
 * of *total floats; cols = 0 for a vector.  Returns its offset.  Shared by the
 * backbone's table and the adapters' (tmole.c). */
size_t param_table_add(ParamSpec *spec, int *n, size_t *total, const char *name, int rows, int cols) {
    ParamSpec *p = &spec[(*n)++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = cols ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->numel = (size_t)rows * (cols ? cols : 1);
    p->offset = *total;
    *total += p->numel;
    return p->offset;
}

static void add_spec(Model *m, const char *name, int rows, int cols) {
    param_table_add(m->spec, &m->n_params, &m->total, name, rows, cols);
}

/* The float view of table entry i: its slice of params, or, with bf16
 * weights, NULL for a matrix and for a vector its place among the vectors,
 * which params then holds one after another in table order. */
float *model_float_view(const Model *m, int i) {
    if (!m->params16) return m->params + m->spec[i].offset;
    if (m->spec[i].ndim != 1) return NULL;
    size_t at = 0;
    for (int j = 0; j < i; j++)
        if (m->spec[j].ndim == 1) at += m->spec[j].numel;
    return m->params + at;
}

int model_alloc_table(Model *m, const Config *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const Config *c = cfg;
    int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    m->spec = calloc((size_t)c->n_layers * P_PER_LAYER + 3, sizeof *m->spec);
    m->layer = calloc((size_t)c->n_layers * P_PER_LAYER, sizeof *m->layer);
    if (!m->spec || !m->layer) return rf_error("out of memory for the parameter table");
    char name[80];
    add_spec(m, "model.embed_tokens.weight", V, C);
    for (int l = 0; l < c->n_layers; l++) {
        static const char *fmt[P_PER_LAYER] = {
            "model.layers.%d.input_layernorm.weight", "model.layers.%d.self_attn.q_proj.weight",
            "model.layers.%d.self_attn.k_proj.weight", "model.layers.%d.self_attn.v_proj.weight",
            "model.layers.%d.self_attn.o_proj.weight", "model.layers.%d.post_attention_layernorm.weight",
            "model.layers.%d.mlp.gate_proj.weight", "model.layers.%d.mlp.up_proj.weight",
            "model.layers.%d.mlp.down_proj.weight"};
        int shape[P_PER_LAYER][2] = {{C, 0}, {q, C}, {kv, C}, {kv, C}, {C, q}, {C, 0}, {I, C}, {I, C}, {C, I}};
        for (int p = 0; p < P_PER_LAYER; p++) {
            snprintf(name, sizeof name, fmt[p], l);
            add_spec(m, name, shape[p][0], shape[p][1]);
        }
    }
    add_spec(m, "model.norm.weight", C, 0);
    if (!c->tie_word_embeddings) add_spec(m, "lm_head.weight", V, C);
    return 0;
}

int model_alloc_weights(Model *m, int bf16) {
    const Config *c = &m->cfg;
    size_t floats = m->total;
    if (bf16) {
        if (!(m->layer16 = calloc((size_t)c->n_layers * P_PER_LAYER, sizeof *m->layer16)))
            return rf_error("out of memory for the parameter table");
        floats = 0;
        for (int i = 0; i < m->n_params; i++)
            if (m->spec[i].ndim == 1) floats += m->spec[i].numel;
        m->params16 = calloc_big(m->total, sizeof(uint16_t));
        if (!m->params16)
            return rf_error("out of memory: the model needs %.1f GiB of bf16 weights", m->total * 2.0 / (1 << 30));
    }
    m->params = calloc_big(floats, sizeof(float));
    if (!m->params)
        return rf_error("out of memory: the model needs %.1f GiB of float32 parameters", floats * 4.0 / (1 << 30));
    int k = 0;
    m->embed = model_float_view(m, k);
    if (bf16) m->embed16 = m->params16 + m->spec[k].offset;
    k++;
    for (int l = 0; l < c->n_layers; l++)
        for (int p = 0; p < P_PER_LAYER; p++, k++) {
            m->layer[l * P_PER_LAYER + p] = model_float_view(m, k);
            if (bf16 && m->spec[k].ndim == 2) m->layer16[l * P_PER_LAYER + p] = m->params16 + m->spec[k].offset;
        }
    m->final_norm = model_float_view(m, k++);
    m->lm_head = c->tie_word_embeddings ? m->embed : model_float_view(m, k);
    if (bf16) m->lm_head16 = c->tie_word_embeddings ? m->embed16 : m->params16 + m->spec[k].offset;
    return 0;
}

int model_alloc(Model *m, const Config *cfg) { return model_alloc_table(m, cfg) || model_alloc_weights(m, 0) ? -1 : 0; }

int model_alloc_bf16(Model *m, const Config *cfg) {
    return model_alloc_table(m, cfg) || model_alloc_weights(m, 1) ? -1 : 0;
}

void model_free(Model *m) {
    free(m->spec);
    free(m->layer);
    free(m->layer16);
    free_big(m->params);
    free_big(m->params16);
    memset(m, 0, sizeof *m);
}

void model_init_random(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_params; i++) {
        float *p = m->params + m->spec[i].offset;
        for (size_t j = 0; j < m->spec[i].numel; j++)
            p[j] = m->spec[i].ndim == 1 ? 1.0f : 0.02f * rng_normal(&r);
    }
}

/* ---------------------------------------------------------- activations */

struct Acts {
    int B, T, cap_bt;    /* the allocation's batch, length and capacity in rows (B*T) */
    size_t cap_att;      /* capacity in attention probabilities (B*H*T*T) */
    int forward_only;    /* made by acts_ensure_forward: att is only block scratch */
    int att_threads;     /* forward_only: threads the scratch has room for */
    int C, I, qd, kvd, L, V, hd;
    /* per layer, [L][...] */
    float *x_in;    /* residual stream entering layer l          [L][BT*C] */
    float *ln1;     /* input_layernorm output                     [L][BT*C] */
    float *rstd1;   /*                                             [L][BT]   */
    float *q, *k, *v; /* after RoPE (q, k)              [L][BT*qd], [L][BT*kvd] x2 */
    float *att;     /* softmax probabilities                      [L][B*H*T*T] */
                    /* (forward_only: attention's block scratch   [threads][T*T]) */
    float *atty;    /* attention output before o_proj             [L][BT*qd] */
    float *h;       /* residual after attention                   [L][BT*C] */
    float *ln2, *rstd2;
    float *gate, *up, *act; /* SwiGLU: act = silu(gate) * up      [L][BT*I] x3 */
    float *x_out;   /* output of the last layer                   [BT*C] */
    float *hidden;  /* final RMSNorm output                       [BT*C] */
    float *rstdf;   /*                                             [BT]   */
    float *logits;  /* [BT*V], reused for dlogits                  */
    float *rope_cos, *rope_sin; /* [T*hd/2] */
    /* backward scratch */
    float *dhidden, *dx, *dln, *dh, *dq, *dk, *dv, *datty, *dgate, *dup, *dact;
    TmoleActs *ta;  /* adapter activations, made on the first forward with adapters */
    size_t bytes;
};

static float *alloc_f(size_t n, size_t *bytes) {
    *bytes += n * sizeof(float);
    return calloc_big(n, sizeof(float));
}

static void acts_release(Acts *a) {
    float **all[] = {&a->x_in, &a->ln1, &a->rstd1, &a->q, &a->k, &a->v, &a->att, &a->atty, &a->h,
                     &a->ln2, &a->rstd2, &a->gate, &a->up, &a->act, &a->x_out, &a->hidden, &a->rstdf,
                     &a->logits, &a->rope_cos, &a->rope_sin, &a->dhidden, &a->dx, &a->dln, &a->dh,
                     &a->dq, &a->dk, &a->dv, &a->datty, &a->dgate, &a->dup, &a->dact};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free_big(*all[i]);
        *all[i] = NULL;
    }
    tmole_acts_free(a->ta);
    a->ta = NULL;
}

void acts_free(Acts *a) {
    if (!a) return;
    acts_release(a);
    free(a);
}

/* Bytes acts_new(m, B, T) allocates, without allocating (train --dry-run);
 * a test keeps it equal to what acts_fill really allocates. */
size_t acts_bytes_for(const Config *c, int B, int T) {
    size_t BT = (size_t)B * T, L = c->n_layers, C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t att = (size_t)B * c->n_heads * T * T;
    size_t per_layer = BT * (4 * C + 2 + 2 * qd + 2 * kvd + 3 * I) + att;
    size_t rest = BT * (2 * C + 1 + V) + (size_t)T * (c->head_dim / 2) * 2       /* x_out, hidden, rstdf, logits, RoPE */
                + BT * (4 * C + 2 * qd + 2 * kvd + 3 * I);                        /* backward scratch */
    return (L * per_layer + rest) * sizeof(float);
}

static int acts_fill(Acts *a, const Model *m, int B, int T, int forward_only) {
    const Config *c = &m->cfg;
    size_t BT = (size_t)B * T, L = c->n_layers, H = c->n_heads;
    int threads = max_threads();
    a->B = B; a->T = T; a->cap_bt = (int)BT;
    a->forward_only = forward_only;
    a->att_threads = threads;
    a->cap_att = forward_only ? 0 : (size_t)B * H * T * T;
    a->C = c->hidden_size; a->I = c->intermediate_size; a->hd = c->head_dim;
    a->qd = c->n_heads * c->head_dim; a->kvd = c->n_kv_heads * c->head_dim;
    a->L = c->n_layers; a->V = c->vocab_size;
    size_t C = a->C, I = a->I, qd = a->qd, kvd = a->kvd, *by = &a->bytes;
    a->bytes = 0;
    a->x_in = alloc_f(L * BT * C, by);   a->ln1 = alloc_f(L * BT * C, by);
    a->rstd1 = alloc_f(L * BT, by);
    a->q = alloc_f(L * BT * qd, by);     a->k = alloc_f(L * BT * kvd, by);
    a->v = alloc_f(L * BT * kvd, by);
    a->att = alloc_f(forward_only ? (size_t)threads * T * T : L * a->cap_att, by);
    a->atty = alloc_f(L * BT * qd, by);  a->h = alloc_f(L * BT * C, by);
    a->ln2 = alloc_f(L * BT * C, by);    a->rstd2 = alloc_f(L * BT, by);
    a->gate = alloc_f(L * BT * I, by);   a->up = alloc_f(L * BT * I, by);
    a->act = alloc_f(L * BT * I, by);
    a->x_out = alloc_f(BT * C, by);      a->hidden = alloc_f(BT * C, by);
    a->rstdf = alloc_f(BT, by);          a->logits = alloc_f(BT * a->V, by);
    a->rope_cos = alloc_f((size_t)T * a->hd / 2, by);
    a->rope_sin = alloc_f((size_t)T * a->hd / 2, by);
    a->dhidden = alloc_f(BT * C, by);    a->dx = alloc_f(BT * C, by);
    a->dln = alloc_f(BT * C, by);        a->dh = alloc_f(BT * C, by);
    a->dq = alloc_f(BT * qd, by);        a->dk = alloc_f(BT * kvd, by);
    a->dv = alloc_f(BT * kvd, by);       a->datty = alloc_f(BT * qd, by);
    a->dgate = alloc_f(BT * I, by);      a->dup = alloc_f(BT * I, by);
    a->dact = alloc_f(BT * I, by);
    float **all[] = {&a->x_in, &a->ln1, &a->rstd1, &a->q, &a->k, &a->v, &a->att, &a->atty, &a->h,
                     &a->ln2, &a->rstd2, &a->gate, &a->up, &a->act, &a->x_out, &a->hidden, &a->rstdf,
                     &a->logits, &a->rope_cos, &a->rope_sin, &a->dhidden, &a->dx, &a->dln, &a->dh,
                     &a->dq, &a->dk, &a->dv, &a->datty, &a->dgate, &a->dup, &a->dact};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!*all[i]) {
            acts_release(a);
            return rf_error("out of memory for activations of batch %d x %d (%.1f GiB)", B, T,
                            a->bytes / 1073741824.0);
        }
    /* RoPE tables, HF convention: inv_freq_i = theta^(-2i/hd), angle = pos * inv_freq_i */
    int half = a->hd / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double inv_freq = pow((double)c->rope_theta, -2.0 * i / a->hd);
            double ang = (double)t * (float)inv_freq; /* HF keeps inv_freq in float32 */
            a->rope_cos[t * half + i] = (float)cos(ang);
            a->rope_sin[t * half + i] = (float)sin(ang);
        }
    return 0;
}

Acts *acts_new(const Model *m, int B, int T) {
    Acts *a = calloc(1, sizeof *a);
    if (!a) { rf_error("out of memory for activations"); return NULL; }
    if (acts_fill(a, m, B, T, 0)) { free(a); return NULL; }
    return a;
}

/* Reuse the buffers whenever the new batch fits: every per-layer array is laid
 * out by the capacity, and the RoPE tables hold positions 0 .. T-1 whatever
 * the batch.  Otherwise reallocate for (B, T).  acts_ensure keeps what the
 * backward needs; acts_ensure_forward keeps no attention probabilities (their
 * L x B x H x T x T floats are most of the memory of a long batch) and serves
 * passes with no backward: score, embed, eval. */
static int acts_fit(Acts **pa, const Model *m, int B, int T, int forward_only) {
    Acts *a = *pa;
    if (a && T <= a->T && (size_t)B * T <= (size_t)a->cap_bt) {
        if (a->forward_only ? forward_only : (size_t)B * m->cfg.n_heads * T * T <= a->cap_att) return 0;
    }
    if (a) { acts_release(a); } else if (!(a = calloc(1, sizeof *a))) return rf_error("out of memory");
    *pa = a;
    return acts_fill(a, m, B, T, forward_only);
}

int acts_ensure(Acts **pa, const Model *m, int B, int T) { return acts_fit(pa, m, B, T, 0); }

int acts_ensure_forward(Acts **pa, const Model *m, int B, int T) { return acts_fit(pa, m, B, T, 1); }

size_t acts_bytes(const Acts *a) { return a->bytes; }
const float *acts_hidden(const Acts *a) { return a->hidden; }
float *acts_dhidden(Acts *a) { return a->dhidden; }

/* --------------------------------------------------------- vector exp */

/* The exponentials of the softmaxes and of SiLU, 16 at a time with AVX-512:
 *   e^x = 2^n e^r,  n = round(x log2 e),  r = x - n ln 2  (ln 2 in two parts, |r| <= ln2/2),
 * e^r by its Taylor polynomial of degree 7 (truncation below 1e-8 relative),
 * and 2^n applied by vscalefps, which overflows to inf and underflows to 0
 * correctly.  x is clamped to [-104, 88.8] first (e^-104 is below the
 * smallest float, e^88.8 above the largest); NaN stays NaN.  Measured against
 * exp in double over [-87.3, 88.7]: relative error at most 7.4e-8 (0.62 of
 * 2^-23), the same as libm's expf in practice; exp_array keeps it tested.
 * Without AVX-512 every fast loop below calls expf instead. */
#if defined(__AVX512F__)
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.8f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x)); /* NaN passes */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);     /* ln 2 = 0.693359375 */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);          /*       - 2.12194440e-4 */
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Lanes [0, n) of 16, for the tail of a loop. */
static inline __mmask16 tail_mask(size_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }
#endif

/* y = e^x elementwise (y may be x): the vector exp above, and its plain twin. */
void exp_array(float *y, const float *x, size_t n) {
#if defined(__AVX512F__)
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
#else
    exp_array_ref(y, x, n);
#endif
}

void exp_array_ref(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

/* max of x[0..n), n >= 1. */
static float max_of(const float *x, int n) {
    int i = 0;
    float mx = x[0];
#if defined(__AVX512F__)
    if (n >= 16) {
        __m512 m = _mm512_loadu_ps(x);
        for (i = 16; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
        mx = _mm512_reduce_max_ps(m);
    }
#endif
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* sum_j e^{(x[j] - mx) s} over j < n, summed in double; store = 1 also
 * replaces each x[j] by its exponential (the softmax needs them again). */
static double exp_shift_sum(float *x, int n, float mx, float s, int store) {
    double sum = 0;
    int i = 0;
#if defined(__AVX512F__)
    __m512 vm = _mm512_set1_ps(mx), vs = _mm512_set1_ps(s);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask((size_t)(n - i));
        __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm), vs));
        e = _mm512_maskz_mov_ps(m, e);
        if (store) _mm512_mask_storeu_ps(x + i, m, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#endif
    for (; i < n; i++) {
        float e = expf((x[i] - mx) * s);
        if (store) x[i] = e;
        sum += e;
    }
    return sum;
}

/* x[j] *= s for j < n. */
static void scale_by(float *x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

/* ------------------------------------------------------------- RMSNorm */

/* sum_i a_i b_i c_i in double (c = NULL: sum_i a_i b_i), eight partial sums
 * with AVX-512. */
static double dot3_d(const float *a, const float *b, const float *c, int n) {
    double s = 0;
    int i = 0;
#if defined(__AVX512F__)
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        __m512d a0 = _mm512_cvtps_pd(_mm256_loadu_ps(a + i)), a1 = _mm512_cvtps_pd(_mm256_loadu_ps(a + i + 8));
        __m512d b0 = _mm512_cvtps_pd(_mm256_loadu_ps(b + i)), b1 = _mm512_cvtps_pd(_mm256_loadu_ps(b + i + 8));
        if (c) {
            a0 = _mm512_mul_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(c + i)));
            a1 = _mm512_mul_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(c + i + 8)));
        }
        acc0 = _mm512_fmadd_pd(a0, b0, acc0);
        acc1 = _mm512_fmadd_pd(a1, b1, acc1);
    }
    s = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
#endif
    for (; i < n; i++) s += (double)a[i] * b[i] * (c ? c[i] : 1.0f);
    return s;
}

/* out = x / sqrt(mean(x^2) + eps) * w, row by row; rstd kept for backward. */
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        double ss = dot3_d(xr, xr, NULL, C);
        float r = (float)(1.0 / sqrt(ss / C + eps));
        rstd[n] = r;
        float *o = out + (size_t)n * C;
        for (int i = 0; i < C; i++) o[i] = xr[i] * r * w[i];
    }
}

/* With g = w * dout and xhat = x * r:
 *   dx_i = r * (g_i - xhat_i * mean_j(g_j xhat_j)),   dw_i += sum_rows dout_i xhat_i. */
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *d = dout + (size_t)n * C;
        float r = rstd[n];
        double dot = dot3_d(w, d, xr, C) * r;
        float mean = (float)(dot / C);
        float *o = dx + (size_t)n * C;
        for (int i = 0; i < C; i++) o[i] += r * (w[i] * d[i] - xr[i] * r * mean);
    }
    if (!dw) return;
    /* dw in blocks of 64 columns, rows in order: each column's sum is the
     * same as a loop down that column, read row by row (vectorisable). */
    int blocks = (C + 63) / 64;
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int blk = 0; blk < blocks; blk++) {
        int i0 = blk * 64, i1 = i0 + 64 < C ? i0 + 64 : C;
        double s[64] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * C, *xr = x + (size_t)n * C;
            for (int i = i0; i < i1; i++) s[i - i0] += (double)d[i] * xr[i] * rstd[n];
        }
        for (int i = i0; i < i1; i++) dw[i] += (float)s[i - i0];
    }
}

/* ---------------------------------------------------------------- RoPE */

/* Rotate-half RoPE in place on x[B*T, nh*hd]: for i < hd/2,
 *   (x_i, x_{i+hd/2}) <- (x_i cos - x_{i+hd/2} sin,  x_{i+hd/2} cos + x_i sin).
 * backward = the same rotation by -angle (sign = -1). */
void rope_apply(float *x, const float *cos_t, const float *sin_t, int B, int T, int nh, int hd, int sign) {
    int half = hd / 2;
#pragma omp parallel for collapse(2) if ((size_t)B * T * nh * hd >= PARALLEL_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
            for (int h = 0; h < nh; h++) {
                float *v = x + ((size_t)(b * T + t) * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], sn = sign * s[i];
                    v[i] = x1 * c[i] - x2 * sn;
                    v[i + half] = x2 * c[i] + x1 * sn;
                }
            }
        }
}

/* ----------------------------------------------------------- attention */

/* The keys query i may attend to in a row of `len` valid tokens form one
 * contiguous range [*lo, *hi): the padding mask (j < len), the causal mask
 * (j <= i) and Mistral's sliding window (i - j < W; symmetric |i - j| < W in
 * the bidirectional pass) each cut it from one side.  Empty when *lo >= *hi. */
static inline void attn_range(int *lo, int *hi, int i, int len, int T, AttnMode mode, int window) {
    int a = 0, b = len < T ? len : T;
    if (mode == ATTN_CAUSAL && i + 1 < b) b = i + 1;
    if (window > 0) {
        if (i - window + 1 > a) a = i - window + 1;
        if (mode == ATTN_BIDIRECTIONAL && i + window < b) b = i + window;
    }
    *lo = a;
    *hi = b;
}

/* The plain twins: one query row at a time, straight from the formulas.
 *   out[b,i,h] = sum_j softmax_j(q_i . k_j / sqrt(hd)) v_j   over the allowed j,
 * query head h reading kv head h / (H/KV) (grouped-query attention); att keeps
 * the probabilities (zero outside the allowed range).  A query with no allowed
 * key (possible only at padding) outputs zeros. */
void attention_forward_ref(float *out, float *att, const float *q, const float *k, const float *v,
                           const int *lengths, int B, int T, int H, int KV, int hd, AttnMode mode, int window) {
    int qd = H * hd, kvd = KV * hd, group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + (size_t)(b * T + i) * qd + h * hd;
                float *p = att + (((size_t)b * H + h) * T + i) * T, *o = out + (size_t)(b * T + i) * qd + h * hd;
                int lo, hi, kh = h / group;
                attn_range(&lo, &hi, i, lengths[b], T, mode, window);
                for (int j = 0; j < T; j++) p[j] = 0;
                for (int d = 0; d < hd; d++) o[d] = 0;
                if (lo >= hi) continue;
                float mx = -INFINITY;
                for (int j = lo; j < hi; j++) {
                    const float *kj = k + (size_t)(b * T + j) * kvd + kh * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double)qi[d] * kj[d];
                    p[j] = (float)s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                double sum = 0;
                for (int j = lo; j < hi; j++) sum += p[j] = expf(p[j] - mx);
                for (int j = lo; j < hi; j++) {
                    p[j] = (float)(p[j] / sum);
                    const float *vj = v + (size_t)(b * T + j) * kvd + kh * hd;
                    for (int d = 0; d < hd; d++) o[d] += p[j] * vj[d];
                }
            }
}

/* With P the probabilities and dO the output gradient:
 *   dV_j += sum_i P_ij dO_i;  dP_ij = dO_i . V_j;  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik);
 *   dQ_i += scale sum_j dS_ij K_j;  dK_j += scale sum_i dS_ij Q_i. */
void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                            const float *k, const float *v, int B, int T, int H, int KV, int hd) {
    int qd = H * hd, kvd = KV * hd, group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    double *dp = malloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *p = att + (((size_t)b * H + h) * T + i) * T;
                const float *doi = dout + (size_t)(b * T + i) * qd + h * hd, *qi = q + (size_t)(b * T + i) * qd + h * hd;
                float *dqi = dq + (size_t)(b * T + i) * qd + h * hd;
                int kh = h / group;
                double dot = 0;
                for (int j = 0; j < T; j++) {
                    const float *vj = v + (size_t)(b * T + j) * kvd + kh * hd;
                    float *dvj = dv + (size_t)(b * T + j) * kvd + kh * hd;
                    dp[j] = 0;
                    for (int d = 0; d < hd; d++) {
                        dp[j] += (double)doi[d] * vj[d];
                        dvj[d] += p[j] * doi[d];
                    }
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j < T; j++) {
                    float ds = (float)(p[j] * (dp[j] - dot)) * scale;
                    const float *kj = k + (size_t)(b * T + j) * kvd + kh * hd;
                    float *dkj = dk + (size_t)(b * T + j) * kvd + kh * hd;
                    for (int d = 0; d < hd; d++) {
                        dqi[d] += ds * kj[d];
                        dkj[d] += ds * qi[d];
                    }
                }
            }
    free(dp);
}

/* The fast attention: the same computation as attention_forward_ref, in the
 * matrix form of the textbook, one (batch row, head) and one block of ATT_QB
 * query rows at a time:
 *   S = Q K^T / sqrt(hd),  P = softmax over each row's allowed keys,  O = P V,
 * with the products reading Q, K, V straight out of the [B*T, heads*hd] rows
 * (matmul_strided) on one thread each (the heads are spread over the threads).
 * A block multiplies only by the keys some of its rows may see, so the causal
 * mask skips the blocks above the diagonal (about half of the products) and
 * padding keys are never read; inside a block, the products skip the tiles
 * above the diagonal too (matmul_strided_tri).  Without a causal mask or a
 * window every row sees the same keys: then one block holds all T rows (fewer,
 * larger products).  Blocks of 128 rows ran one layer's attention 2-4% faster,
 * but dK and dV then sum their query rows in another grouping, which changes
 * training's results in the last bits: 64 it stays. */
#ifndef ATT_QB
#define ATT_QB 64
#endif

/* Query rows per block (see above). */
static int block_rows(int T, AttnMode mode, int window) {
    return mode == ATTN_BIDIRECTIONAL && window <= 0 ? T : ATT_QB < T ? ATT_QB : T;
}

/* The union of the key ranges of query rows [i0, i1): [*lo, *hi), empty when *lo >= *hi. */
static void block_range(int *lo, int *hi, int i0, int i1, int len, int T, AttnMode mode, int window) {
    int a = T, b = 0;
    for (int i = i0; i < i1; i++) {
        int l, h;
        attn_range(&l, &h, i, len, T, mode, window);
        if (l >= h) continue;
        if (l < a) a = l;
        if (h > b) b = h;
    }
    *lo = a;
    *hi = b;
}

/* The causal mask as the products' triangle (matmul_strided_tri): in a block
 * of query rows from i0 and keys from lo, key lo + c is allowed to query
 * i0 + r only if c <= r + (i0 - lo), so S's tiles above that line are never
 * needed and P's and dS's entries there are zero.  The bidirectional pass has
 * no triangle. */
static Tri causal_tri(AttnMode mode, TriKind kind, int diag) {
    Tri t = {mode == ATTN_CAUSAL ? kind : TRI_NONE, diag};
    return t;
}

/* One rows x T block buffer per thread, allocated by the calling thread; NULL
 * when memory is short. */
static float *block_buffers(int rows, int T) { return malloc((size_t)max_threads() * rows * T * sizeof(float)); }

static float *thread_block(float *buffers, int rows, int T) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    return buffers ? buffers + (size_t)tid * rows * T : NULL;
}

/* The blocks of attention_forward.  With att, each (batch row, head) writes
 * its P into att; without, the P of a block lives in the thread's slice of
 * `scratch` (ATT_QB x T floats, T x T without a mask that cuts rows into
 * blocks) and is gone after O = P V: nothing of T x T size per head is kept,
 * which is all a forward pass without backward needs.  The sums are the same
 * either way. */
static void forward_blocks(float *out, float *att, float *scratch, int threads, const float *q, const float *k,
                           const float *v, const int *lengths, int B, int T, int H, int KV, int hd, AttnMode mode,
                           int window) {
    int qd = H * hd, kvd = KV * hd, group = H / KV, QB = block_rows(T, mode, window);
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel num_threads(threads)
    {
        float *local = att ? NULL : thread_block(scratch, QB, T); /* QB <= T: at most T x T each */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int kh = h / group;
                float *A = att ? att + ((size_t)b * H + h) * T * T : NULL, *O = out + (size_t)b * T * qd + h * hd;
                const float *Q = q + (size_t)b * T * qd + h * hd;
                const float *K = k + (size_t)b * T * kvd + kh * hd, *Vm = v + (size_t)b * T * kvd + kh * hd;
                for (int i0 = 0; i0 < T; i0 += QB) {
                    int i1 = i0 + QB < T ? i0 + QB : T, lo, hi;
                    float *P = A ? A + (size_t)i0 * T : local;           /* row i of the block at P + (i-i0)*T */
                    block_range(&lo, &hi, i0, i1, lengths[b], T, mode, window);
                    Tri out_lower = causal_tri(mode, TRI_OUT_LOWER, i0 - lo);
                    Tri a_lower = causal_tri(mode, TRI_A_LOWER, i0 - lo);
                    if (lo < hi)                                         /* S = Q K^T, allowed keys */
                        matmul_strided_tri(P + lo, T, Q + (size_t)i0 * qd, qd, 1, K + (size_t)lo * kvd, 1, kvd,
                                           i1 - i0, hd, hi - lo, 0, out_lower);
                    for (int i = i0; i < i1; i++) {
                        float *p = P + (size_t)(i - i0) * T;
                        int a, e;
                        attn_range(&a, &e, i, lengths[b], T, mode, window);
                        if (a >= e) a = e = 0;                           /* no key: a zero row */
                        memset(p, 0, (size_t)a * sizeof(float));
                        memset(p + e, 0, (size_t)(T - e) * sizeof(float));
                        if (a == e) continue;
                        double sum = exp_shift_sum(p + a, e - a, max_of(p + a, e - a), scale, 1);
                        scale_by(p + a, e - a, (float)(1.0 / sum));
                    }
                    if (lo < hi)                                         /* O = P V */
                        matmul_strided_tri(O + (size_t)i0 * qd, qd, P + lo, T, 1, Vm + (size_t)lo * kvd, kvd, 1,
                                           i1 - i0, hi - lo, hd, 0, a_lower);
                    else
                        for (int i = i0; i < i1; i++) memset(O + (size_t)i * qd, 0, hd * sizeof(float));
                }
            }
    }
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const int *lengths, int B, int T, int H, int KV, int hd, AttnMode mode, int window) {
    forward_blocks(out, att, NULL, max_threads(), q, k, v, lengths, B, T, H, KV, hd, mode, window);
}

/* `threads`: how many threads the scratch has room for; fewer run when fewer are allowed. */
void attention_forward_scratch(float *out, float *scratch, int threads, const float *q, const float *k,
                               const float *v, const int *lengths, int B, int T, int H, int KV, int hd,
                               AttnMode mode, int window) {
    if (threads > max_threads()) threads = max_threads();
    forward_blocks(out, NULL, scratch, threads < 1 ? 1 : threads, q, k, v, lengths, B, T, H, KV, hd, mode, window);
}

/* The backward of attention_forward in the same blocks, per (batch row, kv
 * head), so that the query heads sharing a kv head never race:
 *   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) / sqrt(hd);
 *   dQ += dS K;  dK += dS^T Q;  dV += P^T dO.
 * Keys outside a block's range have P = 0 and contribute nothing.  dP and dS
 * of a block live in a buffer of the thread's own (ATT_QB x T floats, in L2):
 * written into a [B*H*T*T] array instead, the dP product took 1.7 times as
 * long, held up by cache misses on its stores. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                        const float *k, const float *v, const int *lengths, int B, int T, int H, int KV, int hd,
                        AttnMode mode, int window) {
    int qd = H * hd, kvd = KV * hd, group = H / KV, QB = block_rows(T, mode, window);
    float scale = 1.0f / sqrtf((float)hd);
    float *buffers = block_buffers(QB, T);
    if (!buffers) { /* no memory for the blocks: the plain twin, which needs almost none */
        attention_backward_ref(dq, dk, dv, dout, att, q, k, v, B, T, H, KV, hd);
        return;
    }
#pragma omp parallel
    {
        float *local = thread_block(buffers, QB, T);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KV; kh++) {
                const float *K = k + (size_t)b * T * kvd + kh * hd, *Vm = v + (size_t)b * T * kvd + kh * hd;
                float *dK = dk + (size_t)b * T * kvd + kh * hd, *dV = dv + (size_t)b * T * kvd + kh * hd;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *Q = q + (size_t)b * T * qd + h * hd, *dO = dout + (size_t)b * T * qd + h * hd;
                    float *dQ = dq + (size_t)b * T * qd + h * hd;
                    for (int i0 = 0; i0 < T; i0 += QB) {
                        int i1 = i0 + QB < T ? i0 + QB : T, m = i1 - i0, lo, hi;
                        block_range(&lo, &hi, i0, i1, lengths[b], T, mode, window);
                        if (lo >= hi) continue;
                        int n = hi - lo, d0 = i0 - lo;
                        const float *P = att + (((size_t)b * H + h) * T + i0) * T + lo;
                        float *dS = local + lo;
                        matmul_strided_tri(dS, T, dO + (size_t)i0 * qd, qd, 1, Vm + (size_t)lo * kvd, 1, kvd, m, hd,
                                           n, 0, causal_tri(mode, TRI_OUT_LOWER, d0)); /* dP = dO V^T */
                        for (int i = 0; i < m; i++) {            /* dS over the row's keys, 0 elsewhere */
                            const float *p = P + (size_t)i * T;
                            float *d = dS + (size_t)i * T;
                            int a, e;
                            attn_range(&a, &e, i0 + i, lengths[b], T, mode, window);
                            a = a - lo < 0 ? 0 : a - lo;
                            e = e - lo > n ? n : e - lo;
                            if (a >= e) a = e = 0;
                            float dot = (float)dot3_d(p + a, d + a, NULL, e - a);
                            memset(d, 0, (size_t)a * sizeof(float));
                            for (int j = a; j < e; j++) d[j] = p[j] * (d[j] - dot) * scale;
                            memset(d + e, 0, (size_t)(n - e) * sizeof(float));
                        }
                        Tri a_lower = causal_tri(mode, TRI_A_LOWER, d0), a_upper = causal_tri(mode, TRI_A_UPPER, d0);
                        matmul_strided_tri(dQ + (size_t)i0 * qd, qd, dS, T, 1, K + (size_t)lo * kvd, kvd, 1, m, n, hd,
                                           1, a_lower);                  /* dQ += dS K */
                        matmul_strided_tri(dK + (size_t)lo * kvd, kvd, dS, 1, T, Q + (size_t)i0 * qd, qd, 1, n, m, hd,
                                           1, a_upper);                  /* dK += dS^T Q */
                        matmul_strided_tri(dV + (size_t)lo * kvd, kvd, P, 1, T, dO + (size_t)i0 * qd, qd, 1, n, m, hd,
                                           1, a_upper);                  /* dV += P^T dO */
                    }
                }
            }
    }
    free(buffers);
}

/* -------------------------------------------------------------- SwiGLU */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The plain twins: act = silu(gate) * up, silu(g) = g * sigmoid(g);
 * dgate += dact * up * s (1 + g (1 - s)),  dup += dact * silu(g),  s = sigmoid(g). */
void swiglu_forward_ref(float *act, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) act[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void swiglu_backward_ref(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], s = sigmoidf(g);
        dgate[i] += dact[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] += dact[i] * g * s;
    }
}

#if defined(__AVX512F__)
/* sigmoid(g) = 1 / (1 + e^-g), 16 lanes, with the vector exp. */
static inline __m512 sigmoid16(__m512 g) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}
#endif

/* The same, 16 values at a time with the vector exp, split over the threads
 * in blocks of SWIGLU_BLOCK values. */
#define SWIGLU_BLOCK 4096

void swiglu_forward(float *act, const float *gate, const float *up, size_t n) {
    long blocks = (long)((n + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK);
#pragma omp parallel for if (n >= PARALLEL_MIN)
    for (long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * SWIGLU_BLOCK, i1 = i0 + SWIGLU_BLOCK < n ? i0 + SWIGLU_BLOCK : n;
#if defined(__AVX512F__)
        for (size_t i = i0; i < i1; i += 16) {
            __mmask16 m = tail_mask(i1 - i);
            __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
            __m512 s = sigmoid16(g);
            _mm512_mask_storeu_ps(act + i, m, _mm512_mul_ps(_mm512_mul_ps(g, s), u));
        }
#else
        swiglu_forward_ref(act + i0, gate + i0, up + i0, i1 - i0);
#endif
    }
}

/* acc = 1: add into dgate, dup (the backward convention); acc = 0: overwrite
 * them (model_backward, whose dgate and dup are scratch). */
static void swiglu_backward_acc(float *dgate, float *dup, const float *dact, const float *gate, const float *up,
                                size_t n, int acc) {
    long blocks = (long)((n + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK);
#pragma omp parallel for if (n >= PARALLEL_MIN)
    for (long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * SWIGLU_BLOCK, i1 = i0 + SWIGLU_BLOCK < n ? i0 + SWIGLU_BLOCK : n;
#if defined(__AVX512F__)
        const __m512 one = _mm512_set1_ps(1.0f);
        for (size_t i = i0; i < i1; i += 16) {
            __mmask16 m = tail_mask(i1 - i);
            __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
            __m512 da = _mm512_maskz_loadu_ps(m, dact + i);
            __m512 s = sigmoid16(g);
            __m512 t = _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one);          /* 1 + g (1 - s) */
            __m512 dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(da, u), s), t);
            __m512 du = _mm512_mul_ps(_mm512_mul_ps(da, g), s);
            if (acc) {
                dg = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dgate + i), dg);
                du = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dup + i), du);
            }
            _mm512_mask_storeu_ps(dgate + i, m, dg);
            _mm512_mask_storeu_ps(dup + i, m, du);
        }
#else
        if (!acc) {
            memset(dgate + i0, 0, (i1 - i0) * sizeof(float));
            memset(dup + i0, 0, (i1 - i0) * sizeof(float));
        }
        swiglu_backward_ref(dgate + i0, dup + i0, dact + i0, gate + i0, up + i0, i1 - i0);
#endif
    }
}

void swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n) {
    swiglu_backward_acc(dgate, dup, dact, gate, up, n, 1);
}

/* dst = src (src = NULL: dst = 0) over n floats, in blocks spread over the threads. */
static void copy_floats(float *dst, const float *src, size_t n) {
    long blocks = (long)((n + 16383) / 16384);
#pragma omp parallel for if (n >= PARALLEL_MIN)
    for (long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * 16384, len = n - i0 < 16384 ? n - i0 : 16384;
        if (src) memcpy(dst + i0, src + i0, len * sizeof(float));
        else memset(dst + i0, 0, len * sizeof(float));
    }
}

/* ----------------------------------------------------------- embedding */

void embedding_forward(float *out, const int *ids, const float *table, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, C * sizeof(float));
}

/* Two rows with the same id add into the same table row: the threads split
 * the columns, and each column takes the rows in order. */
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    int blocks = (C + 63) / 64;
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int blk = 0; blk < blocks; blk++) {
        int i0 = blk * 64, i1 = i0 + 64 < C ? i0 + 64 : C;
        for (int n = 0; n < N; n++) {
            float *d = dtable + (size_t)ids[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int i = i0; i < i1; i++) d[i] += g[i];
        }
    }
}

/* ------------------------------------------------------- the whole model */

/* Gradient view of parameter table entry i inside the flat dparams buffer. */
static float *grad_of(const Model *m, float *dparams, int i) {
    return dparams ? dparams + m->spec[i].offset : NULL;
}
#define LAYER_SPEC(l, p) (1 + (l) * P_PER_LAYER + (p))

/* The TMoLE term of eq. (2) on one projection's output, when that projection is adapted. */
static void adapter_forward(const Tmole *tm, Acts *a, int l, int proj, float *y, const float *x, const Batch *b,
                            AttnMode mode) {
    const TmoleSite *s = tmole_site(tm, l, proj);
    if (s) tmole_forward(tm, a->ta, s, y, x, b, mode);
}

static void adapter_backward(const Tmole *tm, Acts *a, int l, int proj, float *dx, float *dadapter, const float *dy,
                             const float *x, const Batch *b, AttnMode mode) {
    const TmoleSite *s = tmole_site(tm, l, proj);
    if (s && dadapter) tmole_backward(tm, a->ta, s, dx, dadapter, dy, x, b, mode);
}

/* The model's matrices are float or, with bf16 weights, bf16 (Model):
 * y (+)= x W^T and dx (+)= dy W with whichever of w / w16 it has. */
void weight_nt(float *out, const float *a, const float *w, const uint16_t *w16, int M, int K, int N, int acc) {
    if (w16) matmul_nt_bf16(out, a, w16, M, K, N, acc);
    else matmul_nt(out, a, w, M, K, N, acc);
}

static void weight_nn(float *out, const float *a, const float *w, const uint16_t *w16, int M, int K, int N,
                      int acc) {
    if (w16) matmul_nn_bf16(out, a, w16, M, K, N, acc);
    else matmul_nn(out, a, w, M, K, N, acc);
}

/* The bf16 matrices of layer l (all NULL with float weights). */
void layer_bf16(const Model *m, int l, const uint16_t *H[P_PER_LAYER]) {
    for (int p = 0; p < P_PER_LAYER; p++) H[p] = m->layer16 ? m->layer16[l * P_PER_LAYER + p] : NULL;
}

/* The embedding rows of N token ids. */
void model_embed(const Model *m, float *out, const int *ids, int N) {
    int C = m->cfg.hidden_size;
    if (!m->embed16) {
        embedding_forward(out, ids, m->embed, N, C);
        return;
    }
#pragma omp parallel for if ((size_t)N * C >= PARALLEL_MIN)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = bf16_to_float(m->embed16[(size_t)ids[n] * C + i]);
}

void model_forward(const Model *m, const Tmole *tm, Acts *a, const Batch *b, AttnMode mode) {
    const Config *c = &m->cfg;
    int B = b->B, T = b->T, BT = B * T, C = a->C, I = a->I, qd = a->qd, kvd = a->kvd;
    if (tm) {
        if (!a->ta) a->ta = tmole_acts_new(tm, 1, a->cap_bt);
        if (!a->ta) tm = NULL;  /* out of memory: run the backbone alone (rf_error says why) */
        else tmole_acts_begin(a->ta, tm, b, mode);
    }
    model_embed(m, a->x_in, b->ids, BT);
    for (int l = 0; l < c->n_layers; l++) {
        float *const *W = m->layer + l * P_PER_LAYER;
        const uint16_t *H[P_PER_LAYER];
        layer_bf16(m, l, H);
        float *x = a->x_in + (size_t)l * a->cap_bt * C, *ln1 = a->ln1 + (size_t)l * a->cap_bt * C;
        float *q = a->q + (size_t)l * a->cap_bt * qd, *k = a->k + (size_t)l * a->cap_bt * kvd;
        float *v = a->v + (size_t)l * a->cap_bt * kvd, *att = a->att + (size_t)l * a->cap_att;
        float *atty = a->atty + (size_t)l * a->cap_bt * qd, *h = a->h + (size_t)l * a->cap_bt * C;
        float *ln2 = a->ln2 + (size_t)l * a->cap_bt * C;
        float *gate = a->gate + (size_t)l * a->cap_bt * I, *up = a->up + (size_t)l * a->cap_bt * I;
        float *act = a->act + (size_t)l * a->cap_bt * I;
        float *x_next = l + 1 < c->n_layers ? a->x_in + (size_t)(l + 1) * a->cap_bt * C : a->x_out;

        rmsnorm_forward(ln1, a->rstd1 + (size_t)l * a->cap_bt, x, W[P_ATTN_NORM], BT, C, c->rms_norm_eps);
        weight_nt(q, ln1, W[P_Q], H[P_Q], BT, C, qd, 0);
        weight_nt(k, ln1, W[P_K], H[P_K], BT, C, kvd, 0);
        weight_nt(v, ln1, W[P_V], H[P_V], BT, C, kvd, 0);
        if (tm) {
            adapter_forward(tm, a, l, PROJ_Q, q, ln1, b, mode);
            adapter_forward(tm, a, l, PROJ_K, k, ln1, b, mode);
            adapter_forward(tm, a, l, PROJ_V, v, ln1, b, mode);
        }
        rope_apply(q, a->rope_cos, a->rope_sin, B, T, c->n_heads, c->head_dim, +1);
        rope_apply(k, a->rope_cos, a->rope_sin, B, T, c->n_kv_heads, c->head_dim, +1);
        if (a->forward_only) {
            attention_forward_scratch(atty, a->att, a->att_threads, q, k, v, b->lengths, B, T, c->n_heads,
                                      c->n_kv_heads, c->head_dim, mode, c->sliding_window);
        } else {
            attention_forward(atty, att, q, k, v, b->lengths, B, T, c->n_heads, c->n_kv_heads, c->head_dim,
                              mode, c->sliding_window);
        }
        copy_floats(h, x, (size_t)BT * C);
        weight_nt(h, atty, W[P_O], H[P_O], BT, qd, C, 1);            /* h = x + o_proj(attn) */
        if (tm) adapter_forward(tm, a, l, PROJ_O, h, atty, b, mode);

        rmsnorm_forward(ln2, a->rstd2 + (size_t)l * a->cap_bt, h, W[P_MLP_NORM], BT, C, c->rms_norm_eps);
        weight_nt(gate, ln2, W[P_GATE], H[P_GATE], BT, C, I, 0);
        weight_nt(up, ln2, W[P_UP], H[P_UP], BT, C, I, 0);
        swiglu_forward(act, gate, up, (size_t)BT * I);
        copy_floats(x_next, h, (size_t)BT * C);
        weight_nt(x_next, act, W[P_DOWN], H[P_DOWN], BT, I, C, 1);  /* x = h + down(silu(gate) up) */
    }
    rmsnorm_forward(a->hidden, a->rstdf, a->x_out, m->final_norm, BT, C, c->rms_norm_eps);
}

void model_logits(const Model *m, const Acts *a, float *out, int BT) {
    weight_nt(out, a->hidden, m->lm_head, m->lm_head16, BT, a->C, a->V, 0);
}

void lm_weights_mean(float *w, const Batch *b) {
    long count = 0;
    for (int r = 0; r < b->B; r++) count += b->lengths[r] > 1 ? b->lengths[r] - 1 : 0;
    for (int r = 0; r < b->B; r++)
        for (int t = 0; t < b->T; t++)
            w[r * b->T + t] = (count > 0 && t < b->lengths[r] - 1) ? 1.0f / count : 0.0f;
}

/* CE_t = logsumexp(logits_t) - logits_t[ids[t+1]];  dlogits_t = w_t (softmax_t - onehot).
 * Only the positions that predict something (w_t != 0, t + 1 < T) go through
 * the LM head: their hidden states are gathered into R rows, so a generative
 * sample that trains on its answer alone pays for the answer's logits only. */
double model_lm_loss(const Model *m, Acts *a, const Batch *b, const float *w, float *tok_loss,
                     float *dparams, int backward) {
    int B = b->B, T = b->T, BT = B * T, V = a->V, C = a->C;
    float *logits = a->logits, *hid = a->dln, *dhid = a->dx;  /* backward scratch, free until model_backward */
    if (backward && dparams && m->params16) {
        rf_error("model_lm_loss: the weights are bf16, which have no gradient (the backbone stays frozen)");
        return NAN;
    }
    int *row = malloc((size_t)BT * sizeof(int));
    /* CE in double from float exponentials: the loss is then exact to ~1e-8, which
     * finite-difference checks of small gradients need; the cost is V adds per row. */
    double *ce = calloc((size_t)BT, sizeof(double));
    if (!row || !ce) {
        free(row), free(ce);
        rf_error("out of memory for the LM loss of %d positions", BT);
        return NAN;
    }
    int R = 0;
    for (int n = 0; n < BT; n++)
        if (w[n] != 0 && n % T + 1 < T) row[R++] = n;
#pragma omp parallel for if ((size_t)R * C >= PARALLEL_MIN)
    for (int r = 0; r < R; r++) memcpy(hid + (size_t)r * C, a->hidden + (size_t)row[r] * C, C * sizeof(float));
    weight_nt(logits, hid, m->lm_head, m->lm_head16, R, C, V, 0);
#pragma omp parallel for if ((size_t)R * V >= PARALLEL_MIN)
    for (int r = 0; r < R; r++) {
        int n = row[r], target = b->ids[n + 1];
        float *z = logits + (size_t)r * V, zt = z[target], mx = max_of(z, V);
        double sum;
        if (backward) {  /* keep exp(z - max): the softmax needs it again */
            sum = exp_shift_sum(z, V, mx, 1.0f, 1);
            scale_by(z, V, (float)(w[n] / sum));
            z[target] -= w[n];
        } else {
            sum = exp_shift_sum(z, V, mx, 1.0f, 0);
        }
        ce[n] = mx + log(sum) - zt;
    }
    double loss = 0;
    for (int n = 0; n < BT; n++) {
        loss += (double)w[n] * ce[n];
        if (tok_loss) tok_loss[n] = (float)ce[n];
    }
    if (backward && R > 0) {
        weight_nn(dhid, logits, m->lm_head, m->lm_head16, R, V, C, 0);   /* dhidden += dz W */
#pragma omp parallel for if ((size_t)R * C >= PARALLEL_MIN)
        for (int r = 0; r < R; r++) {
            float *d = a->dhidden + (size_t)row[r] * C;
            const float *g = dhid + (size_t)r * C;
            for (int i = 0; i < C; i++) d[i] += g[i];
        }
        int head = m->cfg.tie_word_embeddings ? 0 : m->n_params - 1;
        if (dparams) matmul_tn(grad_of(m, dparams, head), logits, hid, V, R, C, 1); /* dW += dz^T h */
    }
    free(row);
    free(ce);
    return loss;
}

void model_backward(const Model *m, const Tmole *tm, Acts *a, const Batch *b, AttnMode mode, float *dparams,
                    float *dadapter) {
    const Config *c = &m->cfg;
    int B = b->B, T = b->T, BT = B * T, C = a->C, I = a->I, qd = a->qd, kvd = a->kvd, L = c->n_layers;
    if (!a->ta) tm = NULL;  /* the forward ran without adapters */
    if (a->forward_only) {  /* a caller's mistake: these activations kept no probabilities */
        rf_error("model_backward: the activations were made by acts_ensure_forward, which keeps nothing to "
                 "differentiate");
        return;
    }
    if (dparams && m->params16) {  /* the same: bf16 weights do not train */
        rf_error("model_backward: the weights are bf16, which have no gradient (the backbone stays frozen)");
        return;
    }
    float *dx = a->dx;   /* gradient of the residual stream, walking down the layers */
    copy_floats(dx, NULL, (size_t)BT * C);
    rmsnorm_backward(dx, grad_of(m, dparams, LAYER_SPEC(L, 0)), a->dhidden, a->x_out, m->final_norm,
                     a->rstdf, BT, C);
    for (int l = L - 1; l >= 0; l--) {
        float *const *W = m->layer + l * P_PER_LAYER;
        const uint16_t *H[P_PER_LAYER];
        layer_bf16(m, l, H);
        size_t o = (size_t)l * a->cap_bt;
        float *x = a->x_in + o * C, *ln1 = a->ln1 + o * C, *q = a->q + o * qd, *k = a->k + o * kvd;
        float *v = a->v + o * kvd, *att = a->att + (size_t)l * a->cap_att, *atty = a->atty + o * qd;
        float *h = a->h + o * C, *ln2 = a->ln2 + o * C, *gate = a->gate + o * I, *up = a->up + o * I;
        float *act = a->act + o * I;
        float *dW[P_PER_LAYER];
        for (int p = 0; p < P_PER_LAYER; p++) dW[p] = grad_of(m, dparams, LAYER_SPEC(l, p));

        /* MLP block: x_next = h + down(act).  dx is d x_next here; it becomes d h. */
        weight_nn(a->dact, dx, W[P_DOWN], H[P_DOWN], BT, C, I, 0);
        if (dparams) matmul_tn(dW[P_DOWN], dx, act, C, BT, I, 1);
        swiglu_backward_acc(a->dgate, a->dup, a->dact, gate, up, (size_t)BT * I, 0);
        weight_nn(a->dln, a->dgate, W[P_GATE], H[P_GATE], BT, I, C, 0);
        weight_nn(a->dln, a->dup, W[P_UP], H[P_UP], BT, I, C, 1);
        if (dparams) {
            matmul_tn(dW[P_GATE], a->dgate, ln2, I, BT, C, 1);
            matmul_tn(dW[P_UP], a->dup, ln2, I, BT, C, 1);
        }
        rmsnorm_backward(dx, dW[P_MLP_NORM], a->dln, h, W[P_MLP_NORM], a->rstd2 + o, BT, C);

        /* attention block: h = x + o_proj(atty).  dx becomes d x. */
        weight_nn(a->datty, dx, W[P_O], H[P_O], BT, C, qd, 0);
        if (dparams) matmul_tn(dW[P_O], dx, atty, C, BT, qd, 1);
        if (tm) adapter_backward(tm, a, l, PROJ_O, a->datty, dadapter, dx, atty, b, mode);
        copy_floats(a->dq, NULL, (size_t)BT * qd);
        copy_floats(a->dk, NULL, (size_t)BT * kvd);
        copy_floats(a->dv, NULL, (size_t)BT * kvd);
        attention_backward(a->dq, a->dk, a->dv, a->datty, att, q, k, v, b->lengths, B, T, c->n_heads,
                           c->n_kv_heads, c->head_dim, mode, c->sliding_window);
        rope_apply(a->dq, a->rope_cos, a->rope_sin, B, T, c->n_heads, c->head_dim, -1);
        rope_apply(a->dk, a->rope_cos, a->rope_sin, B, T, c->n_kv_heads, c->head_dim, -1);
        /* The gradient below layer 0 only feeds the embedding table: with a
         * frozen backbone (dparams NULL) it is not computed. */
        float *dln = l > 0 || dparams ? a->dln : NULL;
        if (dln) {
            weight_nn(dln, a->dq, W[P_Q], H[P_Q], BT, qd, C, 0);
            weight_nn(dln, a->dk, W[P_K], H[P_K], BT, kvd, C, 1);
            weight_nn(dln, a->dv, W[P_V], H[P_V], BT, kvd, C, 1);
        }
        if (tm) {
            adapter_backward(tm, a, l, PROJ_Q, dln, dadapter, a->dq, ln1, b, mode);
            adapter_backward(tm, a, l, PROJ_K, dln, dadapter, a->dk, ln1, b, mode);
            adapter_backward(tm, a, l, PROJ_V, dln, dadapter, a->dv, ln1, b, mode);
        }
        if (dparams) {
            matmul_tn(dW[P_Q], a->dq, ln1, qd, BT, C, 1);
            matmul_tn(dW[P_K], a->dk, ln1, kvd, BT, C, 1);
            matmul_tn(dW[P_V], a->dv, ln1, kvd, BT, C, 1);
        }
        if (dln) rmsnorm_backward(dx, dW[P_ATTN_NORM], dln, x, W[P_ATTN_NORM], a->rstd1 + o, BT, C);
    }
    if (dparams) embedding_backward(grad_of(m, dparams, 0), dx, b->ids, BT, C);
    if (tm && dadapter) tmole_backward_router(tm, a->ta, dadapter, mode);
    copy_floats(a->dhidden, NULL, (size_t)BT * C);
}

/* --------------------------------------------------------------- pooling */

/* e_b = mean_{from_b <= t < len_b} hidden[b,t];  emb_b = e_b / ||e_b||  (norms[b] = ||e_b||). */
void pool_forward(float *emb, float *norms, const float *hidden, const Batch *b, const int *from, int C) {
#pragma omp parallel for if ((size_t)b->B * b->T * C >= PARALLEL_MIN)
    for (int r = 0; r < b->B; r++) {
        float *e = emb + (size_t)r * C;
        int lo = from ? from[r] : 0, hi = b->lengths[r];
        if (lo < 0) lo = 0;
        for (int i = 0; i < C; i++) e[i] = 0;
        for (int t = lo; t < hi; t++)
            for (int i = 0; i < C; i++) e[i] += hidden[((size_t)r * b->T + t) * C + i];
        double ss = 0;
        int cnt = hi > lo ? hi - lo : 0;
        for (int i = 0; i < C; i++) {
            if (cnt) e[i] /= cnt;
            ss += (double)e[i] * e[i];
        }
        float n = (float)sqrt(ss);
        norms[r] = n;
        for (int i = 0; i < C; i++) e[i] = n > 0 ? e[i] / n : 0.0f;
    }
}

/* d e = (d emb - emb (emb . d emb)) / ||e||;  dhidden[b,t] += d e / count. */
void pool_backward(float *dhidden, const float *demb, const float *emb, const float *norms,
                   const Batch *b, const int *from, int C) {
#pragma omp parallel for if ((size_t)b->B * b->T * C >= PARALLEL_MIN)
    for (int r = 0; r < b->B; r++) {
        int lo = from ? from[r] : 0, hi = b->lengths[r];
        if (lo < 0) lo = 0;
        if (hi <= lo || norms[r] == 0) continue;
        const float *y = emb + (size_t)r * C, *dy = demb + (size_t)r * C;
        double dot = 0;
        for (int i = 0; i < C; i++) dot += (double)y[i] * dy[i];
        float scale = 1.0f / (norms[r] * (hi - lo));
        for (int t = lo; t < hi; t++) {
            float *d = dhidden + ((size_t)r * b->T + t) * C;
            for (int i = 0; i < C; i++) d[i] += (dy[i] - y[i] * (float)dot) * scale;
        }
    }
}

/* ------------------------------------------------------------ optimisers */

int adamw_init(AdamW *o, size_t n, float lr, float beta1, float beta2, float eps, float wd) {
    o->lr = lr; o->beta1 = beta1; o->beta2 = beta2; o->eps = eps; o->weight_decay = wd;
    o->n = n; o->t = 0;
    o->m = calloc_big(n, sizeof(float));
    o->v = calloc_big(n, sizeof(float));
    if (!o->m || !o->v) { adamw_free(o); return rf_error("out of memory for AdamW moments"); }
    return 0;
}

/* PyTorch's AdamW: p -= lr wd p; m,v moments; p -= lr mhat / (sqrt(vhat) + eps),
 * on elements [i0, i1).  The AVX-512 loop does the same operations in the same
 * order (the bias corrections divide in double), so both give the same bits. */
static void adamw_block(float *p, float *m, float *v, const float *grad, size_t i0, size_t i1, float lr, float lr_wd,
                        float b1, float b2, double c1, double c2, float eps) {
    size_t i = i0;
#if defined(__AVX512F__)
    const __m512 vlr = _mm512_set1_ps(lr), vlrwd = _mm512_set1_ps(lr_wd), vb1 = _mm512_set1_ps(b1);
    const __m512 vb2 = _mm512_set1_ps(b2), va1 = _mm512_set1_ps(1 - b1), va2 = _mm512_set1_ps(1 - b2);
    const __m512 veps = _mm512_set1_ps(eps);
    const __m512d vc1 = _mm512_set1_pd(c1), vc2 = _mm512_set1_pd(c2);
    for (; i + 16 <= i1; i += 16) {
        __m512 g = _mm512_loadu_ps(grad + i), pp = _mm512_loadu_ps(p + i);
        pp = _mm512_sub_ps(pp, _mm512_mul_ps(vlrwd, pp));
        __m512 mm = _mm512_add_ps(_mm512_mul_ps(vb1, _mm512_loadu_ps(m + i)), _mm512_mul_ps(va1, g));
        __m512 vv = _mm512_add_ps(_mm512_mul_ps(vb2, _mm512_loadu_ps(v + i)), _mm512_mul_ps(_mm512_mul_ps(va2, g), g));
        _mm512_storeu_ps(m + i, mm);
        _mm512_storeu_ps(v + i, vv);
        /* (float)(m / c1) and (float)(v / c2), eight doubles at a time */
        __m256 mlo = _mm512_cvtpd_ps(_mm512_div_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(mm)), vc1));
        __m256 mhi = _mm512_cvtpd_ps(_mm512_div_pd(
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(mm), 1))), vc1));
        __m256 vlo = _mm512_cvtpd_ps(_mm512_div_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(vv)), vc2));
        __m256 vhi = _mm512_cvtpd_ps(_mm512_div_pd(
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vv), 1))), vc2));
        __m512 mhat = _mm512_insertf32x8(_mm512_castps256_ps512(mlo), mhi, 1);
        __m512 vhat = _mm512_insertf32x8(_mm512_castps256_ps512(vlo), vhi, 1);
        pp = _mm512_sub_ps(pp, _mm512_div_ps(_mm512_mul_ps(vlr, mhat), _mm512_add_ps(_mm512_sqrt_ps(vhat), veps)));
        _mm512_storeu_ps(p + i, pp);
    }
#endif
    for (; i < i1; i++) {
        float g = grad[i];
        p[i] -= lr_wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        float mhat = (float)(m[i] / c1), vhat = (float)(v[i] / c2);
        p[i] -= lr * mhat / (sqrtf(vhat) + eps);
    }
}

void adamw_step(AdamW *o, float *params, const float *grads, float lr) {
    o->t++;
    float b1 = o->beta1, b2 = o->beta2;
    double c1 = 1.0 - pow(b1, (double)o->t), c2 = 1.0 - pow(b2, (double)o->t);
    long blocks = (long)((o->n + 8191) / 8192);
#pragma omp parallel for if (o->n >= PARALLEL_MIN)
    for (long blk = 0; blk < blocks; blk++) {
        size_t i0 = (size_t)blk * 8192, i1 = i0 + 8192 < o->n ? i0 + 8192 : o->n;
        adamw_block(params, o->m, o->v, grads, i0, i1, lr, lr * o->weight_decay, b1, b2, c1, c2, o->eps);
    }
}

/* The plain twin: one element at a time, the same formula. */
void adamw_step_ref(AdamW *o, float *params, const float *grads, float lr) {
    o->t++;
    float b1 = o->beta1, b2 = o->beta2;
    double c1 = 1.0 - pow(b1, (double)o->t), c2 = 1.0 - pow(b2, (double)o->t);
    for (size_t i = 0; i < o->n; i++) {
        float g = grads[i];
        params[i] -= lr * o->weight_decay * params[i];
        o->m[i] = b1 * o->m[i] + (1 - b1) * g;
        o->v[i] = b2 * o->v[i] + (1 - b2) * g * g;
        float mhat = (float)(o->m[i] / c1), vhat = (float)(o->v[i] / c2);
        params[i] -= lr * mhat / (sqrtf(vhat) + o->eps);
    }
}

void adamw_free(AdamW *o) {
    free_big(o->m);
    free_big(o->v);
    o->m = o->v = NULL;
}

void sgd_step(float *params, const float *grads, size_t n, float lr) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) params[i] -= lr * grads[i];
}

double clip_grad_norm(float *grads, size_t n, double max_norm) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)grads[i] * grads[i];
    double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++) grads[i] *= s;
    }
    return norm;
}

/* As Hugging Face's linear schedule: step 0 of warmup has learning rate 0. */
float lr_schedule(float lr, long step, long warmup, long total) {
    if (warmup > 0 && step < warmup) return lr * (float)step / (float)warmup;
    if (total <= warmup) return lr;
    float f = (float)(total - step) / (float)(total - warmup);
    return lr * (f > 0 ? f : 0);
}

const float *acts_rope_cos(const Acts *a) { return a->rope_cos; }
const float *acts_rope_sin(const Acts *a) { return a->rope_sin; }

/* --------------------------------------------------------------- InfoNCE */

/* The embedding branch's loss (§4.1): with unit embeddings q_i (Q queries) and
 * p_k (P passages: the Q positives, then the hard negatives), scores
 * s_ik = q_i . p_k / tau, and the target of query i its own positive p_i:
 *   L = (1/Q) sum_i [ logsumexp_k s_ik - s_ii ]
 * Every other passage in the batch is a negative.  Gradients are added:
 *   ds_ik = (softmax_k(s_i) - [k = i]) / Q,  dq_i += sum_k ds_ik p_k / tau,
 *   dp_k += sum_i ds_ik q_i / tau. */
double infonce(float *dq, float *dp, const float *q, const float *p, int Q, int P, int C, float tau) {
    double loss = 0;
    double *s = malloc((size_t)P * sizeof(double));
    if (!s) return NAN;
    for (int i = 0; i < Q; i++) {
        const float *qi = q + (size_t)i * C;
        double mx = -INFINITY, sum = 0;
        for (int k = 0; k < P; k++) {
            double d = 0;
            for (int c = 0; c < C; c++) d += (double)qi[c] * p[(size_t)k * C + c];
            s[k] = d / tau;
            if (s[k] > mx) mx = s[k];
        }
        for (int k = 0; k < P; k++) sum += exp(s[k] - mx);
        double lse = mx + log(sum);
        loss += lse - s[i];
        if (!dq && !dp) continue;
        for (int k = 0; k < P; k++) {
            double g = (exp(s[k] - lse) - (k == i)) / Q / tau;
            for (int c = 0; c < C; c++) {
                if (dq) dq[(size_t)i * C + c] += (float)(g * p[(size_t)k * C + c]);
                if (dp) dp[(size_t)k * C + c] += (float)(g * qi[c]);
            }
        }
    }
    free(s);
    return loss / Q;
}
