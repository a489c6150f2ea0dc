/* test_s2sched.c - the "s2sched" Check suite: S2Sched (§4.3) and the SVG writers.
 *
 * Every expected number is worked out by hand below (slopes, window sums,
 * softmax arguments) and evaluated with exp() here, never by the code under
 * test. */
#include "check_util.h"
#include "recfound.h"

#include <unistd.h>

#define TOL 1e-12

/* softmax written out for the expectations: out_i = e^{z_i} / Σ_j e^{z_j} */
static void hand_softmax(double *out, const double *z, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(z[i]);
    for (int i = 0; i < n; i++) out[i] = exp(z[i]) / s;
}

static void all_nan(double *loss) {
    for (int k = 0; k < N_TASKS; k++) loss[k] = NAN;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/rf_s2sched_%d_%s", (int)getpid(), name);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(fread(text, 1, (size_t)n, f), n);
    text[n] = 0;
    fclose(f);
    return text;
}

/* ------------------------------------------------------------ the slope */

START_TEST(test_slope) {
    /* losses 1, 0.8, 0.7 at x = 0, 1, 2: x̄ = 1, ȳ = 2.5/3;
     * Σ(x-x̄)(y-ȳ) = -(1 - 0.8333) + (0.7 - 0.8333) = -0.3, Σ(x-x̄)² = 2 -> -0.15 */
    double y[] = {1.0, 0.8, 0.7};
    ck_assert_double_eq_tol(ls_slope(y, 3), -0.15, TOL);
    /* NaN skipped, x kept: points (0, 1) and (2, 0.6) -> slope -0.4 / 2 = -0.2 */
    double g[] = {1.0, NAN, 0.6};
    ck_assert_double_eq_tol(ls_slope(g, 3), -0.2, TOL);
    /* one point (or none) -> 0 */
    double one[] = {NAN, 0.5, INFINITY};
    ck_assert_double_eq(ls_slope(one, 3), 0.0);
    ck_assert_double_eq(ls_slope(y, 1), 0.0);
    ck_assert_double_eq(ls_slope(y, 0), 0.0);
}
END_TEST

/* ------------------------------------------------------------ eq. (3)-(6) one by one */

START_TEST(test_eq3_gamma_inter) {
    /* α = (-0.2, -0.1), m = 2: Σ|α| = 0.3; arguments 2·(-0.2)/0.3 = -4/3 and
     * 2·(-0.1)/0.3 = -2/3; γ = -softmax. */
    double a[] = {-0.2, -0.1}, g[2];
    ck_assert_int_eq(sched_gamma_inter(g, a, 2), 0);
    double e0 = exp(-4.0 / 3), e1 = exp(-2.0 / 3);
    ck_assert_double_eq_tol(g[0], -e0 / (e0 + e1), TOL);
    ck_assert_double_eq_tol(g[1], -e1 / (e0 + e1), TOL);
    /* all slopes zero: ratio 0 -> uniform -1/3, flagged */
    double z[] = {0, 0, 0}, g3[3];
    ck_assert_int_eq(sched_gamma_inter(g3, z, 3), 1);
    for (int i = 0; i < 3; i++) ck_assert_double_eq_tol(g3[i], -1.0 / 3, TOL);
}
END_TEST

START_TEST(test_eq4_gamma_intra) {
    /* α(t) = (-0.2, -0.1); task 0's window of slopes (-0.4, -0.2): Σ|α| = 0.6,
     * 2 terms; task 1's (-0.1, -0.1): 0.2, 2 terms.  Arguments:
     * -2·(-0.2)/0.6 = 2/3 and -2·(-0.1)/0.2 = 1. */
    double a[] = {-0.2, -0.1}, s[] = {0.6, 0.2}, g[2];
    int len[] = {2, 2};
    ck_assert_int_eq(sched_gamma_intra(g, a, s, len, 2), 0);
    double e0 = exp(2.0 / 3), e1 = exp(1.0);
    ck_assert_double_eq_tol(g[0], e0 / (e0 + e1), TOL);
    ck_assert_double_eq_tol(g[1], e1 / (e0 + e1), TOL);
    /* a task with a zero window sum: its argument is 0 (and it is counted) */
    double s0[] = {0.6, 0.0};
    ck_assert_int_eq(sched_gamma_intra(g, a, s0, len, 2), 1);
    e1 = exp(0.0);
    ck_assert_double_eq_tol(g[0], e0 / (e0 + e1), TOL);
}
END_TEST

START_TEST(test_eq5_beta) {
    /* t = 3, τ = 1, max_i α_i(k) = (-0.3, -0.2, -0.1), max_i |α_i(k)| = (0.3, 0.2, 0.15):
     * Σ = 0.65; arguments -1·3·(-0.3)/0.65 = 1.3846.., 0.9231.., 0.4615..;
     * β = min(3 e^{z_3} / Σ_k e^{z_k}, 1) = 3 · 0.19594.. = 0.58783.. */
    double amax[] = {-0.3, -0.2, -0.1}, absmax[] = {0.3, 0.2, 0.15};
    double z1 = 0.9 / 0.65, z2 = 0.6 / 0.65, z3 = 0.3 / 0.65;
    double want = 3 * exp(z3) / (exp(z1) + exp(z2) + exp(z3));
    int zero = -1;
    ck_assert_double_eq_tol(sched_beta(amax, absmax, 3, 1.0, &zero), want, TOL);
    ck_assert_int_eq(zero, 0);
    ck_assert_double_eq_tol(want, 0.58783, 1e-5);
    /* τ = 10 multiplies every argument by 10 */
    want = 3 * exp(10 * z3) / (exp(10 * z1) + exp(10 * z2) + exp(10 * z3));
    ck_assert_double_eq_tol(sched_beta(amax, absmax, 3, 10.0, NULL), want, TOL);
    /* the current step converges fastest: 2 · softmax > 1 -> clamped to 1 */
    double am2[] = {-0.1, -0.3}, ab2[] = {0.1, 0.3};
    ck_assert_double_eq(sched_beta(am2, ab2, 2, 1.0, NULL), 1.0);
    /* t = 1: one entry, softmax = 1 -> β = 1 */
    ck_assert_double_eq_tol(sched_beta(amax, absmax, 1, 10.0, NULL), 1.0, TOL);
    /* Σ max|α| = 0: ratio 0, uniform softmax 1/t, β = 1, flagged */
    double zz[] = {0, 0, 0};
    ck_assert_double_eq(sched_beta(zz, zz, 3, 10.0, &zero), 1.0);
    ck_assert_int_eq(zero, 1);
}
END_TEST

START_TEST(test_eq6_omega) {
    /* γ_inter = (-0.3, -0.7), γ_intra = (0.6, 0.4), β = 0.25:
     * arguments 0.25·0.3 + 0.75·0.6 = 0.525 and 0.25·0.7 + 0.75·0.4 = 0.475 */
    double gi[] = {-0.3, -0.7}, ga[] = {0.6, 0.4}, w[2];
    sched_omega(w, gi, ga, 0.25, 2);
    double e0 = exp(0.525), e1 = exp(0.475);
    ck_assert_double_eq_tol(w[0], e0 / (e0 + e1), TOL);
    ck_assert_double_eq_tol(w[1], e1 / (e0 + e1), TOL);
}
END_TEST

/* ------------------------------------------------------------ the whole scheduler */

/* Two embedding tasks, 6 steps.  L_i(0) = 2 and 4, so the normalised losses are
 *   U2I: 1, 0.9, 0.8, 0.75, 0.725, 0.71
 *   Q2I: 1, 0.95, 0.925, 0.9, 0.875, 0.8625 */
static const double U2I_LOSS[6] = {2.0, 1.8, 1.6, 1.5, 1.45, 1.42};
static const double Q2I_LOSS[6] = {4.0, 3.8, 3.7, 3.6, 3.5, 3.45};

static void run_two_tasks(Sched *s, int variant, long steps) {
    SchedConfig c;
    sched_config_default(&c, 100);
    c.window = 3, c.tau = 1.0, c.warmup = 2, c.variant = variant;
    int tasks[] = {TASK_Q2I, TASK_U2I}; /* any order: groups sort by id */
    ck_assert_int_eq(sched_init(s, &c, tasks, 2), 0);
    for (long t = 0; t < steps; t++) {
        double loss[N_TASKS];
        all_nan(loss);
        loss[TASK_U2I] = U2I_LOSS[t];
        loss[TASK_Q2I] = Q2I_LOSS[t];
        ck_assert_int_eq(sched_update(s, loss), 0);
        ck_assert_int_eq(s->scheduled, t >= 2);
    }
}

START_TEST(test_paper_pipeline) {
    Sched s;
    /* slopes over the last L = 3 steps (hand OLS, x = 0, 1, 2):
     *   step 2: U2I (1, .9, .8) -> -0.1;        Q2I (1, .95, .925) -> -0.0375
     *   step 3: U2I (.9, .8, .75) -> -0.075;    Q2I (.95, .925, .9) -> -0.025
     *   step 4: U2I (.8, .75, .725) -> -0.0375; Q2I (.925, .9, .875) -> -0.025
     *   step 5: U2I (.75, .725, .71) -> -0.02;  Q2I (.9, .875, .8625) -> -0.01875 */
    run_two_tasks(&s, SCHED_PAPER, 5);
    const SchedGroup *g = &s.group[KIND_EMB];
    ck_assert_int_eq(g->m, 2);
    ck_assert_int_eq(g->task[0], TASK_U2I);
    ck_assert_double_eq_tol(g->alpha[0], -0.0375, 1e-12);
    ck_assert_double_eq_tol(g->alpha[1], -0.025, 1e-12);
    sched_free(&s);

    run_two_tasks(&s, SCHED_PAPER, 6);
    g = &s.group[KIND_EMB];
    double a0 = -0.02, a1 = -0.01875;
    ck_assert_double_eq_tol(g->alpha[0], a0, 1e-12);
    ck_assert_double_eq_tol(g->alpha[1], a1, 1e-12);
    /* eq. (3): Σ|α| = 0.03875, arguments 2α_i / 0.03875 */
    double z[4], gi[2], ga[2], w[2];
    z[0] = 2 * a0 / 0.03875, z[1] = 2 * a1 / 0.03875;
    hand_softmax(gi, z, 2);
    gi[0] = -gi[0], gi[1] = -gi[1];
    ck_assert_double_eq_tol(g->g_inter[0], gi[0], TOL);
    ck_assert_double_eq_tol(g->g_inter[1], gi[1], TOL);
    /* eq. (4): the window is the last L = 3 slopes (post-warmup steps 3, 4, 5):
     * U2I |.075|+|.0375|+|.02| = 0.1325, Q2I .025+.025+.01875 = 0.06875 */
    z[0] = -3 * a0 / 0.1325, z[1] = -3 * a1 / 0.06875;
    hand_softmax(ga, z, 2);
    ck_assert_double_eq_tol(g->g_intra[0], ga[0], TOL);
    ck_assert_double_eq_tol(g->g_intra[1], ga[1], TOL);
    /* eq. (5): t = 4 post-warmup steps; max_i α_i(k) = -0.0375, -0.025, -0.025,
     * -0.01875; max_i |α_i(k)| = 0.1, 0.075, 0.0375, 0.02 (Σ = 0.2325); τ = 1 */
    double amax[4] = {-0.0375, -0.025, -0.025, -0.01875}, p[4];
    for (int k = 0; k < 4; k++) z[k] = -1.0 * 4 * amax[k] / 0.2325;
    hand_softmax(p, z, 4);
    double beta = fmin(4 * p[3], 1.0);
    ck_assert_double_eq_tol(g->beta, beta, TOL);
    ck_assert(beta < 1.0);
    /* eq. (6) */
    z[0] = -beta * gi[0] + (1 - beta) * ga[0];
    z[1] = -beta * gi[1] + (1 - beta) * ga[1];
    hand_softmax(w, z, 2);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_U2I), w[0], TOL);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_Q2I), w[1], TOL);
    ck_assert_double_eq(sched_weight(&s, TASK_I2I), 0.0); /* not scheduled */
    ck_assert_int_eq(s.warn.zero_slopes + s.warn.no_loss + s.warn.bad_loss, 0);
    sched_free(&s);
}
END_TEST

START_TEST(test_code_pipeline) {
    /* The same data with the authors' code.  max_i ℓ_i(s) is Q2I's series here,
     * so A_k = Q2I's slopes -0.0375, -0.025, -0.025, -0.01875 (Σ|A| = 0.10625):
     * d = min(1, 4 · softmax_k(-τ 4 A_k / 0.10625)[last]), τ = 1. */
    Sched s;
    run_two_tasks(&s, SCHED_CODE, 6);
    const SchedGroup *g = &s.group[KIND_EMB];
    double A[4] = {-0.0375, -0.025, -0.025, -0.01875}, z[4], p[4];
    for (int k = 0; k < 4; k++) z[k] = -4 * A[k] / 0.10625;
    hand_softmax(p, z, 4);
    double d = fmin(4 * p[3], 1.0);
    ck_assert_double_eq_tol(g->beta, d, TOL);
    /* RCS = softmax(2α/Σ|α|), ACS = softmax(-3α_i / window sum), as above */
    double a0 = -0.02, a1 = -0.01875, rcs[2], acs[2], w[2];
    z[0] = 2 * a0 / 0.03875, z[1] = 2 * a1 / 0.03875;
    hand_softmax(rcs, z, 2);
    z[0] = -3 * a0 / 0.1325, z[1] = -3 * a1 / 0.06875;
    hand_softmax(acs, z, 2);
    /* w = softmax(m (d RCS + (1-d) ACS)), m = 2; no weight under 1/(5m) = 0.1 */
    z[0] = 2 * (d * rcs[0] + (1 - d) * acs[0]);
    z[1] = 2 * (d * rcs[1] + (1 - d) * acs[1]);
    hand_softmax(w, z, 2);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_U2I), w[0], TOL);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_Q2I), w[1], TOL);
    sched_free(&s);
}
END_TEST

START_TEST(test_code_prior_floor) {
    /* floor: 0.05 < 1/(5·2) = 0.1 -> w = 0.8 w + 0.1 = (0.86, 0.14) */
    double w[2] = {0.95, 0.05};
    sched_code_prior_floor(w, NULL, 2);
    ck_assert_double_eq_tol(w[0], 0.86, TOL);
    ck_assert_double_eq_tol(w[1], 0.14, TOL);
    /* prior (3, 1) on (0.5, 0.5): (1.5, 0.5) / 2 = (0.75, 0.25), above the floor */
    double v[2] = {0.5, 0.5}, pr[2] = {3, 1};
    sched_code_prior_floor(v, pr, 2);
    ck_assert_double_eq_tol(v[0], 0.75, TOL);
    ck_assert_double_eq_tol(v[1], 0.25, TOL);
    /* prior (9, 1): (0.9, 0.1) is not under 0.1 -> unchanged; (19, 1): 0.05 -> floor */
    double u[2] = {0.5, 0.5}, pr2[2] = {19, 1};
    sched_code_prior_floor(u, pr2, 2);
    ck_assert_double_eq_tol(u[0], 0.8 * 0.95 + 0.1, TOL);
    ck_assert_double_eq_tol(u[1], 0.8 * 0.05 + 0.1, TOL);
    /* code_weights: m = 2, d = 0.5, RCS = (0.6, 0.4) (g_inter = -RCS), ACS = (0.3, 0.7):
     * arguments 2(0.3 + 0.15) = 0.9 and 2(0.2 + 0.35) = 1.1 */
    double gi[2] = {-0.6, -0.4}, ga[2] = {0.3, 0.7}, out[2];
    sched_code_weights(out, gi, ga, 0.5, 2);
    ck_assert_double_eq_tol(out[0], exp(0.9) / (exp(0.9) + exp(1.1)), TOL);
}
END_TEST

START_TEST(test_warmup) {
    ck_assert_int_eq(sched_warmup_steps(0.10, 100), 10);
    ck_assert_int_eq(sched_warmup_steps(0.10, 95), 10); /* 9.5 rounded up */
    ck_assert_int_eq(sched_warmup_steps(0.10, 0), 0);
    SchedConfig c;
    sched_config_default(&c, 40);
    ck_assert_int_eq(c.warmup, 4);
    ck_assert_int_eq(c.window, 64);
    ck_assert_double_eq(c.tau, 10.0);
    Sched s;
    ck_assert_int_eq(sched_init(&s, &c, NULL, 0), 0);
    ck_assert_int_eq(s.group[KIND_EMB].m, 3);
    ck_assert_int_eq(s.group[KIND_GEN].m, 10);
    for (int t = 0; t < 5; t++) {
        double loss[N_TASKS];
        for (int k = 0; k < N_TASKS; k++) loss[k] = 5.0 / (1 + t * (k + 1)); /* very different speeds */
        ck_assert_int_eq(sched_update(&s, loss), 0);
        if (t < 4) { /* warmup: uniform, but losses recorded */
            ck_assert_int_eq(s.scheduled, 0);
            ck_assert_double_eq_tol(sched_weight(&s, TASK_U2I), 1.0 / 3, TOL);
            ck_assert_double_eq_tol(sched_weight(&s, TASK_AG), 0.1, TOL);
            ck_assert_int_eq(s.group[KIND_GEN].n, t + 1);
            ck_assert_int_eq(s.group[KIND_GEN].n_sched, 0);
        }
    }
    ck_assert_int_eq(s.scheduled, 1);
    ck_assert(fabs(sched_weight(&s, TASK_U2I) - 1.0 / 3) > 1e-3); /* scheduling started */
    /* the first scheduled step uses all 5 recorded losses: U2I normalised
     * 1, 1/2, 1/3, 1/4, 1/5 -> OLS slope by hand */
    double y[5] = {1, 0.5, 1.0 / 3, 0.25, 0.2}, my = (1 + 0.5 + 1.0 / 3 + 0.25 + 0.2) / 5, sxy = 0;
    for (int i = 0; i < 5; i++) sxy += (i - 2) * (y[i] - my);
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[0], sxy / 10, TOL);
    sched_free(&s);
}
END_TEST

/* ------------------------------------------------------------ guards */

static double group_sum(const Sched *s, int kind) {
    double sum = 0;
    for (int j = 0; j < s->group[kind].m; j++) {
        double w = s->group[kind].omega[j];
        ck_assert_msg(isfinite(w) && w >= 0, "omega %g", w);
        sum += w;
    }
    return sum;
}

START_TEST(test_guard_flat) {
    /* constant losses: every α = 0 -> ratios 0 -> uniform ω, flagged */
    SchedConfig c;
    sched_config_default(&c, 10);
    c.warmup = 1;
    Sched s;
    int tasks[] = {TASK_QR, TASK_SR, TASK_PM};
    ck_assert_int_eq(sched_init(&s, &c, tasks, 3), 0);
    double loss[N_TASKS];
    for (int t = 0; t < 4; t++) {
        all_nan(loss);
        loss[TASK_QR] = loss[TASK_SR] = loss[TASK_PM] = 1.5;
        ck_assert_int_eq(sched_update(&s, loss), 0);
    }
    for (int j = 0; j < 3; j++) ck_assert_double_eq_tol(s.group[KIND_GEN].omega[j], 1.0 / 3, TOL);
    ck_assert_int_eq(s.warn.zero_slopes, 1);
    ck_assert_double_eq(s.group[KIND_GEN].beta, 1.0);
    ck_assert_int_eq(s.warn.bad_loss, 0);
    sched_free(&s);
}
END_TEST

START_TEST(test_guard_single_and_empty) {
    SchedConfig c;
    sched_config_default(&c, 10);
    c.warmup = 1;
    Sched s;
    /* one generative task (ω = 1), three embedding tasks of which Q2I has an
     * empty validation set (always NaN): Q2I keeps 1/3, the others share 2/3 */
    int tasks[] = {TASK_U2I, TASK_Q2I, TASK_I2I, TASK_SA};
    ck_assert_int_eq(sched_init(&s, &c, tasks, 4), 0);
    double loss[N_TASKS];
    for (int t = 0; t < 5; t++) {
        all_nan(loss);
        loss[TASK_U2I] = 3.0 - 0.2 * t;
        loss[TASK_I2I] = 2.0 - 0.01 * t * t;
        loss[TASK_SA] = 1.0 / (1 + t);
        ck_assert_int_eq(sched_update(&s, loss), 0);
    }
    ck_assert_double_eq(sched_weight(&s, TASK_SA), 1.0);
    ck_assert_int_eq(s.warn.single_task, 1);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_Q2I), 1.0 / 3, TOL);
    ck_assert_double_eq_tol(sched_weight(&s, TASK_U2I) + sched_weight(&s, TASK_I2I), 2.0 / 3, 1e-12);
    ck_assert_int_eq(s.warn.no_loss, 1);
    ck_assert_int_eq(s.warn.bad_loss, 1);
    ck_assert_int_eq(s.group[KIND_EMB].active[1], 0);
    /* the two present tasks follow eq. (3)-(6) among themselves (m = 2):
     * U2I normalised: 1 - t/15 (slope -1/15 every window); I2I: 1 - 0.005 t².
     * At step 4 (t' = 4 scheduled steps), window L = 64 covers steps 0..4. */
    double yi[5], my = 0, sxy = 0;
    for (int t = 0; t < 5; t++) my += (yi[t] = 1 - 0.005 * t * t) / 5;
    for (int t = 0; t < 5; t++) sxy += (t - 2) * (yi[t] - my);
    double aU = -1.0 / 15, aI = sxy / 10; /* = -0.02 */
    ck_assert_double_eq_tol(aI, -0.02, 1e-12);
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[0], aU, 1e-12);
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[2], aI, 1e-12);
    sched_free(&s);

    /* no task measured at all: uniform */
    int one[] = {TASK_U2I, TASK_Q2I};
    ck_assert_int_eq(sched_init(&s, &c, one, 2), 0);
    for (int t = 0; t < 3; t++) {
        all_nan(loss);
        ck_assert_int_eq(sched_update(&s, loss), 0);
    }
    ck_assert_double_eq(sched_weight(&s, TASK_U2I), 0.5);
    ck_assert_int_eq(s.warn.no_loss, 2);
    sched_free(&s);
}
END_TEST

START_TEST(test_guard_nan_inf) {
    /* a NaN and an Inf in the history are skipped: the slope is fitted on
     * the remaining points, ω stays finite and sums to 1 */
    SchedConfig c;
    sched_config_default(&c, 10);
    c.warmup = 0, c.window = 4;
    Sched s;
    int tasks[] = {TASK_U2I, TASK_Q2I};
    ck_assert_int_eq(sched_init(&s, &c, tasks, 2), 0);
    double u[] = {2.0, NAN, 1.6, 1.5}, q[] = {1.0, 0.9, INFINITY, 0.8}, loss[N_TASKS];
    for (int t = 0; t < 4; t++) {
        all_nan(loss);
        loss[TASK_U2I] = u[t], loss[TASK_Q2I] = q[t];
        ck_assert_int_eq(sched_update(&s, loss), 0);
        ck_assert_double_eq_tol(group_sum(&s, KIND_EMB), 1.0, 1e-12);
    }
    ck_assert_int_eq(s.total.bad_loss, 2);
    /* U2I: points (0, 1), (2, 0.8), (3, 0.75): x̄ = 5/3, ȳ = 0.85;
     * Σ(x-x̄)(y-ȳ) = (-5/3)(0.15) + (1/3)(-0.05) + (4/3)(-0.1) = -0.4;
     * Σ(x-x̄)² = 25/9 + 1/9 + 16/9 = 42/9 -> slope = -0.4 · 9/42 */
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[0], -0.4 * 9 / 42, 1e-12);
    /* Q2I: points (0, 1), (1, 0.9), (3, 0.8): x̄ = 4/3, ȳ = 0.9;
     * Σ = (-4/3)(0.1) + 0 + (5/3)(-0.1) = -0.3; Σ(x-x̄)² = 16/9 + 1/9 + 25/9 = 42/9 */
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[1], -0.3 * 9 / 42, 1e-12);
    sched_free(&s);

    /* a first loss of 0 cannot normalise the others: skipped, and L_i(0) is
     * the first positive one.  U2I: 0, 2, 1.8, 1.6 -> points (1, 1), (2, 0.9),
     * (3, 0.8): slope -0.1.  Q2I: 1, 0.9, 0.8, 0.7: slope -0.1 too. */
    ck_assert_int_eq(sched_init(&s, &c, tasks, 2), 0);
    double u0[] = {0.0, 2.0, 1.8, 1.6}, q0[] = {1.0, 0.9, 0.8, 0.7};
    for (int t = 0; t < 4; t++) {
        all_nan(loss);
        loss[TASK_U2I] = u0[t], loss[TASK_Q2I] = q0[t];
        ck_assert_int_eq(sched_update(&s, loss), 0);
    }
    ck_assert_int_eq(s.total.bad_loss, 1);
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[0], -0.1, 1e-12);
    ck_assert_double_eq_tol(s.group[KIND_EMB].alpha[1], -0.1, 1e-12);
    sched_free(&s);
}
END_TEST

START_TEST(test_guard_stress) {
    /* wild inputs, both variants, both remainder policies: ω always finite,
     * non-negative, summing to 1; counts never exceed B */
    for (int variant = 0; variant < 2; variant++) {
        SchedConfig c;
        sched_config_default(&c, 300);
        c.variant = variant, c.window = 8, c.remainder = variant;
        double prior[N_TASKS];
        for (int k = 0; k < N_TASKS; k++) prior[k] = (double)TASKS[k].size[SPLIT_TRAIN];
        if (variant) c.prior = prior;
        Sched s;
        ck_assert_int_eq(sched_init(&s, &c, NULL, 0), 0);
        uint64_t r = 12345;
        for (int t = 0; t < 300; t++) {
            double loss[N_TASKS];
            for (int k = 0; k < N_TASKS; k++) {
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                int kind = (int)(r >> 60);
                double u = (double)(r >> 11) / 9007199254740992.0;
                loss[k] = kind == 0 ? NAN : kind == 1 ? INFINITY : kind == 2 ? 0.0 : kind == 3 ? 1e300 * u
                          : kind == 4 ? 1e-300 * u : kind == 5 ? -u : u * 10 / (1 + t);
            }
            ck_assert_int_eq(sched_update(&s, loss), 0);
            for (int b = 0; b < 2; b++) {
                ck_assert_double_eq_tol(group_sum(&s, b), 1.0, 1e-9);
                int n[N_TASKS];
                int tot = sched_counts(&s, (TaskKind)b, NULL, n);
                ck_assert_int_le(tot, c.batch[b]);
                if (variant == 1) ck_assert_int_eq(tot, c.batch[b]);
            }
        }
        ck_assert_int_eq(s.total.fallback, 0);
        sched_free(&s);
    }
}
END_TEST

/* ------------------------------------------------------------ counts (§4.3.2) */

START_TEST(test_counts) {
    int n[3];
    /* ω = (0.5, 0.3, 0.2), B = 7: Bω = 3.5, 2.1, 1.4 -> ⌊⌋ = 3, 2, 1 (6 of 7) */
    double w[3] = {0.5, 0.3, 0.2};
    ck_assert_int_eq(sched_count_samples(n, w, NULL, 3, 7, REM_DROP), 6);
    ck_assert_int_eq(n[0], 3);
    ck_assert_int_eq(n[1], 2);
    ck_assert_int_eq(n[2], 1);
    /* largest remainder: the leftover 1 goes to fraction 0.5 (task 0) */
    ck_assert_int_eq(sched_count_samples(n, w, NULL, 3, 7, REM_LARGEST), 7);
    ck_assert_int_eq(n[0], 4);
    ck_assert_int_eq(n[1], 2);
    ck_assert_int_eq(n[2], 1);
    /* B = 9: 4.5, 2.7, 1.8 -> 4, 2, 1 + leftover 2 to fractions 0.8 (task 2), 0.7 (task 1) */
    ck_assert_int_eq(sched_count_samples(n, w, NULL, 3, 9, REM_LARGEST), 9);
    ck_assert_int_eq(n[0], 4);
    ck_assert_int_eq(n[1], 3);
    ck_assert_int_eq(n[2], 2);
    /* ties go to the lower index: ω = 1/3 each, B = 4 -> 1.33 each -> 2, 1, 1 */
    double u[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    ck_assert_int_eq(sched_count_samples(n, u, NULL, 3, 4, REM_LARGEST), 4);
    ck_assert_int_eq(n[0], 2);
    ck_assert_int_eq(n[1], 1);
    ck_assert_int_eq(n[2], 1);
    /* B = 3 with ω = 1/3: exactly 1 each under drop */
    ck_assert_int_eq(sched_count_samples(n, u, NULL, 3, 3, REM_DROP), 3);
    /* ω = (0.29, 0.71), B = 100: 100 x 0.29 is 28.999999999999996 in double, so
     * without the rounding slack ⌊⌋ would give 28 and drop a sample */
    double v[2] = {0.29, 0.71};
    ck_assert_int_eq(sched_count_samples(n, v, NULL, 2, 100, REM_DROP), 100);
    ck_assert_int_eq(n[0], 29);
    ck_assert_int_eq(n[1], 71);
    /* availability caps: B = 10 -> 5, 3, 2; task 0 has only 2 */
    long avail[3] = {2, 100, 100};
    ck_assert_int_eq(sched_count_samples(n, w, avail, 3, 10, REM_DROP), 7);
    ck_assert_int_eq(n[0], 2);
    ck_assert_int_eq(n[1], 3);
    ck_assert_int_eq(n[2], 2);
    /* largest: the shortfall 3 goes, once, to the next largest ω with room (task 1) */
    ck_assert_int_eq(sched_count_samples(n, w, avail, 3, 10, REM_LARGEST), 10);
    ck_assert_int_eq(n[0], 2);
    ck_assert_int_eq(n[1], 6);
    ck_assert_int_eq(n[2], 2);
    /* not enough samples anywhere: everything available, no more */
    long few[3] = {1, 1, 0};
    ck_assert_int_eq(sched_count_samples(n, w, few, 3, 10, REM_LARGEST), 2);
    ck_assert_int_eq(n[2], 0);

    /* through a scheduler: warmup ω = 1/10 in the G group, B = 16:
     * drop -> 1 each (10 of 16); largest -> 6 tasks get 2 (ids 3..8), 4 get 1 */
    SchedConfig c;
    sched_config_default(&c, 100);
    Sched s;
    ck_assert_int_eq(sched_init(&s, &c, NULL, 0), 0);
    int cnt[N_TASKS];
    ck_assert_int_eq(sched_counts(&s, KIND_GEN, NULL, cnt), 10);
    s.cfg.remainder = REM_LARGEST;
    ck_assert_int_eq(sched_counts(&s, KIND_GEN, NULL, cnt), 16);
    ck_assert_int_eq(cnt[TASK_QR], 2);
    ck_assert_int_eq(cnt[TASK_PM], 2);
    ck_assert_int_eq(cnt[TASK_UP], 1);
    ck_assert_int_eq(cnt[TASK_AG], 1);
    /* embedding: 16/3 = 5.33 -> 6, 5, 5 */
    ck_assert_int_eq(sched_counts(&s, KIND_EMB, NULL, cnt), 16);
    ck_assert_int_eq(cnt[TASK_U2I], 6);
    ck_assert_int_eq(cnt[TASK_I2I], 5);
    sched_free(&s);
}
END_TEST

/* ------------------------------------------------------------ recfound sched */

static int run_sched(int argc, const char **argv) {
    rf_clear_error();
    return sched_main(argc, (char **)argv);
}

START_TEST(test_cli) {
    char csv[256], out[256], svg[256];
    tmp_path(csv, sizeof csv, "losses.csv");
    tmp_path(out, sizeof out, "out.csv");
    tmp_path(svg, sizeof svg, "omega.svg");
    /* the two-task example of test_paper_pipeline, short and long names mixed,
     * plus one generative task (a group of one: ω = 1, n = B) */
    RfBuf b = {0};
    buf_printf(&b, "U2I, Emb_query ,Query_Rewriting\r\n");
    for (int t = 0; t < 6; t++) buf_printf(&b, "%.17g,%.17g,%g\r\n", U2I_LOSS[t], Q2I_LOSS[t], 3.0 - 0.1 * t);
    write_text(csv, b.data);
    buf_free(&b);
    const char *argv[] = {"sched", "--losses", csv, "--window", "3", "--tau", "1", "--warmup", "2",
                          "--batch", "10", "--out", out, "--plot", svg};
    ck_assert_msg(run_sched(15, argv) == 0, "%s", rf_last_error());
    char *text = slurp(out);
    const char *header = "step,group,task,alpha,gamma_inter,gamma_intra,beta,omega,n\n";
    ck_assert_msg(!strncmp(text, header, strlen(header)), "%s", text);
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    ck_assert_int_eq(lines, 1 + 4 * 3); /* steps 2..5, 3 tasks */
    /* step 5, U2I: α = -0.02 and ω from the hand computation of test_paper_pipeline */
    char *row = strstr(text, "5,E,Emb_user,");
    ck_assert_ptr_nonnull(row);
    double alpha, gi, ga, beta, omega;
    int n;
    ck_assert_int_eq(sscanf(row + 13, "%lf,%lf,%lf,%lf,%lf,%d", &alpha, &gi, &ga, &beta, &omega, &n), 6);
    ck_assert_double_eq_tol(alpha, -0.02, 1e-10);
    double z[4], g1[2], g2[2], w[2], p[4], amax[4] = {-0.0375, -0.025, -0.025, -0.01875};
    z[0] = 2 * -0.02 / 0.03875, z[1] = 2 * -0.01875 / 0.03875;
    hand_softmax(g1, z, 2);
    z[0] = -3 * -0.02 / 0.1325, z[1] = -3 * -0.01875 / 0.06875;
    hand_softmax(g2, z, 2);
    for (int k = 0; k < 4; k++) z[k] = -4 * amax[k] / 0.2325;
    hand_softmax(p, z, 4);
    double bt = fmin(4 * p[3], 1);
    z[0] = bt * g1[0] + (1 - bt) * g2[0], z[1] = bt * g1[1] + (1 - bt) * g2[1];
    hand_softmax(w, z, 2);
    ck_assert_double_eq_tol(gi, -g1[0], 1e-8);
    ck_assert_double_eq_tol(ga, g2[0], 1e-8);
    ck_assert_double_eq_tol(beta, bt, 1e-8);
    ck_assert_double_eq_tol(omega, w[0], 1e-8);
    ck_assert_int_eq(n, (int)floor(10 * w[0]));
    /* the single generative task */
    row = strstr(text, "5,G,Query_Rewriting,");
    ck_assert_ptr_nonnull(row);
    ck_assert_ptr_nonnull(strstr(row, ",1,10\n"));
    free(text);
    /* the Figure 3 chart */
    text = slurp(svg);
    ck_assert(!strncmp(text, "<svg", 4));
    ck_assert_ptr_nonnull(strstr(text, "U2I (E)"));
    ck_assert_ptr_nonnull(strstr(text, "QR (G)"));
    free(text);

    /* --variant code --remainder largest: counts fill the batch */
    const char *argv2[] = {"sched", "--losses", csv, "--window", "3", "--warmup", "2", "--batch", "10",
                           "--variant", "code", "--remainder", "largest", "--out", out};
    ck_assert_msg(run_sched(15, argv2) == 0, "%s", rf_last_error());
    text = slurp(out);
    int sum = 0;
    for (char *p = strstr(text, "5,E,"); p && !strncmp(p, "5,E,", 4); p = strchr(p, '\n') + 1) {
        char *nl = strchr(p, '\n'), *c = nl;
        while (c > p && c[-1] != ',') c--;
        sum += atoi(c); /* the last field, n */
        ck_assert_ptr_nonnull(nl);
    }
    ck_assert_int_eq(sum, 10);
    free(text);

    /* option errors */
    const char *bad[] = {"sched", "--losses", csv, "--variant", "nope"};
    ck_assert_int_eq(run_sched(5, bad), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--variant"));
    const char *cold[] = {"sched", "--losses", csv, "--tau", "-1"};  /* a temperature must be positive */
    ck_assert_int_eq(run_sched(5, cold), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--tau must be > 0"));
    const char *none[] = {"sched"};
    ck_assert_int_eq(run_sched(1, none), -1);
    unlink(csv), unlink(out), unlink(svg);
}
END_TEST

static void expect_csv_error(const char *content, const char *what1, const char *what2) {
    char csv[256];
    tmp_path(csv, sizeof csv, "bad.csv");
    write_text(csv, content);
    const char *argv[] = {"sched", "--losses", csv, "--out", "/dev/null"};
    ck_assert_int_eq(run_sched(5, argv), -1);
    const char *e = rf_last_error();
    ck_assert_msg(strstr(e, csv) && strstr(e, what1) && strstr(e, what2), "error line: %s", e);
    ck_assert_ptr_null(strchr(e, '\n'));
    unlink(csv);
}

START_TEST(test_cli_bad_csv) {
    expect_csv_error("U2I,Q2I\n1,2\n3\n", "line 3", "expected 2");
    expect_csv_error("U2I,Q2I\n1,abc\n", "line 2", "not a number");
    expect_csv_error("U2I,Nope\n1,2\n", "line 1", "unknown task 'Nope'");
    expect_csv_error("", "empty file", "");
    expect_csv_error("\n\n", "empty file", "");
    expect_csv_error("U2I,Q2I\n", "no data rows", "");
    expect_csv_error("U2I,U2I\n1,2\n", "line 1", "twice");
    expect_csv_error("U2I,Q2I\n1,2\n\n3,4\n", "line 3", "empty line");
    /* missing values are allowed: an empty field means not measured */
    char csv[256];
    tmp_path(csv, sizeof csv, "ok.csv");
    write_text(csv, "step,U2I,Q2I\n0,1,\n1,0.9,nan\n2,0.8,\n\n");
    const char *argv[] = {"sched", "--losses", csv, "--out", "/dev/null", "--warmup", "1"};
    ck_assert_msg(run_sched(7, argv) == 0, "%s", rf_last_error());
    unlink(csv);
}
END_TEST

/* ------------------------------------------------------------ SVG writers */

START_TEST(test_svg_lines) {
    char path[256];
    tmp_path(path, sizeof path, "lines.svg");
    double x[5] = {0, 1, 2, 3, 4}, a[5] = {0.1, 0.2, NAN, 0.4, 0.5}, c[5] = {0.5, NAN, 0.3, NAN, 0.1};
    const double *ys[2] = {a, c};
    const char *names[2] = {"first & <series>", "U2I (E)"};
    ck_assert_msg(svg_lines(path, "A title", "step", "value", 2, names, x, ys, 5) == 0, "%s", rf_last_error());
    char *t = slurp(path);
    ck_assert(!strncmp(t, "<svg", 4));
    ck_assert_ptr_nonnull(strstr(t, "first &amp; &lt;series&gt;"));
    ck_assert_ptr_nonnull(strstr(t, "U2I (E)"));
    ck_assert_ptr_nonnull(strstr(t, "A title"));
    ck_assert_ptr_null(strstr(t, "nan"));
    ck_assert_ptr_nonnull(strstr(t, "<circle")); /* c[2] is an isolated point */
    size_t n = strlen(t);
    ck_assert(n > 8 && !strcmp(t + n - 7, "</svg>\n"));
    free(t);
    /* degenerate input: no points, constant series */
    double k[1] = {2.0}, x1[1] = {7};
    const double *yk[1] = {k};
    ck_assert_int_eq(svg_lines(path, "t", "x", "y", 1, names, x1, yk, 1), 0);
    ck_assert_int_eq(svg_lines(path, "t", "x", "y", 0, NULL, x1, NULL, 0), 0);
    unlink(path);
}
END_TEST

/* The tick labels of an svg_lines chart, in the order written, as "label@x,y"
 * joined by spaces, for the labels anchored `anchor` ("end": the y axis,
 * "middle": the x axis) inside the tick group. */
static void tick_labels(const char *svg, const char *anchor, char *out, size_t cap) {
    const char *g = strstr(svg, "<g font-size=\"12\""), *end = g ? strstr(g, "</g>") : NULL;
    ck_assert(g && end);
    char want[64];
    snprintf(want, sizeof want, "text-anchor=\"%s\">", anchor);
    out[0] = 0;
    for (const char *t = strstr(g, "<text x=\""); t && t < end; t = strstr(t + 1, "<text x=\"")) {
        const char *a = strstr(t, want), *close = strstr(t, "</text>");
        if (!a || a > close) continue;
        double x, y;
        ck_assert_int_eq(sscanf(t, "<text x=\"%lf\" y=\"%lf\"", &x, &y), 2);
        size_t k = strlen(out);
        snprintf(out + k, cap - k, "%s%.*s@%.2f,%.2f", k ? " " : "", (int)(close - a - strlen(want)), a + strlen(want),
                 x, y);
    }
}

/* Ticks by hand.  The plot area is x 80..700 (W 900, margins 80 and 200) and
 * y 50..458 (H 520, margins 50 and 62).  Case 1: x over [0, 4] at about 8
 * intervals: raw step 0.5, so 0.5; y over [0.1, 0.5] at about 6: raw 0.0667,
 * mantissa 6.67 -> 5, step 0.05, the axis already whole at 0.10 and 0.50.
 * Case 2: x over [0, 20]: raw 2.5 stays 2.5 (one decimal); y over [-0.3, 1.2]:
 * raw 0.25 -> 0.25, the axis widened to [-0.50, 1.25] (7 intervals of
 * 408/7 px).  Case 3: x over [0, 100]: raw 12.5, mantissa 1.25 -> 1, step 10;
 * y over [0, 12]: raw 2 -> 2; whole steps print no decimals.  Label y
 * positions are the tick's + 4, x ones the bottom edge + 19.  Each case is one
 * line from (x0, y0) to (x1, y1); want_y and want_x list "label@x,y". */
static void check_ticks(double x0, double x1, double y0, double y1, const char *want_y, const char *want_x) {
    char path[256], got[2048];
    tmp_path(path, sizeof path, "ticks.svg");
    double x[2] = {x0, x1}, y[2] = {y0, y1};
    const double *ys[1] = {y};
    const char *names[1] = {"a"};
    ck_assert_int_eq(svg_lines(path, "t", "x", "y", 1, names, x, ys, 2), 0);
    char *t = slurp(path);
    tick_labels(t, "end", got, sizeof got);
    ck_assert_str_eq(got, want_y);
    tick_labels(t, "middle", got, sizeof got);
    ck_assert_str_eq(got, want_x);
    free(t);
    unlink(path);
}

START_TEST(test_svg_ticks) {
    check_ticks(0, 4, 0.1, 0.5,
                "0.10@72.00,462.00 0.15@72.00,411.00 0.20@72.00,360.00 0.25@72.00,309.00 0.30@72.00,258.00 "
                "0.35@72.00,207.00 0.40@72.00,156.00 0.45@72.00,105.00 0.50@72.00,54.00",
                "0.0@80.00,477.00 0.5@157.50,477.00 1.0@235.00,477.00 1.5@312.50,477.00 2.0@390.00,477.00 "
                "2.5@467.50,477.00 3.0@545.00,477.00 3.5@622.50,477.00 4.0@700.00,477.00");
    check_ticks(0, 20, -0.3, 1.2,
                "-0.50@72.00,462.00 -0.25@72.00,403.71 0.00@72.00,345.43 0.25@72.00,287.14 "
                "0.50@72.00,228.86 0.75@72.00,170.57 1.00@72.00,112.29 1.25@72.00,54.00",
                "0.0@80.00,477.00 2.5@157.50,477.00 5.0@235.00,477.00 7.5@312.50,477.00 10.0@390.00,477.00 "
                "12.5@467.50,477.00 15.0@545.00,477.00 17.5@622.50,477.00 20.0@700.00,477.00");
    check_ticks(0, 100, 0, 12,
                "0@72.00,462.00 2@72.00,394.00 4@72.00,326.00 6@72.00,258.00 "
                "8@72.00,190.00 10@72.00,122.00 12@72.00,54.00",
                "0@80.00,477.00 10@142.00,477.00 20@204.00,477.00 30@266.00,477.00 40@328.00,477.00 50@390.00,477.00 "
                "60@452.00,477.00 70@514.00,477.00 80@576.00,477.00 90@638.00,477.00 100@700.00,477.00");
}
END_TEST

START_TEST(test_svg_heatmap) {
    char path[256];
    tmp_path(path, sizeof path, "heat.svg");
    const char *rows[3] = {"U2I", "Q2I", "QR"}, *cols[3] = {"U2I", "Q2I", "QR"};
    double v[9] = {1, 0.5, 0.1, 0.5, 1, NAN, 0.1, 0.2, 1};
    ck_assert_msg(svg_heatmap(path, "Routing similarity", 3, 3, rows, cols, v, 0, 1) == 0, "%s", rf_last_error());
    char *t = slurp(path);
    ck_assert(!strncmp(t, "<svg", 4));
    ck_assert_ptr_nonnull(strstr(t, ">Q2I</text>"));
    ck_assert_ptr_nonnull(strstr(t, ">QR</text>"));
    ck_assert_ptr_nonnull(strstr(t, "Routing similarity"));
    ck_assert_ptr_nonnull(strstr(t, "rgb(200,200,200)")); /* the NaN cell */
    size_t n = strlen(t);
    ck_assert(n > 8 && !strcmp(t + n - 7, "</svg>\n"));
    free(t);
    ck_assert_int_eq(svg_heatmap(path, "x", 0, 3, NULL, NULL, v, 0, 1), -1);
    unlink(path);
}
END_TEST

Suite *s2sched_suite(void) {
    Suite *s = suite_create("s2sched");
    TCase *tc = tcase_create("equations");
    tcase_add_test(tc, test_slope);
    tcase_add_test(tc, test_eq3_gamma_inter);
    tcase_add_test(tc, test_eq4_gamma_intra);
    tcase_add_test(tc, test_eq5_beta);
    tcase_add_test(tc, test_eq6_omega);
    tcase_add_test(tc, test_code_prior_floor);
    suite_add_tcase(s, tc);
    tc = tcase_create("scheduler");
    tcase_add_test(tc, test_paper_pipeline);
    tcase_add_test(tc, test_code_pipeline);
    tcase_add_test(tc, test_warmup);
    tcase_add_test(tc, test_counts);
    suite_add_tcase(s, tc);
    tc = tcase_create("guards");
    tcase_add_test(tc, test_guard_flat);
    tcase_add_test(tc, test_guard_single_and_empty);
    tcase_add_test(tc, test_guard_nan_inf);
    tcase_add_test(tc, test_guard_stress);
    suite_add_tcase(s, tc);
    tc = tcase_create("cli");
    tcase_add_test(tc, test_cli);
    tcase_add_test(tc, test_cli_bad_csv);
    tcase_add_test(tc, test_svg_lines);
    tcase_add_test(tc, test_svg_ticks);
    tcase_add_test(tc, test_svg_heatmap);
    suite_add_tcase(s, tc);
    return s;
}
