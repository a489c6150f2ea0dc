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
#define _XOPEN_SOURCE 700 /* realpath */
#include "recfound.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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
                rf_error("%s: line %d: '%.20s' is not a token id", path, line, s);  /* s points into text */
                free(row);
                free(text);
                idfile_free(f);
                return -1;
            }
            if (v < 0 || v >= vocab) {  /* named as written: strtol clamps what is past a long */
                rf_error("%s: line %d: token id %.*s is outside the vocabulary [0, %d)", path, line,
                         (int)(end - s < 24 ? end - s : 24), s, vocab);
                free(row);
                free(text);
                idfile_free(f);
                return -1;
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

/* A sequence longer than the model's max_position_embeddings still runs (RoPE
 * has no hard limit, and Hugging Face's Mistral and Llama run it too), with one
 * warning line: the model never saw such positions in training. */
static void warn_positions(const char *cmd, const char *path, const IdFile *f, const Model *m) {
    int P = m->cfg.max_position_embeddings;
    if (P > 0 && f->max_len > P)
        fprintf(stderr, "%s: warning: %s holds a sequence of %d tokens, more than the model's "
                "max_position_embeddings (%d)\n", cmd, path, f->max_len, P);
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
    const char *preset = NULL, *out = NULL;
    long vocab = 0, seed = 42;
    Flag f[] = {{"--preset", 's', &preset, "tiny | small | mistral-7b (see weights/README.md)"},
                {"--out", 's', &out, "model folder to write (config.json + model.safetensors); new or empty"},
                {"--vocab", 'i', &vocab, "vocabulary size (default: the preset's; match your tokenizer)"},
                {"--seed", 'i', &seed, "random seed (default 42)"}};
    int r = parse_flags(argc, argv, f, 4, "--preset NAME --out DIR [--vocab N] [--seed S]");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("init", "--preset", preset) || need_flag("init", "--out", out)) return -1;
    if (rf_new_output(out, NULL)) return -1;
    if (vocab != 0 && (vocab < 3 || vocab > (1 << 24))) return rf_error("--vocab must be in [3, 2^24]");
    if (seed < 0) return rf_error("--seed must be >= 0");
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

/* --adapter DIR --task NAME of score / embed: the adapters and the routing task. */
static int load_adapter_task(Tmole *tm, int *task, const char *cmd, const char *adir, const char *tname,
                             const Model *m) {
    memset(tm, 0, sizeof *tm);
    *task = 0;
    if (!adir && !tname) return 0;
    if (!adir || !tname) return rf_error("%s: --adapter and --task go together", cmd);
    if ((*task = task_by_name(tname)) < 0 && (*task = task_by_short(tname)) < 0)
        return rf_error("%s: unknown task '%s' (a task string like Emb_user or a short name like U2I)", cmd, tname);
    return tmole_load(tm, adir, &m->cfg);
}

static int cmd_score(int argc, char **argv) {
    const char *mdir = NULL, *idp = NULL, *adir = NULL, *tname = NULL;
    int bidir = 0;
    Flag fl[] = {{"--model", 's', &mdir, "model folder (Hugging Face layout)"},
                {"--ids", 's', &idp, "file with one sequence of token ids per line"},
                {"--bidirectional", 'b', &bidir, "attend in both directions (embedding-pass attention)"},
                {"--adapter", 's', &adir, "TMoLE adapter folder (with --task)"},
                {"--task", 's', &tname, "task whose routing the adapters use, e.g. SR or Sequential_Recommendation"}};
    int r = parse_flags(argc, argv, fl, 5, "--model DIR --ids FILE [--bidirectional] [--adapter DIR --task NAME]");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("score", "--model", mdir) || need_flag("score", "--ids", idp)) return -1;
    AttnMode mode = bidir ? ATTN_BIDIRECTIONAL : ATTN_CAUSAL;
    Model m;
    IdFile f;
    Tmole tm;
    int task, tasks[CHUNK];
    if (model_load_frozen(&m, mdir, "score")) return -1;
    if (load_adapter_task(&tm, &task, "score", adir, tname, &m)) { model_free(&m); return -1; }
    if (idfile_read(&f, idp, m.cfg.vocab_size, 2)) { tmole_free(&tm); model_free(&m); return -1; }
    warn_positions("score", idp, &f, &m);
    for (int i = 0; i < CHUNK; i++) tasks[i] = task;
    int *ids = malloc((size_t)CHUNK * f.max_len * sizeof(int)), lengths[CHUNK];
    float *w = malloc((size_t)CHUNK * f.max_len * sizeof(float));
    float *tl = malloc((size_t)CHUNK * f.max_len * sizeof(float));
    Acts *a = NULL;
    int rc = (ids && w && tl) ? 0 : rf_error("out of memory");
    for (int r0 = 0; !rc && r0 < f.n; r0 += CHUNK) {
        int B = f.n - r0 < CHUNK ? f.n - r0 : CHUNK;
        Batch b = make_batch(&f, r0, B, ids, lengths);
        if ((rc = acts_ensure_forward(&a, &m, B, b.T))) break;
        for (int i = 0; i < B * b.T; i++) w[i] = (i % b.T) < lengths[i / b.T] - 1;
        b.tasks = tasks;
        model_forward(&m, adir ? &tm : NULL, a, &b, mode);
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
    tmole_free(&tm);
    model_free(&m);
    return rc;
}

static int cmd_embed(int argc, char **argv) {
    const char *mdir = NULL, *idp = NULL, *adir = NULL, *tname = NULL;
    long from = 0;
    Flag fl[] = {{"--model", 's', &mdir, "model folder (Hugging Face layout)"},
                {"--ids", 's', &idp, "file with one sequence of token ids per line"},
                {"--pool-from", 'i', &from, "first position pooled (instruction prefix length; default 0)"},
                {"--adapter", 's', &adir, "TMoLE adapter folder (with --task)"},
                {"--task", 's', &tname, "task whose routing the adapters use, e.g. U2I or Emb_user"}};
    int r = parse_flags(argc, argv, fl, 5, "--model DIR --ids FILE [--pool-from K] [--adapter DIR --task NAME]");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("embed", "--model", mdir) || need_flag("embed", "--ids", idp)) return -1;
    if (from < 0 || from > (1 << 30)) return rf_error("--pool-from must be >= 0");
    Model m;
    IdFile f;
    Tmole tm;
    int task, tasks[CHUNK];
    if (model_load_frozen(&m, mdir, "embed")) return -1;
    if (load_adapter_task(&tm, &task, "embed", adir, tname, &m)) { model_free(&m); return -1; }
    if (idfile_read(&f, idp, m.cfg.vocab_size, (int)from + 1)) { tmole_free(&tm); model_free(&m); return -1; }
    warn_positions("embed", idp, &f, &m);
    for (int i = 0; i < CHUNK; i++) tasks[i] = task;
    int C = m.cfg.hidden_size, *ids = malloc((size_t)CHUNK * f.max_len * sizeof(int)), lengths[CHUNK], froms[CHUNK];
    float *emb = malloc((size_t)CHUNK * C * sizeof(float)), norms[CHUNK];
    Acts *a = NULL;
    int rc = (ids && emb) ? 0 : rf_error("out of memory");
    for (int i = 0; i < CHUNK; i++) froms[i] = (int)from;
    for (int r0 = 0; !rc && r0 < f.n; r0 += CHUNK) {
        int B = f.n - r0 < CHUNK ? f.n - r0 : CHUNK;
        Batch b = make_batch(&f, r0, B, ids, lengths);
        if ((rc = acts_ensure_forward(&a, &m, B, b.T))) break;
        b.tasks = tasks;
        model_forward(&m, adir ? &tm : NULL, a, &b, ATTN_BIDIRECTIONAL);
        pool_forward(emb, norms, acts_hidden(a), &b, froms, C);
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++) printf("%.9g%c", emb[i * C + c], c + 1 < C ? ' ' : '\n');
    }
    acts_free(a);
    free(ids); free(emb);
    idfile_free(&f);
    tmole_free(&tm);
    model_free(&m);
    return rc;
}

/* SIGINT / SIGTERM (Ctrl-C, a batch system's stop): pretrain and train finish
 * the step and save what they have before they exit. */
static volatile sig_atomic_t stop_requested = 0;
static void on_stop_signal(int sig) { (void)sig; stop_requested = 1; }

static void catch_stop_signals(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    /* a SIGINT ignored from the start stays ignored (a shell's `cmd &` without job control) */
    if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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
    if (!ids || !lengths || !w) { loss = NAN; rf_error("out of memory"); }
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

/* pretrain --data: every training text of a dataset, tokenised and cut to max_len. */
typedef struct { IdFile *f; const Tokenizer *tok; int max_len, cap; } TextIds;

static int add_text_ids(void *vctx, const char *s, size_t n) {
    TextIds *c = vctx;
    int *ids, len;
    if (tok_encode(c->tok, s, n, 0, &ids, &len)) return -1;
    if (len < 2) { free(ids); return 0; }
    if (len > c->max_len) len = c->max_len;
    IdFile *f = c->f;
    if (f->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        int **i2 = realloc(f->ids, c->cap * sizeof *i2);
        if (i2) f->ids = i2;
        int *l2 = realloc(f->len, c->cap * sizeof *l2);
        if (l2) f->len = l2;
        if (!i2 || !l2) { free(ids); return rf_error("out of memory"); }
    }
    f->ids[f->n] = ids;
    f->len[f->n++] = len;
    if (len > f->max_len) f->max_len = len;
    return 0;
}

static int cmd_pretrain(int argc, char **argv) {
    const char *mdir = NULL, *idp = NULL, *out = NULL, *optim = "adamw", *data = NULL, *tokp = NULL;
    long steps = 1, micro = 8, warmup = 0, batch = 16, max_len = 256, seed = 42, epochs = 0;
    double lr = 1e-3, wd = 0, clip = 0;
    Flag fl[] = {
        {"--model", 's', &mdir, "model folder to start from"},
        {"--ids", 's', &idp, "token ids, one sequence per line; every step trains on all of them"},
        {"--data", 's', &data, "instead of --ids: every training text of a dataset folder (with --tokenizer)"},
        {"--tokenizer", 's', &tokp, "tokenizer.json for --data (default: MODEL/tokenizer.json)"},
        {"--batch", 'i', &batch, "with --data: sequences per step, drawn without replacement (default 16)"},
        {"--max-len", 'i', &max_len, "with --data: tokens per sequence at most (default 256)"},
        {"--epochs", 'i', &epochs, "with --data: passes over the texts (instead of --steps)"},
        {"--steps", 'i', &steps, "optimisation steps (default 1)"},
        {"--lr", 'f', &lr, "learning rate (default 1e-3)"},
        {"--optimizer", 's', &optim, "sgd | adamw (default adamw)"},
        {"--weight-decay", 'f', &wd, "AdamW decoupled weight decay (default 0)"},
        {"--clip", 'f', &clip, "global grad-norm clip, 0 = off (default 0)"},
        {"--warmup", 'i', &warmup, "linear warmup steps, then linear decay (default 0 = constant lr)"},
        {"--micro", 'i', &micro, "rows per micro-batch (gradient accumulation; default 8)"},
        {"--seed", 'i', &seed, "order of the --data texts (default 42)"},
        {"--out", 's', &out, "model folder to write; new or empty"}};
    int n = sizeof fl / sizeof fl[0];
    int r = parse_flags(argc, argv, fl, n, "--model DIR (--ids FILE | --data DIR) --steps N --lr X "
                        "--optimizer sgd|adamw --out DIR");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("pretrain", "--model", mdir) || need_flag("pretrain", "--out", out)) return -1;
    if (rf_new_output(out, NULL)) return -1;
    if (!idp == !data) return rf_error("give one of --ids or --data");
    if (strcmp(optim, "sgd") && strcmp(optim, "adamw"))
        return rf_error("--optimizer must be sgd or adamw, got '%s'", optim);
    if (check_range("--steps", steps, 0, 0, INFINITY) || check_range("--warmup", warmup, 0, 0, INFINITY) ||
        check_range("--micro", micro, 1, 0, INFINITY) || check_range("--batch", batch, 1, 0, INFINITY) ||
        check_range("--max-len", max_len, 2, 0, RF_MAX_LEN) || check_range("--lr", lr, 0, 0, INFINITY) ||
        check_range("--weight-decay", wd, 0, 0, INFINITY) || check_range("--clip", clip, 0, 0, INFINITY) ||
        check_range("--epochs", (double)epochs, 0, 0, INFINITY))
        return -1;
    Model m;
    IdFile f = {0}, view = {0};
    if (model_load(&m, mdir)) return -1;
    if (idp && idfile_read(&f, idp, m.cfg.vocab_size, 2)) { model_free(&m); return -1; }
    if (idp) warn_positions("pretrain", idp, &f, &m);
    if (data) {
        Tokenizer tok;
        Dataset d = {0};
        char path[4096];
        if (!tokp) { snprintf(path, sizeof path, "%s/tokenizer.json", mdir); tokp = path; }
        int rc = tok_load(&tok, tokp), loaded = !rc;
        if (!rc && tok.n_vocab > m.cfg.vocab_size)
            rc = rf_error("%s: %d tokens, more than the model's vocabulary (%d)", tokp, tok.n_vocab, m.cfg.vocab_size);
        if (!rc) rc = dataset_load_split(&d, data, "train", 0);
        TextIds c = {&f, &tok, (int)max_len, 0};
        if (!rc) rc = dataset_for_each_text(&d, add_text_ids, &c);
        if (!rc && f.n == 0) rc = rf_error("%s: no training texts", data);
        dataset_free(&d);  /* the ids are all pretraining needs */
        if (loaded) tok_free(&tok);
        if (rc) { idfile_free(&f); model_free(&m); return -1; }
        if (epochs > 0) steps = epochs * ((f.n + batch - 1) / batch);
        fprintf(stderr, "pretrain: %d texts from %s, up to %ld tokens each\n", f.n, data, max_len);
    }
    float *grads = calloc_big(m.total, sizeof(float));
    AdamW adam = {0};
    Acts *a = NULL;
    PoolIter it = {0};
    int rc = grads ? 0 : rf_error("out of memory for gradients");
    if (!rc && !strcmp(optim, "adamw")) rc = adamw_init(&adam, m.total, (float)lr, 0.9f, 0.999f, 1e-8f, (float)wd);
    if (!rc && data) {
        rc = pool_iter_init(&it, (size_t)f.n, (uint64_t)seed);
        view.ids = malloc(batch * sizeof *view.ids);
        view.len = malloc(batch * sizeof *view.len);
        if (!rc && (!view.ids || !view.len)) rc = rf_error("out of memory");
    }
    double t_start = rf_now();
    long done = 0;
    catch_stop_signals();
    for (long s = 0; !rc && s < steps && !stop_requested; s++) {
        double t0 = rf_now();
        long tokens;
        const IdFile *bf = &f;
        if (data) {  /* this step's batch: the next `batch` texts of a seeded shuffle */
            view.n = (int)(batch < f.n ? batch : f.n);
            view.max_len = 0;
            for (int i = 0; i < view.n; i++) {
                size_t k = pool_iter_next(&it);
                view.ids[i] = f.ids[k];
                view.len[i] = f.len[k];
                if (f.len[k] > view.max_len) view.max_len = f.len[k];
            }
            /* longest first, so each micro-batch pads to similar lengths (the loss is a
             * mean over all tokens of the step, whatever the order) */
            for (int i = 1; i < view.n; i++)
                for (int j = i; j > 0 && view.len[j] > view.len[j - 1]; j--) {
                    int *ti = view.ids[j], tl = view.len[j];
                    view.ids[j] = view.ids[j - 1], view.len[j] = view.len[j - 1];
                    view.ids[j - 1] = ti, view.len[j - 1] = tl;
                }
            bf = &view;
        }
        memset(grads, 0, m.total * sizeof(float));
        double loss = batch_grad(&m, &a, bf, (int)micro, grads, &tokens);
        if (!isfinite(loss)) { rc = rf_last_error()[0] ? -1 : rf_error("step %ld: loss is not finite", s + 1); break; }
        double gnorm = clip_grad_norm(grads, m.total, clip);
        float lr_now = warmup ? lr_schedule((float)lr, s, warmup, steps) : (float)lr;
        if (!strcmp(optim, "sgd")) sgd_step(m.params, grads, m.total, lr_now);
        else adamw_step(&adam, m.params, grads, lr_now);
        double dt = rf_now() - t0;
        if (data)
            rf_progress("pretrain: step %ld/%ld  loss %.4f  grad-norm %.3g  lr %.2e  %.0f tokens/s  %.0f s left   ",
                    s + 1, steps, loss, gnorm, lr_now, tokens / dt, (rf_now() - t_start) / (s + 1) * (steps - s - 1));
        else
            fprintf(stderr, "pretrain: step %ld/%ld  loss %.6f  grad-norm %.4g  lr %.3g  %.0f tokens/s\n", s + 1,
                    steps, loss, gnorm, lr_now, tokens / dt);
        done = s + 1;
    }
    rf_progress_end();
    if (!rc && done < steps)  /* stopped by a signal: the model as it is after the last whole step */
        fprintf(stderr, "pretrain: stopped after step %ld of %ld; the model of that step goes to %s (AdamW's moments "
                "are not kept: a later pretrain --model %s starts them afresh)\n", done, steps, out, out);
    if (!rc) rc = model_save(&m, out);
    if (!rc) fprintf(stderr, "pretrain: wrote %s\n", out);
    free(view.ids);
    free(view.len);
    pool_iter_free(&it);
    adamw_free(&adam);
    acts_free(a);
    free_big(grads);
    idfile_free(&f);
    model_free(&m);
    return rc;
}

/* ============================================================ training */

/* RecFound's joint training (§4.1): one frozen backbone, TMoLE adapters
 * (§4.2), and per step an embedding batch (InfoNCE over query / positive /
 * hard-negative triplets, bidirectional pass, mean pooling) and a generative
 * batch (answer-token cross-entropy, causal pass), L = L_emb + λ L_gen, both
 * backpropagated into the same adapters.  S2Sched (§4.3) decides how many
 * samples of each task go into each batch. */

typedef struct {
    /* what is trained on */
    Model m;
    Tokenizer tok;
    Dataset train, val;
    Tmole tm;
    /* options */
    long emb_batch, gen_batch, micro, steps, max_len, save_every, seed, sched_val;
    double lr, warmup_ratio, clip, wd, tau, lambda_gen;
    int use_sched;
    int sgd;                             /* --optimizer sgd: plain -lr x gradient steps instead of AdamW */
    int val_rows;                        /* rows per forward of embeddings without backward (validation, loss) */
    const char *out;
    /* state */
    AdamW opt;
    float *grads;
    Acts *acts;
    PoolIter it[N_TASKS];
    Rng rng;
    Sched sched;
    int tasks[2][N_TASKS], n_tasks[2];   /* tasks with training data, by kind */
    size_t *val_pick[N_TASKS];           /* fixed validation sample of each task (S2Sched) */
    int n_val[N_TASKS];
    SampleStats stats;
    long skipped_no_negative;
    RfBuf loss_csv, sched_csv;           /* the two CSV files, rewritten whole (atomically) after every step */
    double *omega_hist;                  /* [steps][N_TASKS] ω per step (NaN before scheduling), for sched.svg */
    double *loss_hist;                   /* [steps][2] L_emb, L_gen per step, for losses.svg */
    double *val_hist;                    /* [steps][N_TASKS] the validation losses S2Sched saw (resume replays them) */
    long nonfinite_skipped;
    uint32_t step0_crc;                  /* rf_file_crc32 of RUN/step-0/adapter_model.safetensors, known when */
    int step0_known;                     /* set: every checkpoint records it ("step0_crc32"), for `merge` */
} Trainer;

/* The adapters of a run, or NULL to run the backbone alone. */
static const Tmole *adapters(const Trainer *tr) { return tr->tm.n_params ? &tr->tm : NULL; }

/* A random text of a passage ([instruction, text], or a list of texts). */
static const char *passage_text(const Passage *p, Rng *r) { return p->texts[rng_below(r, p->n_texts)]; }

/* Query, one positive and one hard negative of an embedding record (§4.1). */
static int make_triplet(Trainer *tr, const Record *rec, Sample out[3]) {
    if (rec->n_pos < 1 || rec->n_neg < 1) {
        tr->skipped_no_negative++;
        return 0;
    }
    const Passage *pos = &rec->pos[rng_below(&tr->rng, rec->n_pos)];
    const Passage *neg = &rec->neg[rng_below(&tr->rng, rec->n_neg)];
    const Passage *ps[3] = {&rec->query, pos, neg};
    for (int k = 0; k < 3; k++) {
        int rc = sample_emb(&out[k], &tr->tok, ps[k]->instr, passage_text(ps[k], &tr->rng), rec->task,
                            (int)tr->max_len, EMB_FMT_TRAIN, &tr->stats);
        if (rc != 1) {
            for (int j = 0; j < k; j++) sample_free(&out[j]);
            return rc;
        }
    }
    return 1;
}

/* Embeddings of n samples, in chunks of at most `chunk` rows (no backward);
 * each rank embeds its share and every rank gets them all (dist.c). */
static int embed_samples(Trainer *tr, Sample **smp, int n, float *emb, int chunk) {
    int C = tr->m.cfg.hidden_size;
    long b0, b1;
    dist_share(n, &b0, &b1);
    TokBatch tb;
    if (batch_alloc(&tb, chunk, (int)tr->max_len)) return -1;
    float norms[256];
    for (long r0 = b0; r0 < b1; r0 += chunk) {
        int k = (int)(b1 - r0 < chunk ? b1 - r0 : chunk);
        Batch b = batch_fill(&tb, smp + r0, k, 0);
        if (acts_ensure(&tr->acts, &tr->m, k, b.T)) { batch_free(&tb); return -1; }
        model_forward(&tr->m, adapters(tr), tr->acts, &b, ATTN_BIDIRECTIONAL);
        pool_forward(emb + (size_t)r0 * C, norms, acts_hidden(tr->acts), &b, tb.start, C);
    }
    batch_free(&tb);
    return dist_gather_rows(emb, n, C, "gathering validation embeddings");
}

/* The embedding branch on records recs[0..n): InfoNCE over their triplets.
 * backward: one forward of all 3Q rows, then gradients into tr->grads scaled
 * by `scale`.  Returns the loss (0 when no triplet could be made: *q_used = 0),
 * or NAN on error. */
static double emb_branch(Trainer *tr, Record *const *recs, int n, int backward, float scale, int *q_used) {
    int C = tr->m.cfg.hidden_size, Q = 0;
    Sample *trip = calloc((size_t)3 * n, sizeof(Sample));
    Sample **rows = calloc((size_t)3 * n, sizeof(Sample *));
    double loss = NAN;
    if (!trip || !rows) { free(trip); free(rows); rf_error("out of memory"); return NAN; }
    for (int i = 0; i < n; i++) {
        Sample t3[3];
        int rc = make_triplet(tr, recs[i], t3);
        if (rc < 0) goto done;
        if (rc == 0) continue;
        trip[Q] = t3[0]; trip[n + Q] = t3[1]; trip[2 * n + Q] = t3[2];
        Q++;
    }
    *q_used = Q;
    if (Q == 0) { loss = 0; goto done; }
    for (int i = 0; i < Q; i++) {  /* rows: queries, then positives, then negatives */
        rows[i] = &trip[i];
        rows[Q + i] = &trip[n + i];
        rows[2 * Q + i] = &trip[2 * n + i];
    }
    float *emb = calloc((size_t)3 * Q * C, sizeof(float)), *demb = calloc((size_t)3 * Q * C, sizeof(float));
    if (!emb || !demb) { free(emb); free(demb); rf_error("out of memory"); goto done; }
    if (!backward) {
        if (!embed_samples(tr, rows, 3 * Q, emb, tr->val_rows))
            loss = infonce(NULL, NULL, emb, emb + (size_t)Q * C, Q, 2 * Q, C, (float)tr->tau);
    } else {
        /* this rank's block [b0, b1) of the 3Q rows forward; the embeddings of
         * all rows gathered, so each query meets every rank's passages; the
         * gradient of the block backward (dist.c) */
        long b0, b1;
        dist_share(3 * Q, &b0, &b1);
        int nb = (int)(b1 - b0);
        uint64_t seed = rng_next(&tr->rng) | 1;
        TokBatch tb = {0};
        float *norms = malloc((size_t)3 * Q * sizeof(float));
        int *ids = malloc((size_t)3 * Q * sizeof(int)), ok = norms && ids;
        Batch b = {0};
        if (ok && nb > 0) {
            ok = !batch_alloc(&tb, nb, (int)tr->max_len);
            if (ok) {
                b = batch_fill(&tb, rows + b0, nb, 0);
                b.dropout_seed = seed;
                for (int i = 0; i < nb; i++) ids[i] = (int)b0 + i;
                b.row_ids = ids;
                ok = !acts_ensure(&tr->acts, &tr->m, nb, b.T);
            }
            if (ok) {
                model_forward(&tr->m, adapters(tr), tr->acts, &b, ATTN_BIDIRECTIONAL);
                pool_forward(emb + b0 * C, norms + b0, acts_hidden(tr->acts), &b, tb.start, C);
            }
        }
        if (ok && !dist_gather_rows(emb, 3 * Q, C, "gathering embeddings (InfoNCE)")) {
            loss = infonce(demb, demb + (size_t)Q * C, emb, emb + (size_t)Q * C, Q, 2 * Q, C, (float)tr->tau);
            if (nb > 0) {
                float *d = demb + b0 * C;
                for (size_t i = 0; i < (size_t)nb * C; i++) d[i] *= scale;
                pool_backward(acts_dhidden(tr->acts), d, emb + b0 * C, norms + b0, &b, tb.start, C);
                model_backward(&tr->m, adapters(tr), tr->acts, &b, ATTN_BIDIRECTIONAL, NULL, tr->grads);
            }
        } else if (!rf_last_error()[0]) {
            rf_error("out of memory");
        }
        batch_free(&tb);
        free(norms);
        free(ids);
    }
    free(emb);
    free(demb);
done:
    for (int i = 0; i < 3 * n; i++) sample_free(&trip[i]);
    free(trip);
    free(rows);
    return loss;
}

/* The generative branch on records recs[0..n): token-mean cross-entropy over
 * the answer tokens of all of them, in micro-batches whose per-token weights
 * 1/total make the accumulated gradient that of the whole batch.  Each rank
 * takes every P-th sample of the length-sorted batch and the partial losses are
 * summed (dist.c); the dropout of a sample is keyed by its place in the sorted
 * batch, so neither the micro-batches nor the ranks change it. */
static double gen_branch(Trainer *tr, Record *const *recs, int n, int backward, float scale, long *tokens) {
    Sample *smp = calloc(n ? n : 1, sizeof(Sample));
    Sample **rows = calloc(n ? n : 1, sizeof(Sample *));
    int *place = calloc(n ? n : 1, sizeof(int));
    double loss = NAN;
    int k = 0;
    long total = 0;
    TokBatch tb = {0};
    if (!smp || !rows || !place) { rf_error("out of memory"); goto done; }
    for (int i = 0; i < n; i++) {
        int rc = sample_gen(&smp[k], &tr->tok, recs[i], (int)tr->max_len, &tr->stats);
        if (rc < 0) goto done;
        if (rc == 1) { total += smp[k].len - smp[k].start; rows[k] = &smp[k]; k++; }
    }
    *tokens = total;
    loss = 0;
    if (k == 0 || total == 0) goto done;
    for (int i = 1; i < k; i++)  /* longest first: micro-batches of similar lengths pad less */
        for (int j = i; j > 0 && rows[j]->len > rows[j - 1]->len; j--) {
            Sample *x = rows[j];
            rows[j] = rows[j - 1];
            rows[j - 1] = x;
        }
    uint64_t seed = backward ? rng_next(&tr->rng) | 1 : 0;
    int mine = 0, P = dist_size();
    for (int i = dist_rank(); i < k; i += P) {  /* this rank's samples, keeping their places */
        place[mine] = i;
        rows[mine++] = rows[i];
    }
    if (tr->micro < 1) tr->micro = 1;
    if (batch_alloc(&tb, (int)tr->micro, (int)tr->max_len)) { loss = NAN; goto done; }
    for (int r0 = 0; r0 < mine; r0 += (int)tr->micro) {
        int B = mine - r0 < tr->micro ? mine - r0 : (int)tr->micro;
        Batch b = batch_fill(&tb, rows + r0, B, 0);
        b.dropout_seed = seed;
        b.row_ids = place + r0;
        for (int i = 0; i < B * b.T; i++) tb.weights[i] /= (float)total;
        if (acts_ensure(&tr->acts, &tr->m, B, b.T)) { loss = NAN; goto done; }
        model_forward(&tr->m, adapters(tr), tr->acts, &b, ATTN_CAUSAL);
        if (backward && scale != 0) {
            for (int i = 0; i < B * b.T; i++) tb.weights[i] *= scale;
            loss += model_lm_loss(&tr->m, tr->acts, &b, tb.weights, NULL, NULL, 1) / scale;
            model_backward(&tr->m, adapters(tr), tr->acts, &b, ATTN_CAUSAL, NULL, tr->grads);
        } else {  /* no backward, or lambda = 0: the loss alone, no gradient */
            loss += model_lm_loss(&tr->m, tr->acts, &b, tb.weights, NULL, NULL, 0);
        }
    }
    if (dist_sum_doubles(&loss, 1, "summing the generative loss")) loss = NAN;
done:
    batch_free(&tb);
    for (int i = 0; i < k; i++) sample_free(&smp[i]);
    free(smp);
    free(rows);
    free(place);
    return loss;
}

/* The loss of every task on its fixed validation sample (NaN where a task has
 * none): the input of S2Sched, and of `recfound train`'s held-out report. */
static int task_losses(Trainer *tr, const Dataset *d, size_t *const *pick, const int *n_pick, double *loss) {
    for (int t = 0; t < N_TASKS; t++) {
        loss[t] = NAN;
        if (!n_pick[t]) continue;
        Record **recs = malloc(n_pick[t] * sizeof *recs);
        if (!recs) return rf_error("out of memory");
        for (int i = 0; i < n_pick[t]; i++) recs[i] = &d->pool[t].recs[pick[t][i]];
        long tokens;
        int q;
        uint64_t keep = tr->rng.s;  /* validation must not move the training stream */
        SampleStats counted = tr->stats;  /* nor the counts of training samples dropped or truncated */
        rng_seed(&tr->rng, 0x5EED + t);
        q = 0;
        tokens = 0;
        rf_clear_error();
        loss[t] = TASKS[t].kind == KIND_EMB ? emb_branch(tr, recs, n_pick[t], 0, 1, &q)
                                            : gen_branch(tr, recs, n_pick[t], 0, 1, &tokens);
        tr->rng.s = keep;
        tr->stats = counted;
        free(recs);
        if (isnan(loss[t]) && rf_last_error()[0]) return -1;
        /* nothing fitted --max-len (or no record had a negative): not measured */
        if (TASKS[t].kind == KIND_EMB ? q == 0 : tokens == 0) loss[t] = NAN;
    }
    return 0;
}

/* rm -r of a checkpoint folder this program wrote (plain files only). */
static void remove_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* The validation records of each task: the first `per_task` of a seeded
 * shuffle of tr->val's pool, fixed for the whole run. */
static int pick_validation(Trainer *tr, long per_task, uint64_t seed) {
    for (int t = 0; t < N_TASKS; t++) {
        size_t nv = tr->val.pool[t].n;
        tr->n_val[t] = (int)(nv < (size_t)per_task ? nv : (size_t)per_task);
        tr->val_pick[t] = malloc((nv ? nv : 1) * sizeof(size_t));
        if (!tr->val_pick[t]) return rf_error("out of memory");
        for (size_t i = 0; i < nv; i++) tr->val_pick[t][i] = i;
        Rng vr;
        rng_seed(&vr, seed + 977 * (uint64_t)t);
        shuffle_idx(tr->val_pick[t], nv, &vr);
    }
    return 0;
}

/* A number for JSON, which has no NaN: null stands for "not measured". */
static void buf_num(RfBuf *b, double x) {
    if (isfinite(x)) buf_printf(b, "%.17g", x);
    else buf_printf(b, "null");
}

/* A checkpoint is a folder RUN/NAME with the adapters (what merge, eval and
 * score read) and, for --resume, everything else the run needs to continue
 * bit for bit: AdamW's moments (optimizer.safetensors) and trainer_state.json
 * (step, RNG and data-order states, and the history S2Sched is replayed from).
 * It is written as RUN/.NAME.partial and renamed into place, so a crash leaves
 * either the old checkpoint or the new one, never half of one. */
static int save_checkpoint(Trainer *tr, const char *name, long step) {
    if (!dist_lead()) return 0;  /* over MPI, rank 0 writes for all (dist.c) */
    char dir[4096], tmp[4096], old[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/%s", tr->out, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.partial", tr->out, name);
    snprintf(old, sizeof old, "%s/.%s.old", tr->out, name);
    remove_folder(tmp);
    if (tmole_save(&tr->tm, tmp)) goto fail;
    if (step == 0 && !tr->step0_known) {  /* the run's own step-0: the base its checkpoints merge against */
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp);
        if (rf_file_crc32(path, &tr->step0_crc)) goto fail;
        tr->step0_known = 1;
    }
    StOut opt[2] = {{"adamw.m", 1, {(int64_t)tr->tm.total}, tr->opt.m}, {"adamw.v", 1, {(int64_t)tr->tm.total}, tr->opt.v}};
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    if (st_write(path, opt, 2)) goto fail;
    RfBuf b = {0};
    buf_printf(&b, "{\n  \"step\": %ld,\n  \"adamw_t\": %ld,\n  \"rng\": \"%llu\",\n", step, tr->opt.t,
               (unsigned long long)tr->rng.s);
    if (tr->step0_known) buf_printf(&b, "  \"step0_crc32\": \"%08x\",\n", (unsigned)tr->step0_crc);
    buf_printf(&b, "  \"dropped\": %ld, \"truncated\": %ld, \"boundary_merges\": %ld, \"no_negative\": %ld, "
               "\"nonfinite_skipped\": %ld,\n  \"iterators\": [", tr->stats.dropped, tr->stats.truncated,
               tr->stats.boundary_merges, tr->skipped_no_negative, tr->nonfinite_skipped);
    for (int t = 0; t < N_TASKS; t++) {
        const PoolIter *it = &tr->it[t];
        buf_printf(&b, "%s\n    {\"pos\": %zu, \"epoch\": %ld, \"rng\": \"%llu\", \"order\": [", t ? "," : "", it->pos,
                   it->epoch, (unsigned long long)it->rng.s);
        for (size_t i = 0; i < it->n; i++) buf_printf(&b, "%s%zu", i ? "," : "", it->order[i]);
        buf_printf(&b, "]}");
    }
    buf_printf(&b, "\n  ],\n  \"history\": [");  /* per step: L_emb, L_gen, then each task's validation loss and ω */
    for (long i = 0; i < step; i++) {
        buf_printf(&b, "%s\n    [", i ? "," : "");
        buf_num(&b, tr->loss_hist[2 * i]);
        buf_printf(&b, ", ");
        buf_num(&b, tr->loss_hist[2 * i + 1]);
        for (int t = 0; t < N_TASKS; t++) {
            buf_printf(&b, ", ");
            buf_num(&b, tr->val_hist[i * N_TASKS + t]);
            buf_printf(&b, ", ");
            buf_num(&b, tr->omega_hist[i * N_TASKS + t]);
        }
        buf_printf(&b, "]");
    }
    buf_printf(&b, "\n  ]\n}\n");
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    int rc = b.data ? rf_write_file_atomic(path, b.data, b.len) : rf_error("out of memory");
    buf_free(&b);
    if (rc) goto fail;
    struct stat st;
    int replacing = !stat(dir, &st);
    if (replacing) {
        remove_folder(old);
        if (rename(dir, old)) { rf_error("%s: cannot replace: %s", dir, strerror(errno)); goto fail; }
    }
    if (rename(tmp, dir)) {
        rf_error("%s: cannot rename into place: %s", dir, strerror(errno));
        if (replacing) (void)rename(old, dir);  /* the previous checkpoint back under its name */
        goto fail;
    }
    remove_folder(old);
    return 0;
fail:  /* a half-written checkpoint is of no use, and on a full disk its space is what the next try needs */
    remove_folder(tmp);
    return -1;
}

/* The newest complete checkpoint of a run: the step-K (or final) folder with
 * the largest step in its trainer_state.json.  Returns the step, -1 if none. */
static long latest_checkpoint(const char *run, char *name, size_t n) {
    DIR *d = opendir(run);
    long best = -1;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step-", 5) && strcmp(e->d_name, "final")) continue;
        char path[4096], *text;
        size_t len;
        snprintf(path, sizeof path, "%s/%s/trainer_state.json", run, e->d_name);
        if (rf_read_file(path, &text, &len)) continue;
        char *p = strstr(text, "\"step\":");
        long k = p ? strtol(p + 7, NULL, 10) : -1;
        free(text);
        if (k > best) {
            best = k;
            snprintf(name, n, "%s", e->d_name);
        }
    }
    closedir(d);
    rf_clear_error();
    return best;
}

static double json_num(const Json *v) { return v && v->type == JSON_NUMBER ? v->number : NAN; }

/* Restore a run from RUN/NAME (see save_checkpoint); returns the step to continue from. */
static long load_checkpoint(Trainer *tr, const char *name) {
    char dir[4096], path[4200], *text;
    size_t len;
    snprintf(dir, sizeof dir, "%s/%s", tr->out, name);
    Tmole saved;
    if (tmole_load(&saved, dir, &tr->m.cfg)) return -1;
    if (saved.total != tr->tm.total) { tmole_free(&saved); return rf_error("%s: adapters of another shape", dir); }
    memcpy(tr->tm.params, saved.params, saved.total * sizeof(float));
    tmole_free(&saved);
    StFile f;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (st_open(&f, path)) return -1;
    const StTensor *m = st_find(&f, "adamw.m"), *v = st_find(&f, "adamw.v");
    int rc = (!m || !v || (size_t)m->numel != tr->tm.total || (size_t)v->numel != tr->tm.total)
                 ? rf_error("%s: AdamW moments missing or of another size", path)
                 : (st_read_f32(&f, m, tr->opt.m) || st_read_f32(&f, v, tr->opt.v));
    st_close(&f);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if (rf_read_file(path, &text, &len)) return -1;
    Json st;
    rc = json_parse(&st, text, len, path);
    free(text);
    if (rc) return -1;
    long step = (long)json_num(json_get(&st, "step"));
    const Json *its = json_get(&st, "iterators"), *hist = json_get(&st, "history"), *rng = json_get(&st, "rng");
    if (step < 0 || step > tr->steps || !its || its->count != N_TASKS || !hist || (long)hist->count != step || !rng ||
        rng->type != JSON_STRING) {
        json_free(&st);
        return rf_error("%s: not a checkpoint of this run (step, iterators or history do not fit)", path);
    }
    tr->opt.t = (long)json_num(json_get(&st, "adamw_t"));
    tr->rng.s = strtoull(rng->string, NULL, 10);
    const Json *crc = json_get(&st, "step0_crc32");  /* absent in runs older than the field */
    if (crc && crc->type == JSON_STRING) {
        tr->step0_crc = (uint32_t)strtoul(crc->string, NULL, 16);
        tr->step0_known = 1;
    }
    tr->stats.dropped = (long)json_num(json_get(&st, "dropped"));
    tr->stats.truncated = (long)json_num(json_get(&st, "truncated"));
    tr->stats.boundary_merges = (long)json_num(json_get(&st, "boundary_merges"));
    tr->skipped_no_negative = (long)json_num(json_get(&st, "no_negative"));
    tr->nonfinite_skipped = (long)json_num(json_get(&st, "nonfinite_skipped"));
    for (int t = 0; t < N_TASKS; t++) {
        const Json *it = &its->items[t], *order = json_get(it, "order"), *r = json_get(it, "rng");
        if (!order || order->count != tr->it[t].n || !r || r->type != JSON_STRING) {
            json_free(&st);
            return rf_error("%s: data order of task %s does not fit the dataset", path, TASKS[t].short_name);
        }
        tr->it[t].pos = (size_t)json_num(json_get(it, "pos"));
        tr->it[t].epoch = (long)json_num(json_get(it, "epoch"));
        tr->it[t].rng.s = strtoull(r->string, NULL, 10);
        for (size_t i = 0; i < order->count; i++) tr->it[t].order[i] = (size_t)json_num(&order->items[i]);
    }
    for (long i = 0; i < step; i++) {
        const Json *row = &hist->items[i];
        tr->loss_hist[2 * i] = json_num(&row->items[0]);
        tr->loss_hist[2 * i + 1] = json_num(&row->items[1]);
        for (int t = 0; t < N_TASKS; t++) {
            tr->val_hist[i * N_TASKS + t] = json_num(&row->items[2 + 2 * t]);
            tr->omega_hist[i * N_TASKS + t] = json_num(&row->items[3 + 2 * t]);
        }
        /* S2Sched's state is a function of the losses it was given: replay them */
        if (tr->use_sched && sched_update(&tr->sched, tr->val_hist + i * N_TASKS)) { json_free(&st); return -1; }
    }
    json_free(&st);
    return step;
}

/* Keep the header and the rows of a CSV whose first field (a step) is below
 * `limit`.  `per_step`: the file has one row per step, 1, 2, ... (losses.csv);
 * a missing row (the file cut or edited since: the run itself rewrites it
 * whole, atomically, after every step) is named in a warning, and the run goes
 * on, since the checkpoint holds everything it needs. */
static int truncate_csv(const char *path, long limit, int per_step) {
    char *text;
    size_t len;
    if (rf_read_file(path, &text, &len)) return -1;
    RfBuf out = {0};
    char *line = text;
    long expect = 1, gap_from = 0, gap_to = 0;  /* the first step missing, and the step found in its place */
    for (int first = 1; *line; first = 0) {
        char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line + 1) : strlen(line);
        long step = strtol(line, NULL, 10);
        if (first || step < limit) {
            buf_append(&out, line, n);
            if (!first && per_step && !gap_from && step != expect) gap_from = expect, gap_to = step;
            if (!first) expect++;
        }
        line += n;
    }
    if (per_step && !gap_from && expect < limit) gap_from = expect, gap_to = limit;
    if (per_step && gap_from && gap_to < limit)
        fprintf(stderr, "train: warning: %s has no row for step %ld (step %ld comes next); the run goes on, and the "
                "row stays missing (the checkpoint and losses.svg are complete)\n", path, gap_from, gap_to);
    else if (per_step && gap_from)
        fprintf(stderr, "train: warning: %s ends before step %ld, while the checkpoint is at step %ld; the run goes "
                "on, and the rows stay missing (the checkpoint and losses.svg are complete)\n", path, gap_from,
                limit - 1);
    int rc = out.data ? rf_write_file_atomic(path, out.data, out.len) : 0;
    buf_free(&out);
    free(text);
    return rc;
}

static void trainer_free(Trainer *tr) {
    for (int t = 0; t < N_TASKS; t++) {
        pool_iter_free(&tr->it[t]);
        free(tr->val_pick[t]);
    }
    if (tr->use_sched) sched_free(&tr->sched);
    buf_free(&tr->loss_csv);
    free(tr->omega_hist);
    free(tr->loss_hist);
    free(tr->val_hist);
    buf_free(&tr->sched_csv);
    adamw_free(&tr->opt);
    free_big(tr->grads);
    acts_free(tr->acts);
    tmole_free(&tr->tm);
    dataset_free(&tr->train);
    dataset_free(&tr->val);
    tok_free(&tr->tok);
    model_free(&tr->m);
}

/* RUN/losses.svg (both branches' training loss per step) and, with S2Sched,
 * RUN/sched.svg: the sample ratio ω of every task per step (the paper's Figure 3). */
static int write_plots(Trainer *tr) {
    long n = tr->steps;
    char path[4096];
    double *x = malloc((size_t)(n ? n : 1) * sizeof(double)), *ys[N_TASKS];
    double *y = malloc((size_t)(n ? n : 1) * N_TASKS * sizeof(double));
    if (!x || !y) { free(x); free(y); return rf_error("out of memory"); }
    for (long i = 0; i < n; i++) x[i] = (double)(i + 1);
    const char *names[N_TASKS];
    for (int k = 0; k < 2; k++) {
        ys[k] = y + (size_t)k * n;
        for (long i = 0; i < n; i++) ys[k][i] = tr->loss_hist[2 * i + k];
    }
    names[0] = "L_emb (InfoNCE)";
    names[1] = "L_gen (answer CE)";
    snprintf(path, sizeof path, "%s/losses.svg", tr->out);
    int rc = svg_lines(path, "Training loss of the two branches", "step", "loss", 2, names, x,
                       (const double *const *)ys, (int)n);
    if (!rc && tr->use_sched) {
        int m = 0;
        for (int t = 0; t < N_TASKS; t++) {
            if (!tr->train.pool[t].n) continue;
            names[m] = TASKS[t].short_name;
            ys[m] = y + (size_t)m * n;
            for (long i = 0; i < n; i++) ys[m][i] = tr->omega_hist[i * N_TASKS + t];
            m++;
        }
        snprintf(path, sizeof path, "%s/sched.svg", tr->out);
        rc = svg_lines(path, "S2Sched sample ratio per task (Figure 3)", "step", "omega (share of its group's batch)",
                       m, names, x, (const double *const *)ys, (int)n);
    }
    free(x);
    free(y);
    return rc;
}

/* The most records one branch takes in a step (--emb-batch, --gen-batch). */
#define MAX_BRANCH_BATCH 4096

/* "2,2,2" -> embedding / shared / generative expert counts. */
static int parse_experts(const char *s, TmoleConfig *c) {
    int end = -1;
    if (sscanf(s, "%d,%d,%d%n", &c->n_emb, &c->n_shared, &c->n_gen, &end) != 3 || s[end])
        return rf_error("--experts must look like E,S,G (e.g. 2,2,2), got '%s'", s);
    return 0;
}

/* "64" or "64,32" -> the router's hidden widths (their range: tmole_config_check). */
static int parse_router_hidden(const char *s, TmoleConfig *c) {
    const char *p = s;
    while (*p) {
        char *end;
        long w = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || c->n_hidden == TMOLE_MAX_HIDDEN || w < INT_MIN || w > INT_MAX)
            return rf_error("--router-hidden must be up to %d widths separated by commas (e.g. 64,64), got '%s'",
                            TMOLE_MAX_HIDDEN, s);
        c->hidden[c->n_hidden++] = (int)w;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* A branch asked for samples (--emb-batch or --gen-batch > 0) whose tasks have
 * no training record in DATA trains nothing: said once, before the run. */
static void warn_empty_branches(const Trainer *tr, const char *data) {
    static const char *name[2] = {"an embedding", "a generative"}, *file[2] = {"Embedding", "Generative"};
    long per_step[2] = {tr->emb_batch, tr->gen_batch};
    for (int k = 0; k < 2; k++)
        if (per_step[k] > 0 && tr->n_tasks[k] == 0)
            fprintf(stderr, "train: warning: no training record of %s task in %s (%s_dataset_train.jsonl): that "
                    "branch trains nothing\n", name[k], data, file[k]);
}

/* S2Sched's counts are n_i = ⌊B ω_i⌋ (§4.3.2), and the paper's `drop` leaves the
 * rest of the batch out.  A branch with fewer rows B than tasks m then gets no
 * sample while ω is uniform (the warm-up, ω_i = 1/m), and with one row never
 * (ω_i < 1 whenever m > 1): such steps train nothing in that branch.  Said
 * once, before the run and by --dry-run. */
static void warn_starved_branches(const Trainer *tr, long warmup_steps) {
    static const char *name[2] = {"embedding", "generative"};
    long per_step[2] = {tr->emb_batch, tr->gen_batch};
    for (int k = 0; k < 2; k++) {
        long B = per_step[k];
        int m = tr->n_tasks[k];
        if (B < 1 || m < 2 || B >= m) continue;
        char when[96];
        if (B == 1) snprintf(when, sizeof when, "at every step");
        else snprintf(when, sizeof when, "in the S2Sched warm-up (the first %ld steps, omega uniform)", warmup_steps);
        fprintf(stderr, "train: warning: %ld %s sample%s per step for %d tasks: floor(%ld omega_i) is 0 for every task "
                "%s, and --sched-remainder drop leaves the %s branch empty then; --sched-remainder largest hands "
                "out the leftover samples\n", B, name[k], B > 1 ? "s" : "", m, B, when, name[k]);
    }
}

static int cmd_train(int argc, char **argv) {
    Trainer trs, *tr = &trs;
    memset(tr, 0, sizeof *tr);
    int rc = -1;
    const char *model = NULL, *data = NULL, *tokp = NULL, *experts = "2,2,2", *variant = "paper", *rem = "drop";
    const char *hidden = NULL, *optim = "adamw";
    long rank = 16, task_dim = 512, no_tmole = 0, sched_window = 64, epochs = 0;
    double alpha = 64, dropout = 0.1, sched_tau = 10, sched_warm = 0.1;
    int no_sched = 0, no_tmole_flag = 0, skip_nonfinite = 0, dry_run = 0;
    const char *resume = NULL, *init_adapter = NULL;
    long stop_at = 0;
    char **saved_argv = NULL;
    int saved_argc = 0;
    tr->emb_batch = 8; tr->gen_batch = 8; tr->micro = 8; tr->steps = 100; tr->max_len = 256;
    tr->save_every = 0; tr->seed = 42; tr->sched_val = 16;
    tr->lr = 1e-3; tr->warmup_ratio = 0.03; tr->clip = 1.0; tr->wd = 0; tr->tau = 0.02; tr->lambda_gen = 1.0;
    (void)no_tmole;
    Flag f[] = {
        {"--model", 's', &model, "backbone folder (frozen; Hugging Face layout)"},
        {"--data", 's', &data, "dataset folder: {Embedding,Generative}_dataset_{train,eval}.jsonl"},
        {"--tokenizer", 's', &tokp, "tokenizer.json (default: MODEL/tokenizer.json)"},
        {"--out", 's', &tr->out, "run folder (new or empty): step-0, step-K, final, losses.csv, sched.csv, plots"},
        {"--steps", 'i', &tr->steps, "optimisation steps (default 100)"},
        {"--epochs", 'i', &epochs, "instead of --steps: passes over the generative training set"},
        {"--emb-batch", 'i', &tr->emb_batch,
         "embedding queries per step (default 8, at most 4096; each brings a positive and a hard negative)"},
        {"--gen-batch", 'i', &tr->gen_batch, "generative samples per step (default 8, at most 4096)"},
        {"--micro", 'i', &tr->micro, "generative rows per micro-batch (gradient accumulation; default 8)"},
        {"--max-len", 'i', &tr->max_len, "tokens per sample at most (default 256)"},
        {"--lr", 'f', &tr->lr, "peak learning rate (default 1e-3), linear warmup then linear decay"},
        {"--warmup", 'f', &tr->warmup_ratio, "learning-rate warmup as a fraction of the steps (default 0.03)"},
        {"--clip", 'f', &tr->clip, "global gradient-norm clip (default 1.0; 0 = off)"},
        {"--weight-decay", 'f', &tr->wd, "AdamW decoupled weight decay (default 0)"},
        {"--optimizer", 's', &optim,
         "adamw | sgd (default adamw; one sgd step with --warmup 0 --clip 0 moves the adapters by exactly -lr x the "
         "gradient of L_emb + lambda L_gen, for checking that gradient)"},
        {"--temperature", 'f', &tr->tau, "InfoNCE temperature (default 0.02)"},
        {"--lambda-gen", 'f', &tr->lambda_gen,
         "weight of the generative loss, 0 to 1e6 (default 1; 0 keeps its loss, no gradient)"},
        {"--no-tmole", 'b', &no_tmole_flag, "one plain LoRA per projection instead of TMoLE (ablation)"},
        {"--experts", 's', &experts, "embedding,shared,generative experts (default 2,2,2; the authors' code runs 3,0,3)"},
        {"--rank", 'i', &rank, "LoRA rank r (default 16)"},
        {"--alpha", 'f', &alpha, "LoRA alpha; scaling alpha/r (default 64)"},
        {"--dropout", 'f', &dropout, "per-expert input dropout (default 0.1)"},
        {"--task-dim", 'i', &task_dim, "task-embedding size (default 512)"},
        {"--router-hidden", 's', &hidden, "router MLP hidden widths, e.g. 64 or 64,64 (default: none)"},
        {"--no-s2sched", 'b', &no_sched, "uniform task mixing instead of S2Sched (ablation)"},
        {"--sched-val", 'i', &tr->sched_val, "validation samples per task for S2Sched (default 16; the paper 128)"},
        {"--sched-window", 'i', &sched_window, "S2Sched history window L (default 64)"},
        {"--sched-tau", 'f', &sched_tau, "S2Sched temperature τ of eq. (5) (default 10)"},
        {"--sched-warmup", 'f', &sched_warm, "S2Sched warmup ς as a fraction of the steps (default 0.1)"},
        {"--sched-variant", 's', &variant, "paper | code (official-code.md §6)"},
        {"--sched-remainder", 's', &rem, "drop | largest: the leftover of floor(B ω_i)"},
        {"--save-every", 'i', &tr->save_every, "write RUN/step-K every K steps (default 0: only step-0 and final)"},
        {"--seed", 'i', &tr->seed, "seed of initialisation, sampling and dropout (default 42)"},
        {"--skip-nonfinite", 'b', &skip_nonfinite, "skip (and count) a batch whose loss or gradient is NaN/Inf instead of stopping"},
        {"--init-adapter", 's', &init_adapter, "start from these adapters (e.g. a merged checkpoint) instead of fresh ones"},
        {"--resume", 's', &resume, "continue RUN from its newest checkpoint, with the options it was started with"},
        {"--dry-run", 'b', &dry_run, "print the memory this configuration needs, then stop"},
        {"--stop-at", 'i', &stop_at, "stop after step K (or the next step, if past K) as if interrupted: for testing --resume"},
    };
    int nf = sizeof f / sizeof f[0];
    int r = parse_flags(argc, argv, f, nf, "--model DIR --data DIR --out RUN [options] | --resume RUN");
    if (r) return r > 0 ? 0 : -1;
    if (resume) {  /* the run's own options, as it was started (RUN/args.json) */
        char path[4096], *text;
        size_t len;
        Json a;
        long keep_stop = stop_at;
        const char *run_dir = resume;
        for (int i = 1; i < argc; i++)
            if (!strncmp(argv[i], "--", 2) && strcmp(argv[i], "--resume") && strcmp(argv[i], "--stop-at"))
                return rf_error("%s with --resume: a resumed run keeps the options it was started with (%s/args.json)",
                                argv[i], run_dir);
        snprintf(path, sizeof path, "%s/args.json", resume);
        if (rf_read_file(path, &text, &len)) return -1;
        r = json_parse(&a, text, len, path);
        free(text);
        if (r) return -1;
        saved_argv = calloc(a.count + 2, sizeof(char *));
        for (size_t i = 0; saved_argv && i < a.count; i++)
            saved_argv[1 + i] = strdup(a.items[i].type == JSON_STRING ? a.items[i].string : "");
        if (saved_argv) saved_argv[0] = argv[0];
        saved_argc = (int)a.count + 1;
        json_free(&a);
        if (!saved_argv) { rf_error("out of memory"); goto free_args; }
        resume = NULL;
        r = parse_flags(saved_argc, saved_argv, f, nf, "");
        /* the run continues where it is now, not at the --out it was started with (copied or moved since, or
         * started from another folder with a relative path): that one may hold another run */
        resume = tr->out = run_dir;
        stop_at = keep_stop;
        if (r) goto free_args;
    }
    if (need_flag("train", "--model", model) || need_flag("train", "--data", data) || need_flag("train", "--out", tr->out)) goto free_args;
    /* a new run replaces nothing already saved (rank 0 writes the files, so rank 0 looks) */
    if (!resume && dist_lead() &&
        rf_new_output(tr->out, "choose another --out, or remove it first (train --resume RUN continues a run)"))
        goto free_args;
    if (check_range("--emb-batch", tr->emb_batch, 0, 0, MAX_BRANCH_BATCH) ||
        check_range("--gen-batch", tr->gen_batch, 0, 0, MAX_BRANCH_BATCH) ||
        check_range("--micro", tr->micro, 1, 0, INFINITY) || check_range("--max-len", tr->max_len, 8, 0, RF_MAX_LEN) ||
        check_range("--steps", tr->steps, 0, 0, INFINITY) || check_range("--rank", rank, 1, 0, INFINITY) ||
        check_range("--lr", tr->lr, 0, 0, INFINITY) || check_range("--warmup", tr->warmup_ratio, 0, 0, 1) ||
        check_range("--clip", tr->clip, 0, 0, INFINITY) || check_range("--weight-decay", tr->wd, 0, 0, INFINITY) ||
        check_range("--temperature", tr->tau, 0, 1, INFINITY) ||
        check_range("--lambda-gen", tr->lambda_gen, 0, 0, 1e6) || check_range("--alpha", alpha, 0, 1, INFINITY) ||
        check_range("--sched-val", (double)tr->sched_val, 1, 0, INFINITY) ||
        check_range("--sched-tau", sched_tau, 0, 1, INFINITY) || check_range("--sched-warmup", sched_warm, 0, 0, 1) ||
        check_range("--save-every", (double)tr->save_every, 0, 0, INFINITY) ||
        check_range("--epochs", (double)epochs, 0, 0, INFINITY))
        goto free_args;
    if (strcmp(optim, "adamw") && strcmp(optim, "sgd")) {
        rf_error("--optimizer must be adamw or sgd, got '%s'", optim);
        goto free_args;
    }
    tr->sgd = !strcmp(optim, "sgd");
    if (tr->sgd && tr->wd != 0) {
        rf_error("--weight-decay is AdamW's; --optimizer sgd takes none");
        goto free_args;
    }
    if (strcmp(variant, "paper") && strcmp(variant, "code"))
        { rf_error("--sched-variant must be paper or code, got '%s'", variant); goto free_args; }
    if (strcmp(rem, "drop") && strcmp(rem, "largest"))
        { rf_error("--sched-remainder must be drop or largest, got '%s'", rem); goto free_args; }
    tr->use_sched = !no_sched;

    TmoleConfig tc;
    if (no_tmole_flag) tmole_config_lora(&tc);
    else {
        tmole_config_default(&tc);
        if (parse_experts(experts, &tc)) goto free_args;
    }
    tc.rank = (int)rank;
    tc.alpha = (float)alpha;
    tc.dropout = (float)dropout;
    tc.task_dim = (int)task_dim;
    if (hidden && !no_tmole_flag && parse_router_hidden(hidden, &tc)) goto free_args;

    if (tmole_config_check(&tc)) goto free_args;  /* before a model that may take minutes to load */
    char path[4096];
    if (model_load_frozen(&tr->m, model, "train")) goto free_args;
    if (!tokp) { snprintf(path, sizeof path, "%s/tokenizer.json", model); tokp = path; }
    if (tok_load(&tr->tok, tokp)) goto out;
    if (tr->tok.n_vocab > tr->m.cfg.vocab_size) {
        rf_error("%s: %d tokens, more than the model's vocabulary (%d)", tokp, tr->tok.n_vocab, tr->m.cfg.vocab_size);
        goto out;
    }
    if (dataset_load_split(&tr->train, data, "train", 0) || dataset_load_split(&tr->val, data, "eval", 0)) goto out;
    for (int t = 0; t < N_TASKS; t++)
        if (tr->train.pool[t].n) tr->tasks[TASKS[t].kind][tr->n_tasks[TASKS[t].kind]++] = t;
    if (dist_lead() && (tr->n_tasks[KIND_EMB] || tr->n_tasks[KIND_GEN])) warn_empty_branches(tr, data);
    if (tmole_alloc(&tr->tm, &tc, &tr->m.cfg)) goto out;
    {   /* the memory this run needs, before the large allocations */
        /* per process: its block of the 3Q embedding rows, or one generative micro-batch */
        long emb_rows = (3 * tr->emb_batch + dist_size() - 1) / dist_size();
        int rows = (int)(emb_rows > tr->micro ? emb_rows : tr->micro);
        tr->val_rows = rows;  /* S2Sched's validation embeds in chunks of as many rows: no larger activations */
        double mib = 1.0 / 1048576;
        double backbone = tr->m.total * (tr->m.params16 ? 2.0 : 4.0) * mib, adapters = tr->tm.total * 16.0 * mib;  /* params, grads, m, v */
        double acts = acts_bytes_for(&tr->m.cfg, rows, (int)tr->max_len) * mib;
        double tacts = (double)rows * tr->max_len * 4.0 * mib *
                       ((double)tr->tm.n_sites * tmole_n_experts(&tc) * tc.rank + 3.25 * tr->m.cfg.hidden_size * 2);
        double total = backbone + adapters + acts + tacts;
        int here = dist_local_size();  /* every process on this machine holds all of that */
        const char *where;
        double mem = mem_total(&where) * mib;
        char procs[96] = "";
        if (here > 1) snprintf(procs, sizeof procs, " per process x %d processes on this machine = %.0f MiB", here,
                               total * here);
        if ((dry_run || total * here > 0.9 * mem) && dist_lead())
            fprintf(stderr, "train: memory: backbone %.0f MiB, adapters with gradients and AdamW %.0f MiB, activations "
                    "%.0f MiB (%d rows x %ld tokens) + adapters' %.0f MiB = %.0f MiB%s of %s %.0f MiB\n", backbone,
                    adapters, acts, rows, tr->max_len, tacts, total, procs, where, mem);
        if (total * here > 0.9 * mem) {
            rf_error("needs about %.0f MiB, more than 90%% of %s %.0f MiB: lower --emb-batch, --micro or --max-len%s",
                     total * here, where, mem, here > 1 ? ", or run fewer processes per machine" : "");
            goto out;
        }
        if (tr->use_sched && strcmp(rem, "largest") && dist_lead())
            warn_starved_branches(tr, sched_warmup_steps(sched_warm, tr->steps));
        if (dry_run) { rc = 0; goto out; }
    }
    tmole_init(&tr->tm, (uint64_t)tr->seed);
    if (init_adapter) {  /* continue from given adapters; their shapes must match the options */
        Tmole given;
        if (tmole_load(&given, init_adapter, &tr->m.cfg)) goto out;
        int same = given.total == tr->tm.total && given.n_params == tr->tm.n_params;
        for (int i = 0; same && i < given.n_params; i++) same = !strcmp(given.spec[i].name, tr->tm.spec[i].name);
        if (same) memcpy(tr->tm.params, given.params, given.total * sizeof(float));
        tmole_free(&given);
        if (!same) { rf_error("%s: adapters of another configuration than --experts/--rank/--task-dim/--router-hidden", init_adapter); goto out; }
    }
    rng_seed(&tr->rng, (uint64_t)tr->seed * 7919 + 1);
    for (int t = 0; t < N_TASKS; t++)
        if (pool_iter_init(&tr->it[t], tr->train.pool[t].n, (uint64_t)tr->seed + 101 * t)) goto out;
    if (pick_validation(tr, tr->sched_val, (uint64_t)tr->seed)) goto out;  /* S2Sched's fixed validation sample */
    if (!tr->n_tasks[KIND_EMB] && !tr->n_tasks[KIND_GEN]) { rf_error("%s: no training records", data); goto out; }
    if (epochs > 0) {
        long n_gen = 0;
        for (int t = 0; t < N_TASKS; t++)
            if (TASKS[t].kind == KIND_GEN) n_gen += (long)tr->train.pool[t].n;
        tr->steps = epochs * ((n_gen + tr->gen_batch - 1) / (tr->gen_batch ? tr->gen_batch : 1));
    }
    tr->grads = calloc_big(tr->tm.total, sizeof(float));
    tr->omega_hist = malloc((size_t)(tr->steps + 1) * N_TASKS * sizeof(double));
    tr->loss_hist = malloc((size_t)(tr->steps + 1) * 2 * sizeof(double));
    tr->val_hist = malloc((size_t)(tr->steps + 1) * N_TASKS * sizeof(double));
    if (!tr->omega_hist || !tr->loss_hist || !tr->val_hist) { rf_error("out of memory"); goto out; }
    for (long i = 0; i < (tr->steps + 1) * N_TASKS; i++) tr->val_hist[i] = tr->omega_hist[i] = NAN;
    if (!tr->grads || adamw_init(&tr->opt, tr->tm.total, (float)tr->lr, 0.9f, 0.999f, 1e-8f, (float)tr->wd)) {
        rf_error("out of memory for adapter gradients");
        goto out;
    }
    if (tr->use_sched) {
        SchedConfig sc;
        sched_config_default(&sc, tr->steps);
        sc.window = (int)sched_window;
        sc.tau = sched_tau;
        sc.warmup = sched_warmup_steps(sched_warm, tr->steps);
        sc.variant = strcmp(variant, "code") ? SCHED_PAPER : SCHED_CODE;
        sc.remainder = strcmp(rem, "largest") ? REM_DROP : REM_LARGEST;
        sc.batch[KIND_EMB] = (int)tr->emb_batch;
        sc.batch[KIND_GEN] = (int)tr->gen_batch;
        int all[N_TASKS], n_all = 0;
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < tr->n_tasks[k]; i++) all[n_all++] = tr->tasks[k][i];
        if (sched_init(&tr->sched, &sc, all, n_all)) goto out;
    }
    long start = 0;
    int lead = dist_lead();
    char lpath[4200], spath[4200], ranks[64] = "";
    if (dist_size() > 1) snprintf(ranks, sizeof ranks, ", %d MPI ranks", dist_size());
    snprintf(lpath, sizeof lpath, "%s/losses.csv", tr->out);
    snprintf(spath, sizeof spath, "%s/sched.csv", tr->out);
    if (resume) {
        char name[256];
        if (latest_checkpoint(tr->out, name, sizeof name) < 0) { rf_error("%s: no checkpoint to resume from", tr->out); goto out; }
        if ((start = load_checkpoint(tr, name)) < 0) goto out;
        /* rows written after that checkpoint are redone (rank 0 keeps the CSVs) */
        if (lead && (truncate_csv(lpath, start + 1, 1) || (tr->use_sched && truncate_csv(spath, start, 0)))) goto out;
        char *text;
        size_t len;
        if (lead && rf_read_file(lpath, &text, &len)) goto out;
        if (lead) { buf_append(&tr->loss_csv, text, len); free(text); }
        if (lead && tr->use_sched) {
            if (rf_read_file(spath, &text, &len)) goto out;
            buf_append(&tr->sched_csv, text, len);
            free(text);
        }
        if (start >= tr->steps && !strcmp(name, "final")) {  /* every rank read the same checkpoint */
            if (lead) fprintf(stderr, "train: %s is finished (%s, step %ld of %ld): nothing to do\n", tr->out, name,
                              start, tr->steps);
            rc = 0;
            goto out;
        }
        if (lead) fprintf(stderr, "train: resuming %s from %s (step %ld of %ld)\n", tr->out, name, start, tr->steps);
    } else if (lead) {
        /* the options, for --resume, with the input paths made absolute (a run resumes from any folder);
         * then step-0, before any update: Model Merge needs it (§4.4) */
        RfBuf a = {0};
        buf_printf(&a, "[");
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--stop-at")) { i++; continue; }
            const char *prev = argv[i - 1];
            int is_path = i > 1 && (!strcmp(prev, "--model") || !strcmp(prev, "--tokenizer") ||
                                    !strcmp(prev, "--data") || !strcmp(prev, "--init-adapter"));
            char *full = is_path ? realpath(argv[i], NULL) : NULL;
            const char *v = full ? full : argv[i];
            buf_printf(&a, "%s", i > 1 ? ", " : "");
            json_write_string(&a, v, strlen(v));
            free(full);
        }
        buf_printf(&a, "]\n");
        snprintf(path, sizeof path, "%s/args.json", tr->out);
        r = rf_mkdirs(tr->out) || !a.data || rf_write_file_atomic(path, a.data, a.len);
        buf_free(&a);
        if (r) { if (!rf_last_error()[0]) rf_error("%s: cannot write", path); goto out; }
        buf_printf(&tr->loss_csv, "step,lr,loss,loss_emb,loss_gen,grad_norm,emb_queries,gen_samples,tokens,seconds\n");
        if (tr->use_sched) buf_printf(&tr->sched_csv, "step,group,task,alpha,gamma_inter,gamma_intra,beta,omega,n\n");
        /* the CSV headers go to disk before step-0 does: a run killed before step 1 resumes */
        if (!tr->loss_csv.data || (tr->use_sched && !tr->sched_csv.data)) { rf_error("out of memory"); goto out; }
        if (rf_write_file_atomic(lpath, tr->loss_csv.data, tr->loss_csv.len) ||
            (tr->use_sched && rf_write_file_atomic(spath, tr->sched_csv.data, tr->sched_csv.len)) ||
            save_checkpoint(tr, "step-0", 0))
            goto out;
    }
    catch_stop_signals();  /* finish the step, save, and say how to resume */
    if (lead)
        fprintf(stderr, "train: %s + %s adapters (%zu parameters, experts %d/%d/%d, rank %d), %ld steps, "
            "batches %ld emb + %ld gen, S2Sched %s%s\n", model, no_tmole_flag ? "LoRA" : "TMoLE", tr->tm.total,
            tc.n_emb, tc.n_shared, tc.n_gen, tc.rank, tr->steps, tr->emb_batch, tr->gen_batch,
            tr->use_sched ? variant : "off", ranks);

    /* ⌈ratio × steps⌉ learning-rate warmup steps, as Hugging Face's Trainer (the authors' code) counts them */
    long warmup = sched_warmup_steps(tr->warmup_ratio, tr->steps);
    double t_start = rf_now();
    for (long step = start; step < tr->steps; step++) {
        double t0 = rf_now();
        int counts[N_TASKS] = {0};
        /* how many samples of each task (§4.3.2): S2Sched, or uniform over tasks */
        for (int t = 0; t < N_TASKS; t++) tr->omega_hist[step * N_TASKS + t] = NAN;
        if (tr->use_sched) {
            double vl[N_TASKS];
            if (task_losses(tr, &tr->val, tr->val_pick, tr->n_val, vl)) goto out;
            memcpy(tr->val_hist + step * N_TASKS, vl, sizeof vl);
            if (sched_update(&tr->sched, vl)) goto out;
            for (int k = 0; k < 2; k++) {
                sched_counts(&tr->sched, (TaskKind)k, NULL, counts);
                const SchedGroup *g = &tr->sched.group[k];
                if (!tr->sched.scheduled) continue;
                for (int i = 0; i < g->m; i++) tr->omega_hist[step * N_TASKS + g->task[i]] = g->omega[i];
                for (int i = 0; i < g->m; i++)
                    buf_printf(&tr->sched_csv, "%ld,%c,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%d\n", step, k == KIND_EMB ? 'E' : 'G',
                            TASKS[g->task[i]].short_name, g->alpha[i], g->g_inter[i], g->g_intra[i], g->beta,
                            g->omega[i], counts[g->task[i]]);
            }
        } else {
            for (int k = 0; k < 2; k++) {
                int m = tr->n_tasks[k], n[N_TASKS];
                double w[N_TASKS];
                for (int i = 0; i < m; i++) w[i] = 1.0 / m;
                sched_count_samples(n, w, NULL, m, k == KIND_EMB ? (int)tr->emb_batch : (int)tr->gen_batch, REM_LARGEST);
                for (int i = 0; i < m; i++) counts[tr->tasks[k][i]] = n[i];
            }
        }
        /* draw the records of this step's two batches */
        Record *emb_recs[MAX_BRANCH_BATCH], *gen_recs[MAX_BRANCH_BATCH];  /* the counts sum to at most the batch */
        int ne = 0, ng = 0;
        for (int t = 0; t < N_TASKS; t++)
            for (int i = 0; i < counts[t] && ne < MAX_BRANCH_BATCH && ng < MAX_BRANCH_BATCH; i++) {
                Record *rec = &tr->train.pool[t].recs[pool_iter_next(&tr->it[t])];
                if (TASKS[t].kind == KIND_EMB) emb_recs[ne++] = rec;
                else gen_recs[ng++] = rec;
            }
        memset(tr->grads, 0, tr->tm.total * sizeof(float));
        int q = 0;
        long tokens = 0;
        double le = ne ? emb_branch(tr, emb_recs, ne, 1, 1.0f, &q) : 0;
        double lg = ng ? gen_branch(tr, gen_recs, ng, 1, (float)tr->lambda_gen, &tokens) : 0;
        if ((isnan(le) || isnan(lg)) && rf_last_error()[0]) goto out;
        if (dist_sum_floats(tr->grads, tr->tm.total, "summing adapter gradients")) goto out;
        double loss = le + tr->lambda_gen * lg;
        tr->loss_hist[2 * step] = ne ? le : NAN;
        tr->loss_hist[2 * step + 1] = ng ? lg : NAN;
        double gnorm = clip_grad_norm(tr->grads, tr->tm.total, tr->clip);
        float lr = lr_schedule((float)tr->lr, step, warmup, tr->steps);
        if (!isfinite(loss) || !isfinite(gnorm)) {  /* name what went wrong, keep the last good checkpoint */
            char tasks[256] = "";
            for (int t = 0; t < N_TASKS; t++)
                if (counts[t]) snprintf(tasks + strlen(tasks), sizeof tasks - strlen(tasks), " %s", TASKS[t].short_name);
            const char *branch = !isfinite(le) ? "embedding" : !isfinite(lg) ? "generative" : "gradient of";
            if (!skip_nonfinite) {
                rf_error("step %ld: %s loss is not finite (L_emb %g, L_gen %g, grad norm %g); tasks in the "
                         "batch:%s. The last checkpoint is intact; --skip-nonfinite skips such batches",
                         step + 1, branch, le, lg, gnorm, tasks);
                goto out;
            }
            tr->nonfinite_skipped++;
            rf_progress_end();
            if (lead) fprintf(stderr, "train: step %ld: %s loss is not finite; batch skipped (tasks:%s)\n", step + 1, branch, tasks);
        } else if (tr->sgd) {
            sgd_step(tr->tm.params, tr->grads, tr->tm.total, lr);
        } else {
            adamw_step(&tr->opt, tr->tm.params, tr->grads, lr);
        }
        double dt = rf_now() - t0;
        buf_printf(&tr->loss_csv, "%ld,%.6g,%.9g,%.9g,%.9g,%.6g,%d,%d,%ld,%.4f\n", step + 1, lr, loss, le, lg, gnorm, q, ng,
                tokens, dt);
        if (lead && (!tr->loss_csv.data || (tr->use_sched && !tr->sched_csv.data))) { rf_error("out of memory"); goto out; }
        if (lead && (rf_write_file_atomic(lpath, tr->loss_csv.data, tr->loss_csv.len) ||
                     (tr->use_sched && rf_write_file_atomic(spath, tr->sched_csv.data, tr->sched_csv.len))))
            goto out;
        if (lead) {  /* a branch that drew no sample this step shows "-", not a loss of 0 */
            char es[32] = "-", gs[32] = "-";
            if (ne) snprintf(es, sizeof es, "%.4f", le);
            if (ng) snprintf(gs, sizeof gs, "%.4f", lg);
            rf_progress("train: step %ld/%ld  loss %.4f (emb %s, gen %s)  lr %.2e  %.1f s/step  %.0f s left   ",
                        step + 1, tr->steps, loss, es, gs, lr, dt,
                        (rf_now() - t_start) / (step + 1) * (tr->steps - step - 1));
        }
        int stop = stop_requested || (stop_at > 0 && step + 1 >= stop_at && step + 1 < tr->steps);
        if (dist_max_int(&stop, "agreeing to stop")) goto out;  /* a signal to any rank stops them all */
        if ((tr->save_every > 0 && (step + 1) % tr->save_every == 0 && step + 1 < tr->steps) || stop) {
            char name[64];
            snprintf(name, sizeof name, "step-%ld", step + 1);
            if (save_checkpoint(tr, name, step + 1)) goto out;
            if (stop) {
                rf_progress_end();
                if (lead) fprintf(stderr, "train: stopped after step %ld, saved %s/%s; continue with: recfound train --resume %s\n",
                        step + 1, tr->out, name, tr->out);
                rc = 0;
                goto out;
            }
        }
    }
    rf_progress_end();
    if (save_checkpoint(tr, "final", tr->steps)) goto out;
    if (lead && write_plots(tr)) goto out;
    long idle = 0;  /* steps that drew no sample in either branch (losses.svg has no point for them) */
    for (long s = 0; s < tr->steps; s++) idle += isnan(tr->loss_hist[2 * s]) && isnan(tr->loss_hist[2 * s + 1]);
    if (lead && idle)
        fprintf(stderr, "train: warning: %ld of the %ld steps drew no sample in either branch and trained nothing "
                "(see the warnings before the run)\n", idle, tr->steps);
    if (lead && (tr->stats.dropped || tr->stats.truncated || tr->skipped_no_negative || tr->nonfinite_skipped))
        fprintf(stderr, "train: %ld samples dropped (answer or text beyond --max-len), %ld truncated, "
                "%ld embedding records without a negative skipped, %ld non-finite batches skipped\n",
                tr->stats.dropped, tr->stats.truncated, tr->skipped_no_negative, tr->nonfinite_skipped);
    if (lead) {
        char mid[96] = "";  /* the --save-every checkpoints */
        long every = tr->save_every, n_mid = every > 0 ? (tr->steps - 1) / every : 0;
        if (n_mid == 1) snprintf(mid, sizeof mid, ", step-%ld", every);
        else if (n_mid > 1) snprintf(mid, sizeof mid, ", step-%ld to step-%ld (every %ld)", every, n_mid * every, every);
        fprintf(stderr, "train: wrote %s/step-0%s, %s/final and %s/losses.csv in %.0f s\n", tr->out, mid, tr->out,
                tr->out, rf_now() - t_start);
    }
    rc = 0;
out:
    trainer_free(tr);
free_args:
    for (int i = 1; i < saved_argc; i++) free(saved_argv[i]);
    free(saved_argv);
    return rc;
}

/* `recfound loss`: the held-out loss of every task, the same measure S2Sched
 * watches: answer-token cross-entropy for generative tasks, InfoNCE over the
 * sampled records' triplets (in-sample negatives) for embedding tasks. */
static int cmd_loss(int argc, char **argv) {
    Trainer trs, *tr = &trs;
    memset(tr, 0, sizeof *tr);
    const char *model = NULL, *adapter = NULL, *data = NULL, *tokp = NULL, *split = "eval";
    long samples = 64, seed = 42;
    tr->max_len = 256;
    tr->tau = 0.02;
    tr->micro = 8;
    tr->val_rows = 24;  /* embedding texts per forward */
    Flag f[] = {{"--model", 's', &model, "backbone folder"},
                {"--adapter", 's', &adapter, "adapter folder (adapter_model.safetensors); default: the backbone alone"},
                {"--data", 's', &data, "dataset folder"},
                {"--split", 's', &split, "train | eval | test (default eval)"},
                {"--tokenizer", 's', &tokp, "tokenizer.json (default: MODEL/tokenizer.json)"},
                {"--samples", 'i', &samples, "records per task, a seeded sample (default 64)"},
                {"--max-len", 'i', &tr->max_len, "tokens per sample at most (default 256)"},
                {"--temperature", 'f', &tr->tau, "InfoNCE temperature (default 0.02)"},
                {"--seed", 'i', &seed, "which records are sampled (default 42)"}};
    int r = parse_flags(argc, argv, f, sizeof f / sizeof f[0], "--model DIR [--adapter DIR] --data DIR [--split eval]");
    if (r) return r > 0 ? 0 : -1;
    if (need_flag("loss", "--model", model) || need_flag("loss", "--data", data)) return -1;
    if (check_range("--samples", samples, 1, 0, INFINITY) || check_range("--max-len", tr->max_len, 8, 0, RF_MAX_LEN) ||
        check_range("--temperature", tr->tau, 0, 1, INFINITY))
        return -1;
    char path[4096];
    int rc = -1;
    double loss[N_TASKS];
    if (model_load_frozen(&tr->m, model, "loss")) return -1;
    if (!tokp) { snprintf(path, sizeof path, "%s/tokenizer.json", model); tokp = path; }
    if (tok_load(&tr->tok, tokp)) goto out;
    if (adapter && tmole_load(&tr->tm, adapter, &tr->m.cfg)) goto out;
    if (dataset_load_split(&tr->val, data, split, 0)) goto out;
    if (pick_validation(tr, samples, (uint64_t)seed)) goto out;
    if (task_losses(tr, &tr->val, tr->val_pick, tr->n_val, loss)) goto out;
    if (!dist_lead()) return 0;  /* over MPI, rank 0 prints */
    char unfit[256] = "";
    for (int t = 0; t < N_TASKS; t++)
        if (tr->n_val[t] && isnan(loss[t]))
            snprintf(unfit + strlen(unfit), sizeof unfit - strlen(unfit), "%s%s", unfit[0] ? ", " : "",
                     TASKS[t].short_name);
    if (unfit[0])
        fprintf(stderr, "loss: warning: %s: no sample fits --max-len %ld (an embedding task also needs records "
                        "with a negative): their loss is nan\n", unfit, tr->max_len);
    printf("task,kind,samples,loss\n");  /* nan: no sample of the task fits --max-len */
    for (int t = 0; t < N_TASKS; t++)
        if (tr->n_val[t]) printf("%s,%s,%d,%.9g\n", TASKS[t].short_name, TASKS[t].kind == KIND_EMB ? "E" : "G", tr->n_val[t], loss[t]);
    rc = 0;
out:
    trainer_free(tr);
    return rc;
}

/* ------------------------------------------------------------ benchmarks */

/* The model of a bench-* command: the folder given, else a random `small` preset. */
static int bench_model(Model *m, const char *dir) {
    if (dir) return model_load(m, dir);
    Config c;
    if (config_preset(&c, "small", 0) || model_alloc(m, &c)) return -1;
    model_init_random(m, 42);
    return 0;
}

/* One layer's causal attention alone, forward and backward, on the step's
 * shapes and random q, k, v: the best of `reps` runs of each. */
static int bench_attention(const Config *c, int B, int T, const int *lengths, int reps) {
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd, na = (size_t)B * H * T * T;
    float *q = malloc(nq * sizeof(float)), *k = malloc(nk * sizeof(float)), *v = malloc(nk * sizeof(float));
    float *o = malloc(nq * sizeof(float)), *dout = malloc(nq * sizeof(float)), *att = calloc_big(na, sizeof(float));
    float *dq = calloc(nq, sizeof(float)), *dk = calloc(nk, sizeof(float)), *dv = calloc(nk, sizeof(float));
    int rc = q && k && v && o && dout && att && dq && dk && dv ? 0 : rf_error("out of memory");
    if (!rc) {
        Rng rng;
        rng_seed(&rng, 2);
        for (size_t i = 0; i < nq; i++) q[i] = rng_normal(&rng), dout[i] = rng_normal(&rng);
        for (size_t i = 0; i < nk; i++) k[i] = rng_normal(&rng), v[i] = rng_normal(&rng);
        double best_f = 1e30, best_b = 1e30;
        for (int r = 0; r <= reps; r++) {  /* the first run warms up */
            double t0 = rf_now();
            attention_forward(o, att, q, k, v, lengths, B, T, H, KV, hd, ATTN_CAUSAL, c->sliding_window);
            double t1 = rf_now();
            attention_backward(dq, dk, dv, dout, att, q, k, v, lengths, B, T, H, KV, hd, ATTN_CAUSAL,
                               c->sliding_window);
            double t2 = rf_now();
            if (r > 0 && t1 - t0 < best_f) best_f = t1 - t0;
            if (r > 0 && t2 - t1 < best_b) best_b = t2 - t1;
        }
        printf("c attention per layer (causal, alone, best of %d): forward_ms=%.2f backward_ms=%.2f\n", reps,
               1000 * best_f, 1000 * best_b);
    }
    free(q); free(k); free(v); free(o); free(dout); free_big(att); free(dq); free(dk); free(dv);
    return rc;
}

/* Full-parameter AdamW training steps on random ids: tokens/s and peak RSS. */
static int cmd_bench_train(int argc, char **argv) {
    const char *mdir = NULL;
    long B = 8, T = 256, steps = 5;
    Flag f[] = {{"--model", 's', &mdir, "model folder (default: a random 'small' preset)"},
                {"--batch", 'i', &B, "rows per step (default 8)"},
                {"--len", 'i', &T, "tokens per row (default 256)"},
                {"--steps", 'i', &steps, "timed steps after one warm-up step (default 5)"}};
    int r = parse_flags(argc, argv, f, 4, "[--model DIR] [--batch B] [--len T] [--steps N]");
    if (r) return r > 0 ? 0 : -1;
    if (check_range("--batch", B, 1, 0, INFINITY) || check_range("--len", T, 2, 0, INFINITY) ||
        check_range("--steps", steps, 1, 0, INFINITY))
        return -1;
    Model m;
    if (bench_model(&m, mdir)) return -1;
    int *ids = malloc((size_t)B * T * sizeof(int)), *lengths = malloc(B * sizeof(int));
    float *w = malloc((size_t)B * T * sizeof(float)), *grads = calloc_big(m.total, sizeof(float));
    Rng rng;
    rng_seed(&rng, 1);
    AdamW adam = {0};
    int rc = (ids && lengths && w && grads) ? 0 : rf_error("out of memory");
    if (!rc) rc = adamw_init(&adam, m.total, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f);
    Acts *a = rc ? NULL : acts_new(&m, (int)B, (int)T);
    if (!rc && !a) rc = -1;
    if (!rc) {
        for (long i = 0; i < B * T; i++) ids[i] = (int)(rng_next(&rng) % m.cfg.vocab_size);
        for (long i = 0; i < B; i++) lengths[i] = (int)T;
        Batch b = {.B = (int)B, .T = (int)T, .ids = ids, .lengths = lengths};
        lm_weights_mean(w, &b);
        double t0 = 0, phase[5] = {0};  /* zeroing, forward, LM head + loss, backward, AdamW */
        for (long s = 0; s <= steps; s++) {
            double t[6];
            t[0] = rf_now();
            if (s == 1) t0 = t[0];
            memset(grads, 0, m.total * sizeof(float));
            t[1] = rf_now();
            model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
            t[2] = rf_now();
            model_lm_loss(&m, a, &b, w, NULL, grads, 1);
            t[3] = rf_now();
            model_backward(&m, NULL, a, &b, ATTN_CAUSAL, grads, NULL);
            t[4] = rf_now();
            adamw_step(&adam, m.params, grads, 1e-4f);
            t[5] = rf_now();
            for (int i = 0; s > 0 && i < 5; i++) phase[i] += t[i + 1] - t[i];
        }
        double dt = rf_now() - t0;
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        printf("c train tokens_per_s=%.1f step_ms=%.1f params=%zu batch=%ld len=%ld threads=%d\n",
               B * T * steps / dt, 1000 * dt / steps, m.total, B, T, threads);
        printf("c peak_rss_mb=%.1f activations_mb=%.1f\n", peak_rss_mb(), acts_bytes(a) / 1048576.0);
        printf("c train phases_ms: zero_grad=%.1f forward=%.1f lm_head_loss=%.1f backward=%.1f adamw=%.1f\n",
               1000 * phase[0] / steps, 1000 * phase[1] / steps, 1000 * phase[2] / steps, 1000 * phase[3] / steps,
               1000 * phase[4] / steps);
        rc = bench_attention(&m.cfg, (int)B, (int)T, lengths, (int)steps);
    }
    acts_free(a);
    adamw_free(&adam);
    free(ids); free(lengths); free(w); free_big(grads);
    model_free(&m);
    return rc;
}

/* One RecFound joint step on random ids, as tests/reference/bench_torch_recfound.py
 * times it in PyTorch: frozen backbone, TMoLE 2/2/2 rank 16 on q,k,v,o with
 * dropout 0.1; an embedding branch of Q (query, positive, negative) triplets
 * of length L (bidirectional, pooled from position 4, InfoNCE at 0.02) and a
 * generative branch of G rows (causal, CE over the second half of each row),
 * then AdamW on the adapters. */
static int cmd_bench_recfound(int argc, char **argv) {
    const char *mdir = NULL;
    long Q = 8, G = 8, L = 128, steps = 5;
    Flag f[] = {{"--model", 's', &mdir, "backbone folder (default: a random 'small' preset)"},
                {"--queries", 'i', &Q, "embedding queries per step (each with a positive and a negative; default 8)"},
                {"--gen", 'i', &G, "generative rows per step (default 8)"},
                {"--len", 'i', &L, "tokens per row (default 128)"},
                {"--steps", 'i', &steps, "timed steps after one warm-up step (default 5)"}};
    int r = parse_flags(argc, argv, f, 5, "[--model DIR] [--queries Q] [--gen G] [--len L] [--steps N]");
    if (r) return r > 0 ? 0 : -1;
    if (check_range("--queries", Q, 1, 0, INFINITY) || check_range("--gen", G, 1, 0, INFINITY) ||
        check_range("--len", L, 8, 0, INFINITY) || check_range("--steps", steps, 1, 0, INFINITY))
        return -1;
    Model m;
    if (bench_model(&m, mdir)) return -1;
    TmoleConfig tc;
    Tmole tm;
    tmole_config_default(&tc);
    if (tmole_alloc(&tm, &tc, &m.cfg)) { model_free(&m); return -1; }
    tmole_init(&tm, 1);
    Rng rng;
    rng_seed(&rng, 3);
    for (int i = 0; i < tm.n_sites; i++)  /* B != 0, so that every gradient is real work */
        for (int j = 0; j < tmole_n_experts(&tc) && tm.site[i].in; j++)
            for (int k = 0; k < tm.site[i].out * tc.rank; k++) tm.params[tm.site[i].B[j] + k] = 0.02f * rng_normal(&rng);
    int R = (int)(3 * Q > G ? 3 * Q : G), C = m.cfg.hidden_size;
    int *ids = malloc((size_t)R * L * sizeof(int)), *len = malloc(R * sizeof(int)), *tasks = malloc(R * sizeof(int));
    int *from = malloc(R * sizeof(int));
    float *w = malloc((size_t)R * L * sizeof(float)), *grads = calloc_big(tm.total, sizeof(float));
    float *emb = malloc((size_t)3 * Q * C * sizeof(float)), *demb = malloc((size_t)3 * Q * C * sizeof(float));
    float *norms = malloc(3 * Q * sizeof(float));
    AdamW opt = {0};
    Acts *a = NULL;
    int rc = (ids && len && tasks && from && w && grads && emb && demb && norms) ? 0 : rf_error("out of memory");
    if (!rc) rc = adamw_init(&opt, tm.total, 1e-4f, 0.9f, 0.999f, 1e-8f, 0);
    if (!rc) rc = acts_ensure(&a, &m, R, (int)L);
    double t0 = 0;
    for (long s = 0; !rc && s <= steps; s++) {
        if (s == 1) t0 = rf_now();
        for (long i = 0; i < (long)R * L; i++) ids[i] = (int)(rng_next(&rng) % m.cfg.vocab_size);
        memset(grads, 0, tm.total * sizeof(float));
        /* embedding branch: rows [queries | positives | negatives] */
        for (int i = 0; i < 3 * Q; i++) { len[i] = (int)L; from[i] = 4; tasks[i] = (i % Q) % 2; }
        Batch eb = {.B = (int)(3 * Q), .T = (int)L, .ids = ids, .lengths = len, .tasks = tasks, .dropout_seed = rng_next(&rng) | 1};
        model_forward(&m, &tm, a, &eb, ATTN_BIDIRECTIONAL);
        pool_forward(emb, norms, acts_hidden(a), &eb, from, C);
        memset(demb, 0, (size_t)3 * Q * C * sizeof(float));
        infonce(demb, demb + (size_t)Q * C, emb, emb + (size_t)Q * C, (int)Q, (int)(2 * Q), C, 0.02f);
        pool_backward(acts_dhidden(a), demb, emb, norms, &eb, from, C);
        model_backward(&m, &tm, a, &eb, ATTN_BIDIRECTIONAL, NULL, grads);
        /* generative branch: CE over the second half of each row */
        for (int i = 0; i < G; i++) { len[i] = (int)L; tasks[i] = 3 + i % 10; }
        for (long i = 0; i < G * L; i++) {
            long t = i % L;
            w[i] = (t >= L / 2 - 1 && t < L - 1) ? 1.0f / (G * (L - L / 2)) : 0.0f;
        }
        Batch gb = {.B = (int)G, .T = (int)L, .ids = ids, .lengths = len, .tasks = tasks, .dropout_seed = rng_next(&rng) | 1};
        model_forward(&m, &tm, a, &gb, ATTN_CAUSAL);
        model_lm_loss(&m, a, &gb, w, NULL, NULL, 1);
        model_backward(&m, &tm, a, &gb, ATTN_CAUSAL, NULL, grads);
        adamw_step(&opt, tm.params, grads, 1e-4f);
    }
    if (!rc) {
        double dt = rf_now() - t0;
        printf("c recfound samples_per_s=%.2f step_ms=%.1f adapter_params=%zu\n", (Q + G) * steps / dt, 1000 * dt / steps,
               tm.total);
        printf("c peak_rss_mb=%.1f\n", peak_rss_mb());
    }
    acts_free(a);
    adamw_free(&opt);
    free(ids); free(len); free(tasks); free(from); free(w); free_big(grads); free(emb); free(demb); free(norms);
    tmole_free(&tm);
    model_free(&m);
    return rc;
}

/* Generation and embedding inference, as bench_torch_recfound.py --mode
 * generate|embed times them: greedy decoding with the KV cache (a prompt of 64
 * random tokens, 64 new tokens, batch 1, end-of-sequence ignored) and
 * bidirectional embedding of batches of 8 sequences of 128 tokens. */
static int cmd_bench_infer(int argc, char **argv) {
    const char *mdir = NULL;
    long prompt = 64, new_tokens = 64, batch = 8, len = 128, reps = 5;
    Flag f[] = {{"--model", 's', &mdir, "model folder (default: a random 'small' preset)"},
                {"--prompt", 'i', &prompt, "prompt tokens (default 64)"},
                {"--new", 'i', &new_tokens, "generated tokens (default 64)"},
                {"--batch", 'i', &batch, "embedding: sequences per forward (default 8)"},
                {"--len", 'i', &len, "embedding: tokens per sequence (default 128)"},
                {"--reps", 'i', &reps, "timed repetitions after a warm-up (default 5)"}};
    int r = parse_flags(argc, argv, f, 6, "[--model DIR] [--prompt P] [--new N] [--batch B] [--len T] [--reps R]");
    if (r) return r > 0 ? 0 : -1;
    if (check_range("--prompt", prompt, 1, 0, INFINITY) || check_range("--new", new_tokens, 1, 0, INFINITY) ||
        check_range("--batch", batch, 1, 0, INFINITY) || check_range("--len", len, 2, 0, INFINITY) ||
        check_range("--reps", reps, 1, 0, INFINITY))
        return -1;
    Model m;
    if (bench_model(&m, mdir)) return -1;
    int V = m.cfg.vocab_size, C = m.cfg.hidden_size;
    Rng rng;
    rng_seed(&rng, 5);
    KvDecoder *kv = kv_new(&m, (int)(prompt + new_tokens));
    int *ids = malloc((size_t)(batch * len > prompt ? batch * len : prompt) * sizeof(int));
    int *lengths = malloc(batch * sizeof(int)), *from = calloc(batch, sizeof(int));
    float *logits = malloc((size_t)V * sizeof(float)), *emb = malloc((size_t)batch * C * sizeof(float));
    float *norms = malloc(batch * sizeof(float));
    Acts *a = NULL;
    int rc = (kv && ids && lengths && from && logits && emb && norms) ? 0 : rf_error("out of memory");
    if (!rc) rc = acts_ensure_forward(&a, &m, (int)batch, (int)len);
    double t_gen = 0, t_emb = 0;
    for (long rep = 0; !rc && rep <= reps; rep++) {
        for (long i = 0; i < prompt; i++) ids[i] = (int)(rng_next(&rng) % V);
        double t0 = rf_now();
        kv_reset(kv);
        rc = kv_forward(kv, ids, (int)prompt, logits, 0);
        for (long k = 0; !rc && k < new_tokens; k++) {
            int best = 0;
            for (int j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
            rc = kv_forward(kv, &best, 1, logits, 0);
        }
        if (rep) t_gen += rf_now() - t0;
        for (long i = 0; i < batch * len; i++) ids[i] = (int)(rng_next(&rng) % V);
        for (long i = 0; i < batch; i++) lengths[i] = (int)len;
        Batch b = {.B = (int)batch, .T = (int)len, .ids = ids, .lengths = lengths};
        t0 = rf_now();
        model_forward(&m, NULL, a, &b, ATTN_BIDIRECTIONAL);
        pool_forward(emb, norms, acts_hidden(a), &b, from, C);
        if (rep) t_emb += rf_now() - t0;
    }
    if (!rc) {
        printf("c generate tokens_per_s=%.1f (prompt %ld, %ld new, KV cache)\n", new_tokens * reps / t_gen, prompt, new_tokens);
        printf("c embed seqs_per_s=%.1f (batches of %ld x %ld)\n", batch * reps / t_emb, batch, len);
    }
    acts_free(a);
    kv_free(kv);
    free(ids); free(lengths); free(from); free(logits); free(emb); free(norms);
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
    {"train", cmd_train, "RecFound: TMoLE adapters on both branches, S2Sched (§4)"},
    {"loss", cmd_loss, "held-out loss of every task (backbone or adapters)"},
    {"eval", eval_main, "generative and embedding evaluation (Tables 2-3)"},
    {"metrics", metrics_main, "score an outputs.jsonl of predictions"},
    {"generate", generate_main, "greedy answer to one prompt (KV cache)"},
    {"route", route_main, "TMoLE routing per task (eq. 1) and the task similarity of Figure 2"},
    {"tokenizer", tokenizer_main, "encode | decode | train a tokenizer.json"},
    {"synth", synth_main, "write the synthetic recommendation world (all 13 tasks)"},
    {"build-data", build_data_main, "build the 13 tasks from the real public sources"},
    {"sched", sched_main, "replay S2Sched (§4.3) on a CSV of per-step validation losses"},
    {"merge", merge_main, "TIES-merge adapter checkpoints (§4.4)"},
    {"bench-train", cmd_bench_train, "time full-parameter training steps"},
    {"bench-recfound", cmd_bench_recfound, "time one joint RecFound step (TMoLE, both branches)"},
    {"bench-infer", cmd_bench_infer, "time greedy generation (KV cache) and embedding inference"},
    {"bench-merge", bench_merge_main, "time a 5-checkpoint TIES merge of small-preset adapters"},
    {"bench-matmul", bench_matmul_main, "GFLOP/s of the matmul kernels on the model's shapes"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: recfound COMMAND [options]   (recfound COMMAND --help for each)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].what);
    fprintf(out, "\nenvironment:\n  RECFOUND_WEIGHTS  auto (default) | f32 | bf16: how the commands that leave the "
                 "backbone frozen\n                    hold a BF16 checkpoint's matrices (weights/README.md)\n");
}

/* Run argv[1]; 0, 1 (an error, said in one line) or 2 (usage). */
static int run_command(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            rf_clear_error();
            int rc;
            if (dist_size() > 1 && strcmp(argv[1], "train") && strcmp(argv[1], "loss"))
                rc = rf_error("runs on one process; only train and loss use several MPI ranks");
            else
                rc = commands[i].run(argc - 1, argv + 1);
            fflush(stdout);
            rf_progress_end();
            if (rc) {  /* one line: "recfound CMD: problem" (messages may already name the command) */
                const char *e = rf_last_error()[0] ? rf_last_error() : "failed";
                size_t n = strlen(argv[1]);
                char who[32] = "";
                if (dist_size() > 1) snprintf(who, sizeof who, " (rank %d)", dist_rank());
                /* "CMD: ..." or "CMD SUB: ..." (tokenizer encode) already name the command */
                int named = !strncmp(e, argv[1], n) &&
                            (e[n] == ':' || (e[n] == ' ' && strcspn(e + n + 1, " :") == strcspn(e + n + 1, ":")));
                if (named) fprintf(stderr, "recfound%s %s\n", who, e);
                else fprintf(stderr, "recfound %s%s: %s\n", argv[1], who, e);
                return 1;
            }
            return 0;
        }
    fprintf(stderr, "recfound: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
#if defined(__linux__) && defined(_OPENMP)
    /* Unbound OpenMP threads can stay stacked on one core (seen on virtual
     * machines: every parallel loop then runs several times slower).  libgomp
     * reads OMP_PROC_BIND only when it loads, so set it and start again; if
     * that fails, run unbound. */
    /* (not under mpirun, which places the ranks itself) */
    if (!getenv("OMP_PROC_BIND") && !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") &&
        !setenv("OMP_PROC_BIND", "true", 1))
        execv("/proc/self/exe", argv);
#endif
    if (dist_init(&argc, &argv)) {
        fprintf(stderr, "recfound: %s\n", rf_last_error());
        return 1;
    }
    int rc = run_command(argc, argv);
    if (rc == 1) dist_abort(1);  /* an error on one rank stops them all */
    dist_finalize();
    return rc;
}
