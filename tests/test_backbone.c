/*
 * test_backbone.c - the "backbone" suite: every backward checked by finite
 * differences, and the whole decoder checked against the independent PyTorch
 * implementation in tests/reference/make_fixtures.py (fixtures in tests/fixtures/).
 * The finite-difference check itself is described in check_util.h.
 */
#include "check_util.h"
#include "recfound.h"

/* ------------------------------------------------------------- RMSNorm */

typedef struct { float *x, *w, *out, *rstd, *R; int N, C; } NormCtx;

static double norm_f(void *p) {
    NormCtx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5f);
    return dotd(c->out, c->R, (size_t)c->N * c->C);
}

START_TEST(test_rmsnorm_backward) {
    int N = 5, C = 24;
    NormCtx c = {malloc(N * C * 4), malloc(C * 4), malloc(N * C * 4), malloc(N * 4), malloc(N * C * 4), N, C};
    float *dx = calloc(N * C, 4), *dw = calloc(C, 4);
    fill_normal(c.x, N * C, 1.0f, 11);
    fill_normal(c.w, C, 0.5f, 12);
    fill_normal(c.R, N * C, 1.0f, 13);
    for (int i = 0; i < C; i++) c.w[i] += 1.0f;
    norm_f(&c);
    rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, N, C);
    assert_fd(norm_f, &c, c.x, N * C, dx, "rmsnorm dx");
    assert_fd(norm_f, &c, c.w, C, dw, "rmsnorm dw");
    /* a hand computation: x = (3, 4), w = (1, 2): rms = sqrt(12.5), out = (3, 8) / sqrt(12.5) */
    float x2[2] = {3, 4}, w2[2] = {1, 2}, o2[2], r2;
    rmsnorm_forward(o2, &r2, x2, w2, 1, 2, 0.0f);
    ck_assert_float_eq_tol(o2[0], 3.0f / sqrtf(12.5f), 1e-6f);
    ck_assert_float_eq_tol(o2[1], 8.0f / sqrtf(12.5f), 1e-6f);
    free(c.x); free(c.w); free(c.out); free(c.rstd); free(c.R); free(dx); free(dw);
}
END_TEST

/* ---------------------------------------------------------------- RoPE */

START_TEST(test_rope) {
    Config cfg;
    Model m;
    config_preset(&cfg, "tiny", 0);
    cfg.head_dim = 8;
    cfg.rope_theta = 100.0f;
    model_alloc(&m, &cfg);
    Acts *a = acts_new(&m, 1, 3);
    const float *cs = acts_rope_cos(a), *sn = acts_rope_sin(a);
    /* Hand values: position 2, pair i = 1: inv_freq = 100^(-2/8) = 1/sqrt(10). */
    ck_assert_float_eq_tol(cs[2 * 4 + 1], cosf(2.0f / sqrtf(10.0f)), 1e-6f);
    ck_assert_float_eq_tol(sn[2 * 4 + 1], sinf(2.0f / sqrtf(10.0f)), 1e-6f);
    /* rotate-half on a unit vector e_1 at position 1: (x_1, x_5) = (cos, sin) of angle 1/sqrt(10) */
    float x[3 * 8] = {0};
    x[8 + 1] = 1.0f;
    rope_apply(x, cs, sn, 1, 3, 1, 8, +1);
    ck_assert_float_eq_tol(x[8 + 1], cosf(1.0f / sqrtf(10.0f)), 1e-6f);
    ck_assert_float_eq_tol(x[8 + 5], sinf(1.0f / sqrtf(10.0f)), 1e-6f);
    /* sign -1 is the inverse (and, being orthogonal, the backward) */
    rope_apply(x, cs, sn, 1, 3, 1, 8, -1);
    for (int i = 0; i < 24; i++) ck_assert_float_eq_tol(x[i], i == 9 ? 1.0f : 0.0f, 1e-6f);
    acts_free(a);
    model_free(&m);
}
END_TEST

/* ----------------------------------------------------------- attention */

typedef struct {
    float *q, *k, *v, *out, *att, *R;
    int *len;
    int B, T, H, KV, hd, window;
    AttnMode mode;
} AttCtx;

static double att_f(void *p) {
    AttCtx *c = p;
    attention_forward(c->out, c->att, c->q, c->k, c->v, c->len, c->B, c->T, c->H, c->KV, c->hd, c->mode, c->window);
    /* only valid query rows enter the loss, as in training */
    double s = 0;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->len[b]; t++)
            s += dotd(c->out + (size_t)(b * c->T + t) * c->H * c->hd, c->R + (size_t)(b * c->T + t) * c->H * c->hd,
                      (size_t)c->H * c->hd);
    return s;
}

static void check_attention(AttnMode mode, int H, int KV, int window) {
    int B = 2, T = 7, hd = 4, len[2] = {7, 4};
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd;
    AttCtx c = {malloc(nq * 4), malloc(nk * 4), malloc(nk * 4), malloc(nq * 4), malloc((size_t)B * H * T * T * 4),
                calloc(nq, 4), len, B, T, H, KV, hd, window, mode};
    fill_normal(c.q, nq, 1.0f, 21);
    fill_normal(c.k, nk, 1.0f, 22);
    fill_normal(c.v, nk, 1.0f, 23);
    for (int b = 0; b < B; b++) fill_normal(c.R + (size_t)b * T * H * hd, (size_t)len[b] * H * hd, 1.0f, 24 + b);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    att_f(&c);
    attention_backward(dq, dk, dv, c.R, c.att, c.q, c.k, c.v, len, B, T, H, KV, hd, mode, window);
    assert_fd(att_f, &c, c.q, nq, dq, "attention dq");
    assert_fd(att_f, &c, c.k, nk, dk, "attention dk");
    assert_fd(att_f, &c, c.v, nk, dv, "attention dv");
    /* masks: probabilities are zero exactly where a key is not allowed */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < len[b]; i++) {
                double sum = 0;
                for (int j = 0; j < T; j++) {
                    float p = c.att[(((size_t)b * H + h) * T + i) * T + j];
                    int dist = i > j ? i - j : j - i;
                    int allowed = j < len[b] && (mode == ATTN_BIDIRECTIONAL || j <= i) && (!window || dist < window);
                    if (!allowed) ck_assert_msg(p == 0.0f, "key %d visible to query %d in row %d", j, i, b);
                    else ck_assert_msg(p > 0.0f, "key %d hidden from query %d in row %d", j, i, b);
                    sum += p;
                }
                ck_assert_float_eq_tol(sum, 1.0, 1e-5);
            }
    free(c.q); free(c.k); free(c.v); free(c.out); free(c.att); free(c.R);
    free(dq); free(dk); free(dv);
}

START_TEST(test_attention_causal_gqa) { check_attention(ATTN_CAUSAL, 4, 2, 0); }
END_TEST
START_TEST(test_attention_bidirectional_mha) { check_attention(ATTN_BIDIRECTIONAL, 2, 2, 0); }
END_TEST
START_TEST(test_attention_window) {
    check_attention(ATTN_CAUSAL, 4, 1, 3);
    check_attention(ATTN_BIDIRECTIONAL, 4, 1, 3);
}
END_TEST

/* The fast attention (matrix products in blocks of query rows) equals its
 * plain twin, forward and backward, in every mode, with padding, GQA and a
 * window; T = 150 spans three blocks (the causal mask skips some, the padded
 * rows read only their keys). */
static void check_attention_twins(int T, const int len[3]) {
    int B = 3, H = 4, KV = 2, hd = 16;
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd, na = (size_t)B * H * T * T;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    float *o1 = malloc(nq * 4), *o2 = malloc(nq * 4), *a1 = malloc(na * 4), *a2 = malloc(na * 4);
    float *o3 = malloc(nq * 4), *scr = malloc((size_t)2 * T * T * 4);
    float *g1 = calloc(nq + 2 * nk, 4), *g2 = calloc(nq + 2 * nk, 4);
    fill_normal(q, nq, 1.0f, 51);
    fill_normal(k, nk, 1.0f, 52);
    fill_normal(v, nk, 1.0f, 53);
    fill_normal(dout, nq, 1.0f, 54);
    int windows[2] = {0, 5};
    for (int mode = 0; mode < 2; mode++)
        for (int w = 0; w < 2; w++) {
            memset(g1, 0, (nq + 2 * nk) * 4);
            memset(g2, 0, (nq + 2 * nk) * 4);
            attention_forward_ref(o1, a1, q, k, v, len, B, T, H, KV, hd, (AttnMode)mode, windows[w]);
            attention_forward(o2, a2, q, k, v, len, B, T, H, KV, hd, (AttnMode)mode, windows[w]);
            assert_allclose(o2, o1, nq, 1e-5, 1e-6, "attention output");
            /* without keeping P (a forward with no backward): the same sums, so the same bits,
             * on 1 and 2 threads of scratch */
            for (int th = 1; th <= 2; th++) {
                memset(o3, 0xff, nq * 4);
                attention_forward_scratch(o3, scr, th, q, k, v, len, B, T, H, KV, hd, (AttnMode)mode, windows[w]);
                ck_assert_msg(memcmp(o3, o2, nq * 4) == 0, "attention without P differs (mode %d, window %d, %d threads)",
                              mode, windows[w], th);
            }
            assert_allclose(a2, a1, na, 1e-5, 1e-7, "attention probabilities");
            attention_backward_ref(g1, g1 + nq, g1 + nq + nk, dout, a1, q, k, v, B, T, H, KV, hd);
            attention_backward(g2, g2 + nq, g2 + nq + nk, dout, a1, q, k, v, len, B, T, H, KV, hd, (AttnMode)mode,
                               windows[w]);
            assert_allclose(g2, g1, nq, 1e-4, 1e-5, "attention dq");
            assert_allclose(g2 + nq, g1 + nq, nk, 1e-4, 1e-5, "attention dk");
            assert_allclose(g2 + nq + nk, g1 + nq + nk, nk, 1e-4, 1e-5, "attention dv");
        }
    free(q); free(k); free(v); free(dout); free(o1); free(o2); free(a1); free(a2); free(g1); free(g2);
    free(o3); free(scr);
}

START_TEST(test_attention_fast_equals_plain) {
    const int short_rows[3] = {37, 20, 1}, long_rows[3] = {150, 70, 1};
    check_attention_twins(37, short_rows);
    check_attention_twins(150, long_rows);
}
END_TEST

/* The vector exp against expf: within 2.5e-7 relative (about 2 units in the
 * last place; model.c documents 7.4e-8) from e^-87 to e^88, exact at 0, and
 * 0, inf and NaN where expf gives them. */
START_TEST(test_exp_fast_equals_plain) {
    enum { N = 20000 };
    float *x = malloc(N * sizeof(float)), *y1 = malloc(N * sizeof(float)), *y2 = malloc(N * sizeof(float));
    for (int i = 0; i < N - 11; i++) x[i] = -87.0f + 175.5f * i / (N - 12);
    const float special[11] = {0.0f, -0.0f, -INFINITY, INFINITY, NAN, -104.0f, -200.0f, 89.0f, 1000.0f, 1e-9f, -1e-9f};
    memcpy(x + N - 11, special, sizeof special);
    exp_array(y1, x, N - 3);        /* a length that is not a multiple of 16 ... */
    exp_array(y1 + N - 3, x + N - 3, 3);
    exp_array_ref(y2, x, N);
    assert_allclose(y1, y2, N - 11, 2.5e-7, 0, "exp_array");
    for (int i = N - 11; i < N; i++)
        ck_assert_msg((isnan(y1[i]) && isnan(y2[i])) || y1[i] == y2[i], "exp(%g): %g, expf %g", x[i], y1[i], y2[i]);
    memcpy(y1, x, 100 * sizeof(float));
    exp_array(y1, y1, 100);         /* ... and in place */
    assert_allclose(y1, y2, 100, 2.5e-7, 0, "exp_array in place");
    free(x); free(y1); free(y2);
}
END_TEST

/* SwiGLU's vector loops against the plain twins, on a length with a tail and
 * gates from -30 to 30 (saturated sigmoids included). */
START_TEST(test_swiglu_fast_equals_plain) {
    enum { N = 5003 };
    float *g = malloc(N * 4), *u = malloc(N * 4), *da = malloc(N * 4), *a1 = malloc(N * 4), *a2 = malloc(N * 4);
    float *dg1 = malloc(N * 4), *dg2 = malloc(N * 4), *du1 = malloc(N * 4), *du2 = malloc(N * 4);
    fill_normal(g, N, 4.0f, 61);
    for (int i = 0; i < 20; i++) g[i] = -30.0f + 3.0f * i;
    fill_normal(u, N, 1.0f, 62);
    fill_normal(da, N, 1.0f, 63);
    fill_normal(dg1, N, 1.0f, 64);
    fill_normal(du1, N, 1.0f, 65);
    memcpy(dg2, dg1, N * 4);
    memcpy(du2, du1, N * 4);
    swiglu_forward(a1, g, u, N);
    swiglu_forward_ref(a2, g, u, N);
    assert_allclose(a1, a2, N, 1e-6, 1e-7, "swiglu forward");
    swiglu_backward(dg1, du1, da, g, u, N);
    swiglu_backward_ref(dg2, du2, da, g, u, N);
    assert_allclose(dg1, dg2, N, 1e-6, 1e-7, "swiglu dgate");
    assert_allclose(du1, du2, N, 1e-6, 1e-7, "swiglu dup");
    free(g); free(u); free(da); free(a1); free(a2); free(dg1); free(dg2); free(du1); free(du2);
}
END_TEST

/* AdamW's vector loop gives the plain twin's bits, step after step. */
START_TEST(test_adamw_fast_equals_plain) {
    enum { N = 100003 };  /* above the threaded size, with a tail */
    AdamW o1, o2;
    ck_assert_int_eq(adamw_init(&o1, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f), 0);
    ck_assert_int_eq(adamw_init(&o2, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f), 0);
    float *p1 = malloc(N * 4), *p2 = malloc(N * 4), *g = malloc(N * 4);
    fill_normal(p1, N, 1.0f, 71);
    memcpy(p2, p1, N * 4);
    for (int step = 0; step < 3; step++) {
        fill_normal(g, N, 0.1f, 72 + step);
        adamw_step(&o1, p1, g, 1e-3f);
        adamw_step_ref(&o2, p2, g, 1e-3f);
    }
    ck_assert_msg(memcmp(p1, p2, N * 4) == 0 && memcmp(o1.m, o2.m, N * 4) == 0 && memcmp(o1.v, o2.v, N * 4) == 0,
                  "AdamW: the vector loop and its twin differ");
    free(p1); free(p2); free(g);
    adamw_free(&o1);
    adamw_free(&o2);
}
END_TEST

/* Hand computation: one head, hd = 1, keys 0 and 1 with scores 0 and ln 3 for query 1:
 * probabilities (1/4, 3/4), output 1/4 v0 + 3/4 v1. */
START_TEST(test_attention_hand) {
    float q[2] = {0.0f, logf(3.0f)}, k[2] = {0.0f, 1.0f}, v[2] = {2.0f, 6.0f}, out[2], att[4];
    int len = 2;
    attention_forward(out, att, q, k, v, &len, 1, 2, 1, 1, 1, ATTN_CAUSAL, 0);
    ck_assert_float_eq_tol(out[0], 2.0f, 1e-6f);                 /* query 0 sees key 0 only */
    ck_assert_float_eq_tol(att[2], 0.25f, 1e-6f);
    ck_assert_float_eq_tol(out[1], 0.25f * 2 + 0.75f * 6, 1e-5f);
}
END_TEST

/* -------------------------------------------------------------- SwiGLU */

typedef struct { float *g, *u, *out, *R; size_t n; } GluCtx;
static double glu_f(void *p) {
    GluCtx *c = p;
    swiglu_forward(c->out, c->g, c->u, c->n);
    return dotd(c->out, c->R, c->n);
}

START_TEST(test_swiglu_backward) {
    size_t n = 40;
    GluCtx c = {malloc(n * 4), malloc(n * 4), malloc(n * 4), malloc(n * 4), n};
    float *dg = calloc(n, 4), *du = calloc(n, 4);
    fill_normal(c.g, n, 2.0f, 31);
    fill_normal(c.u, n, 1.0f, 32);
    fill_normal(c.R, n, 1.0f, 33);
    swiglu_backward(dg, du, c.R, c.g, c.u, n);
    assert_fd(glu_f, &c, c.g, n, dg, "swiglu dgate");
    assert_fd(glu_f, &c, c.u, n, du, "swiglu dup");
    float g = 1.0f, u = 3.0f, o;
    swiglu_forward(&o, &g, &u, 1);
    ck_assert_float_eq_tol(o, 3.0f / (1.0f + expf(-1.0f)), 1e-6f);  /* silu(1) * 3 */
    free(c.g); free(c.u); free(c.out); free(c.R); free(dg); free(du);
}
END_TEST

/* ------------------------------------------------------------- pooling */

typedef struct { float *hidden, *emb, *norms, *R; Batch b; int *from; int C; } PoolCtx;
static double pool_f(void *p) {
    PoolCtx *c = p;
    pool_forward(c->emb, c->norms, c->hidden, &c->b, c->from, c->C);
    return dotd(c->emb, c->R, (size_t)c->b.B * c->C);
}

START_TEST(test_pool_backward) {
    int B = 3, T = 6, C = 8, ids[18] = {0}, len[3] = {6, 4, 2}, from[3] = {1, 0, 1};
    PoolCtx c = {malloc(B * T * C * 4), malloc(B * C * 4), malloc(B * 4), malloc(B * C * 4), {.B = B, .T = T, .ids = ids, .lengths = len}, from, C};
    float *dh = calloc(B * T * C, 4);
    fill_normal(c.hidden, B * T * C, 1.0f, 41);
    fill_normal(c.R, B * C, 1.0f, 42);
    pool_f(&c);
    pool_backward(dh, c.R, c.emb, c.norms, &c.b, from, C);
    assert_fd(pool_f, &c, c.hidden, B * T * C, dh, "pooling dhidden");
    /* positions outside [from, len) get no gradient */
    for (int i = 0; i < C; i++) {
        ck_assert_float_eq(dh[(0 * T + 0) * C + i], 0.0f);
        ck_assert_float_eq(dh[(1 * T + 5) * C + i], 0.0f);
    }
    /* unit length, and a hand case: row 2 pools position 1 only */
    for (int r = 0; r < B; r++) ck_assert_float_eq_tol(dotd(c.emb + r * C, c.emb + r * C, C), 1.0, 1e-5);
    double n2 = sqrt(dotd(c.hidden + (2 * T + 1) * C, c.hidden + (2 * T + 1) * C, C));
    for (int i = 0; i < C; i++) ck_assert_float_eq_tol(c.emb[2 * C + i], c.hidden[(2 * T + 1) * C + i] / n2, 1e-6);
    free(c.hidden); free(c.emb); free(c.norms); free(c.R); free(dh);
}
END_TEST

/* ------------------------------------------------- the whole model, FD */

typedef struct { Model *m; Acts *a; Batch b; float *w; AttnMode mode; } LmCtx;
static double lm_f(void *p) {
    LmCtx *c = p;
    model_forward(c->m, NULL, c->a, &c->b, c->mode);
    return model_lm_loss(c->m, c->a, &c->b, c->w, NULL, NULL, 0);
}

static void check_model_fd(int tied, int window, AttnMode mode) {
    Config cfg;
    Model m;
    config_preset(&cfg, "tiny", 64);
    cfg.hidden_size = 32; cfg.intermediate_size = 48; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.head_dim = 8;
    cfg.tie_word_embeddings = tied;
    cfg.sliding_window = window;
    ck_assert_int_eq(model_alloc(&m, &cfg), 0);
    model_init_random(&m, 7);
    for (size_t i = 0; i < m.total; i++) m.params[i] *= 5.0f;  /* 0.1 std: non-trivial attention */
    for (int i = 0; i < m.n_params; i++)
        if (m.spec[i].ndim == 1)
            for (size_t j = 0; j < m.spec[i].numel; j++) m.params[m.spec[i].offset + j] = 1.0f + 0.1f * (float)((j * 7) % 5) / 5;
    int B = 2, T = 6, ids[12], len[2] = {6, 4};
    for (int i = 0; i < 12; i++) ids[i] = (i * 37 + 5) % 64;
    float w[12], *grads = calloc(m.total, 4);
    LmCtx c = {&m, acts_new(&m, B, T), {.B = B, .T = T, .ids = ids, .lengths = len}, w, mode};
    lm_weights_mean(w, &c.b);
    lm_f(&c);
    model_lm_loss(&m, c.a, &c.b, w, NULL, grads, 1);
    model_backward(&m, NULL, c.a, &c.b, mode, grads, NULL);
    /* one tensor at a time, so a wrong gradient is named */
    for (int i = 0; i < m.n_params; i++) {
        char what[192];
        snprintf(what, sizeof what, "d loss / d %s", m.spec[i].name);
        assert_fd(lm_f, &c, m.params + m.spec[i].offset, m.spec[i].numel, grads + m.spec[i].offset, what);
    }
    acts_free(c.a);
    free(grads);
    model_free(&m);
}

START_TEST(test_model_fd_causal_tied) { check_model_fd(1, 0, ATTN_CAUSAL); }
END_TEST
START_TEST(test_model_fd_bidir_untied_window) { check_model_fd(0, 3, ATTN_BIDIRECTIONAL); }
END_TEST

/* Hand computation of the loss: with an all-zero model every logit is 0, so
 * every predicted token costs ln V exactly. */
START_TEST(test_lm_loss_uniform) {
    Config cfg;
    Model m;
    config_preset(&cfg, "tiny", 50);
    model_alloc(&m, &cfg);
    for (int i = 0; i < m.n_params; i++)
        if (m.spec[i].ndim == 1)
            for (size_t j = 0; j < m.spec[i].numel; j++) m.params[m.spec[i].offset + j] = 1.0f;
    int ids[8] = {3, 4, 5, 6, 7, 8, 0, 0}, len[2] = {4, 2};
    float w[8], tl[8];
    Batch b = {.B = 2, .T = 4, .ids = ids, .lengths = len};
    Acts *a = acts_new(&m, 2, 4);
    lm_weights_mean(w, &b);
    ck_assert_float_eq_tol(w[0], 0.25f, 1e-7f);   /* 3 + 1 predicted tokens */
    ck_assert_float_eq(w[3], 0.0f);
    ck_assert_float_eq(w[5], 0.0f);
    model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
    double loss = model_lm_loss(&m, a, &b, w, tl, NULL, 0);
    ck_assert_double_eq_tol(loss, log(50.0), 1e-6);
    acts_free(a);
    model_free(&m);
}
END_TEST

/* The `tiny` preset with seeded random weights. */
static void tiny_random(Model *m, Config *cfg, uint64_t seed) {
    ck_assert_int_eq(config_preset(cfg, "tiny", 0), 0);
    ck_assert_msg(model_alloc(m, cfg) == 0, "%s", rf_last_error());
    model_init_random(m, seed);
}

/* Causality: changing a later token never changes an earlier position's hidden state. */
START_TEST(test_causal_independence) {
    Config cfg;
    Model m;
    tiny_random(&m, &cfg, 3);
    int ids[8] = {5, 9, 13, 17, 21, 25, 29, 33}, len = 8;
    Batch b = {.B = 1, .T = 8, .ids = ids, .lengths = &len};
    Acts *a = acts_new(&m, 1, 8);
    size_t C = cfg.hidden_size;
    float *h1 = malloc(8 * C * 4);
    model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
    memcpy(h1, acts_hidden(a), 8 * C * 4);
    ids[6] = 100;
    model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
    for (size_t i = 0; i < 6 * C; i++) ck_assert_float_eq(acts_hidden(a)[i], h1[i]);
    int changed = 0;
    for (size_t i = 6 * C; i < 8 * C; i++) changed |= acts_hidden(a)[i] != h1[i];
    ck_assert(changed);
    model_forward(&m, NULL, a, &b, ATTN_BIDIRECTIONAL);  /* bidirectional: position 0 now sees token 6 */
    memcpy(h1, acts_hidden(a), C * 4);
    ids[6] = 101;
    model_forward(&m, NULL, a, &b, ATTN_BIDIRECTIONAL);
    changed = 0;
    for (size_t i = 0; i < C; i++) changed |= acts_hidden(a)[i] != h1[i];
    ck_assert(changed);
    free(h1);
    acts_free(a);
    model_free(&m);
}
END_TEST

/* Forward-only activations (acts_ensure_forward) give the same hidden states,
 * bit for bit, in both attention modes, while allocating less: no [L][B*H*T*T]
 * probabilities.  A backward on them is refused with an error and touches no
 * gradient. */
START_TEST(test_forward_only_acts) {
    Config cfg;
    Model m;
    tiny_random(&m, &cfg, 4);
    int ids[2 * 40], len[2] = {40, 23};
    for (int i = 0; i < 80; i++) ids[i] = (7 * i + 3) % cfg.vocab_size;
    Batch b = {.B = 2, .T = 40, .ids = ids, .lengths = len};
    Acts *full = acts_new(&m, 2, 40), *fwd = NULL;
    ck_assert_int_eq(acts_ensure_forward(&fwd, &m, 2, 40), 0);
    ck_assert_uint_lt(acts_bytes(fwd), acts_bytes(full));
    size_t n = (size_t)80 * cfg.hidden_size;
    for (int mode = 0; mode < 2; mode++) {
        model_forward(&m, NULL, full, &b, (AttnMode)mode);
        model_forward(&m, NULL, fwd, &b, (AttnMode)mode);
        ck_assert_msg(memcmp(acts_hidden(full), acts_hidden(fwd), n * 4) == 0,
                      "forward-only hidden states differ (mode %d)", mode);
    }
    float *grads = calloc(m.total, 4);
    rf_clear_error();
    model_backward(&m, NULL, fwd, &b, ATTN_BIDIRECTIONAL, grads, NULL);
    ck_assert_msg(strstr(rf_last_error(), "acts_ensure_forward") != NULL, "no error: '%s'", rf_last_error());
    for (size_t i = 0; i < m.total; i++)
        if (grads[i] != 0.0f) ck_abort_msg("gradient %zu changed", i);
    free(grads);
    acts_free(full);
    acts_free(fwd);
    model_free(&m);
}
END_TEST

/* The dry-run estimate of activation memory is what acts_new allocates. */
START_TEST(test_acts_bytes_estimate) {
    Config cfg;
    Model m;
    config_preset(&cfg, "tiny", 0);
    cfg.sliding_window = 0;
    model_alloc(&m, &cfg);
    int shapes[3][2] = {{1, 2}, {3, 17}, {8, 64}};
    for (int i = 0; i < 3; i++) {
        Acts *a = acts_new(&m, shapes[i][0], shapes[i][1]);
        ck_assert_uint_eq(acts_bytes(a), acts_bytes_for(&cfg, shapes[i][0], shapes[i][1]));
        acts_free(a);
    }
    model_free(&m);
}
END_TEST

/* ---------------------------------------------------------------- memory */

/* calloc_big: zero, 2 MiB-aligned from 2 MiB up and 64-byte aligned below,
 * the whole block writable, small blocks zero too, an overflowing size
 * refused, free_big(NULL) a no-op. */
START_TEST(test_calloc_big) {
    size_t sizes[3] = {(size_t)3 << 19, 100, (size_t)1 << 19}; /* floats: 6 MiB, 400 B, exactly 2 MiB */
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *p = calloc_big(n, sizeof(float));
        ck_assert_ptr_nonnull(p);
        if (n * sizeof(float) >= ((size_t)2 << 20))
            ck_assert_msg((uintptr_t)p % ((uintptr_t)2 << 20) == 0, "a %zu-byte block at %p is not 2 MiB-aligned",
                          n * sizeof(float), (void *)p);
        ck_assert_msg((uintptr_t)p % 64 == 0, "a %zu-byte block at %p is not 64-byte aligned", n * sizeof(float),
                      (void *)p);
        for (size_t i = 0; i < n; i++)
            if (p[i] != 0.0f) ck_abort_msg("float %zu of %zu is not zero", i, n);
        p[0] = 1.0f;
        p[n - 1] = 2.0f;
        ck_assert(p[0] + p[n - 1] == 3.0f);
        free_big(p);
    }
    ck_assert_ptr_null(calloc_big((size_t)-1 / 2, 4));
    free_big(NULL);
}
END_TEST

/* ----------------------------------------------------------- optimisers */

START_TEST(test_adamw_hand) {
    /* step 1 with m = v = 0: mhat = g, vhat = g^2, so p -= lr (wd p + g / (|g| + eps)) */
    AdamW o;
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -4.0f};
    ck_assert_int_eq(adamw_init(&o, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f), 0);
    adamw_step(&o, p, g, 0.1f);
    ck_assert_float_eq_tol(p[0], 1.0f * (1 - 0.001f) - 0.1f, 1e-6f);
    ck_assert_float_eq_tol(p[1], -2.0f * (1 - 0.001f) + 0.1f, 1e-6f);
    adamw_free(&o);
    float gg[2] = {3.0f, 4.0f};
    ck_assert_double_eq_tol(clip_grad_norm(gg, 2, 1.0), 5.0, 1e-9);
    ck_assert_float_eq_tol(gg[0], 0.6f, 1e-6f);
    /* a norm just above the limit is scaled too (5 -> 4.5: x 0.9); one at or below it is left alone */
    float gh[2] = {3.0f, 4.0f};
    ck_assert_double_eq_tol(clip_grad_norm(gh, 2, 4.5), 5.0, 1e-9);
    ck_assert_float_eq_tol(gh[1], 3.6f, 1e-6f);
    ck_assert_double_eq_tol(clip_grad_norm(gh, 2, 4.5), 4.5, 1e-5);  /* 4.5 less the 1e-6 guard */
    ck_assert_float_eq_tol(gh[1], 3.6f, 1e-6f);
    ck_assert_float_eq(lr_schedule(1.0f, 0, 10, 110), 0.0f);
    ck_assert_float_eq_tol(lr_schedule(1.0f, 5, 10, 110), 0.5f, 1e-7f);
    ck_assert_float_eq_tol(lr_schedule(1.0f, 60, 10, 110), 0.5f, 1e-7f);
}
END_TEST

/* ------------------------------------- against the PyTorch reference */

/* The fixtures are written by tests/reference/make_fixtures.py, an independent
 * float64 PyTorch implementation (semantics in tests/reference/README.md).
 * Tensors are compared by normalised error ||c - ref||^2 / ||ref||^2 <= 1e-8
 * (ggml's measure): gradients hold many entries near zero where an
 * elementwise relative error says nothing, while a float32 computation of the
 * same function lands near 1e-12 and any real mistake near 1e-2 or above.
 * Scalar losses are compared elementwise to a relative 1e-5. */
#define REF_NERR 1e-8

typedef struct {
    Model m;
    StFile exp;
    int B, T, pool_from, ids[64 * 64], len[64];
    float lr;
} RefCase;

static void read_expected(const RefCase *rc, const char *name, float *dst, int64_t numel) {
    const StTensor *t = st_find(&rc->exp, name);
    ck_assert_msg(t != NULL, "expected.safetensors has no tensor %s", name);
    ck_assert_msg(t->numel == numel, "%s: %lld values, want %lld", name, (long long)t->numel, (long long)numel);
    ck_assert_msg(st_read_f32(&rc->exp, t, dst) == 0, "%s", rf_last_error());
}

static void assert_nerr(const float *got, const float *want, size_t n, const char *what) {
    double e = nerr(got, want, n);
    ck_assert_msg(e <= REF_NERR, "%s: normalised error %.3g > %.1g", what, e, REF_NERR);
}

static void ref_open(RefCase *rc, const char *name) {
    char path[512];
    memset(rc, 0, sizeof *rc);
    snprintf(path, sizeof path, "tests/fixtures/%s/model", name);
    ck_assert_msg(model_load(&rc->m, path) == 0, "%s", rf_last_error());
    snprintf(path, sizeof path, "tests/fixtures/%s/expected.safetensors", name);
    ck_assert_msg(st_open(&rc->exp, path) == 0, "%s", rf_last_error());
    snprintf(path, sizeof path, "tests/fixtures/%s/meta.json", name);
    char *text;
    size_t n;
    Json meta;
    ck_assert_msg(rf_read_file(path, &text, &n) == 0 && json_parse(&meta, text, n, path) == 0, "%s", rf_last_error());
    free(text);
    rc->pool_from = (int)json_get(&meta, "pool_from")->number;
    rc->lr = (float)json_get(&meta, "lr")->number;
    rc->T = (int)json_get(&meta, "T")->number;
    json_free(&meta);
    snprintf(path, sizeof path, "tests/fixtures/%s/ids.txt", name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *s = line, *end;
        int t = 0;
        for (long v; (v = strtol(s, &end, 10)), end != s; s = end) rc->ids[rc->B * rc->T + t++] = (int)v;
        if (!t) continue;
        rc->len[rc->B++] = t;
    }
    fclose(f);
    ck_assert_int_gt(rc->B, 1);
}

static void ref_close(RefCase *rc) {
    st_close(&rc->exp);
    model_free(&rc->m);
}

static void check_reference_case(const char *name) {
    RefCase rc;
    ref_open(&rc, name);
    Model *m = &rc.m;
    int B = rc.B, T = rc.T, V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    Batch b = {.B = B, .T = T, .ids = rc.ids, .lengths = rc.len};
    Acts *a = acts_new(m, B, T);
    float *w = malloc(B * T * 4), *tl = malloc(B * T * 4), *logits = malloc((size_t)B * T * V * 4);
    float *want = malloc((size_t)B * T * V * 4), *grads = calloc(m->total, 4), *wgrad = malloc(m->total * 4);
    char what[160];

    /* causal: logits at valid positions, per-sequence and batch losses, every gradient */
    model_forward(m, NULL, a, &b, ATTN_CAUSAL);
    model_logits(m, a, logits, B * T);
    read_expected(&rc, "logits", want, (int64_t)B * T * V);
    for (int r = 0; r < B; r++) {
        snprintf(what, sizeof what, "%s: causal logits of row %d", name, r);
        assert_nerr(logits + (size_t)r * T * V, want + (size_t)r * T * V, (size_t)rc.len[r] * V, what);
    }
    lm_weights_mean(w, &b);
    float loss = (float)model_lm_loss(m, a, &b, w, tl, grads, 1), wl, seq[64];
    model_backward(m, NULL, a, &b, ATTN_CAUSAL, grads, NULL);
    read_expected(&rc, "loss", &wl, 1);
    assert_allclose(&loss, &wl, 1, 1e-5, 0, "batch loss");
    read_expected(&rc, "seq_loss", want, B);
    for (int r = 0; r < B; r++) {
        double s = 0;
        for (int t = 0; t < rc.len[r] - 1; t++) s += tl[r * T + t];
        seq[r] = (float)(s / (rc.len[r] - 1));
    }
    assert_allclose(seq, want, B, 1e-5, 0, "per-sequence causal loss");
    for (int i = 0; i < m->n_params; i++) {
        snprintf(what, sizeof what, "grad.%s", m->spec[i].name);
        read_expected(&rc, what, wgrad, (int64_t)m->spec[i].numel);
        assert_nerr(grads + m->spec[i].offset, wgrad, m->spec[i].numel, what);
    }

    /* bidirectional: the score of `recfound score --bidirectional` */
    model_forward(m, NULL, a, &b, ATTN_BIDIRECTIONAL);
    model_lm_loss(m, a, &b, w, tl, NULL, 0);
    for (int r = 0; r < B; r++) {
        double s = 0;
        for (int t = 0; t < rc.len[r] - 1; t++) s += tl[r * T + t];
        seq[r] = (float)(s / (rc.len[r] - 1));
    }
    read_expected(&rc, "seq_loss_bidir", want, B);
    assert_allclose(seq, want, B, 1e-5, 0, "per-sequence bidirectional loss");

    /* embeddings and the gradient of <embed, probe> */
    int from[64];
    float *emb = malloc(B * C * 4), norms[64], *probe = malloc(B * C * 4);
    for (int r = 0; r < B; r++) from[r] = rc.pool_from;
    pool_forward(emb, norms, acts_hidden(a), &b, from, C);
    read_expected(&rc, "embed", want, B * C);
    assert_nerr(emb, want, (size_t)B * C, "embeddings");
    read_expected(&rc, "embed_probe", probe, B * C);
    memset(grads, 0, m->total * 4);
    pool_backward(acts_dhidden(a), probe, emb, norms, &b, from, C);
    model_backward(m, NULL, a, &b, ATTN_BIDIRECTIONAL, grads, NULL);
    for (int i = 0; i < m->n_params; i++) {
        snprintf(what, sizeof what, "grad_embed.%s", m->spec[i].name);
        read_expected(&rc, what, wgrad, (int64_t)m->spec[i].numel);
        assert_nerr(grads + m->spec[i].offset, wgrad, m->spec[i].numel, what);
    }
    free(emb); free(probe); free(w); free(tl); free(logits); free(want); free(grads); free(wgrad);
    acts_free(a);
    ref_close(&rc);
}

/* bf16 weights (model_load_bf16) on the BF16 fixture: the same hidden states,
 * logits and losses, bit for bit, as the float load, in both attention modes;
 * no gradient for the weights, no save, and an F32 checkpoint is refused. */
START_TEST(test_bf16_weights_load) {
    RefCase rc;
    ref_open(&rc, "llama_bf16_sharded");
    Model *m = &rc.m, h;
    ck_assert_msg(model_load_bf16(&h, "tests/fixtures/llama_bf16_sharded/model") == 0, "%s", rf_last_error());
    ck_assert_ptr_nonnull(h.params16);
    ck_assert_ptr_null(h.layer[P_Q]);
    ck_assert_ptr_nonnull(h.layer[P_ATTN_NORM]);
    ck_assert(h.final_norm[0] == m->final_norm[0]);
    int B = rc.B, T = rc.T, V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    Batch b = {.B = B, .T = T, .ids = rc.ids, .lengths = rc.len};
    Acts *a = acts_new(m, B, T), *ah = acts_new(&h, B, T);
    float *w = malloc(B * T * 4), *tl = malloc(B * T * 4), *tlh = malloc(B * T * 4);
    float *lg = malloc((size_t)B * T * V * 4), *lgh = malloc((size_t)B * T * V * 4);
    lm_weights_mean(w, &b);
    for (int mode = 0; mode < 2; mode++) {
        AttnMode am = mode ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
        model_forward(m, NULL, a, &b, am);
        model_forward(&h, NULL, ah, &b, am);
        ck_assert(memcmp(acts_hidden(a), acts_hidden(ah), (size_t)B * T * C * 4) == 0);
        model_logits(m, a, lg, B * T);
        model_logits(&h, ah, lgh, B * T);
        ck_assert(memcmp(lg, lgh, (size_t)B * T * V * 4) == 0);
        double l1 = model_lm_loss(m, a, &b, w, tl, NULL, 0), l2 = model_lm_loss(&h, ah, &b, w, tlh, NULL, 0);
        ck_assert(l1 == l2);
        ck_assert(memcmp(tl, tlh, (size_t)B * T * 4) == 0);
    }
    /* the weights have no gradient: refused, with nothing written */
    float *grads = calloc(h.total, 4);
    rf_clear_error();
    ck_assert(isnan(model_lm_loss(&h, ah, &b, w, NULL, grads, 1)));
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "bf16"));
    rf_clear_error();
    model_backward(&h, NULL, ah, &b, ATTN_BIDIRECTIONAL, grads, NULL);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "bf16"));
    for (size_t i = 0; i < h.total; i++) ck_assert(grads[i] == 0);
    char dir[] = "/tmp/rf_bf16_save_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char sub[600];
    snprintf(sub, sizeof sub, "%s/out", dir);
    ck_assert_int_ne(model_save(&h, sub), 0);
    ck_assert_int_ne(access(sub, F_OK), 0);
    rm_tree(dir);
    /* model_load_frozen: a small BF16 checkpoint stays float unless asked */
    const char *fixture = "tests/fixtures/llama_bf16_sharded/model";
    const char *want[] = {NULL, "auto", "f32", "bf16"};
    for (int k = 0; k < 4; k++) {
        Model g;
        if (want[k]) setenv("RECFOUND_WEIGHTS", want[k], 1);
        else unsetenv("RECFOUND_WEIGHTS");
        ck_assert_msg(model_load_frozen(&g, fixture, "test") == 0, "%s", rf_last_error());
        ck_assert_msg((g.params16 != NULL) == (k == 3), "RECFOUND_WEIGHTS=%s", want[k] ? want[k] : "(unset)");
        model_free(&g);
    }
    unsetenv("RECFOUND_WEIGHTS");
    /* a checkpoint in F32 cannot be kept in bf16 */
    Model f;
    ck_assert_int_ne(model_load_bf16(&f, "tests/fixtures/gqa_tied/model"), 0);
    ck_assert_msg(strstr(rf_last_error(), "model.embed_tokens.weight' is F32") != NULL, "%s", rf_last_error());
    free(w); free(tl); free(tlh); free(lg); free(lgh); free(grads);
    acts_free(a);
    acts_free(ah);
    model_free(&h);
    ref_close(&rc);
}
END_TEST

START_TEST(test_reference_gqa_tied) { check_reference_case("gqa_tied"); }
END_TEST
START_TEST(test_reference_mha_untied_window) { check_reference_case("mha_untied_window"); }
END_TEST
START_TEST(test_reference_llama_bf16_sharded) { check_reference_case("llama_bf16_sharded"); }
END_TEST

Suite *backbone_suite(void) {
    Suite *s = suite_create("backbone");
    TCase *ops = tcase_create("operations");
    tcase_add_test(ops, test_rmsnorm_backward);
    tcase_add_test(ops, test_rope);
    tcase_add_test(ops, test_attention_hand);
    tcase_add_test(ops, test_attention_fast_equals_plain);
    tcase_add_test(ops, test_attention_causal_gqa);
    tcase_add_test(ops, test_attention_bidirectional_mha);
    tcase_add_test(ops, test_attention_window);
    tcase_add_test(ops, test_swiglu_backward);
    tcase_add_test(ops, test_pool_backward);
    tcase_add_test(ops, test_adamw_hand);
    tcase_add_test(ops, test_calloc_big);
    tcase_add_test(ops, test_exp_fast_equals_plain);
    tcase_add_test(ops, test_swiglu_fast_equals_plain);
    tcase_add_test(ops, test_adamw_fast_equals_plain);
    suite_add_tcase(s, ops);
    TCase *model = tcase_create("model");
    tcase_set_timeout(model, 60);
    tcase_add_test(model, test_lm_loss_uniform);
    tcase_add_test(model, test_acts_bytes_estimate);
    tcase_add_test(model, test_causal_independence);
    tcase_add_test(model, test_forward_only_acts);
    tcase_add_test(model, test_model_fd_causal_tied);
    tcase_add_test(model, test_model_fd_bidir_untied_window);
    suite_add_tcase(s, model);
    TCase *ref = tcase_create("pytorch_reference");
    tcase_set_timeout(ref, 60);
    tcase_add_test(ref, test_reference_gqa_tied);
    tcase_add_test(ref, test_reference_mha_untied_window);
    tcase_add_test(ref, test_reference_llama_bf16_sharded);
    tcase_add_test(ref, test_bf16_weights_load);
    suite_add_tcase(s, ref);
    return s;
}
