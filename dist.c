/*
 * dist.c - data-parallel training over MPI: which rank does what, and the few
 * collectives RecFound's training needs.
 *
 * Built with `make MPI=1` (mpicc, -DRF_MPI), `mpirun -np P ./recfound train ...`
 * runs P copies of the same training.  Every rank draws the same records in
 * the same order (same seeds), makes the same samples, and then works on its
 * share of them:
 *   - embedding branch: a contiguous block of the 3Q query/positive/negative
 *     rows; the pooled embeddings are gathered so that every rank computes
 *     the InfoNCE of the whole batch, every query against every rank's
 *     passages (the authors' `negatives_cross_device`), and backpropagates
 *     the rows it owns;
 *   - generative branch: every P-th sample of the length-sorted batch;
 *   - the adapter gradients are summed over ranks before one identical AdamW
 *     step on every rank; S2Sched's validation losses likewise.
 * Sums are reduced on rank 0 and broadcast, so every rank holds the same bits
 * and the ranks never drift apart.  Only rank 0 writes files.
 *
 * Without MPI every function here is the one-rank identity, so the default
 * build has no dependency and runs exactly the same code path.
 *
 * A rank that dies must not leave the others waiting: mpirun stops the job
 * when a process exits without MPI_Finalize; an error on one rank calls
 * dist_abort(); and every collective runs under an alarm of
 * RECFOUND_MPI_TIMEOUT seconds (default 600), after which the rank says so
 * and exits.
 */
#include "recfound.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef RF_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local = 1;

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
int dist_local_size(void) { return g_local; }
int dist_lead(void) { return g_rank == 0; }

/* The block [*begin, *end) of n items that this rank owns: contiguous, sizes
 * differing by at most one, rank order. */
void dist_share(long n, long *begin, long *end) {
    *begin = n * g_rank / g_size;
    *end = n * (g_rank + 1) / g_size;
}

#ifdef RF_MPI

static unsigned g_timeout = 600;                 /* seconds a collective may wait */
static const char *volatile g_waiting_in = "";   /* the collective waited in, for the message */

/* SIGALRM during a collective: the other ranks did not answer in time. */
static void on_timeout(int sig) {
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg, "recfound: rank %d: no answer from the other ranks for %u s in %s; stopping "
                     "(a rank died or hangs; RECFOUND_MPI_TIMEOUT sets the limit)\n", g_rank, g_timeout, g_waiting_in);
    if (n > 0) { ssize_t w = write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1); (void)w; }
    _exit(3);
}

static void arm(const char *what) {
    g_waiting_in = what;
    alarm(g_timeout);
}

/* After a collective: disarm, and turn an MPI error code into rf_error. */
static int done(int rc, const char *what) {
    alarm(0);
    if (rc == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return rf_error("rank %d: MPI error in %s: %s", g_rank, what, text);
}

int dist_init(int *argc, char ***argv) {
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return rf_error("MPI_Init failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local;  /* the ranks sharing this machine's memory */
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &g_local);
        MPI_Comm_free(&local);
    }
    const char *t = getenv("RECFOUND_MPI_TIMEOUT");
    if (t && atoi(t) > 0) g_timeout = (unsigned)atoi(t);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timeout;
    sigaction(SIGALRM, &sa, NULL);
    return 0;
}

void dist_finalize(void) { MPI_Finalize(); }

void dist_abort(int code) {
    if (g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

/* Sum over ranks, reduced on rank 0 and broadcast: the same bits everywhere. */
static int sum(void *x, size_t n, MPI_Datatype type, size_t elem, const char *what) {
    if (g_size == 1 || n == 0) return 0;
    void *tmp = malloc(n * elem);
    if (!tmp) return rf_error("out of memory summing %s over ranks", what);
    arm(what);
    int rc = MPI_Reduce(x, tmp, (int)n, type, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS && g_rank == 0) memcpy(x, tmp, n * elem);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(x, (int)n, type, 0, MPI_COMM_WORLD);
    free(tmp);
    return done(rc, what);
}

int dist_sum_floats(float *x, size_t n, const char *what) { return sum(x, n, MPI_FLOAT, sizeof *x, what); }
int dist_sum_doubles(double *x, size_t n, const char *what) { return sum(x, n, MPI_DOUBLE, sizeof *x, what); }

int dist_max_int(int *x, const char *what) {
    if (g_size == 1) return 0;
    int out;
    arm(what);
    int rc = MPI_Allreduce(x, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS) *x = out;
    return done(rc, what);
}

/* rows[0..n) of `width` floats, of which this rank filled its dist_share(n)
 * block in place: afterwards every rank has all of them. */
int dist_gather_rows(float *rows, long n, long width, const char *what) {
    if (g_size == 1) return 0;
    int *count = malloc(2 * sizeof(int) * g_size);
    if (!count) return rf_error("out of memory gathering %s", what);
    int *offset = count + g_size;
    for (int p = 0; p < g_size; p++) {
        long b = n * p / g_size, e = n * (p + 1) / g_size;
        offset[p] = (int)(b * width);
        count[p] = (int)((e - b) * width);
    }
    arm(what);
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, rows, count, offset, MPI_FLOAT, MPI_COMM_WORLD);
    free(count);
    return done(rc, what);
}

#else  /* one process: every collective is the identity */

int dist_init(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }
void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
int dist_sum_floats(float *x, size_t n, const char *what) { (void)x; (void)n; (void)what; return 0; }
int dist_sum_doubles(double *x, size_t n, const char *what) { (void)x; (void)n; (void)what; return 0; }
int dist_max_int(int *x, const char *what) { (void)x; (void)what; return 0; }
int dist_gather_rows(float *rows, long n, long width, const char *what) {
    (void)rows; (void)n; (void)width; (void)what;
    return 0;
}

#endif
