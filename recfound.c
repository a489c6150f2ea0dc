/*
 * recfound.c - the `recfound` command: one sub-command per verb.
 *
 *   recfound init      --preset NAME --out DIR          a fresh, seeded backbone
 *   recfound score     --model DIR --ids FILE           mean next-token CE per sequence
 *   recfound embed     --model DIR --ids FILE           pooled, L2-normalised embeddings
 *   recfound pretrain  --model DIR --ids FILE ...       full-parameter causal-LM steps
 *   recfound tokenizer encode|decode|train ...          tokenizer.c
 *   recfound synth | build-data                         data.c
 *   recfound bench-train | bench-matmul                 speed measurements
 *
 * Every sub-command answers --help.  Errors print one line and exit 1.
 */
#include "recfound.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------- argument parsing */

typedef struct {
    const char *name;   /* "--model" */
    const char *value;  /* NULL when absent; "1" for a present switch */
    int is_switch;
    const char *help;
} Opt;

/* Fill opts from argv[1..]; unknown options are an error.  Returns 1 for --help. */
static int parse_opts(int argc, char **argv, Opt *opts, int n, const char *usage) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: recfound %s %s\n\n", argv[0], usage);
            for (int k = 0; k < n; k++) printf("  %-18s %s\n", opts[k].name, opts[k].help);
            return 1;
        }
        int found = 0;
        for (int k = 0; k < n && !found; k++) {
            if (strcmp(argv[i], opts[k].name)) continue;
            found = 1;
            if (opts[k].is_switch) {
                opts[k].value = "1";
            } else {
                if (i + 1 >= argc) return rf_error("%s: option %s needs a value", argv[0], argv[i]);
                opts[k].value = argv[++i];
            }
        }
        if (!found) return rf_error("%s: unknown option '%s' (see recfound %s --help)", argv[0], argv[i], argv[0]);
    }
    return 0;
}

static const char *opt(const Opt *opts, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(opts[k].name, name)) return opts[k].value;
    return NULL;
}

static int need(const char *cmd, const char *name, const char *value) {
    if (value) return 0;
    return rf_error("%s: missing required option %s (see recfound %s --help)", cmd, name, cmd);
}

/* Parse a whole-number option into [lo, hi]. */
static int int_opt(const char *cmd, const char *name, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < lo || v > hi)
        return rf_error("%s: %s must be a whole number in [%ld, %ld], got '%s'", cmd, name, lo, hi, s);
    *out = v;
    return 0;
}

static int float_opt(const char *cmd, const char *name, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end || !isfinite(v)) return rf_error("%s: %s must be a number, got '%s'", cmd, name, s);
    *out = v;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* ------------------------------------------------------------ id files */

/* One sequence of token ids per line, whitespace separated. */
typedef struct {
    int n;         /* sequences */
    int *len;      /* [n] */
    int **ids;     /* [n][len] */
    int max_len;
} IdFile;

static void idfile_free(IdFile *f) {
    for (int i = 0; i < f->n; i++) free(f->ids[i]);
    free(f->ids);
    free(f->len);
    memset(f, 0, sizeof *f);
}

static int idfile_read(IdFile *f, const char *path, int vocab, int min_len) {
    memset(f, 0, sizeof *f);
    char *text;
    size_t size;
    if (rf_read_file(path, &text, &size)) return -1;
    int cap = 0, line = 0;
    char *p = text;
    while (*p) {
        line++;
        char *eol = strchr(p, '\n');
        if (eol) *eol = 0;
        int n = 0, c = 16;
        int *row = malloc(c * sizeof(int));
        char *s = p;
        while (row) {
            while (*s == ' ' || *s == '\t' || *s == '\r') s++;
            if (!*s) break;
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || (*end && *end != ' ' && *end != '\t' && *end != '\r')) {
                free(row);
                free(text);
                idfile_free(f);
                return rf_error("%s: line %d: '%.20s' is not a token id", path, line, s);
            }
            if (v < 0 || v >= vocab) {
                free(row);
                free(text);
                idfile_free(f);
                return rf_error("%s: line %d: token id %ld is outside the vocabulary [0, %d)", path, line, v, vocab);
            }
            if (n == c) {
                int *r2 = realloc(row, (c *= 2) * sizeof(int));
                if (!r2) { free(row); row = NULL; break; }
                row = r2;
            }
            row[n++] = (int)v;
            s = end;
        }
        if (!row) { free(text); idfile_free(f); return rf_error("%s: out of memory", path); }
        if (n == 0 && !eol) { free(row); break; } /* trailing text-free end of file */
        if (n < min_len) {
            free(row);
            free(text);
            idfile_free(f);
            return rf_error("%s: line %d: %d token(s); this command needs at least %d", path, line, n, min_len);
        }
        if (f->n == cap) {
            cap = cap ? 2 * cap : 16;
            int **i2 = realloc(f->ids, cap * sizeof *i2);
            int *l2 = realloc(f->len, cap * sizeof *l2);
            if (i2) f->ids = i2;
            if (l2) f->len = l2;
            if (!i2 || !l2) { free(row); free(text); idfile_free(f); return rf_error("%s: out of memory", path); }
        }
        f->ids[f->n] = row;
        f->len[f->n++] = n;
        if (n > f->max_len) f->max_len = n;
        if (!eol) break;
        p = eol + 1;
    }
    free(text);
    if (f->n == 0) return rf_error("%s: no sequences", path);
    return 0;
}

/* Right-pad rows [r0, r0+B) of f into ids/lengths (pad id 0) with T = their longest. */
static Batch make_batch(const IdFile *f, int r0, int B, int *ids, int *lengths) {
    Batch b = {.B = B, .T = 0, .ids = ids, .lengths = lengths};
    for (int r = 0; r < B; r++)
        if (f->len[r0 + r] > b.T) b.T = f->len[r0 + r];
    for (int r = 0; r < B; r++) {
        lengths[r] = f->len[r0 + r];
        for (int t = 0; t < b.T; t++) ids[r * b.T + t] = t < lengths[r] ? f->ids[r0 + r][t] : 0;
    }
    return b;
}

/* --------------------------------------------------------------- init */

static int cmd_init(int argc, char **argv) {
    Opt o[] = {{"--preset", NULL, 0, "tiny | small | mistral-7b (see weights/README.md)"},
               {"--out", NULL, 0, "model folder to write (config.json + model.safetensors)"},
               {"--vocab", NULL, 0, "vocabulary size (default: the preset's; match your tokenizer)"},
               {"--seed", NULL, 0, "random seed (default 42)"}};
    int n = sizeof o / sizeof o[0], r = parse_opts(argc, argv, o, n, "--preset NAME --out DIR [--vocab N] [--seed S]");
    if (r) return r > 0 ? 0 : -1;
    const char *preset = opt(o, n, "--preset"), *out = opt(o, n, "--out");
    if (need("init", "--preset", preset) || need("init", "--out", out)) return -1;
    long vocab = 0, seed = 42;
    if (opt(o, n, "--vocab") && int_opt("init", "--vocab", opt(o, n, "--vocab"), 3, 1 << 24, &vocab)) return -1;
    if (opt(o, n, "--seed") && int_opt("init", "--seed", opt(o, n, "--seed"), 0, 0x7fffffffL, &seed)) return -1;
    Config c;
    Model m;
    if (config_preset(&c, preset, (int)vocab)) return -1;
    if (model_alloc(&m, &c)) return -1;
    model_init_random(&m, (uint64_t)seed);
    int rc = model_save(&m, out);
    if (!rc) fprintf(stderr, "init: wrote %s (%s, %.2fM parameters)\n", out, preset, m.total / 1e6);
    model_free(&m);
    return rc;
}

/* -------------------------------------------------------- score, embed */

#define CHUNK 8  /* sequences per forward pass */

static int cmd_score(int argc, char **argv) {
    Opt o[] = {{"--model", NULL, 0, "model folder (Hugging Face layout)"},
               {"--ids", NULL, 0, "file with one sequence of token ids per line"},
               {"--bidirectional", NULL, 1, "attend in both directions (embedding-pass attention)"}};
    int n = sizeof o / sizeof o[0], r = parse_opts(argc, argv, o, n, "--model DIR --ids FILE [--bidirectional]");
    if (r) return r > 0 ? 0 : -1;
    const char *mdir = opt(o, n, "--model"), *idp = opt(o, n, "--ids");
    if (need("score", "--model", mdir) || need("score", "--ids", idp)) return -1;
    AttnMode mode = opt(o, n, "--bidirectional") ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
    Model m;
    IdFile f;
    if (model_load(&m, mdir)) return -1;
    if (idfile_read(&f, idp, m.cfg.vocab_size, 2)) { model_free(&m); return -1; }
    int *ids = malloc((size_t)CHUNK * f.max_len * sizeof(int)), lengths[CHUNK];
    float *w = malloc((size_t)CHUNK * f.max_len * sizeof(float));
    float *tl = malloc((size_t)CHUNK * f.max_len * sizeof(float));
    Acts *a = NULL;
    int rc = (ids && w && tl) ? 0 : rf_error("score: out of memory");
    for (int r0 = 0; !rc && r0 < f.n; r0 += CHUNK) {
        int B = f.n - r0 < CHUNK ? f.n - r0 : CHUNK;
        Batch b = make_batch(&f, r0, B, ids, lengths);
        if ((rc = acts_ensure(&a, &m, B, b.T))) break;
        for (int i = 0; i < B * b.T; i++) w[i] = (i % b.T) < lengths[i / b.T] - 1;
        model_forward(&m, NULL, a, &b, mode);
        model_lm_loss(&m, a, &b, w, tl, NULL, 0);
        for (int i = 0; i < B; i++) {
            double s = 0;
            for (int t = 0; t < lengths[i] - 1; t++) s += tl[i * b.T + t];
            printf("%.9g\n", s / (lengths[i] - 1));
        }
    }
    acts_free(a);
    free(ids); free(w); free(tl);
    idfile_free(&f);
    model_free(&m);
    return rc;
}

static int cmd_embed(int argc, char **argv) {
    Opt o[] = {{"--model", NULL, 0, "model folder (Hugging Face layout)"},
               {"--ids", NULL, 0, "file with one sequence of token ids per line"},
               {"--pool-from", NULL, 0, "first position pooled (instruction prefix length; default 0)"}};
    int n = sizeof o / sizeof o[0], r = parse_opts(argc, argv, o, n, "--model DIR --ids FILE [--pool-from K]");
    if (r) return r > 0 ? 0 : -1;
    const char *mdir = opt(o, n, "--model"), *idp = opt(o, n, "--ids");
    if (need("embed", "--model", mdir) || need("embed", "--ids", idp)) return -1;
    long from = 0;
    if (opt(o, n, "--pool-from") && int_opt("embed", "--pool-from", opt(o, n, "--pool-from"), 0, 1 << 30, &from))
        return -1;
    Model m;
    IdFile f;
    if (model_load(&m, mdir)) return -1;
    if (idfile_read(&f, idp, m.cfg.vocab_size, (int)from + 1)) { model_free(&m); return -1; }
    int C = m.cfg.hidden_size, *ids = malloc((size_t)CHUNK * f.max_len * sizeof(int)), lengths[CHUNK], froms[CHUNK];
    float *emb = malloc((size_t)CHUNK * C * sizeof(float)), norms[CHUNK];
    Acts *a = NULL;
    int rc = (ids && emb) ? 0 : rf_error("embed: out of memory");
    for (int i = 0; i < CHUNK; i++) froms[i] = (int)from;
    for (int r0 = 0; !rc && r0 < f.n; r0 += CHUNK) {
        int B = f.n - r0 < CHUNK ? f.n - r0 : CHUNK;
        Batch b = make_batch(&f, r0, B, ids, lengths);
        if ((rc = acts_ensure(&a, &m, B, b.T))) break;
        model_forward(&m, NULL, a, &b, ATTN_BIDIRECTIONAL);
        pool_forward(emb, norms, acts_hidden(a), &b, froms, C);
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++) printf("%.9g%c", emb[i * C + c], c + 1 < C ? ' ' : '\n');
    }
    acts_free(a);
    free(ids); free(emb);
    idfile_free(&f);
    model_free(&m);
    return rc;
}

/* ------------------------------------------------------------ pretrain */

/* One optimisation step on all rows of f: the loss is the mean CE over every
 * predicted token of the batch, accumulated over micro-batches of `micro` rows
 * (per-token weights 1/total make the accumulated gradient exact). */
static double batch_grad(const Model *m, Acts **a, const IdFile *f, int micro, float *grads, long *tokens) {
    long total = 0;
    for (int i = 0; i < f->n; i++) total += f->len[i] - 1;
    *tokens = total;
    int *ids = malloc((size_t)micro * f->max_len * sizeof(int)), *lengths = malloc(micro * sizeof(int));
    float *w = malloc((size_t)micro * f->max_len * sizeof(float));
    double loss = 0;
    if (!ids || !lengths || !w) { loss = NAN; rf_error("pretrain: out of memory"); }
    for (int r0 = 0; ids && lengths && w && r0 < f->n; r0 += micro) {
        int B = f->n - r0 < micro ? f->n - r0 : micro;
        Batch b = make_batch(f, r0, B, ids, lengths);
        if (acts_ensure(a, m, B, b.T)) { loss = NAN; break; }
        for (int i = 0; i < B * b.T; i++) w[i] = (i % b.T) < lengths[i / b.T] - 1 ? 1.0f / total : 0.0f;
        model_forward(m, NULL, *a, &b, ATTN_CAUSAL);
        loss += model_lm_loss(m, *a, &b, w, NULL, grads, 1);
        model_backward(m, NULL, *a, &b, ATTN_CAUSAL, grads, NULL);
    }
    free(ids); free(lengths); free(w);
    return loss;
}

static int cmd_pretrain(int argc, char **argv) {
    Opt o[] = {{"--model", NULL, 0, "model folder to start from"},
               {"--ids", NULL, 0, "token ids, one sequence per line; every step trains on all of them"},
               {"--steps", NULL, 0, "optimisation steps (default 1)"},
               {"--lr", NULL, 0, "learning rate (default 1e-3)"},
               {"--optimizer", NULL, 0, "sgd | adamw (default adamw)"},
               {"--weight-decay", NULL, 0, "AdamW decoupled weight decay (default 0)"},
               {"--clip", NULL, 0, "global grad-norm clip, 0 = off (default 0)"},
               {"--warmup", NULL, 0, "linear warmup steps, then linear decay (default 0 = constant lr)"},
               {"--micro", NULL, 0, "rows per micro-batch (gradient accumulation; default 8)"},
               {"--out", NULL, 0, "model folder to write"}};
    int n = sizeof o / sizeof o[0],
        r = parse_opts(argc, argv, o, n, "--model DIR --ids FILE --steps N --lr X --optimizer sgd|adamw --out DIR");
    if (r) return r > 0 ? 0 : -1;
    const char *mdir = opt(o, n, "--model"), *idp = opt(o, n, "--ids"), *out = opt(o, n, "--out");
    const char *optim = opt(o, n, "--optimizer") ? opt(o, n, "--optimizer") : "adamw";
    if (need("pretrain", "--model", mdir) || need("pretrain", "--ids", idp) || need("pretrain", "--out", out))
        return -1;
    if (strcmp(optim, "sgd") && strcmp(optim, "adamw"))
        return rf_error("pretrain: --optimizer must be sgd or adamw, got '%s'", optim);
    long steps = 1, micro = 8, warmup = 0;
    double lr = 1e-3, wd = 0, clip = 0;
    if ((opt(o, n, "--steps") && int_opt("pretrain", "--steps", opt(o, n, "--steps"), 0, 100000000, &steps)) ||
        (opt(o, n, "--micro") && int_opt("pretrain", "--micro", opt(o, n, "--micro"), 1, 1 << 20, &micro)) ||
        (opt(o, n, "--warmup") && int_opt("pretrain", "--warmup", opt(o, n, "--warmup"), 0, 100000000, &warmup)) ||
        (opt(o, n, "--lr") && float_opt("pretrain", "--lr", opt(o, n, "--lr"), &lr)) ||
        (opt(o, n, "--weight-decay") && float_opt("pretrain", "--weight-decay", opt(o, n, "--weight-decay"), &wd)) ||
        (opt(o, n, "--clip") && float_opt("pretrain", "--clip", opt(o, n, "--clip"), &clip)))
        return -1;
    Model m;
    IdFile f;
    if (model_load(&m, mdir)) return -1;
    if (idfile_read(&f, idp, m.cfg.vocab_size, 2)) { model_free(&m); return -1; }
    float *grads = calloc(m.total, sizeof(float));
    AdamW adam = {0};
    Acts *a = NULL;
    int rc = grads ? 0 : rf_error("pretrain: out of memory for gradients");
    if (!rc && !strcmp(optim, "adamw")) rc = adamw_init(&adam, m.total, (float)lr, 0.9f, 0.999f, 1e-8f, (float)wd);
    for (long s = 0; !rc && s < steps; s++) {
        double t0 = now_s();
        long tokens;
        memset(grads, 0, m.total * sizeof(float));
        double loss = batch_grad(&m, &a, &f, (int)micro, grads, &tokens);
        if (!isfinite(loss)) { rc = rf_last_error()[0] ? -1 : rf_error("pretrain: step %ld: loss is not finite", s + 1); break; }
        double gnorm = clip_grad_norm(grads, m.total, clip);
        float lr_now = warmup ? lr_schedule((float)lr, s, warmup, steps) : (float)lr;
        if (!strcmp(optim, "sgd")) sgd_step(m.params, grads, m.total, lr_now);
        else adamw_step(&adam, m.params, grads, lr_now);
        double dt = now_s() - t0;
        fprintf(stderr, "pretrain: step %ld/%ld  loss %.6f  grad-norm %.4g  lr %.3g  %.0f tokens/s\n", s + 1,
                steps, loss, gnorm, lr_now, tokens / dt);
    }
    if (!rc) rc = model_save(&m, out);
    if (!rc) fprintf(stderr, "pretrain: wrote %s\n", out);
    adamw_free(&adam);
    acts_free(a);
    free(grads);
    idfile_free(&f);
    model_free(&m);
    return rc;
}

/* ------------------------------------------------------------ benchmarks */

/* Full-parameter AdamW training steps on random ids: tokens/s and peak RSS. */
static int cmd_bench_train(int argc, char **argv) {
    Opt o[] = {{"--model", NULL, 0, "model folder (default: a random 'small' preset)"},
               {"--batch", NULL, 0, "rows per step (default 8)"},
               {"--len", NULL, 0, "tokens per row (default 256)"},
               {"--steps", NULL, 0, "timed steps after one warm-up step (default 5)"}};
    int n = sizeof o / sizeof o[0], r = parse_opts(argc, argv, o, n, "[--model DIR] [--batch B] [--len T] [--steps N]");
    if (r) return r > 0 ? 0 : -1;
    long B = 8, T = 256, steps = 5;
    if ((opt(o, n, "--batch") && int_opt("bench-train", "--batch", opt(o, n, "--batch"), 1, 4096, &B)) ||
        (opt(o, n, "--len") && int_opt("bench-train", "--len", opt(o, n, "--len"), 2, 1 << 16, &T)) ||
        (opt(o, n, "--steps") && int_opt("bench-train", "--steps", opt(o, n, "--steps"), 1, 100000, &steps)))
        return -1;
    Model m;
    if (opt(o, n, "--model")) {
        if (model_load(&m, opt(o, n, "--model"))) return -1;
    } else {
        Config c;
        if (config_preset(&c, "small", 0) || model_alloc(&m, &c)) return -1;
        model_init_random(&m, 42);
    }
    int *ids = malloc((size_t)B * T * sizeof(int)), *lengths = malloc(B * sizeof(int));
    float *w = malloc((size_t)B * T * sizeof(float)), *grads = calloc(m.total, sizeof(float));
    Rng rng;
    rng_seed(&rng, 1);
    AdamW adam = {0};
    int rc = (ids && lengths && w && grads) ? 0 : rf_error("bench-train: out of memory");
    if (!rc) rc = adamw_init(&adam, m.total, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f);
    Acts *a = rc ? NULL : acts_new(&m, (int)B, (int)T);
    if (!rc && !a) rc = -1;
    if (!rc) {
        for (long i = 0; i < B * T; i++) ids[i] = (int)(rng_next(&rng) % m.cfg.vocab_size);
        for (long i = 0; i < B; i++) lengths[i] = (int)T;
        Batch b = {.B = (int)B, .T = (int)T, .ids = ids, .lengths = lengths};
        lm_weights_mean(w, &b);
        double t0 = 0;
        for (long s = 0; s <= steps; s++) {
            if (s == 1) t0 = now_s();
            memset(grads, 0, m.total * sizeof(float));
            model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
            model_lm_loss(&m, a, &b, w, NULL, grads, 1);
            model_backward(&m, NULL, a, &b, ATTN_CAUSAL, grads, NULL);
            adamw_step(&adam, m.params, grads, 1e-4f);
        }
        double dt = now_s() - t0;
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        printf("c train tokens_per_s=%.1f step_ms=%.1f params=%zu batch=%ld len=%ld threads=%d\n",
               B * T * steps / dt, 1000 * dt / steps, m.total, B, T, threads);
        printf("c peak_rss_mb=%.1f activations_mb=%.1f\n", peak_rss_mb(), acts_bytes(a) / 1048576.0);
    }
    acts_free(a);
    adamw_free(&adam);
    free(ids); free(lengths); free(w); free(grads);
    model_free(&m);
    return rc;
}

/* ------------------------------------------------------------------ main */

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} Command;

static const Command commands[] = {
    {"init", cmd_init, "write a fresh, seeded backbone from a preset"},
    {"score", cmd_score, "mean next-token cross-entropy of each sequence"},
    {"embed", cmd_embed, "pooled, L2-normalised embedding of each sequence"},
    {"pretrain", cmd_pretrain, "full-parameter causal-LM training steps"},
    {"tokenizer", tokenizer_main, "encode | decode | train a tokenizer.json"},
    {"synth", synth_main, "write the synthetic recommendation world (all 13 tasks)"},
    {"build-data", build_data_main, "build the 13 tasks from the real public sources"},
    {"sched", sched_main, "replay S2Sched (§4.3) on a CSV of per-step validation losses"},
    {"merge", merge_main, "TIES-merge adapter checkpoints (§4.4)"},
    {"bench-train", cmd_bench_train, "time full-parameter training steps"},
    {"bench-merge", bench_merge_main, "time a 5-checkpoint TIES merge of small-preset adapters"},
    {"bench-matmul", bench_matmul_main, "GFLOP/s of the matmul kernels on the model's shapes"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: recfound COMMAND [options]   (recfound COMMAND --help for each)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            rf_clear_error();
            int rc = commands[i].run(argc - 1, argv + 1);
            fflush(stdout);
            if (rc) {
                fprintf(stderr, "recfound %s: %s\n", argv[1],
                        rf_last_error()[0] ? rf_last_error() : "failed");
                return 1;
            }
            return 0;
        }
    fprintf(stderr, "recfound: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
