/*
 * test_mpi.c - the "mpi" suite: data-parallel training over MPI (dist.c).
 *
 * `make check` builds build-mpi/recfound with mpicc when it is installed and
 * passes it as $RECFOUND_MPI_BIN; without it (or without mpirun) every test
 * here says it is skipped and why.  The reference is always the ordinary
 * one-process binary ($RECFOUND_BIN), so the comparison is between two
 * separately built programs:
 *   - P = 2 and 3 ranks train on the same batches as one process: the same
 *     samples per step, losses equal to 1e-5 relative, and adapters whose
 *     difference is below 0.5% of what training moved them (the float sums
 *     are only reordered across ranks; measured ~1e-4 for 2 ranks);
 *   - a run stopped on 2 ranks and resumed on 3 ends where the one-process
 *     run does;
 *   - a rank killed, or stopped, makes the whole job end with a message
 *     instead of hanging, and the checkpoints already written still load.
 */
#include "check_util.h"

#include <sys/time.h>

#define LOSS_RTOL 1e-5
#define ADAPTER_TOL 5e-3

/* The MPI build and mpirun, or 0 after saying why the test is skipped. */
static int mpi_ready(const char *test) {
    const char *m = getenv("RECFOUND_MPI_BIN");
    if (!m || access(m, X_OK)) {
        fprintf(stderr, "mpi suite: %s skipped: no MPI build (make check makes build-mpi/recfound when mpicc is "
                "installed: apt-get install libopenmpi-dev openmpi-bin)\n", test);
        return 0;
    }
    if (system("mpirun --version >/dev/null 2>&1")) {
        fprintf(stderr, "mpi suite: %s skipped: mpirun not found\n", test);
        return 0;
    }
    return 1;
}

/* mpirun as the tests use it: loopback, one OpenMP thread per rank, allowed as root. */
static void mpirun_prefix(char *buf, size_t n, int ranks) {
    snprintf(buf, n, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
             "OMP_NUM_THREADS=1 mpirun --oversubscribe -np %d %s", ranks, getenv("RECFOUND_MPI_BIN"));
}

static void must_run(const char *cmd) {
    char *out, *err;
    int rc = run_capture(cmd, &out, &err);
    ck_assert_msg(rc == 0, "%s\nexit %d\n%s", cmd, rc, err);
    free(out);
    free(err);
}

/* Training options shared by the runs compared: S2Sched on (its validation
 * losses are computed by all ranks), dropout on (keyed by sample, not rank),
 * several generative micro-batches per step. */
#define TRAIN_OPTS "--model %s/base --tokenizer %s/tok.json --data %s/w --steps 5 --emb-batch 5 --gen-batch 9 " \
                   "--micro 2 --max-len 128 --rank 4 --alpha 16 --task-dim 16 --lr 3e-3 --sched-val 4 "       \
                   "--sched-warmup 0.2 --warmup 0.2 --sched-remainder largest --save-every 2"

/* losses.csv rows: step,lr,loss,loss_emb,loss_gen,grad_norm,emb_queries,gen_samples,tokens,seconds */
typedef struct { double v[10]; } Row;

static int read_losses(const char *run, Row *rows, int cap) {
    char path[700], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/losses.csv", run);
    ck_assert_msg(rf_read_file(path, &text, &n) == 0, "%s", rf_last_error());
    int k = 0;
    char *line = strchr(text, '\n');  /* skip the header */
    while (line && line[1] && k < cap) {
        char *p = line + 1;
        for (int c = 0; c < 10; c++) {
            rows[k].v[c] = strtod(p, &p);
            if (*p == ',') p++;
        }
        k++;
        line = strchr(line + 1, '\n');
    }
    free(text);
    return k;
}

/* Same samples each step, losses to LOSS_RTOL. */
static void expect_same_losses(const char *a, const char *b) {
    Row ra[16], rb[16];
    int na = read_losses(a, ra, 16), nb = read_losses(b, rb, 16);
    ck_assert_msg(na == nb && na > 0, "%s has %d steps, %s %d", a, na, b, nb);
    for (int i = 0; i < na; i++) {
        for (int c = 6; c <= 8; c++)
            ck_assert_msg(ra[i].v[c] == rb[i].v[c], "step %d: column %d differs (%g vs %g): not the same batch",
                          i + 1, c + 1, ra[i].v[c], rb[i].v[c]);
        for (int c = 2; c <= 4; c++) {
            double rel = fabs(ra[i].v[c] - rb[i].v[c]) / fmax(fabs(ra[i].v[c]), 1e-12);
            ck_assert_msg(rel <= LOSS_RTOL, "step %d: loss column %d: %.9g vs %.9g (relative %.2e > %.0e)", i + 1,
                          c + 1, ra[i].v[c], rb[i].v[c], rel, LOSS_RTOL);
        }
    }
}

/* ||W_got - W_ref|| <= ADAPTER_TOL ||W_ref - W_0|| for every adapter tensor. */
static void expect_same_adapters(const char *got, const char *ref, const char *start) {
    char p[3][700];
    const char *dirs[3] = {got, ref, start};
    StFile f[3];
    for (int k = 0; k < 3; k++) {
        snprintf(p[k], sizeof p[k], "%s/adapter_model.safetensors", dirs[k]);
        ck_assert_msg(st_open(&f[k], p[k]) == 0, "%s", rf_last_error());
    }
    ck_assert_int_eq(f[0].n, f[1].n);
    int moved = 0;
    for (int i = 0; i < f[1].n; i++) {
        const StTensor *t[3] = {st_find(&f[0], f[1].tensors[i].name), &f[1].tensors[i],
                                st_find(&f[2], f[1].tensors[i].name)};
        ck_assert_msg(t[0] && t[2] && t[0]->numel == t[1]->numel, "%s: tensor %s missing or reshaped", p[0], t[1]->name);
        size_t n = (size_t)t[1]->numel;
        float *w[3];
        for (int k = 0; k < 3; k++) {
            w[k] = malloc(n * sizeof(float));
            ck_assert(w[k] && st_read_f32(&f[k], t[k], w[k]) == 0);
        }
        double diff = 0, update = 0;
        for (size_t j = 0; j < n; j++) {
            diff += ((double)w[0][j] - w[1][j]) * ((double)w[0][j] - w[1][j]);
            update += ((double)w[1][j] - w[2][j]) * ((double)w[1][j] - w[2][j]);
        }
        moved += update > 0;
        ck_assert_msg(sqrt(diff) <= ADAPTER_TOL * sqrt(update) + 1e-12, "%s: %s differs by %.3g, %.2g of its update %.3g",
                      got, t[1]->name, sqrt(diff), sqrt(diff) / sqrt(update), sqrt(update));
        for (int k = 0; k < 3; k++) free(w[k]);
    }
    ck_assert_msg(moved > 0, "%s: training moved no adapter tensor", ref);
    for (int k = 0; k < 3; k++) st_close(&f[k]);
}

/* A tiny world in d and the one-process reference run d/one; opts gets the
 * training options the runs compared share. */
static void reference_run(const char *d, char *opts, size_t n) {
    char cmd[4096];
    tiny_world(d);
    snprintf(opts, n, TRAIN_OPTS, d, d, d);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s train %s --out %s/one", recfound_bin(), opts, d);
    must_run(cmd);
}

/* Run d/NAME ended where d/one did: the same batches and losses, and final
 * adapters within ADAPTER_TOL of the update. */
static void expect_same_run(const char *d, const char *name) {
    char a[700], b[700], z[700];
    snprintf(a, sizeof a, "%s/one", d);
    snprintf(b, sizeof b, "%s/%s", d, name);
    expect_same_losses(b, a);
    snprintf(a, sizeof a, "%s/one/final", d);
    snprintf(b, sizeof b, "%s/%s/final", d, name);
    snprintf(z, sizeof z, "%s/one/step-0", d);
    expect_same_adapters(b, a, z);
}

START_TEST(test_ranks_match_one_process) {
    if (!mpi_ready("ranks_match_one_process")) return;
    char d[] = "/tmp/rfmpiXXXXXX", cmd[4096], opts[1024], pre[512], name[16];
    ck_assert(mkdtemp(d) != NULL);
    reference_run(d, opts, sizeof opts);
    for (int P = 2; P <= 3; P++) {
        mpirun_prefix(pre, sizeof pre, P);
        snprintf(name, sizeof name, "p%d", P);
        snprintf(cmd, sizeof cmd, "%s train %s --out %s/%s", pre, opts, d, name);
        must_run(cmd);
        expect_same_run(d, name);
    }
    rm_tree(d);
}
END_TEST

/* Stopped after step 2 on 2 ranks, resumed on 3: the same run as one process. */
START_TEST(test_resume_on_other_ranks) {
    if (!mpi_ready("resume_on_other_ranks")) return;
    char d[] = "/tmp/rfmpiXXXXXX", cmd[4096], opts[1024], pre[512];
    ck_assert(mkdtemp(d) != NULL);
    reference_run(d, opts, sizeof opts);
    mpirun_prefix(pre, sizeof pre, 2);
    snprintf(cmd, sizeof cmd, "%s train %s --out %s/cut --stop-at 2", pre, opts, d);
    must_run(cmd);
    mpirun_prefix(pre, sizeof pre, 3);
    snprintf(cmd, sizeof cmd, "%s train --resume %s/cut", pre, d);
    must_run(cmd);
    expect_same_run(d, "cut");
    rm_tree(d);
}
END_TEST

static double now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + 1e-6 * tv.tv_usec;
}

/* A 2-rank run that saves every step; once step-2 exists, `signal` goes to
 * one rank.  The job must end by itself (non-zero, within `limit` seconds,
 * the log containing `says`), and every checkpoint left must load. */
static void fault(const char *signal, const char *env, const char *says, double limit) {
    char d[] = "/tmp/rfmpiXXXXXX", cmd[8192], pre[512], path[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    mpirun_prefix(pre, sizeof pre, 2);
    double t0 = now();
    snprintf(cmd, sizeof cmd,
             "%s %s train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 2000 --emb-batch 4 "
             "--gen-batch 6 --max-len 96 --rank 4 --task-dim 16 --save-every 1 --out %s/run >%s/log 2>&1 & pid=$!; "
             "for i in $(seq 600); do [ -d %s/run/step-2 ] && break; sleep 0.05; done; "
             "kill -%s $(pgrep -P $pid | tail -1); "
             "for i in $(seq %d); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
             "if kill -0 $pid 2>/dev/null; then pkill -9 -P $pid; kill -9 $pid; echo hung; exit 99; fi; "
             "wait $pid; echo \"mpirun exit $?\"; cat %s/log",
             env, pre, d, d, d, d, d, d, signal, (int)(limit * 10), d);
    int rc = run_capture(cmd, &out, &err);
    double dt = now() - t0;
    ck_assert_msg(rc != 99, "the job still ran %.0f s after a rank got SIG%s:\n%s", limit, signal, out);
    ck_assert_msg(rc == 0 && strstr(out, "mpirun exit ") && !strstr(out, "mpirun exit 0"),
                  "the job did not fail after a rank got SIG%s:\n%s", signal, out);
    ck_assert_msg(!says || strstr(out, says), "no '%s' in:\n%s", says, out);
    ck_assert_msg(dt < limit + 30, "took %.0f s", dt);
    free(out);
    free(err);
    Model m;
    snprintf(path, sizeof path, "%s/base", d);
    ck_assert(model_load(&m, path) == 0);
    for (int k = 0; k <= 2; k++) {
        Tmole t;
        snprintf(path, sizeof path, "%s/run/step-%d", d, k);
        ck_assert_msg(tmole_load(&t, path, &m.cfg) == 0, "after SIG%s: %s", signal, rf_last_error());
        tmole_free(&t);
    }
    model_free(&m);
    /* and the run goes on, here on one process */
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s train --resume %s/run --stop-at 1", recfound_bin(), d);
    rc = run_capture(cmd, &out, &err);
    ck_assert_msg(rc == 0 && strstr(err, "resuming"), "%s", err);
    free(out);
    free(err);
    rm_tree(d);
}

START_TEST(test_killed_rank_stops_job) {
    if (!mpi_ready("killed_rank_stops_job")) return;
    fault("KILL", "", NULL, 30);
}
END_TEST

/* A rank that stops answering: the other one gives up after
 * RECFOUND_MPI_TIMEOUT seconds and says so. */
START_TEST(test_stalled_rank_times_out) {
    if (!mpi_ready("stalled_rank_times_out")) return;
    fault("STOP", "RECFOUND_MPI_TIMEOUT=2", "no answer from the other ranks", 30);
}
END_TEST

/* The number after `key` in s. */
static double number_after(const char *s, const char *key) {
    const char *p = strstr(s, key);
    ck_assert_msg(p != NULL, "no '%s' in: %s", key, s);
    return strtod(p + strlen(key), NULL);
}

/* --dry-run on 2 ranks of one machine: each process's share of the embedding
 * rows is half, and the memory it weighs against the machine is that of both
 * processes (each holds the backbone, the adapters and its activations). */
START_TEST(test_dry_run_counts_processes_on_machine) {
    if (!mpi_ready("dry_run_counts_processes_on_machine")) return;
    char d[] = "/tmp/rfmpidryXXXXXX", cmd[4096], pre[512], *out, *err, *err1;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    const char *opts = "--model %s/base --tokenizer %s/tok.json --data %s/w --emb-batch 10 --micro 4 --max-len 64 --no-s2sched "
                       "--dry-run --out %s/run";
    char o[1024];
    snprintf(o, sizeof o, opts, d, d, d, d);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s train %s", recfound_bin(), o);
    ck_assert_msg(run_capture(cmd, &out, &err1) == 0, "%s", err1);
    free(out);
    mpirun_prefix(pre, sizeof pre, 2);
    snprintf(cmd, sizeof cmd, "%s train %s", pre, o);
    ck_assert_msg(run_capture(cmd, &out, &err) == 0, "%s", err);
    free(out);
    /* 3 x 10 embedding rows: 30 in one process, 15 in each of two */
    ck_assert_msg(strstr(err1, "(30 rows x 64 tokens)") != NULL, "%s", err1);
    ck_assert_msg(strstr(err, "(15 rows x 64 tokens)") != NULL, "%s", err);
    ck_assert_msg(strstr(err1, "processes on this machine") == NULL, "%s", err1);
    /* "... + adapters' A MiB = PER MiB per process x 2 processes on this machine = BOTH MiB of ..." */
    double per = number_after(err, "MiB = "), both = number_after(err, "processes on this machine = ");
    ck_assert_msg(number_after(err, "per process x ") == 2, "%s", err);
    ck_assert_msg(per > 0 && fabs(both - 2 * per) <= 1, "%s", err);
    free(err);
    free(err1);
    rm_tree(d);
}
END_TEST

Suite *mpi_suite(void) {
    Suite *s = suite_create("mpi");
    TCase *tc = tcase_create("data_parallel");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_ranks_match_one_process);
    tcase_add_test(tc, test_resume_on_other_ranks);
    tcase_add_test(tc, test_killed_rank_stops_job);
    tcase_add_test(tc, test_stalled_rank_times_out);
    tcase_add_test(tc, test_dry_run_counts_processes_on_machine);
    suite_add_tcase(s, tc);
    return s;
}
