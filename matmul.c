/*
 * matmul.c - the three matrix products of a linear layer y = x W^T, with W in
 * PyTorch [out, in] orientation:
 *
 *   matmul_nt: out[M,N] (+)= a[M,K] . b[N,K]^T    forward   y  = x W^T
 *   matmul_nn: out[M,N] (+)= a[M,K] . b[K,N]      backward  dx = dy W
 *   matmul_tn: out[M,N] (+)= a[K,M]^T . b[K,N]    backward  dW = dy^T x
 *
 * and matmul_strided, the same product on operands and an output read and
 * written through any (row, column) strides: sub-matrices and transposes.
 * matmul_nt_bf16 and matmul_nn_bf16 take the weight in bfloat16 (a model
 * loaded with bf16 weights): it is widened to float as it is packed, so they
 * compute exactly what matmul_nt and matmul_nn compute on the widened matrix.
 *
 * Each product has a plain twin (*_ref): a triple loop accumulating in double,
 * obviously correct and slow.  The fast versions share one blocked GEMM
 * (the BLIS/GotoBLAS scheme): C[M,N] += A[M,K] B[K,N] where A and B are read
 * through (row stride, column stride) pairs, so a transpose is only a choice of
 * strides in the packing step.  Loops, outer to inner:
 *
 *   jc over N in NC columns    pc over K in KC    pack B[pc, jc] into NR-wide strips
 *   ic over M in MC rows       pack A[ic, pc] into MR-tall strips (a small A: read in place, DIRECT_A)
 *   jr over NR strips, ir over MR strips: MR x NR register micro-kernel
 *                                         (and a few prefetches of the next blocks' lines)
 *
 * Packing pads the edge strips with zeros, so the micro-kernel always runs on a
 * full MR x NR tile; edge tiles go through a small buffer and only the valid
 * part is written.  Accumulation is float32 (FMA in the vector kernels).
 *
 * Determinism: each output element is computed by one thread as
 *   out (+)= sum over K blocks of KC (in order) of a k-ordered float sum,
 * and KC depends on K only, so the result is bit-identical for any thread
 * count and any split of the output among threads.
 *
 * Threads: the output is cut into a tm x tn grid of rectangles (tm * tn =
 * threads); each thread runs the serial blocked GEMM on its own rectangle with
 * its own packing buffers (no shared writes, no barriers).  Products below
 * ~2 MFLOP run on the calling thread only.  out must not overlap a or b.
 *
 * Speed note: on some virtual machines Linux starts the second OpenMP thread
 * on the same CPU as the first and leaves it there for a while, which makes
 * every parallel product several times slower; OMP_PROC_BIND=true in the
 * environment (read when the program starts) avoids it.
 */
#include "recfound.h"

#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------ plain twins */

/* out[i,j] (+)= sum_k A(i,k) B(k,j), summed in double and rounded once. */
void matmul_nt_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? out[(size_t)i * N + j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)a[(size_t)i * K + k] * b[(size_t)j * K + k];
            out[(size_t)i * N + j] = (float)s;
        }
}

void matmul_nn_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? out[(size_t)i * N + j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)a[(size_t)i * K + k] * b[(size_t)k * N + j];
            out[(size_t)i * N + j] = (float)s;
        }
}

void matmul_tn_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? out[(size_t)i * N + j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)a[(size_t)k * M + i] * b[(size_t)k * N + j];
            out[(size_t)i * N + j] = (float)s;
        }
}

/* ------------------------------------------------------- micro-kernels */

/* kernel(kc, Ap, Bp, c, ldc, add): the MR x NR tile
 *   t[r][j] = sum_{k<kc} Ap[k*MR + r] * Bp[k*NR + j]   (k in order)
 * is stored to c (add = 0) or added to it (add = 1). */
#if defined(__AVX512F__)

/* 12 x 32 tile: 24 zmm accumulators + 2 for the B row, of 32 registers; the
 * A value is broadcast straight from memory into each FMA. */
#define MR 12
#define NR 32
/* The top `rows` x (16 * halves) corner of the tile (rows <= MR, halves 1 or
 * 2; constants once inlined), each element the same k-ordered sum as in the
 * full tile.  Edge tiles use the smaller corners instead of computing padding:
 * a product with N = 16 (a rank-16 adapter) runs at full width.  A(r, k) is
 * A[r * ar + k * ak]: ar = 1, ak = MR in a packed strip, the matrix's own
 * strides when A is read where it lies (see gemm_block). */
static inline __attribute__((always_inline)) void kernel_part(int kc, const float *restrict A, size_t ar,
                                                              size_t ak, const float *restrict B,
                                                              float *restrict c, size_t ldc, int add,
                                                              const int rows, const int halves) {
    __m512 c0[MR], c1[MR];
    /* Ask for the tile's lines of c now, for writing: the k loop below hides
     * the wait.  A product's output is often a fresh activation array that no
     * cache holds, and the stores at the end would stall on each line
     * (2% of a training step, 3% of the forward). */
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) {
        __builtin_prefetch(c + r * ldc, 1, 3);
        if (halves > 1) __builtin_prefetch(c + r * ldc + 16, 1, 3);
    }
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(B), b1 = halves > 1 ? _mm512_load_ps(B + 16) : b0;
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) {
            __m512 a = _mm512_set1_ps(A[r * ar]);
            c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
            if (halves > 1) c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
        }
        A += ak;
        B += NR;
    }
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        if (add) {
            c0[r] = _mm512_add_ps(_mm512_loadu_ps(cr), c0[r]);
            if (halves > 1) c1[r] = _mm512_add_ps(_mm512_loadu_ps(cr + 16), c1[r]);
        }
        _mm512_storeu_ps(cr, c0[r]);
        if (halves > 1) _mm512_storeu_ps(cr + 16, c1[r]);
    }
}

static void kernel(int kc, const float *restrict A, const float *restrict B, float *restrict c, size_t ldc,
                   int add) {
    kernel_part(kc, A, 1, MR, B, c, ldc, add, MR, 2);
}

/* The full tile with A(r, k) at A[r * ar + k * ak], not packed. */
#define HAVE_KERNEL_DIRECT 1
static void kernel_direct(int kc, const float *A, size_t ar, size_t ak, const float *B, float *c, size_t ldc,
                          int add) {
    kernel_part(kc, A, ar, ak, B, c, ldc, add, MR, 2);
}

/* An edge tile of mr x nr: the smallest corner (4, 8 or 12 rows; 16 or 32
 * columns) that covers it, straight into c when it fits exactly.  A as in
 * kernel_part: a packed strip, or a full strip of a small A read in place. */
#define HAVE_KERNEL_EDGE 1
static void kernel_edge(int kc, const float *A, size_t ar, size_t ak, const float *B, float *c, size_t ldc, int add,
                        int mr, int nr) {
    float tile[MR * NR];
    int rows = mr <= 4 ? 4 : mr <= 8 ? 8 : MR, halves = nr <= 16 ? 1 : 2;
    int direct = mr == rows && nr == 16 * halves;
    float *t = direct ? c : tile;
    size_t ld = direct ? ldc : NR;
    int a = direct && add;
    switch (rows * 2 + halves) {
    case 4 * 2 + 1: kernel_part(kc, A, ar, ak, B, t, ld, a, 4, 1); break;
    case 4 * 2 + 2: kernel_part(kc, A, ar, ak, B, t, ld, a, 4, 2); break;
    case 8 * 2 + 1: kernel_part(kc, A, ar, ak, B, t, ld, a, 8, 1); break;
    case 8 * 2 + 2: kernel_part(kc, A, ar, ak, B, t, ld, a, 8, 2); break;
    case MR * 2 + 1: kernel_part(kc, A, ar, ak, B, t, ld, a, MR, 1); break;
    default: kernel_part(kc, A, ar, ak, B, t, ld, a, MR, 2); break;
    }
    if (direct) return;
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) c[r * ldc + j] = add ? c[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
}

/* In-register transpose of 16 rows of 16 floats (unpack ps, unpack pd, two
 * 128-bit lane shuffles), used to pack k-contiguous operands. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

#elif defined(__AVX2__)

/* 6 x 16 tile: 12 ymm accumulators + 2 for B + 1 broadcast, of 16. */
#define MR 6
#define NR 16
static void kernel(int kc, const float *restrict A, const float *restrict B, float *restrict c, size_t ldc,
                   int add) {
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) c0[r] = c1[r] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m256 ar = _mm256_broadcast_ss(A + r);
#if defined(__FMA__)
            c0[r] = _mm256_fmadd_ps(ar, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(ar, b1, c1[r]);
#else
            c0[r] = _mm256_add_ps(_mm256_mul_ps(ar, b0), c0[r]);
            c1[r] = _mm256_add_ps(_mm256_mul_ps(ar, b1), c1[r]);
#endif
        }
        A += MR;
        B += NR;
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        float *cr = c + r * ldc;
        if (add) {
            c0[r] = _mm256_add_ps(_mm256_loadu_ps(cr), c0[r]);
            c1[r] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), c1[r]);
        }
        _mm256_storeu_ps(cr, c0[r]);
        _mm256_storeu_ps(cr + 8, c1[r]);
    }
}

#else

/* Portable C99: the 4 x 8 tile lives in a local array the compiler keeps in
 * eight 4-float SSE registers, leaving room for B and the broadcast; still
 * packed and blocked like the vector paths. */
#define MR 4
#define NR 8
static void kernel(int kc, const float *restrict A, const float *restrict B, float *restrict c, size_t ldc,
                   int add) {
    float t[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) t[r][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++) {
            float ar = A[r];
            for (int j = 0; j < NR; j++) t[r][j] += ar * B[j];
        }
        A += MR;
        B += NR;
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r * ldc + j] = add ? c[r * ldc + j] + t[r][j] : t[r][j];
}

#endif

/* Cache blocks: an A block (MC x KC, 96 KB with AVX-512) stays in L2, a B
 * micro-panel (KC x NR) in L1/L2, the B panel (KC x NC, 1 MB) in L2/L3.
 * Measured on the bench shapes, MC from 4 to 16 strips, KC from 192 to 512 and
 * NC from 1024 to 4096 are within a few percent; NC = 1024 keeps the packing
 * buffers at about 1 MB per thread.  KC must depend on K only (see top);
 * -DKC= / -DMC= / -DNC= override them. */
#ifndef KC
#define KC 256
#endif
#ifndef MC
#define MC (MR * 8)
#endif
#ifndef NC
#define NC 1024
#endif

/* ------------------------------------------------------------- packing */

/* Strided view of a matrix: element (r, c) is p[r * rs + c * cs]. */
typedef struct {
    const float *p;
    size_t rs, cs;
    const uint16_t *h;  /* instead of p: a bf16 matrix (a B operand only) */
} View;

static float view_at(View v, size_t r, size_t c) {
    return v.h ? bf16_to_float(v.h[r * v.rs + c * v.cs]) : v.p[r * v.rs + c * v.cs];
}

/* Packs n lanes (rows of A or columns of B) over kc values of k into strips
 * of W lanes, each strip k-major:
 *   d[s*kc*W + k*W + l] = src[(s*W + l)*ls + k*ks],  0 for lanes past n. */
static inline void pack_panel(float *restrict d, const float *restrict src, int W, int n, size_t ls, size_t ks,
                              int kc) {
    if (ls == 1) {
        /* Lanes contiguous: walk each source row once, front to back, and
         * deal it out to the strips (W is a constant once inlined, so each
         * copy is a few vector moves). */
        for (int k = 0; k < kc; k++) {
            const float *row = src + (size_t)k * ks;
            for (int s = 0; s < n; s += W) {
                float *o = d + (size_t)s * kc + (size_t)k * W;
                if (n - s >= W) {
                    memcpy(o, row + s, (size_t)W * sizeof(float));
                } else {
                    for (int l = 0; l < W; l++) o[l] = l < n - s ? row[s + l] : 0.0f;
                }
            }
        }
        return;
    }
    for (int s = 0; s < n; s += W) {
        int lanes = n - s < W ? n - s : W;
        const float *sp = src + (size_t)s * ls;
        float *ds = d + (size_t)s * kc;
#if defined(__AVX512F__)
        if (ks == 1) { /* 16 lanes x 16 k per register transpose */
            for (int k0 = 0; k0 < kc; k0 += 16) {
                int kn = kc - k0 < 16 ? kc - k0 : 16;
                __mmask16 km = (__mmask16)(kn == 16 ? 0xFFFF : (1u << kn) - 1);
                for (int l0 = 0; l0 < W; l0 += 16) {
                    __m512 r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = l0 + i < lanes && l0 + i < W
                                   ? _mm512_maskz_loadu_ps(km, sp + (size_t)(l0 + i) * ls + k0)
                                   : _mm512_setzero_ps();
                    transpose16(r);
                    __mmask16 wm = (__mmask16)(W - l0 >= 16 ? 0xFFFF : (1u << (W - l0)) - 1);
                    for (int k = 0; k < kn; k++) _mm512_mask_storeu_ps(ds + (size_t)(k0 + k) * W + l0, wm, r[k]);
                }
            }
            continue;
        }
#endif
        /* k contiguous (or neither): transpose 16 k at a time, so the written
         * 16 x W block stays in L1 while each lane is read front to back. */
        for (int k0 = 0; k0 < kc; k0 += 16) {
            int kn = kc - k0 < 16 ? kc - k0 : 16;
            for (int l = 0; l < W; l++) {
                const float *a = sp + (size_t)l * ls + (size_t)k0 * ks;
                float *o = ds + (size_t)k0 * W + l;
                if (l < lanes)
                    for (int k = 0; k < kn; k++) o[(size_t)k * W] = a[(size_t)k * ks];
                else
                    for (int k = 0; k < kn; k++) o[(size_t)k * W] = 0.0f;
            }
        }
    }
}

/* Rows [i0, i0+mc) x cols [p0, p0+kc) of A into MR-tall strips, k-major:
 * Ap[s][k][r] = A(i0 + s*MR + r, p0 + k), zero past row mc. */
static void pack_a(float *restrict Ap, View A, int i0, int mc, int p0, int kc) {
    pack_panel(Ap, A.p + (size_t)i0 * A.rs + (size_t)p0 * A.cs, MR, mc, A.rs, A.cs, kc);
}

/* pack_panel from a bf16 source: the same layout, each value widened to
 * float (exactly) on the way, so the kernel sees what it would see had the
 * matrix been widened beforehand. */
static void pack_panel_bf16(float *restrict d, const uint16_t *restrict src, int W, int n, size_t ls, size_t ks,
                            int kc) {
    for (int s = 0; s < n; s += W) {
        int lanes = n - s < W ? n - s : W;
        float *ds = d + (size_t)s * kc;
        if (ls == 1) { /* lanes contiguous: along each source row */
            for (int k = 0; k < kc; k++)
                for (int l = 0; l < W; l++)
                    ds[(size_t)k * W + l] = l < lanes ? bf16_to_float(src[(size_t)k * ks + s + l]) : 0.0f;
            continue;
        }
        for (int l = 0; l < W; l++) { /* k contiguous (or neither): along each lane */
            const uint16_t *a = src + (size_t)(s + l) * ls;
            for (int k = 0; k < kc; k++) ds[(size_t)k * W + l] = l < lanes ? bf16_to_float(a[(size_t)k * ks]) : 0.0f;
        }
    }
}

/* Rows [p0, p0+kc) x cols [j0, j0+nc) of B into NR-wide strips, k-major:
 * Bp[s][k][j] = B(p0 + k, j0 + s*NR + j), zero past column nc. */
static void pack_b(float *restrict Bp, View B, int p0, int kc, int j0, int nc) {
    size_t at = (size_t)p0 * B.rs + (size_t)j0 * B.cs;
    if (B.h) pack_panel_bf16(Bp, B.h + at, NR, nc, B.cs, B.rs, kc);
    else pack_panel(Bp, B.p + at, NR, nc, B.cs, B.rs, kc);
}

/* ------------------------------------------------------ fetching ahead */

/* An operand block's source is usually an activation written megabytes ago
 * and no longer in any cache, so packing it cold waits on every line while the
 * FMA units idle; the micro-kernels, in turn, leave the memory bus idle.  So
 * while the kernels of one block run, the lines of the block packed next are
 * requested, a few before each micro-kernel call, and its packing finds them
 * in cache.  A prefetch changes no result.
 *
 * Ahead: the `total` cache lines of rows [r0, r0+nr) x columns [c0, c0+nc) of
 * a matrix, walked as contiguous runs of `per_run` lines, `stride` bytes apart
 * (the rows when columns are contiguous, else the columns when rows are;
 * neither, or a bf16 matrix: nothing is fetched). */
typedef struct {
    const char *p;
    size_t stride;
    int per_run, total, done, run, line;
} Ahead;

static Ahead ahead_of(View v, int r0, int nr, int c0, int nc) {
    Ahead h = {0};
    size_t len;
    int runs;
    if (v.h || nr <= 0 || nc <= 0) return h;
    if (v.cs == 1) runs = nr, len = (size_t)nc, h.stride = v.rs * sizeof(float);
    else if (v.rs == 1) runs = nc, len = (size_t)nr, h.stride = v.cs * sizeof(float);
    else return h;
    uintptr_t at = (uintptr_t)(v.p + (size_t)r0 * v.rs + (size_t)c0 * v.cs);
    h.p = (const char *)(at & ~(uintptr_t)63);
    h.per_run = (int)((at - (uintptr_t)h.p + len * sizeof(float) + 63) / 64);
    h.total = runs * h.per_run;
    return h;
}

/* Requests the next n lines of h (none once all are asked for). */
static inline void ahead_step(Ahead *h, int n) {
    for (; n > 0 && h->done < h->total; n--, h->done++) {
        __builtin_prefetch(h->p + (size_t)h->run * h->stride + (size_t)h->line * 64, 0, 2);
        if (++h->line == h->per_run) h->line = 0, h->run++;
    }
}

/* ------------------------------------------------------ blocked GEMM */

static const Tri NO_TRI = {TRI_NONE, 0};

static int clamp_int(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

/* A small A operand (this thread's rows of it at most DIRECT_A bytes, as
 * attention's blocks of P and dS, which the thread has just written and its L2
 * still holds) is read where it lies, through its strides: packing such a block
 * cost more than it saved (1% of a training step).  Its last strip, when it
 * has fewer than MR rows, is still packed: the kernel reads whole strips.  A
 * large A comes from memory, where packing it once pays (read in place, it made
 * the kernel wait as long as the packing had). */
#define DIRECT_A (256 << 10)

/* C[m0:m1, n0:n1] (+)= A[m0:m1, :] B[:, n0:n1] on one thread.  Ap holds
 * MC x KC floats, Bp KC x NC (both rounded up to whole strips).  `tri`: the
 * causal structure the caller promises (see matmul_strided_tri), which lets a
 * tile skip the part of its sum that adds only zeros, or skip the tile. */
static void gemm_block(float *C, size_t ldc, View A, View B, int K, int m0, int m1, int n0, int n1, int acc,
                       float *Ap, float *Bp, Tri tri) {
    int direct = 0;
#ifdef HAVE_KERNEL_DIRECT
    direct = (size_t)(m1 - m0) * K * sizeof(float) <= DIRECT_A;  /* A is float: bf16 is a B only */
#endif
    int first_mc = m1 - m0 < MC ? m1 - m0 : MC;  /* the first A block's rows, fetched ahead at a block's end */
    for (int jc = n0; jc < n1; jc += NC) {
        int nc = n1 - jc < NC ? n1 - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int add = acc || pc > 0;
            pack_b(Bp, B, pc, kc, jc, nc);
            /* the B panel packed next, over all the kernel calls of this one */
            int next_kc = K - pc - KC < KC ? K - pc - KC : KC, first_kc = K < KC ? K : KC;
            Ahead bh = pc + KC < K  ? ahead_of(B, pc + KC, next_kc, jc, nc)
                     : jc + NC < n1 ? ahead_of(B, 0, first_kc, jc + NC, n1 - jc - NC < NC ? n1 - jc - NC : NC)
                                    : (Ahead){0};
            int b_calls = ((m1 - m0 + MR - 1) / MR) * ((nc + NR - 1) / NR), b_per = bh.total / b_calls + 1;
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = m1 - ic < MC ? m1 - ic : MC;
                int full = direct ? mc / MR * MR : 0;  /* rows [ic, ic + full) are read in place */
                if (full < mc) pack_a(Ap + (size_t)full * kc, A, ic + full, mc - full, pc, kc);
                /* the A block packed next, over the kernel calls of this one */
                Ahead ah = ic + MC < m1 ? ahead_of(A, ic + MC, m1 - ic - MC < MC ? m1 - ic - MC : MC, pc, kc)
                         : pc + KC < K  ? ahead_of(A, m0, first_mc, pc + KC, next_kc)
                         : jc + NC < n1 ? ahead_of(A, m0, first_mc, 0, first_kc)
                                        : (Ahead){0};
                int a_calls = ((nc + NR - 1) / NR) * ((mc + MR - 1) / MR), a_per = ah.total / a_calls + 1;
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    const float *bp = Bp + (size_t)jr * kc;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        const float *ap = Ap + (size_t)ir * kc;
                        size_t ar = 1, ak = MR;  /* A(ic + ir + r, pc + k) is ap[r * ar + k * ak] */
                        if (ir < full) ap = A.p + (size_t)(ic + ir) * A.rs + (size_t)pc * A.cs, ar = A.rs, ak = A.cs;
                        float *c = C + (size_t)(ic + ir) * ldc + jc + jr;
                        ahead_step(&ah, a_per);
                        ahead_step(&bh, b_per);
                        /* This tile's terms k in [pc + kb, pc + ke): the rest add exact zeros. */
                        int kb = 0, ke = kc;
                        if (tri.kind == TRI_OUT_LOWER && jc + jr > ic + ir + mr - 1 + tri.diag) continue;
                        if (tri.kind == TRI_A_LOWER) ke = clamp_int(ic + ir + mr + tri.diag - pc, 0, kc);
                        if (tri.kind == TRI_A_UPPER) kb = clamp_int(ic + ir - tri.diag - pc, 0, kc);
                        if (kb >= ke && add) continue;  /* nothing to add; without add, the tile is zero */
                        int kn = kb < ke ? ke - kb : 0;
                        const float *at = ap + (size_t)kb * ak, *bt = bp + (size_t)kb * NR;
                        if (mr == MR && nr == NR) {
#ifdef HAVE_KERNEL_DIRECT
                            if (ir < full) {
                                kernel_direct(kn, at, ar, ak, bt, c, ldc, add);
                                continue;
                            }
#endif
                            kernel(kn, at, bt, c, ldc, add);
                        } else {
#ifdef HAVE_KERNEL_EDGE
                            kernel_edge(kn, at, ar, ak, bt, c, ldc, add, mr, nr);
#else
                            (void)ar;  /* no direct reading without the AVX-512 kernel */
                            float tile[MR * NR];
                            kernel(kn, at, bt, tile, NR, 0);
                            for (int r = 0; r < mr; r++)
                                for (int j = 0; j < nr; j++)
                                    c[r * ldc + j] = add ? c[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
#endif
                        }
                    }
                }
            }
        }
    }
}

/* Split rows into tm parts and columns into tn parts (tm * tn = nt), in whole
 * micro-tiles, choosing the split with the least packing traffic (M/tm + N/tn). */
static void thread_grid(int nt, int M, int N, int *tm, int *tn) {
    int best = 1;
    double cost = -1;
    for (int d = 1; d <= nt; d++) {
        if (nt % d) continue;
        int e = nt / d;
        if ((d > 1 && M < d * MR) || (e > 1 && N < e * NR)) continue;
        double c = (double)M / d + (double)N / e;
        if (cost < 0 || c < cost) { cost = c; best = d; }
    }
    if (cost < 0) best = M >= N ? nt : 1;
    *tm = best;
    *tn = nt / best;
}

/* Part p of q of [0, n), cut at multiples of `unit`. */
static int split(int n, int unit, int p, int q) {
    int units = (n + unit - 1) / unit;
    int at = (int)((long long)units * p / q) * unit;
    return at < n ? at : n;
}

/* Round a float count up to whole 64-byte lines. */
static size_t line_up(size_t n) { return (n + 15) / 16 * 16; }

static void gemm(float *C, size_t ldc, View A, View B, int M, int K, int N, int acc, Tri tri) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!acc)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    int kc = K < KC ? K : KC;
    int nthreads = 1;
#ifdef _OPENMP
    /* Small products, and products called from inside a parallel region (the
     * attention's, one per thread), run on the calling thread alone. */
    nthreads = 2.0 * M * N * K < 2e6 || omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    /* Packing buffers for every thread, allocated here by the calling thread:
     * malloc/free inside the workers goes to per-thread arenas that glibc
     * trims on every free, which costs more than a mid-size product. */
    int mcap = M < MC ? M : MC, ncap = N < NC ? N : NC;
    size_t na = line_up((size_t)((mcap + MR - 1) / MR) * MR * kc);
    size_t nb = line_up((size_t)((ncap + NR - 1) / NR) * NR * kc);
    void *mem = NULL;
    if (posix_memalign(&mem, 64, (size_t)nthreads * (na + nb) * sizeof(float))) {
        /* Out of memory for the packing buffers: the plain loop, in float. */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = 0;
                for (int k = 0; k < K; k++) s += A.p[i * A.rs + k * A.cs] * view_at(B, k, j);
                C[(size_t)i * ldc + j] = acc ? C[(size_t)i * ldc + j] + s : s;
            }
        return;
    }
    if (nthreads == 1) {
        gemm_block(C, ldc, A, B, K, 0, M, 0, N, acc, (float *)mem, (float *)mem + na, tri);
        free(mem);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    {
        int nt = 1, tid = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads(); /* <= nthreads */
        tid = omp_get_thread_num();
#endif
        int tm, tn;
        thread_grid(nt, M, N, &tm, &tn);
        int bi = tid / tn, bj = tid % tn;
        int m0 = split(M, MR, bi, tm), m1 = split(M, MR, bi + 1, tm);
        int n0 = split(N, NR, bj, tn), n1 = split(N, NR, bj + 1, tn);
        float *Ap = (float *)mem + (size_t)tid * (na + nb), *Bp = Ap + na;
        if (m0 < m1 && n0 < n1) gemm_block(C, ldc, A, B, K, m0, m1, n0, n1, acc, Ap, Bp, tri);
    }
    free(mem);
}

/* ------------------------------------------------------ fast products */

void matmul_nt(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    View A = {a, (size_t)K, 1, NULL}, B = {b, 1, (size_t)K, NULL};
    gemm(out, (size_t)N, A, B, M, K, N, acc, NO_TRI);
}

void matmul_nn(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    View A = {a, (size_t)K, 1, NULL}, B = {b, (size_t)N, 1, NULL};
    gemm(out, (size_t)N, A, B, M, K, N, acc, NO_TRI);
}

void matmul_tn(float *out, const float *a, const float *b, int M, int K, int N, int acc) {
    View A = {a, 1, (size_t)M, NULL}, B = {b, (size_t)N, 1, NULL};
    gemm(out, (size_t)N, A, B, M, K, N, acc, NO_TRI);
}

void matmul_nt_bf16(float *out, const float *a, const uint16_t *b, int M, int K, int N, int acc) {
    View A = {a, (size_t)K, 1, NULL}, B = {NULL, 1, (size_t)K, b};
    gemm(out, (size_t)N, A, B, M, K, N, acc, NO_TRI);
}

void matmul_nn_bf16(float *out, const float *a, const uint16_t *b, int M, int K, int N, int acc) {
    View A = {a, (size_t)K, 1, NULL}, B = {NULL, (size_t)N, 1, b};
    gemm(out, (size_t)N, A, B, M, K, N, acc, NO_TRI);
}

/* The general form: out[i*ldo + j] (+)= sum_k a[i*a_rs + k*a_cs] b[k*b_rs + j*b_cs],
 * any strides (a transpose is a swap of a matrix's two strides).  Attention
 * uses it to read one head's columns straight out of [B*T, heads*hd] rows and
 * to write into a block of a larger matrix. */
void matmul_strided_tri(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b,
                        size_t b_rs, size_t b_cs, int M, int K, int N, int acc, Tri tri) {
    View A = {a, a_rs, a_cs, NULL}, B = {b, b_rs, b_cs, NULL};
    gemm(out, ldo, A, B, M, K, N, acc, tri);
}

void matmul_strided(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b, size_t b_rs,
                    size_t b_cs, int M, int K, int N, int acc) {
    matmul_strided_tri(out, ldo, a, a_rs, a_cs, b, b_rs, b_cs, M, K, N, acc, NO_TRI);
}

void matmul_strided_ref(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b,
                        size_t b_rs, size_t b_cs, int M, int K, int N, int acc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? out[(size_t)i * ldo + j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)a[(size_t)i * a_rs + (size_t)k * a_cs] * b[(size_t)k * b_rs + (size_t)j * b_cs];
            out[(size_t)i * ldo + j] = (float)s;
        }
}

/* ---------------------------------------------------------- benchmark */

/* The products of one training step of the "small" preset (hidden 256,
 * intermediate 688, vocab 4096, q width 256, kv width 128) on M = B*T =
 * 8*256 rows: forward y = x W^T for q, k/v, gate/up, down and the LM head. */
static const int bench_fwd[5][3] = {
    {2048, 256, 256}, {2048, 256, 128}, {2048, 256, 688}, {2048, 688, 256}, {2048, 256, 4096}};

/* The machine's ceiling: GFLOP/s of a loop of nothing but independent
 * vector multiply-adds on every thread (12 accumulators, more than the FMA
 * latency needs), float32 FMA and, where the CPU has AVX512_BF16, the bf16
 * dot product (two multiply-adds per float32 lane).  No kernel can beat it.
 * One timing of the loop (peak_once); peak_gflops keeps the best of 5, as
 * the kernels keep their best run, so that a slow moment of the machine
 * does not lower the ceiling below what the kernels reached. */
#if defined(__AVX512F__)
static double peak_once(int bf16) {
    const long iters = 20000000;
    double t0 = rf_now();
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
        __m512 acc[12];
        for (int i = 0; i < 12; i++) acc[i] = _mm512_setzero_ps();
        __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-6f);
        if (!bf16) {
            for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
                for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
            }
        }
#if defined(__AVX512BF16__)
        else {
            __m512bh xb = (__m512bh)_mm512_set1_epi16(0x3f80), yb = (__m512bh)_mm512_set1_epi16(0x3580);
            for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
                for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], xb, yb);
            }
        }
#endif
        __m512 s = acc[0];
        for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
        sink += _mm512_reduce_add_ps(s);
    }
    double dt = rf_now() - t0;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    volatile float keep = sink; /* the sums must be computed */
    (void)keep;
    return threads * (double)iters * 12 * 16 * 2 * (bf16 ? 2 : 1) / dt * 1e-9;
}

static double peak_gflops(int bf16) {
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double g = peak_once(bf16);
        if (g > best) best = g;
    }
    return best;
}
#endif

/* Prints "matmul KIND M= K= N= gflops=" per shape (2MNK / best time of
 * `reps` runs after one warm-up), then per-kind and overall totals
 * (total flops / total best time).  Usage: bench-matmul [reps]. */
int bench_matmul_main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: recfound bench-matmul [REPS]\n\n  GFLOP/s of the three matmul kernels on the small preset's "
               "shapes, best of REPS (default 10)\n  after a warm-up; one line per shape, then totals per kind, then the "
               "machine's\n  peak (a loop of independent vector multiply-adds, best of 5; AVX-512 builds only).\n");
        return 0;
    }
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    if (reps < 1) return rf_error("bench-matmul: argument 1: repetitions must be a positive integer, got '%s'",
                                  argv[1]);
    static const char *kind[3] = {"nt", "nn", "tn"};
    size_t amax = 0, bmax = 0, cmax = 0;
    int shape[3][5][3];
    for (int s = 0; s < 5; s++) {
        int M = bench_fwd[s][0], K = bench_fwd[s][1], N = bench_fwd[s][2];
        /* nt: y[M,N] = x[M,K] W[N,K]^T;  nn: dx[M,K] = dy[M,N] W[N,K];
         * tn: dW[N,K] = dy[M,N]^T x[M,K]. */
        int sh[3][3] = {{M, K, N}, {M, N, K}, {N, M, K}};
        for (int t = 0; t < 3; t++) {
            int m = sh[t][0], k = sh[t][1], n = sh[t][2];
            memcpy(shape[t][s], sh[t], sizeof sh[t]);
            if ((size_t)m * k > amax) amax = (size_t)m * k;
            if ((size_t)k * n > bmax) bmax = (size_t)k * n;
            if ((size_t)m * n > cmax) cmax = (size_t)m * n;
        }
    }
    float *a = malloc(amax * sizeof(float)), *b = malloc(bmax * sizeof(float)), *c = malloc(cmax * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return rf_error("bench-matmul: out of memory");
    }
    uint32_t x = 12345;
    for (size_t i = 0; i < amax; i++) a[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < bmax; i++) b[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    void (*fn[3])(float *, const float *, const float *, int, int, int, int) = {matmul_nt, matmul_nn, matmul_tn};
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const char *bind = getenv("OMP_PROC_BIND");
    printf("matmul threads=%d reps=%d mr=%d nr=%d kc=%d omp_proc_bind=%s\n", threads, reps, MR, NR, KC,
           bind ? bind : "unset");
    double all_f = 0, all_t = 0;
    for (int t = 0; t < 3; t++) {
        double tot_f = 0, tot_t = 0;
        for (int s = 0; s < 5; s++) {
            int M = shape[t][s][0], K = shape[t][s][1], N = shape[t][s][2];
            double best = 1e30;
            fn[t](c, a, b, M, K, N, 0);
            for (int r = 0; r < reps; r++) {
                double t0 = rf_now();
                fn[t](c, a, b, M, K, N, 0);
                double dt = rf_now() - t0;
                if (dt < best) best = dt;
            }
            double f = 2.0 * M * N * K;
            printf("matmul %s M=%d K=%d N=%d gflops=%.1f\n", kind[t], M, K, N, f / best * 1e-9);
            tot_f += f;
            tot_t += best;
        }
        printf("matmul %s total gflops=%.1f\n", kind[t], tot_f / tot_t * 1e-9);
        all_f += tot_f;
        all_t += tot_t;
    }
    printf("matmul all total gflops=%.1f\n", all_f / all_t * 1e-9);
#if defined(__AVX512F__)
    double peak = peak_gflops(0);
    printf("machine peak fp32 fma gflops=%.1f (the kernels above reach %.0f%% of it)\n", peak,
           100 * all_f / all_t * 1e-9 / peak);
#if defined(__AVX512BF16__)
    printf("machine peak bf16 dot gflops=%.1f\n", peak_gflops(1));
#endif
#endif
    free(a), free(b), free(c);
    return 0;
}
