/*
 * s2sched.c - S2Sched, the step-wise convergence-oriented sample scheduler (§4.3).
 *
 * Each step the training loop hands in the validation loss of every task.  The
 * scheduler keeps, per task group b ∈ {E, G} (embedding, generative tasks), the
 * history of normalised losses ℓ_i(s) = L_i(s) / L_i(0), fits the slope α_i(t)
 * over the last L steps, and turns the slopes into sample ratios ω_{i,b}(t) by
 * equations (3)-(6); §4.3.2 turns ratios into counts n_i = ⌊B^(b) ω_i⌋.
 *
 * Indexing used throughout (the paper leaves it open):
 *   - step t = 0, 1, 2, ... counts calls of sched_update(); the loss given at
 *     step t is measured on the model that will train on batch t, so step 0 is
 *     the untrained model and defines L_i(0).
 *   - during the first `warmup` steps nothing is estimated: ω = 1/m, losses are
 *     still recorded ("we do not apply non-convergence estimation ... at the
 *     warmup stage", §4.3.1).  The slope histories used by eq. (4) and eq. (5)
 *     therefore start at step t = warmup; eq. (5)'s t is the number of entries
 *     of that history (steps since scheduling started, inclusive).
 *
 * Variant SCHED_CODE follows the authors' code instead (official-code.md §6, a
 * port of CoBa): the balance weight d comes from the slope of max_i ℓ_i, the
 * final softmax is scaled by m, plus a dataset-size prior and a floor.
 *
 * `recfound sched` replays the scheduler on a CSV of per-step validation losses.
 */
#include "recfound.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

/* Numerically stable softmax: out_i = exp(z_i - max z) / Σ_j exp(z_j - max z). */
static void softmax(double *out, const double *z, int n) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        if (z[i] > mx) mx = z[i];
    for (int i = 0; i < n; i++) sum += (out[i] = exp(z[i] - mx));
    for (int i = 0; i < n; i++) out[i] /= sum;
}

/* Ordinary least-squares slope of y[0..n) against x = 0, 1, ..., n-1, skipping
 * non-finite entries (their x is kept, so a missing step leaves a gap).
 * Fewer than 2 points give 0.  Example: y = 1, 0.8, 0.7 -> x̄ = 1, ȳ = 0.8333,
 * Σ(x-x̄)(y-ȳ) = -0.3, Σ(x-x̄)² = 2, slope = -0.15. */
double ls_slope(const double *y, int n) {
    double sx = 0, sy = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) sx += i, sy += y[i], k++;
    if (k < 2) return 0.0;
    double mx = sx / k, my = sy / k, sxy = 0, sxx = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) {
            sxy += (i - mx) * (y[i] - my);
            sxx += (i - mx) * (i - mx);
        }
    return sxy / sxx;
}

/* ------------------------------------------------------------ equations (3)-(6) */

/* eq. (3): γ^inter_{i,b}(t) = −Softmax_i( |T^(b)| · α_i(t) / Σ_{j} |α_j(t)| ).
 * m = |T^(b)| is the number of tasks taking part (tasks without any validation
 * loss are left out, see sched_update).  Σ|α| = 0 (every task flat): the ratio
 * is taken as 0, which gives the uniform softmax; returns 1 in that case. */
int sched_gamma_inter(double *g, const double *alpha, int m) {
    double s = 0, z[N_TASKS] = {0};
    for (int i = 0; i < m; i++) s += fabs(alpha[i]);
    for (int i = 0; i < m; i++) z[i] = s > 0 ? m * alpha[i] / s : 0.0;
    softmax(g, z, m);
    for (int i = 0; i < m; i++) g[i] = -g[i];
    return !(s > 0);
}

/* eq. (4): γ^intra_{i,b}(t) = Softmax_i( −L · α_i(t) / Σ_{s=t−L+1}^{t} |α_i(s)| ).
 * abs_sum[i] is task i's window sum of |α_i(s)| over its slope history and
 * win_len[i] the number of terms in it.  L is taken as that number of terms
 * (= L once L post-warmup slopes exist), so the ratio is α_i(t) over the mean
 * |α_i| of the window, as the authors' code does; before that the printed L
 * would multiply a sum of fewer than L terms.  A zero window sum gives ratio 0;
 * returns the number of such tasks. */
int sched_gamma_intra(double *g, const double *alpha, const double *abs_sum, const int *win_len, int m) {
    double z[N_TASKS] = {0};
    int zero = 0;
    for (int i = 0; i < m; i++) {
        if (abs_sum[i] > 0) {
            z[i] = -win_len[i] * alpha[i] / abs_sum[i];
        } else {
            z[i] = 0.0;
            zero++;
        }
    }
    softmax(g, z, m);
    return zero;
}

/* eq. (5): β_b(t) = min{ t · Softmax_t( −τ t max_i α_i(t) / Σ_{k=1}^{t} max_i |α_i(k)| ), 1 }.
 * The softmax runs over the time index k = 1..t of the post-warmup history:
 * amax[k-1] = max_i α_i(k) (signed: the slowest-converging task) and
 * absmax[k-1] = max_i |α_i(k)|; the entry taken is k = t (the current step).
 * When every step looks alike the softmax is 1/t, so β = 1; a current step
 * whose max slope is unusually high (a task stalls or diverges) lowers β.
 * Σ max|α| = 0: the ratio is taken as 0 (β = 1); *zero is set then. */
double sched_beta(const double *amax, const double *absmax, long t, double tau, int *zero) {
    if (t < 1) return 1.0;
    double den = 0;
    for (long k = 0; k < t; k++) den += absmax[k];
    if (zero) *zero = !(den > 0);
    if (!(den > 0)) return 1.0;
    /* only the last entry of the softmax is needed: exp(z_t − max) / Σ_k exp(z_k − max) */
    double mx = -INFINITY, sum = 0;
    for (long k = 0; k < t; k++) {
        double z = -tau * (double)t * amax[k] / den;
        if (z > mx) mx = z;
    }
    for (long k = 0; k < t; k++) sum += exp(-tau * (double)t * amax[k] / den - mx);
    double last = exp(-tau * (double)t * amax[t - 1] / den - mx) / sum;
    double b = (double)t * last;
    return b < 1.0 ? b : 1.0;
}

/* eq. (6): ω_{i,b}(t) = Softmax_i( −β_b(t) γ^inter_{i,b}(t) + [1 − β_b(t)] γ^intra_{i,b}(t) ). */
void sched_omega(double *w, const double *g_inter, const double *g_intra, double beta, int m) {
    double z[N_TASKS] = {0};
    for (int i = 0; i < m; i++) z[i] = -beta * g_inter[i] + (1.0 - beta) * g_intra[i];
    softmax(w, z, m);
}

/* The authors' code (official-code.md §6), in the paper's symbols:
 *   RCS_i = softmax_i(m α_i / Σ_j|α_j|)            = −γ^inter (eq. 3)
 *   ACS_i = softmax_i(−K_w α_i(t) / Σ_window|α_i|)  = γ^intra (eq. 4), K_w = window terms
 *   d     = min(1, K softmax_j(−τ K A_j / Σ|A|)[last]): eq. (5) with max_i α_i(k)
 *           replaced by A_k, the slope of max_i ℓ_i(s) over the same window
 *   w_i   = softmax_i(m (d RCS_i + (1 − d) ACS_i)):  eq. (6) scaled by m.
 * g_inter holds −RCS (as eq. 3 returns it), g_intra holds ACS. */
void sched_code_weights(double *w, const double *g_inter, const double *g_intra, double d, int m) {
    double z[N_TASKS] = {0};
    for (int i = 0; i < m; i++) z[i] = m * (d * -g_inter[i] + (1.0 - d) * g_intra[i]);
    softmax(w, z, m);
}

/* The authors' code's post-processing: weights times a dataset-size prior,
 * renormalised (prior may be NULL), then the floor: if any w_i < 1/(5m),
 * w ← 0.8 w + 1/(5m) (still sums to 1). */
void sched_code_prior_floor(double *w, const double *prior, int m) {
    if (prior) {
        double s = 0;
        for (int i = 0; i < m; i++) s += (w[i] *= prior[i]);
        if (s > 0 && isfinite(s))
            for (int i = 0; i < m; i++) w[i] /= s;
    }
    double floor_w = 1.0 / (5.0 * m);
    int under = 0;
    for (int i = 0; i < m; i++) under |= w[i] < floor_w;
    if (under)
        for (int i = 0; i < m; i++) w[i] = 0.8 * w[i] + floor_w;
}

/* ------------------------------------------------------------ counts (§4.3.2) */

/* n_i = ⌊B ω_i⌋ (a 1e-9 slack absorbs rounding of ω, so B·(1/3)·3 stays whole),
 * capped by avail[i] when avail is given.
 *   REM_DROP (the paper): the B − Σ n_i leftover samples are dropped.
 *   REM_LARGEST (the authors' code): the leftover goes one sample each to the
 *   tasks with the largest fractional parts B ω_i − n_i (ties: lower index);
 *   after capping, the shortfall is offered once to the tasks that still have
 *   samples, in order of decreasing ω (ties: lower index).
 * Returns Σ n_i. */
int sched_count_samples(int *n, const double *w, const long *avail, int m, int B, int policy) {
    double frac[N_TASKS];
    int total = 0;
    for (int i = 0; i < m; i++) {
        double x = B * w[i] + 1e-9;
        n[i] = x > 0 ? (int)floor(x) : 0;
        frac[i] = x - 1e-9 - n[i];
        total += n[i];
    }
    if (policy == REM_LARGEST) {
        int used[N_TASKS] = {0};
        for (int r = B - total; r > 0; r--) {
            int best = -1;
            for (int i = 0; i < m; i++)
                if (!used[i] && (best < 0 || frac[i] > frac[best])) best = i;
            if (best < 0) break;
            used[best] = 1;
            n[best]++;
            total++;
        }
    }
    if (avail) {
        int short_fall = 0;
        for (int i = 0; i < m; i++) {
            long a = avail[i] > 0 ? avail[i] : 0;
            if (n[i] > a) {
                short_fall += n[i] - (int)a;
                total -= n[i] - (int)a;
                n[i] = (int)a;
            }
        }
        if (policy == REM_LARGEST && short_fall > 0) {
            int done[N_TASKS] = {0};
            for (int k = 0; k < m && short_fall > 0; k++) {
                int best = -1;
                for (int i = 0; i < m; i++)
                    if (!done[i] && (best < 0 || w[i] > w[best])) best = i;
                done[best] = 1;
                long spare = avail[best] - n[best];
                int give = spare < short_fall ? (int)spare : short_fall;
                if (give > 0) n[best] += give, total += give, short_fall -= give;
            }
        }
    }
    return total;
}

/* ------------------------------------------------------------ the scheduler */

long sched_warmup_steps(double frac, long total_steps) {
    if (!(frac > 0) || total_steps <= 0) return 0;
    return (long)ceil(frac * (double)total_steps - 1e-9);
}

void sched_config_default(SchedConfig *c, long total_steps) {
    memset(c, 0, sizeof *c);
    c->window = 64;                                  /* L */
    c->tau = 10.0;                                   /* τ */
    c->warmup = sched_warmup_steps(0.10, total_steps); /* ς = 10% */
    c->variant = SCHED_PAPER;
    c->remainder = REM_DROP;
    c->batch[KIND_EMB] = 16;
    c->batch[KIND_GEN] = 16;
}

int sched_init(Sched *s, const SchedConfig *cfg, const int *tasks, int n_tasks) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    if (cfg->window < 2) return rf_error("s2sched: window L must be at least 2 (got %d)", cfg->window);
    if (!isfinite(cfg->tau)) return rf_error("s2sched: temperature must be finite");
    if (cfg->warmup < 0) return rf_error("s2sched: warmup must be >= 0 (got %ld)", cfg->warmup);
    if (cfg->batch[0] < 0 || cfg->batch[1] < 0) return rf_error("s2sched: batch sizes must be >= 0");
    int seen[N_TASKS] = {0};
    for (int k = 0; k < (tasks ? n_tasks : N_TASKS); k++) {
        int id = tasks ? tasks[k] : k;
        if (id < 0 || id >= N_TASKS) return rf_error("s2sched: unknown task id %d", id);
        if (seen[id]) return rf_error("s2sched: task %s given twice", TASKS[id].name);
        seen[id] = 1;
    }
    for (int b = 0; b < 2; b++) s->group[b].kind = (TaskKind)b;
    for (int id = 0; id < N_TASKS; id++) /* ascending task ids inside each group */
        if (seen[id]) {
            SchedGroup *g = &s->group[TASKS[id].kind];
            g->loss0[g->m] = NAN;
            g->task[g->m++] = id;
        }
    for (int b = 0; b < 2; b++) {
        SchedGroup *g = &s->group[b];
        for (int j = 0; j < g->m; j++) g->omega[j] = 1.0 / g->m;
        g->beta = 1.0;
    }
    return 0;
}

void sched_free(Sched *s) {
    for (int b = 0; b < 2; b++) {
        SchedGroup *g = &s->group[b];
        free(g->nloss), free(g->maxloss), free(g->slope);
        free(g->slope_max), free(g->slope_absmax), free(g->gslope), free(g->gslope_abs);
    }
    memset(s, 0, sizeof *s);
}

static int grow(double **p, long need, size_t per) {
    double *np = realloc(*p, (size_t)need * per * sizeof(double));
    if (!np) return rf_error("s2sched: out of memory for %ld history steps", need);
    *p = np;
    return 0;
}

/* Make room for one more recorded step (and one more scheduled step). */
static int group_reserve(SchedGroup *g, int scheduled) {
    if (g->n + 1 > g->cap) {
        long nc = g->cap ? 2 * g->cap : 256;
        if (grow(&g->nloss, nc, (size_t)(g->m ? g->m : 1)) ||
            grow(&g->maxloss, nc, 1))
            return -1;
        g->cap = nc;
    }
    if (scheduled && g->n_sched + 1 > g->cap_sched) {
        long nc = g->cap_sched ? 2 * g->cap_sched : 256;
        if (grow(&g->slope, nc, (size_t)(g->m ? g->m : 1)) || grow(&g->slope_max, nc, 1) ||
            grow(&g->slope_absmax, nc, 1) || grow(&g->gslope, nc, 1) ||
            grow(&g->gslope_abs, nc, 1))
            return -1;
        g->cap_sched = nc;
    }
    return 0;
}

/* Record the losses of one step and, past warmup, compute ω for the group. */
static int group_update(Sched *s, SchedGroup *g, const double *val_loss, int scheduled) {
    const SchedConfig *c = &s->cfg;
    SchedWarn *w = &s->warn;
    int m = g->m;
    if (m == 0) return 0;
    if (group_reserve(g, scheduled)) return -1;

    /* normalised validation loss ℓ_i(t) = L_i(t) / L_i(0); L_i(0) is the first
     * finite positive loss of the task (step 0 unless it was missing). */
    double *row = g->nloss + (size_t)g->n * m, mx = -INFINITY;
    for (int j = 0; j < m; j++) {
        double L = val_loss[g->task[j]];
        row[j] = NAN;
        if (!isfinite(L) || (isnan(g->loss0[j]) && !(L > 0))) { /* skipped, never normalised */
            w->bad_loss++;
            continue;
        }
        if (isnan(g->loss0[j])) g->loss0[j] = L;
        row[j] = L / g->loss0[j];
        if (row[j] > mx) mx = row[j];
    }
    g->maxloss[g->n] = isfinite(mx) ? mx : NAN;
    g->n++;

    if (!scheduled) { /* warmup: uniform mixing */
        for (int j = 0; j < m; j++) g->omega[j] = 1.0 / m, g->alpha[j] = 0, g->g_inter[j] = g->g_intra[j] = 0;
        g->beta = 1.0;
        return 0;
    }
    if (m == 1) w->single_task++;

    /* α_i(t): slope over the last L recorded steps (all of them at first). */
    int L = c->window;
    long from = g->n > L ? g->n - L : 0;
    int len = (int)(g->n - from);
    double *y = malloc((size_t)len * sizeof(double));
    if (!y) return rf_error("s2sched: out of memory");
    double *srow = g->slope + (size_t)g->n_sched * m;
    int act[N_TASKS], ma = 0;
    for (int j = 0; j < m; j++) {
        int k = 0;
        for (long t = from; t < g->n; t++) {
            y[t - from] = g->nloss[(size_t)t * m + j];
            k += isfinite(y[t - from]) != 0;
        }
        g->active[j] = k > 0; /* no loss in the window: left out, keeps 1/m */
        srow[j] = k > 0 ? ls_slope(y, len) : NAN;
        g->alpha[j] = k > 0 ? srow[j] : 0.0;
        if (k > 0) act[ma++] = j;
    }
    /* the code variant's A_t: slope of max_i ℓ_i over the same window */
    for (long t = from; t < g->n; t++) y[t - from] = g->maxloss[t];
    g->gslope[g->n_sched] = ls_slope(y, len);
    g->gslope_abs[g->n_sched] = fabs(g->gslope[g->n_sched]);
    free(y);
    if (ma < m) w->no_loss += m - ma;

    /* eq. (5) history: max_i α_i(k) and max_i |α_i(k)| over the tasks present */
    double amax = -INFINITY, aabs = 0;
    for (int a = 0; a < ma; a++) {
        double v = srow[act[a]];
        if (v > amax) amax = v;
        if (fabs(v) > aabs) aabs = fabs(v);
    }
    g->slope_max[g->n_sched] = ma ? amax : 0.0;
    g->slope_absmax[g->n_sched] = aabs;
    g->n_sched++;

    for (int j = 0; j < m; j++) g->g_inter[j] = g->g_intra[j] = 0;
    if (ma == 0) { /* nothing measured yet */
        for (int j = 0; j < m; j++) g->omega[j] = 1.0 / m;
        g->beta = 1.0;
        return 0;
    }

    /* gather the present tasks: α, window sums of |α_i(s)| for eq. (4) */
    double al[N_TASKS], asum[N_TASKS], gi[N_TASKS], ga[N_TASKS], om[N_TASKS];
    int wl[N_TASKS];
    long sfrom = g->n_sched > L ? g->n_sched - L : 0;
    for (int a = 0; a < ma; a++) {
        int j = act[a];
        al[a] = g->alpha[j];
        asum[a] = 0, wl[a] = 0;
        for (long k = sfrom; k < g->n_sched; k++) {
            double v = g->slope[(size_t)k * m + j];
            if (isfinite(v)) asum[a] += fabs(v), wl[a]++;
        }
    }
    int zero3 = sched_gamma_inter(gi, al, ma);
    int zero4 = sched_gamma_intra(ga, al, asum, wl, ma);
    int zero5 = 0;
    double beta;
    if (c->variant == SCHED_CODE) {
        beta = sched_beta(g->gslope, g->gslope_abs, g->n_sched, c->tau, &zero5);
        sched_code_weights(om, gi, ga, beta, ma);
        double pr[N_TASKS];
        if (c->prior)
            for (int a = 0; a < ma; a++) pr[a] = c->prior[g->task[act[a]]];
        sched_code_prior_floor(om, c->prior ? pr : NULL, ma);
    } else {
        beta = sched_beta(g->slope_max, g->slope_absmax, g->n_sched, c->tau, &zero5);
        sched_omega(om, gi, ga, beta, ma);
    }
    if ((zero3 || zero4 || zero5) && ma > 1) w->zero_slopes++;

    /* present tasks share (ma/m) of the batch; absent ones keep 1/m each */
    int finite = 1;
    for (int a = 0; a < ma; a++) finite &= isfinite(om[a]) && om[a] >= 0;
    if (!finite) {
        w->fallback++;
        for (int a = 0; a < ma; a++) om[a] = 1.0 / ma;
    }
    for (int j = 0; j < m; j++) g->omega[j] = 1.0 / m;
    for (int a = 0; a < ma; a++) {
        int j = act[a];
        g->omega[j] = om[a] * ma / m;
        g->g_inter[j] = gi[a];
        g->g_intra[j] = ga[a];
    }
    g->beta = beta;
    return 0;
}

int sched_update(Sched *s, const double *val_loss) {
    memset(&s->warn, 0, sizeof s->warn);
    int scheduled = s->t >= s->cfg.warmup;
    for (int b = 0; b < 2; b++)
        if (group_update(s, &s->group[b], val_loss, scheduled)) return -1;
    s->scheduled = scheduled;
    s->t++;
    SchedWarn *w = &s->warn, *tot = &s->total;
    tot->zero_slopes += w->zero_slopes, tot->single_task += w->single_task;
    tot->no_loss += w->no_loss, tot->bad_loss += w->bad_loss, tot->fallback += w->fallback;
    if (s->cfg.log && (w->zero_slopes || w->no_loss || w->bad_loss || w->fallback))
        fprintf(s->cfg.log,
                "s2sched: warning: step %ld: %ld group(s) with all slopes zero (uniform), %ld task(s) "
                "without validation loss (uniform share), %ld bad loss value(s) skipped%s\n",
                s->t - 1, w->zero_slopes, w->no_loss, w->bad_loss,
                w->fallback ? ", non-finite weights replaced by uniform" : "");
    return 0;
}

double sched_weight(const Sched *s, int task) {
    if (task < 0 || task >= N_TASKS) return 0.0;
    const SchedGroup *g = &s->group[TASKS[task].kind];
    for (int j = 0; j < g->m; j++)
        if (g->task[j] == task) return g->omega[j];
    return 0.0;
}

int sched_counts(const Sched *s, TaskKind kind, const long *avail, int *n) {
    const SchedGroup *g = &s->group[kind];
    long av[N_TASKS];
    int cnt[N_TASKS];
    for (int j = 0; j < g->m; j++) av[j] = avail ? avail[g->task[j]] : 0;
    int total = sched_count_samples(cnt, g->omega, avail ? av : NULL, g->m, s->cfg.batch[kind],
                                    s->cfg.remainder);
    for (int id = 0; id < N_TASKS; id++)
        if (TASKS[id].kind == kind) n[id] = 0;
    for (int j = 0; j < g->m; j++) n[g->task[j]] = cnt[j];
    return total;
}

/* ------------------------------------------------------------ recfound sched */

/* What `recfound sched --help` prints above the options. */
static const char SCHED_ABOUT[] =
    "--losses FILE.csv [options]\n"
    "\n"
    "Replays S2Sched (§4.3) on per-step validation losses and prints, for every\n"
    "step after warmup and every task, the slope α, eq. (3) γ_inter, eq. (4)\n"
    "γ_intra, eq. (5) β, eq. (6) ω and the count n = ⌊B ω⌋ (§4.3.2), as CSV:\n"
    "  step,group,task,alpha,gamma_inter,gamma_intra,beta,omega,n\n"
    "(variant code: gamma_inter = -RCS, gamma_intra = ACS, beta = d).\n"
    "\n"
    "FILE.csv: a header of task names (Emb_user, ..., or U2I, ...; an optional first\n"
    "column `step` is ignored), then one row of validation losses per step from\n"
    "step 0.  An empty field or nan = not measured.  Task kinds give the groups.";

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

/* Split a line at commas in place; returns the number of fields (at most max). */
static int split_csv(char *line, char **f, int max) {
    int n = 0;
    for (char *p = line;; p++) {
        char *c = strchr(p, ',');
        if (c) *c = 0;
        if (n < max) f[n] = trim(p);
        n++;
        if (!c) break;
        p = c;
    }
    return n;
}

typedef struct {
    int n_tasks;
    int task[N_TASKS];  /* column -> task id */
    long n_steps;
    double *loss;       /* [n_steps][N_TASKS] by task id, NaN when absent */
} LossTable;

static int read_loss_csv(LossTable *lt, const char *path) {
    memset(lt, 0, sizeof *lt);
    char *text;
    size_t len;
    if (rf_read_file(path, &text, &len)) return -1;
    enum { MAXF = N_TASKS + 2 };
    char *f[MAXF];
    int step_col = 0, n_cols = 0, rc = -1;
    long lineno = 0, cap = 0, blank_at = 0;
    char *p = text;
    int have_header = 0;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        lineno++;
        char *line = trim(p);
        p = nl ? nl + 1 : p + strlen(p);
        if (!*line) {
            if (!blank_at) blank_at = lineno;
            continue;
        }
        if (blank_at) {
            rf_error("%s: line %ld: empty line inside the table", path, blank_at);
            goto done;
        }
        int n = split_csv(line, f, MAXF);
        if (!have_header) {
            have_header = 1;
            step_col = !strcmp(f[0], "step");
            n_cols = n;
            if (n > MAXF || n - step_col > N_TASKS) {
                rf_error("%s: line %ld: %d columns, at most %d tasks", path, lineno, n, N_TASKS);
                goto done;
            }
            if (n - step_col < 1) {
                rf_error("%s: line %ld: no task columns in the header", path, lineno);
                goto done;
            }
            for (int c = step_col; c < n; c++) {
                int id = task_by_name(f[c]);
                if (id < 0) id = task_by_short(f[c]);
                if (id < 0) {
                    rf_error("%s: line %ld: column %d: unknown task '%s'", path, lineno, c + 1, f[c]);
                    goto done;
                }
                for (int k = 0; k < lt->n_tasks; k++)
                    if (lt->task[k] == id) {
                        rf_error("%s: line %ld: column %d: task '%s' appears twice", path, lineno, c + 1, f[c]);
                        goto done;
                    }
                lt->task[lt->n_tasks++] = id;
            }
            continue;
        }
        if (n != n_cols) {
            rf_error("%s: line %ld: %d fields, expected %d as in the header", path, lineno, n, n_cols);
            goto done;
        }
        if (lt->n_steps == cap) {
            long nc = cap ? 2 * cap : 256;
            double *nl2 = realloc(lt->loss, (size_t)nc * N_TASKS * sizeof(double));
            if (!nl2) {
                rf_error("%s: line %ld: out of memory", path, lineno);
                goto done;
            }
            lt->loss = nl2, cap = nc;
        }
        double *row = lt->loss + (size_t)lt->n_steps * N_TASKS;
        for (int k = 0; k < N_TASKS; k++) row[k] = NAN;
        for (int c = 0; c < n; c++) {
            char *end;
            double v = NAN;
            if (*f[c] || c < step_col) {
                errno = 0;
                v = strtod(f[c], &end);
                if (end == f[c] || *end) {
                    rf_error("%s: line %ld: column %d (%s): '%s' is not a number", path, lineno, c + 1,
                             c < step_col ? "step" : TASKS[lt->task[c - step_col]].name, f[c]);
                    goto done;
                }
            }
            if (c >= step_col) row[lt->task[c - step_col]] = v;
        }
        lt->n_steps++;
    }
    if (!have_header) {
        rf_error("%s: empty file", path);
        goto done;
    }
    if (lt->n_steps == 0) {
        rf_error("%s: line %ld: no data rows after the header", path, lineno);
        goto done;
    }
    rc = 0;
done:
    free(text);
    if (rc) free(lt->loss), lt->loss = NULL;
    return rc;
}

int sched_main(int argc, char **argv) {
    const char *losses = NULL, *plot = NULL, *out = NULL, *variant_s = "paper", *remainder_s = "drop";
    long window = 64, warmup = -1, batch = 16;
    double tau = 10.0, prior[N_TASKS];
    int variant = SCHED_PAPER, remainder = REM_DROP, use_prior = 0;
    Flag f[] = {
        {"--losses", 's', &losses, "the losses (required)"},
        {"--window", 'i', &window, "slope window L (default 64)"},
        {"--tau", 'f', &tau, "temperature τ of eq. (5) (default 10)"},
        {"--warmup", 'i', &warmup, "warmup steps (default: 10% of the rows, rounded up)"},
        {"--batch", 'i', &batch, "batch size of each group (default 16)"},
        {"--variant", 's', &variant_s, "paper (eq. 3-6, default) or code (the authors' code)"},
        {"--remainder", 's', &remainder_s, "drop (default, the paper) or largest (largest remainder)"},
        {"--prior", 'b', &use_prior, "code variant: multiply by the Table 1 training sizes"},
        {"--plot", 's', &plot, "also draw ω of every task over the steps (FILE.svg)"},
        {"--out", 's', &out, "write the CSV there instead of standard output"},
    };
    int r = parse_flags(argc, argv, f, (int)(sizeof f / sizeof f[0]), SCHED_ABOUT);
    if (r) return r > 0 ? 0 : -1;
    if (!strcmp(variant_s, "paper")) variant = SCHED_PAPER;
    else if (!strcmp(variant_s, "code")) variant = SCHED_CODE;
    else return rf_error("sched: --variant: '%s' (paper or code)", variant_s);
    if (!strcmp(remainder_s, "drop")) remainder = REM_DROP;
    else if (!strcmp(remainder_s, "largest") || !strcmp(remainder_s, "largest-remainder")) remainder = REM_LARGEST;
    else return rf_error("sched: --remainder: '%s' (drop or largest)", remainder_s);
    if (check_range("--window", window, 2, 0, INFINITY) || check_range("--batch", batch, 0, 0, INFINITY) ||
        (warmup != -1 && check_range("--warmup", warmup, 0, 0, INFINITY)))  /* -1: the default */
        return -1;
    if (check_range("--tau", tau, 0, 1, INFINITY)) return -1;
    if (!losses) return rf_error("sched: --losses FILE.csv is required (see recfound sched --help)");
    if (batch > 1000000000L) return rf_error("sched: --batch %ld is too large", batch);
    if (window > 1000000000L) return rf_error("sched: --window %ld is too large", window);

    LossTable lt;
    if (read_loss_csv(&lt, losses)) return -1;
    SchedConfig cfg;
    sched_config_default(&cfg, lt.n_steps);
    cfg.window = (int)window;
    cfg.tau = tau;
    if (warmup >= 0) cfg.warmup = warmup;
    cfg.variant = variant;
    cfg.remainder = remainder;
    cfg.batch[0] = cfg.batch[1] = (int)batch;
    for (int k = 0; k < N_TASKS; k++) prior[k] = (double)TASKS[k].size[SPLIT_TRAIN];
    if (use_prior) cfg.prior = prior;

    Sched s;
    int rc = -1;
    RfBuf b = {0};
    double *omega_hist = NULL, *xs = NULL;
    if (sched_init(&s, &cfg, lt.task, lt.n_tasks)) goto done;
    omega_hist = malloc((size_t)lt.n_steps * lt.n_tasks * sizeof(double));
    xs = malloc((size_t)lt.n_steps * sizeof(double));
    if (!omega_hist || !xs) {
        rf_error("sched: out of memory");
        goto done;
    }
    buf_printf(&b, "step,group,task,alpha,gamma_inter,gamma_intra,beta,omega,n\n");
    for (long t = 0; t < lt.n_steps; t++) {
        if (sched_update(&s, lt.loss + (size_t)t * N_TASKS)) goto done;
        xs[t] = (double)t;
        for (int c = 0; c < lt.n_tasks; c++) omega_hist[(size_t)c * lt.n_steps + t] = sched_weight(&s, lt.task[c]);
        if (!s.scheduled) continue;
        for (int kind = 0; kind < 2; kind++) {
            const SchedGroup *g = &s.group[kind];
            int n[N_TASKS];
            sched_counts(&s, (TaskKind)kind, NULL, n);
            for (int j = 0; j < g->m; j++)
                buf_printf(&b, "%ld,%c,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%d\n", t, kind == KIND_EMB ? 'E' : 'G',
                           TASKS[g->task[j]].name, g->alpha[j], g->g_inter[j], g->g_intra[j], g->beta,
                           g->omega[j], n[g->task[j]]);
        }
    }
    if (out) {
        if (rf_write_file_atomic(out, b.data ? b.data : "", b.len)) goto done;
    } else if (b.len && fwrite(b.data, 1, b.len, stdout) != b.len) {
        rf_error("sched: cannot write to standard output");
        goto done;
    }
    const SchedWarn *w = &s.total;
    if (w->zero_slopes || w->no_loss || w->bad_loss || w->fallback)
        fprintf(stderr,
                "sched: warning: %ld group-step(s) with all slopes zero (uniform), %ld task-step(s) without "
                "validation loss (uniform share), %ld bad loss value(s) skipped, %ld fallback(s)\n",
                w->zero_slopes, w->no_loss, w->bad_loss, w->fallback);
    if (plot) {
        const char *names[N_TASKS];
        const double *ys[N_TASKS];
        char label[N_TASKS][48];
        for (int c = 0; c < lt.n_tasks; c++) {
            const TaskInfo *ti = &TASKS[lt.task[c]];
            snprintf(label[c], sizeof label[c], "%s (%c)", ti->short_name, ti->kind == KIND_EMB ? 'E' : 'G');
            names[c] = label[c];
            ys[c] = omega_hist + (size_t)c * lt.n_steps;
        }
        if (svg_lines(plot, "S2Sched sample ratio \xcf\x89 of every task (cf. Figure 3)", "training step t",
                      "sample ratio \xcf\x89 within the group", lt.n_tasks, names, xs, ys, (int)lt.n_steps))
            goto done;
    }
    rc = 0;
done:
    buf_free(&b);
    free(omega_hist), free(xs), free(lt.loss);
    sched_free(&s);
    return rc;
}
