#!/usr/bin/python3
"""bench_numpy.py - numpy float32 GFLOP/s on the shapes of `recfound bench-matmul`.

The baseline for matmul.c: the products of one training step of the "small"
preset (hidden 256, intermediate 688, vocab 4096, q width 256, kv width 128)
on M = batch*len = 8*256 = 2048 rows, in the three orientations of a linear
layer with W stored [out, in]:
    nt  y[M,N]  = x[M,K] . W[N,K]^T        (forward)
    nn  dx[M,K] = dy[M,N] . W[N,K]         (backward, input gradient)
    tn  dW[N,K] = dy[M,N]^T . x[M,K]       (backward, weight gradient)
Each line is "numpy KIND M= K= N= gflops=" with 2MNK / best time of `reps`
runs after a warm-up (only np.matmul is timed, into a preallocated out=),
then per-kind and overall totals (total flops / total best time), in the
same format as `recfound bench-matmul` (prefix "matmul").

Run it with two BLAS threads and with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
unset for this command only, so OpenBLAS picks its own kernel:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 \
        OPENBLAS_NUM_THREADS=2 /usr/bin/python3 tests/reference/bench_numpy.py [reps]
Debian's numpy links libblas.so.3, which is the slow netlib reference BLAS
unless an optimised one is installed (apt-get install libopenblas0-pthread)
or put first with LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread.
The BLAS in use is printed first (threadpoolctl when importable, else the
blas lines of numpy.show_config()).
"""
import contextlib
import io
import sys
import time

import numpy as np

# (M, K, N) of the forward products; nn and tn are derived from them.
FORWARD = [(2048, 256, 256), (2048, 256, 128), (2048, 256, 688), (2048, 688, 256), (2048, 256, 4096)]


def describe_blas():
    try:
        import threadpoolctl
        for lib in threadpoolctl.threadpool_info():
            if lib.get("user_api") == "blas":
                print("numpy blas=%s version=%s core=%s threads=%s file=%s" % (
                    lib.get("internal_api"), lib.get("version"), lib.get("architecture"),
                    lib.get("num_threads"), lib.get("filepath")))
                return
        print("numpy blas=unknown (threadpoolctl found no BLAS)")
    except ImportError:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            np.show_config()
        lines = buf.getvalue().splitlines()
        for i, line in enumerate(lines):
            if "blas" in line.lower() and "NOT AVAILABLE" not in "".join(lines[i:i + 2]):
                print("numpy config: " + line.strip())


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print("numpy version=%s reps=%d" % (np.__version__, reps))
    describe_blas()
    rng = np.random.default_rng(12345)
    all_f = all_t = 0.0
    for kind in ("nt", "nn", "tn"):
        tot_f = tot_t = 0.0
        for (M, K, N) in FORWARD:
            x = rng.random((M, K), dtype=np.float32) - 0.5
            w = rng.random((N, K), dtype=np.float32) - 0.5
            dy = rng.random((M, N), dtype=np.float32) - 0.5
            if kind == "nt":    # y = x W^T: out[M,N], inner K
                lhs, rhs, shape = x, w.T, (M, K, N)
            elif kind == "nn":  # dx = dy W: out[M,K], inner N
                lhs, rhs, shape = dy, w, (M, N, K)
            else:               # dW = dy^T x: out[N,K], inner M
                lhs, rhs, shape = dy.T, x, (N, M, K)
            out = np.empty((lhs.shape[0], rhs.shape[1]), dtype=np.float32)
            np.matmul(lhs, rhs, out=out)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                np.matmul(lhs, rhs, out=out)
                best = min(best, time.perf_counter() - t0)
            m, k, n = shape
            f = 2.0 * m * n * k
            print("numpy %s M=%d K=%d N=%d gflops=%.1f" % (kind, m, k, n, f / best * 1e-9))
            tot_f += f
            tot_t += best
        print("numpy %s total gflops=%.1f" % (kind, tot_f / tot_t * 1e-9))
        all_f += tot_f
        all_t += tot_t
    print("numpy all total gflops=%.1f" % (all_f / all_t * 1e-9))


if __name__ == "__main__":
    main()
