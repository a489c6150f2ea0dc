/*
 * test_tmole.c - the "tmole" suite: TMoLE (§4.2, eq. 1-2) on a tiny decoder.
 *
 * Finite differences (check_util.h) over every adapter tensor - each A_j, B_j,
 * the router layers and the task-embedding table - in both passes, with and
 * without dropout and with a hidden router layer; the mask of eq. (1) by hand;
 * LoRA (N = 1, no router) against W0 + (alpha/r) B A folded into the backbone;
 * and the save/load round trip.  A 2% error in the router's or an expert's
 * backward fails the finite-difference checks.  The fast adapter kernels
 * (stacked experts, vectorised dropout) are checked against their plain twins.
 */
#include "check_util.h"
#include "recfound.h"

static void tiny_model(Model *m) {
    Config cfg;
    config_preset(&cfg, "tiny", 64);
    cfg.hidden_size = 32; cfg.intermediate_size = 48; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.head_dim = 8;
    ck_assert_int_eq(model_alloc(m, &cfg), 0);
    model_init_random(m, 7);
    for (size_t i = 0; i < m->total; i++) m->params[i] *= 5.0f;  /* 0.1 std */
    for (int i = 0; i < m->n_params; i++)
        if (m->spec[i].ndim == 1)
            for (size_t j = 0; j < m->spec[i].numel; j++) m->params[m->spec[i].offset + j] = 1.0f;
}

/* Adapters with B != 0 (B = 0 at init would make every other gradient vanish). */
static void tiny_tmole(Tmole *t, const Model *m, const TmoleConfig *c) {
    ck_assert_msg(tmole_alloc(t, c, &m->cfg) == 0, "%s", rf_last_error());
    tmole_init(t, 11);
    Rng r;
    rng_seed(&r, 12);
    for (int i = 0; i < t->n_sites; i++) {
        const TmoleSite *s = &t->site[i];
        if (!s->in) continue;
        for (int j = 0; j < tmole_n_experts(c); j++)
            for (int k = 0; k < s->out * c->rank; k++) t->params[s->B[j] + k] = 0.3f * rng_normal(&r);
        /* Hidden router units biased to +-1, far from the ReLU's kink (|W e| ~ 0.1),
         * so a finite difference never straddles it; half the units stay off. */
        for (int h = 0; h < c->n_hidden; h++)
            for (int k = 0; k < c->hidden[h]; k++) t->params[s->hb[h] + k] = k % 2 ? -1.0f : 1.0f;
    }
}

static void small_config(TmoleConfig *c) {
    tmole_config_default(c);
    c->rank = 4;
    c->alpha = 8;
    c->task_dim = 8;
}

typedef struct {
    Model *m;
    Tmole *t;
    Acts *a;
    Batch b;
    float *w, *probe, *emb, norms[8];
    int from[8];
    AttnMode mode;
} Ctx;

/* The generative branch's loss (causal, token CE) or an embedding objective
 * <pooled embedding, probe> (bidirectional), as the two branches of §4.1 use them. */
static double loss_f(void *p) {
    Ctx *c = p;
    model_forward(c->m, c->t, c->a, &c->b, c->mode);
    if (c->mode == ATTN_CAUSAL) return model_lm_loss(c->m, c->a, &c->b, c->w, NULL, NULL, 0);
    pool_forward(c->emb, c->norms, acts_hidden(c->a), &c->b, c->from, c->m->cfg.hidden_size);
    return dotd(c->emb, c->probe, (size_t)c->b.B * c->m->cfg.hidden_size);
}

static void check_adapter_fd(const TmoleConfig *tc, AttnMode mode, uint64_t dropout_seed) {
    Model m;
    Tmole t;
    tiny_model(&m);
    tiny_tmole(&t, &m, tc);
    int B = 3, T = 6, C = m.cfg.hidden_size, ids[18], len[3] = {6, 5, 3};
    int tasks[3] = {mode == ATTN_CAUSAL ? TASK_SR : TASK_U2I, mode == ATTN_CAUSAL ? TASK_QR : TASK_I2I, TASK_PM};
    for (int i = 0; i < 18; i++) ids[i] = (i * 29 + 3) % 64;
    float w[18], probe[3 * 32], emb[3 * 32];
    Ctx c = {&m, &t, acts_new(&m, B, T), {.B = B, .T = T, .ids = ids, .lengths = len, .tasks = tasks,
             .dropout_seed = dropout_seed}, w, probe, emb, {0}, {1, 0, 1}, mode};
    lm_weights_mean(w, &c.b);
    fill_normal(probe, (size_t)B * C, 1.0f, 5);
    float *g = calloc(t.total, sizeof(float));
    loss_f(&c);
    if (mode == ATTN_CAUSAL) {
        model_lm_loss(&m, c.a, &c.b, w, NULL, NULL, 1);
    } else {
        pool_backward(acts_dhidden(c.a), probe, emb, c.norms, &c.b, c.from, C);
    }
    model_backward(&m, &t, c.a, &c.b, mode, NULL, g);
    int checked = 0;
    for (int i = 0; i < t.n_params; i++) {
        double gn = sqrt(dotd(g + t.spec[i].offset, g + t.spec[i].offset, t.spec[i].numel));
        if (gn == 0) continue;  /* masked experts: checked separately to be exactly zero */
        checked++;
        assert_fd(loss_f, &c, t.params + t.spec[i].offset, t.spec[i].numel, g + t.spec[i].offset, t.spec[i].name);
    }
    ck_assert_int_gt(checked, 0);
    /* The experts closed in this pass get no gradient at all. */
    const TmoleSite *s = tmole_site(&t, 0, PROJ_Q);
    int closed = mode == ATTN_CAUSAL ? 0 : tc->n_emb + tc->n_shared;
    int n_closed = mode == ATTN_CAUSAL ? tc->n_emb : tc->n_gen;
    for (int j = closed; j < closed + n_closed; j++)
        for (int k = 0; k < tc->rank * s->in; k++) ck_assert_float_eq(g[s->A[j] + k], 0.0f);
    free(g);
    acts_free(c.a);
    tmole_free(&t);
    model_free(&m);
}

START_TEST(test_fd_generative_pass) {
    TmoleConfig c;
    small_config(&c);
    check_adapter_fd(&c, ATTN_CAUSAL, 0);
}
END_TEST

START_TEST(test_fd_embedding_pass) {
    TmoleConfig c;
    small_config(&c);
    check_adapter_fd(&c, ATTN_BIDIRECTIONAL, 0);
}
END_TEST

START_TEST(test_fd_dropout_and_hidden_router) {
    TmoleConfig c;
    small_config(&c);
    c.n_hidden = 1;
    c.hidden[0] = 5;
    c.dropout = 0.25f;
    check_adapter_fd(&c, ATTN_CAUSAL, 99);
    check_adapter_fd(&c, ATTN_BIDIRECTIONAL, 77);
}
END_TEST

START_TEST(test_fd_lora_and_code_split) {
    TmoleConfig c;
    small_config(&c);
    tmole_config_lora(&c);
    c.rank = 4;
    c.alpha = 8;
    check_adapter_fd(&c, ATTN_CAUSAL, 0);
    small_config(&c);
    c.n_emb = 3; c.n_shared = 0; c.n_gen = 3;  /* the split the authors' code effectively runs */
    check_adapter_fd(&c, ATTN_BIDIRECTIONAL, 0);
}
END_TEST

/* eq. (1) by hand: a router with zero weight and bias (1, 2, 3, 4, 5, 6) over
 * groups 2/2/2.  Generative pass: experts 0, 1 masked, softmax over logits 3..6:
 * v_j = e^(j+1) / (e^3 + e^4 + e^5 + e^6).  Embedding pass: experts 4, 5 masked.
 * A closed expert's logit, however large, takes no part in the softmax: with
 * biases (1000, 1000, 1, 2, 3, 4) the generative pass gives e^(j-1) / (e^1 +
 * e^2 + e^3 + e^4) to experts 2..5 (subtracting the largest logit over all
 * experts, 1000, would underflow every open one to 0: 0 / 0). */
START_TEST(test_route_mask_by_hand) {
    Model m;
    Tmole t;
    TmoleConfig c;
    small_config(&c);
    tiny_model(&m);
    ck_assert_int_eq(tmole_alloc(&t, &c, &m.cfg), 0);
    const TmoleSite *s = tmole_site(&t, 1, PROJ_O);
    for (int j = 0; j < 6; j++) t.params[s->hb[0] + j] = (float)(j + 1);
    float v[6];
    double zg = exp(3) + exp(4) + exp(5) + exp(6), ze = exp(1) + exp(2) + exp(3) + exp(4);
    tmole_route(&t, s, TASK_SA, ATTN_CAUSAL, v);
    ck_assert_float_eq(v[0], 0.0f);
    ck_assert_float_eq(v[1], 0.0f);
    for (int j = 2; j < 6; j++) ck_assert_float_eq_tol(v[j], exp(j + 1) / zg, 1e-6);
    tmole_route(&t, s, TASK_U2I, ATTN_BIDIRECTIONAL, v);
    for (int j = 0; j < 4; j++) ck_assert_float_eq_tol(v[j], exp(j + 1) / ze, 1e-6);
    ck_assert_float_eq(v[4], 0.0f);
    ck_assert_float_eq(v[5], 0.0f);
    const float big[6] = {1000, 1000, 1, 2, 3, 4};
    for (int j = 0; j < 6; j++) t.params[s->hb[0] + j] = big[j];
    tmole_route(&t, s, TASK_SR, ATTN_CAUSAL, v);
    double z = exp(1) + exp(2) + exp(3) + exp(4);
    ck_assert_float_eq(v[0], 0.0f);
    ck_assert_float_eq(v[1], 0.0f);
    for (int j = 2; j < 6; j++) ck_assert_float_eq_tol(v[j], exp(j - 1) / z, 1e-6);
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* Without a router every open expert counts fully, and the mask still closes
 * the other group's experts: 2/2/2 gives (1, 1, 1, 1, 0, 0) in the embedding
 * pass and (0, 0, 1, 1, 1, 1) in the generative one. */
START_TEST(test_route_without_router_masks) {
    Model m;
    Tmole t;
    TmoleConfig c;
    small_config(&c);
    c.router = 0;
    tiny_model(&m);
    ck_assert_int_eq(tmole_alloc(&t, &c, &m.cfg), 0);
    const TmoleSite *s = tmole_site(&t, 0, PROJ_Q);
    float v[6];
    const float emb[6] = {1, 1, 1, 1, 0, 0}, gen[6] = {0, 0, 1, 1, 1, 1};
    tmole_route(&t, s, TASK_U2I, ATTN_BIDIRECTIONAL, v);
    assert_allclose(v, emb, 6, 0, 0, "no router, embedding pass");
    tmole_route(&t, s, TASK_SA, ATTN_CAUSAL, v);
    assert_allclose(v, gen, 6, 0, 0, "no router, generative pass");
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* The defaults are the authors' (reference/official-code.md: 6 experts split
 * 2/2/2 as in §5.1, r = 16, alpha = 64, dropout 0.1, a [14, 512] task
 * embedding), and tmole_init draws each tensor from the distribution the
 * authors' code uses:
 *   A_j ~ U(-1/sqrt(in), 1/sqrt(in))      (kaiming-uniform with a = sqrt 5)
 *   B_j = 0
 *   router weight ~ N(0, 1),  router bias ~ U(-1/sqrt(512), 1/sqrt(512))
 *   task embedding ~ N(0, 2 / (14 + 512))  (xavier-normal)
 * Checked on the samples: every uniform value inside its bound and the largest
 * |value| within 2% of it (24,576 A values; 48 biases: within 30%), the normal
 * ones' standard deviation within 5% (24,576 router weights, 7,168 task
 * embedding values) and their mean within 0.05 standard deviations. */
static void moments(const float *x, size_t n, double *mean, double *sd, double *maxabs) {
    double s = 0, ss = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        if (fabs(x[i]) > mx) mx = fabs(x[i]);
    }
    for (size_t i = 0; i < n; i++) ss += (x[i] - s / n) * (x[i] - s / n);
    *mean = s / n, *sd = sqrt(ss / n), *maxabs = mx;
}

START_TEST(test_defaults_and_init_distributions) {
    TmoleConfig c;
    tmole_config_default(&c);
    ck_assert_int_eq(c.n_emb, 2);
    ck_assert_int_eq(c.n_shared, 2);
    ck_assert_int_eq(c.n_gen, 2);
    ck_assert_int_eq(c.rank, 16);
    ck_assert_float_eq(c.alpha, 64.0f);
    ck_assert_float_eq(c.dropout, 0.1f);
    ck_assert_int_eq(c.task_dim, 512);
    ck_assert_int_eq(c.router, 1);
    ck_assert_int_eq(c.n_hidden, 0);
    Model m;
    Tmole t;
    tiny_model(&m);
    ck_assert_int_eq(tmole_alloc(&t, &c, &m.cfg), 0);
    tmole_init(&t, 5);
    int in = m.cfg.hidden_size, N = 6, sites = 0;
    size_t nA = 0, nW = 0, nb = 0;
    float *A = malloc(t.total * sizeof(float)), *W = malloc(t.total * sizeof(float));
    float *bias = malloc(t.total * sizeof(float));
    for (int i = 0; i < t.n_sites; i++) {
        const TmoleSite *s = &t.site[i];
        if (!s->in) continue;
        sites++;
        ck_assert_int_eq(s->in, in);
        for (int j = 0; j < N; j++) {
            memcpy(A + nA, t.params + s->A[j], (size_t)c.rank * in * sizeof(float));
            nA += (size_t)c.rank * in;
            for (int k = 0; k < s->out * c.rank; k++) ck_assert_float_eq(t.params[s->B[j] + k], 0.0f);
        }
        memcpy(W + nW, t.params + s->hw[0], (size_t)N * 512 * sizeof(float));
        nW += (size_t)N * 512;
        memcpy(bias + nb, t.params + s->hb[0], (size_t)N * sizeof(float));
        nb += N;
    }
    ck_assert_int_eq(sites, 8);  /* q, k, v, o of 2 layers */
    double mean, sd, mx, bound = 1 / sqrt(in), bbound = 1 / sqrt(512), esd = sqrt(2.0 / (14 + 512));
    moments(A, nA, &mean, &sd, &mx);
    ck_assert_msg(mx <= bound && mx > 0.98 * bound, "A: largest |value| %g, bound %g", mx, bound);
    moments(bias, nb, &mean, &sd, &mx);
    ck_assert_msg(mx <= bbound && mx > 0.7 * bbound, "router bias: largest |value| %g, bound %g", mx, bbound);
    moments(W, nW, &mean, &sd, &mx);
    ck_assert_msg(fabs(sd - 1) < 0.05 && fabs(mean) < 0.05, "router weight: mean %g, sd %g, want 0, 1", mean, sd);
    moments(t.params + t.task_emb, (size_t)14 * 512, &mean, &sd, &mx);
    ck_assert_msg(fabs(sd / esd - 1) < 0.05 && fabs(mean) < 0.05 * esd, "task embedding: mean %g, sd %g, want 0, %g",
                  mean, sd, esd);
    free(A), free(W), free(bias);
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* Dropout is keyed by each row's place in the whole batch (Batch.row_ids), so
 * rows 2 and 3 of a batch of four, run as a batch of their own with row_ids
 * {2, 3}, get the same masks and the same hidden states; with row_ids {0, 1}
 * (what they would be without the key) they get other masks. */
START_TEST(test_dropout_keyed_by_row_in_batch) {
    Model m;
    Tmole t;
    TmoleConfig c;
    small_config(&c);
    c.dropout = 0.3f;
    tiny_model(&m);
    tiny_tmole(&t, &m, &c);
    enum { T = 5, C = 32 };
    int ids[4 * T], len[4] = {5, 5, 4, 5}, tasks[4] = {TASK_SA, TASK_SR, TASK_AG, TASK_PRP};
    for (int i = 0; i < 4 * T; i++) ids[i] = 3 + (i * 7) % 50;
    Batch whole = {.B = 4, .T = T, .ids = ids, .lengths = len, .tasks = tasks, .dropout_seed = 99};
    Acts *a = acts_new(&m, 4, T);
    model_forward(&m, &t, a, &whole, ATTN_CAUSAL);
    float ref[2 * T * C];
    memcpy(ref, acts_hidden(a) + 2 * T * C, sizeof ref);
    int rows[2] = {2, 3}, zero_one[2] = {0, 1};
    Batch part = {.B = 2, .T = T, .ids = ids + 2 * T, .lengths = len + 2, .tasks = tasks + 2, .dropout_seed = 99,
                  .row_ids = rows};
    model_forward(&m, &t, a, &part, ATTN_CAUSAL);
    assert_allclose(acts_hidden(a), ref, 2 * T * C, 0, 0, "rows 2, 3 alone, keyed 2, 3");
    part.row_ids = zero_one;
    model_forward(&m, &t, a, &part, ATTN_CAUSAL);
    int differ = 0;
    for (int i = 0; i < 2 * T * C; i++) differ += acts_hidden(a)[i] != ref[i];
    ck_assert_msg(differ > 0, "keyed 0, 1 gave the same hidden states: the key does not reach the dropout");
    acts_free(a);
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* B = 0 at initialisation: the adapted model is exactly the backbone. */
START_TEST(test_init_is_identity) {
    Model m;
    Tmole t;
    TmoleConfig c;
    small_config(&c);
    tiny_model(&m);
    ck_assert_int_eq(tmole_alloc(&t, &c, &m.cfg), 0);
    tmole_init(&t, 3);
    int ids[8] = {1, 5, 9, 13, 17, 21, 25, 29}, len[2] = {4, 3}, tasks[2] = {TASK_AG, TASK_QR};
    Batch b = {.B = 2, .T = 4, .ids = ids, .lengths = len, .tasks = tasks};
    Acts *a = acts_new(&m, 2, 4);
    size_t n = 8 * m.cfg.hidden_size;
    float *h = malloc(n * 4);
    model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
    memcpy(h, acts_hidden(a), n * 4);
    model_forward(&m, &t, a, &b, ATTN_CAUSAL);
    for (size_t i = 0; i < n; i++) ck_assert_float_eq(acts_hidden(a)[i], h[i]);
    free(h);
    acts_free(a);
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* Folding one task's mixture into the backbone (W0 + sum_j v_j (alpha/r) B_j A_j)
 * gives the same hidden states as running the adapters; with N = 1 and no router
 * this is plain LoRA. */
static void check_fold(TmoleConfig *c, AttnMode mode) {
    Model m, folded;
    Tmole t;
    tiny_model(&m);
    tiny_tmole(&t, &m, c);
    tiny_model(&folded);
    int task = mode == ATTN_CAUSAL ? TASK_PRP : TASK_Q2I;
    for (int l = 0; l < m.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const TmoleSite *s = tmole_site(&t, l, p);
            if (s) tmole_fold(&t, s, task, mode, folded.layer[l * P_PER_LAYER + P_Q + p]);
        }
    int ids[10] = {2, 4, 6, 8, 10, 12, 14, 16, 18, 20}, len[2] = {5, 4}, tasks[2] = {task, task};
    Batch b = {.B = 2, .T = 5, .ids = ids, .lengths = len, .tasks = tasks};
    Acts *a1 = acts_new(&m, 2, 5), *a2 = acts_new(&m, 2, 5);
    model_forward(&m, &t, a1, &b, mode);
    model_forward(&folded, NULL, a2, &b, mode);
    for (int r = 0; r < 2; r++)
        assert_allclose(acts_hidden(a1) + r * 5 * 32, acts_hidden(a2) + r * 5 * 32, (size_t)len[r] * 32, 1e-4, 1e-5,
                        "adapters vs folded weights");
    acts_free(a1);
    acts_free(a2);
    tmole_free(&t);
    model_free(&m);
    model_free(&folded);
}

START_TEST(test_fold_equals_adapters) {
    TmoleConfig c;
    small_config(&c);
    check_fold(&c, ATTN_CAUSAL);
    check_fold(&c, ATTN_BIDIRECTIONAL);
    tmole_config_lora(&c);
    c.rank = 4;
    check_fold(&c, ATTN_CAUSAL);
}
END_TEST

START_TEST(test_save_load_round_trip) {
    Model m;
    Tmole t, u;
    TmoleConfig c;
    small_config(&c);
    c.n_hidden = 1;
    c.hidden[0] = 3;
    c.targets = (1 << PROJ_Q) | (1 << PROJ_V);
    tiny_model(&m);
    tiny_tmole(&t, &m, &c);
    char dir[] = "/tmp/rftmoleXXXXXX", cmd[64];
    ck_assert(mkdtemp(dir) != NULL);
    ck_assert_msg(tmole_save(&t, dir) == 0, "%s", rf_last_error());
    ck_assert_msg(tmole_load(&u, dir, &m.cfg) == 0, "%s", rf_last_error());
    ck_assert_int_eq(u.total, t.total);
    ck_assert_int_eq(u.cfg.targets, c.targets);
    ck_assert_int_eq(u.cfg.hidden[0], 3);
    ck_assert(memcmp(u.params, t.params, t.total * sizeof(float)) == 0);
    ck_assert_str_eq(t.spec[0].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.0.weight");
    ck_assert_str_eq(t.spec[t.n_params - 1].name, "task_embedding.weight");
    tmole_free(&u);
    /* a model of another width does not fit these adapters */
    Config other = m.cfg;
    other.hidden_size = 48;
    other.head_dim = 12;
    ck_assert_int_ne(tmole_load(&u, dir, &other), 0);
    ck_assert_msg(strstr(rf_last_error(), "shape") != NULL, "%s", rf_last_error());
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    tmole_free(&t);
    model_free(&m);
}
END_TEST

/* ------------------------------------------------ against the PyTorch reference */

/* tests/reference/make_tmole_fixtures.py is an independent float64 PyTorch
 * implementation of TMoLE, InfoNCE and the two branches (semantics in
 * tests/reference/README.md).  Tensors compare by normalised error <= 1e-8, as
 * in the backbone suite; a reference tensor that is exactly zero (masked
 * experts, unused task rows) must come out exactly zero here too. */
#define REF_NERR 1e-8

static void expect_tensor(StFile *f, const char *name, const float *got, size_t n, const char *what) {
    const StTensor *t = st_find(f, name);
    ck_assert_msg(t != NULL, "expected.safetensors lacks %s", name);
    ck_assert_msg((size_t)t->numel == n, "%s: %lld values, want %zu", name, (long long)t->numel, n);
    float *want = malloc(n * sizeof(float));
    ck_assert(st_read_f32(f, t, want) == 0);
    double ref = dotd(want, want, n);
    if (ref == 0) {
        for (size_t i = 0; i < n; i++) ck_assert_msg(got[i] == 0, "%s (%s): [%zu] = %g, want exactly 0", what, name, i, got[i]);
    } else {
        double e = nerr(got, want, n);
        ck_assert_msg(e <= REF_NERR, "%s (%s): normalised error %.3g > %.1g", what, name, e, REF_NERR);
    }
    free(want);
}

static int json_ints(const Json *arr, int *out, int max) {
    int n = 0;
    for (size_t i = 0; i < arr->count && n < max; i++) {
        const Json *v = &arr->items[i];
        if (v->type == JSON_ARRAY) n += json_ints(v, out + n, max - n);
        else out[n++] = (int)v->number;
    }
    return n;
}

static void check_tmole_reference(const char *name) {
    char path[512];
    Model m;
    Tmole t;
    snprintf(path, sizeof path, "tests/fixtures/tmole/%s/model", name);
    ck_assert_msg(model_load(&m, path) == 0, "%s", rf_last_error());
    snprintf(path, sizeof path, "tests/fixtures/tmole/%s/adapter", name);
    ck_assert_msg(tmole_load(&t, path, &m.cfg) == 0, "%s", rf_last_error());
    snprintf(path, sizeof path, "tests/fixtures/tmole/%s/batch.json", name);
    char *text;
    size_t len;
    Json bj;
    ck_assert(rf_read_file(path, &text, &len) == 0 && json_parse(&bj, text, len, path) == 0);
    free(text);
    StFile ex;
    snprintf(path, sizeof path, "tests/fixtures/tmole/%s/expected.safetensors", name);
    ck_assert_msg(st_open(&ex, path) == 0, "%s", rf_last_error());
    int C = m.cfg.hidden_size, N = tmole_n_experts(&t.cfg);
    float lambda = (float)json_get(&bj, "lambda_gen")->number, tau = (float)json_get(&bj, "tau")->number;

    /* routing, eq. (1), for every site and task row in both passes */
    float *route = malloc((size_t)t.n_sites * TMOLE_TASK_ROWS * N * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        AttnMode mode = pass ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
        for (int i = 0; i < t.n_sites; i++)
            for (int k = 0; k < TMOLE_TASK_ROWS; k++) tmole_route(&t, &t.site[i], k, mode, route + ((size_t)i * TMOLE_TASK_ROWS + k) * N);
        expect_tensor(&ex, pass ? "route_emb" : "route_gen", route, (size_t)t.n_sites * TMOLE_TASK_ROWS * N, "routing");
    }
    free(route);

    /* the generative branch: answer tokens [P_b, len_b) predicted from t = P_b - 1 */
    const Json *gj = json_get(&bj, "gen");
    int gids[256], glen[16], gprompt[16], gtask[16];
    int B = json_ints(json_get(gj, "lengths"), glen, 16);
    json_ints(json_get(gj, "prompt_lengths"), gprompt, 16);
    json_ints(json_get(gj, "tasks"), gtask, 16);
    int T = json_ints(json_get(gj, "ids"), gids, 256) / B;
    Batch gb = {.B = B, .T = T, .ids = gids, .lengths = glen, .tasks = gtask};
    float w[256];
    int count = 0;
    for (int r = 0; r < B; r++) count += glen[r] - gprompt[r];
    for (int r = 0; r < B; r++)
        for (int x = 0; x < T; x++) w[r * T + x] = (x >= gprompt[r] - 1 && x < glen[r] - 1) ? 1.0f / count : 0.0f;
    Acts *a = acts_new(&m, 8, 10);
    float *g_gen = calloc(t.total, 4), *g_emb = calloc(t.total, 4), *g_all = calloc(t.total, 4);
    model_forward(&m, &t, a, &gb, ATTN_CAUSAL);
    expect_tensor(&ex, "gen_hidden", acts_hidden(a), (size_t)B * T * C, "generative hidden states");
    float lg = (float)model_lm_loss(&m, a, &gb, w, NULL, NULL, 1);
    model_backward(&m, &t, a, &gb, ATTN_CAUSAL, NULL, g_gen);
    expect_tensor(&ex, "gen_loss", &lg, 1, "L_gen");

    /* the embedding branch: rows [queries | positives | negatives], InfoNCE */
    const Json *ej = json_get(&bj, "emb");
    int eids[256], elen[16], efrom[16], etask[16], Q = (int)json_get(ej, "queries")->number;
    int R = json_ints(json_get(ej, "lengths"), elen, 16);
    json_ints(json_get(ej, "pool_from"), efrom, 16);
    json_ints(json_get(ej, "tasks"), etask, 16);
    int TE = json_ints(json_get(ej, "ids"), eids, 256) / R;
    Batch eb = {.B = R, .T = TE, .ids = eids, .lengths = elen, .tasks = etask};
    float *emb = malloc((size_t)R * C * 4), *demb = calloc((size_t)R * C, 4), norms[16];
    model_forward(&m, &t, a, &eb, ATTN_BIDIRECTIONAL);
    pool_forward(emb, norms, acts_hidden(a), &eb, efrom, C);
    expect_tensor(&ex, "emb", emb, (size_t)R * C, "embeddings");
    float le = (float)infonce(demb, demb + (size_t)Q * C, emb, emb + (size_t)Q * C, Q, R - Q, C, tau);
    expect_tensor(&ex, "emb_loss", &le, 1, "L_emb");
    pool_backward(acts_dhidden(a), demb, emb, norms, &eb, efrom, C);
    model_backward(&m, &t, a, &eb, ATTN_BIDIRECTIONAL, NULL, g_emb);
    float total = le + lambda * lg;
    expect_tensor(&ex, "loss", &total, 1, "L = L_emb + lambda L_gen");

    char key[160];
    for (size_t i = 0; i < t.total; i++) g_all[i] = g_emb[i] + lambda * g_gen[i];
    for (int i = 0; i < t.n_params; i++) {
        const ParamSpec *p = &t.spec[i];
        snprintf(key, sizeof key, "grad_gen.%s", p->name);
        expect_tensor(&ex, key, g_gen + p->offset, p->numel, "dL_gen");
        snprintf(key, sizeof key, "grad_emb.%s", p->name);
        expect_tensor(&ex, key, g_emb + p->offset, p->numel, "dL_emb");
        snprintf(key, sizeof key, "grad.%s", p->name);
        expect_tensor(&ex, key, g_all + p->offset, p->numel, "dL");
    }
    free(emb); free(demb); free(g_gen); free(g_emb); free(g_all);
    acts_free(a);
    st_close(&ex);
    json_free(&bj);
    tmole_free(&t);
    model_free(&m);
}

START_TEST(test_reference_tmole_222) { check_tmole_reference("tmole_222"); }
END_TEST
START_TEST(test_reference_tmole_303_hidden) { check_tmole_reference("tmole_303_hidden"); }
END_TEST
START_TEST(test_reference_lora) { check_tmole_reference("lora"); }
END_TEST

/* InfoNCE on its own: loss and the gradients with respect to the unit embeddings. */
START_TEST(test_reference_infonce) {
    StFile f;
    ck_assert_msg(st_open(&f, "tests/fixtures/tmole/infonce.safetensors") == 0, "%s", rf_last_error());
    float q[3 * 16], p[6 * 16], tau, dq[3 * 16] = {0}, dp[6 * 16] = {0};
    ck_assert(st_read_f32(&f, st_find(&f, "q"), q) == 0);
    ck_assert(st_read_f32(&f, st_find(&f, "p"), p) == 0);
    ck_assert(st_read_f32(&f, st_find(&f, "tau"), &tau) == 0);
    float loss = (float)infonce(dq, dp, q, p, 3, 6, 16, tau);
    expect_tensor(&f, "loss", &loss, 1, "InfoNCE");
    expect_tensor(&f, "dq", dq, 3 * 16, "InfoNCE dq");
    expect_tensor(&f, "dp", dp, 6 * 16, "InfoNCE dp");
    st_close(&f);
}
END_TEST

/* InfoNCE by hand: one query, two passages with q.p = 0.02 and 0 at tau = 0.02:
 * scores (1, 0), loss = log(1 + e^-1). */
START_TEST(test_infonce_hand) {
    float q[2] = {1, 0}, p[4] = {0.02f, 0.99979998f, 0, 1};
    double loss = infonce(NULL, NULL, q, p, 1, 2, 2, 0.02f);
    ck_assert_double_eq_tol(loss, log(1 + exp(-1.0)), 1e-6);
}
END_TEST

/* The fast dropout decisions (eight hashes per AVX-512 step) are the plain
 * twin's bit for bit, for any length and key (keys not a multiple of 4 take
 * the scalar path), and keep about 1 - p of the elements. */
START_TEST(test_dropout_bits_fast_equals_plain) {
    static const int lens[] = {1, 5, 31, 32, 33, 64, 100, 256};
    static const size_t keys[] = {0, 4, 6, 36u * 5 + (7u << 16) * 36, ((size_t)3 << 40) + 256};
    static const float ps[] = {0.0f, 0.1f, 0.5f, 0.9f};
    uint32_t a[9], b[9];
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            for (size_t q = 0; q < sizeof ps / sizeof ps[0]; q++) {
                memset(a, 0xAB, sizeof a);
                memset(b, 0xCD, sizeof b);
                tmole_dropout_bits(a, lens[l], 0x1234567ULL + k, 3, (int)l % 6, keys[k], ps[q]);
                tmole_dropout_bits_ref(b, lens[l], 0x1234567ULL + k, 3, (int)l % 6, keys[k], ps[q]);
                ck_assert_msg(memcmp(a, b, (size_t)(lens[l] + 31) / 32 * sizeof(uint32_t)) == 0,
                              "keep bits differ: n %d key %zu p %g", lens[l], keys[k], ps[q]);
            }
    long kept = 0;
    for (int row = 0; row < 256; row++) {
        tmole_dropout_bits(a, 256, 99, 1, 2, (size_t)row * 256, 0.1f);
        for (int w = 0; w < 8; w++) kept += __builtin_popcount(a[w]);
    }
    ck_assert_msg(fabs(kept / 65536.0 - 0.9) < 0.01, "kept %.4f of the elements at p = 0.1", kept / 65536.0);
}
END_TEST

/* tmole_forward / tmole_backward (stacked experts, vectorised dropout) equal
 * their row-by-row twins on every projection of a layer, in both passes, with
 * and without dropout, for widths that fill whole vectors and that do not. */
static void check_tmole_twins(int heads, int kv_heads, int head_dim, int rank) {
    Config mc;
    memset(&mc, 0, sizeof mc);
    mc.n_layers = 1; mc.n_heads = heads; mc.n_kv_heads = kv_heads; mc.head_dim = head_dim;
    mc.hidden_size = heads * head_dim;
    TmoleConfig tc;
    small_config(&tc);
    tc.rank = rank;
    Tmole t;
    ck_assert_msg(tmole_alloc(&t, &tc, &mc) == 0, "%s", rf_last_error());
    tmole_init(&t, 21);
    fill_normal(t.params, t.total, 0.3f, 22);
    int B = 3, T = 7, rows = B * T, len[3] = {7, 4, 6}, row_ids[3] = {5, 0, 9};
    int tasks_emb[3] = {TASK_U2I, TASK_Q2I, TASK_U2I}, tasks_gen[3] = {TASK_SR, TASK_PM, TASK_QR};
    int ids[21] = {0};
    for (int pass = 0; pass < 2; pass++)
        for (int drop = 0; drop < 2; drop++) {
            AttnMode mode = pass ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
            Batch b = {.B = B, .T = T, .ids = ids, .lengths = len, .tasks = pass ? tasks_emb : tasks_gen,
                       .dropout_seed = drop ? 0xC0FFEEULL : 0, .row_ids = row_ids};
            TmoleActs *fast = tmole_acts_new(&t, B, T), *plain = tmole_acts_new(&t, B, T);
            ck_assert(fast && plain);
            tmole_acts_begin(fast, &t, &b, mode);
            tmole_acts_begin(plain, &t, &b, mode);
            float *g1 = calloc(t.total, sizeof(float)), *g2 = calloc(t.total, sizeof(float));
            for (int p = 0; p < N_PROJ; p++) {
                const TmoleSite *s = tmole_site(&t, 0, p);
                size_t nx = (size_t)rows * s->in, ny = (size_t)rows * s->out;
                float *x = malloc(nx * sizeof(float)), *dy = malloc(ny * sizeof(float));
                float *y1 = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float));
                float *dx1 = malloc(nx * sizeof(float)), *dx2 = malloc(nx * sizeof(float));
                fill_normal(x, nx, 1.0f, 30 + p);
                fill_normal(dy, ny, 1.0f, 40 + p);
                fill_normal(y1, ny, 1.0f, 50 + p);
                fill_normal(dx1, nx, 1.0f, 60 + p);
                memcpy(y2, y1, ny * sizeof(float));
                memcpy(dx2, dx1, nx * sizeof(float));
                tmole_forward(&t, fast, s, y1, x, &b, mode);
                tmole_forward_ref(&t, plain, s, y2, x, &b, mode);
                assert_allclose(y1, y2, ny, 1e-4, 1e-5, "tmole forward");
                tmole_backward(&t, fast, s, dx1, g1, dy, x, &b, mode);
                tmole_backward_ref(&t, plain, s, dx2, g2, dy, x, &b, mode);
                assert_allclose(dx1, dx2, nx, 1e-4, 1e-5, "tmole backward dx");
                free(x); free(dy); free(y1); free(y2); free(dx1); free(dx2);
            }
            tmole_backward_router(&t, fast, g1, mode);
            tmole_backward_router(&t, plain, g2, mode);
            for (int i = 0; i < t.n_params; i++)
                assert_allclose(g1 + t.spec[i].offset, g2 + t.spec[i].offset, t.spec[i].numel, 1e-4, 1e-5,
                                t.spec[i].name);
            ck_assert_double_gt(dotd(g2, g2, t.total), 0);
            free(g1); free(g2);
            tmole_acts_free(fast);
            tmole_acts_free(plain);
        }
    tmole_free(&t);
}

START_TEST(test_fast_equals_plain_r16_in64) { check_tmole_twins(4, 2, 16, 16); }
END_TEST
START_TEST(test_fast_equals_plain_r5_in36) { check_tmole_twins(4, 2, 9, 5); }
END_TEST
START_TEST(test_fast_equals_plain_r8_in30) { check_tmole_twins(3, 1, 10, 8); }
END_TEST

Suite *tmole_suite(void) {
    Suite *s = suite_create("tmole");
    TCase *fd = tcase_create("finite_differences");
    tcase_set_timeout(fd, 120);
    tcase_add_test(fd, test_fd_generative_pass);
    tcase_add_test(fd, test_fd_embedding_pass);
    tcase_add_test(fd, test_fd_dropout_and_hidden_router);
    tcase_add_test(fd, test_fd_lora_and_code_split);
    suite_add_tcase(s, fd);
    TCase *by_hand = tcase_create("routing_and_folding");
    tcase_add_test(by_hand, test_route_mask_by_hand);
    tcase_add_test(by_hand, test_route_without_router_masks);
    tcase_add_test(by_hand, test_defaults_and_init_distributions);
    tcase_add_test(by_hand, test_dropout_keyed_by_row_in_batch);
    tcase_add_test(by_hand, test_init_is_identity);
    tcase_add_test(by_hand, test_fold_equals_adapters);
    tcase_add_test(by_hand, test_save_load_round_trip);
    tcase_add_test(by_hand, test_infonce_hand);
    suite_add_tcase(s, by_hand);
    TCase *ref = tcase_create("pytorch_reference");
    tcase_set_timeout(ref, 60);
    tcase_add_test(ref, test_reference_tmole_222);
    tcase_add_test(ref, test_reference_tmole_303_hidden);
    tcase_add_test(ref, test_reference_lora);
    tcase_add_test(ref, test_reference_infonce);
    suite_add_tcase(s, ref);
    TCase *twins = tcase_create("fast_equals_plain");
    tcase_set_timeout(twins, 60);
    tcase_add_test(twins, test_dropout_bits_fast_equals_plain);
    tcase_add_test(twins, test_fast_equals_plain_r16_in64);
    tcase_add_test(twins, test_fast_equals_plain_r5_in36);
    tcase_add_test(twins, test_fast_equals_plain_r8_in30);
    suite_add_tcase(s, twins);
    return s;
}
