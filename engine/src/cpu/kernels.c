// CPU layer kernels (llm.c style): plain loops with OpenMP, large products through cblas_sgemm.
// Every reduction runs in a fixed order for a given thread count, so training is bit-reproducible.
#include "kernels.h"
#include "vec.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// OpenBLAS's runtime dispatch (DYNAMIC_ARCH builds) picks kernels by CPU model; 0.3.21 (Debian
// 12) does not know newer Xeons (e.g. family 6 model 207) and falls back to its SSE3 "Prescott"
// kernels, about 5x slower in sgemm than its AVX-512 ones on the same core. Weak references: a
// BLAS without dynamic dispatch simply lacks these symbols.
extern char *openblas_get_corename(void) __attribute__((weak));
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

const char *blas_init(void) {
    static int done;
    if (!done && openblas_get_corename && gotoblas_dynamic_init && gotoblas_dynamic_quit &&
        !getenv("OPENBLAS_CORETYPE") && !strcmp(openblas_get_corename(), "Prescott")) {
        const char *core = NULL;
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
            core = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            core = "Haswell";
        if (core) {  // re-run the dispatch as if OPENBLAS_CORETYPE had been set at start-up
            setenv("OPENBLAS_CORETYPE", core, 1);
            gotoblas_dynamic_quit();
            gotoblas_dynamic_init();
            unsetenv("OPENBLAS_CORETYPE");
        }
    }
    done = 1;
    return openblas_get_corename ? openblas_get_corename() : "unknown";
}

// Columns per block when a thread sums a column range over all rows (dw, db): rows stay
// contiguous in memory and no two threads touch the same output.
#define COL_BLOCK 64

// out rows (stride ldo) start as the bias, for a product that adds into them (beta 1).
static void bias_rows(float *out, int ldo, const float *bias, int N, int OUT) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * ldo, bias, (size_t)OUT * sizeof(float));
}

void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IN, int OUT) {
    if (bias) bias_rows(out, OUT, bias, N, OUT);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OUT, IN, 1.0f, inp, IN, w, OUT,
                bias ? 1.0f : 0.0f, out, OUT);
}

void matmul_nt_forward(float *out, int ldo, const float *inp, const float *w, const float *bias,
                       int N, int IN, int OUT) {
    if (bias) bias_rows(out, ldo, bias, N, OUT);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, inp, IN, w, IN,
                bias ? 1.0f : 0.0f, out, ldo);
}

// dst[C] += column sums of src[N, C] (row stride ld).
static void colsum_add(float *dst, const float *src, int N, int C, int ld) {
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
    #pragma omp parallel for
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < C ? j0 + COL_BLOCK : C;
        float acc[COL_BLOCK] = {0};
        for (int i = 0; i < N; i++) {
            const float *row = src + (size_t)i * ld;
            for (int j = j0; j < j1; j++) acc[j - j0] += row[j];
        }
        for (int j = j0; j < j1; j++) dst[j] += acc[j - j0];
    }
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, int N, int IN, int OUT) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IN, OUT, 1.0f, dout, OUT, w, OUT,
                    1.0f, dinp, IN);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IN, OUT, N, 1.0f, inp, IN, dout, OUT,
                    1.0f, dw, OUT);
    if (dbias) colsum_add(dbias, dout, N, OUT, OUT);
}

void matmul_nt_backward(float *dinp, float *dw, float *dbias, const float *dout, int ldd,
                        const float *inp, const float *w, int N, int IN, int OUT) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, dout, ldd, w, IN,
                    1.0f, dinp, IN);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, ldd, inp, IN,
                    1.0f, dw, IN);
    if (dbias) colsum_add(dbias, dout, N, OUT, ldd);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, int N, int C, float eps) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float m = 0.0f;
        for (int j = 0; j < C; j++) m += x[j];
        m /= C;
        float v = 0.0f;
        for (int j = 0; j < C; j++) { float d = x[j] - m; v += d * d; }
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        float *o = out + (size_t)i * C;
        for (int j = 0; j < C; j++) o[j] = (x[j] - m) * s * w[j] + b[j];
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = s;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, int N, int C) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int j = 0; j < C; j++) {
            float dnorm = w[j] * dy[j];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * (x[j] - m) * s;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float *dx = dinp + (size_t)i * C;
        for (int j = 0; j < C; j++) {
            float norm = (x[j] - m) * s;
            dx[j] += (w[j] * dy[j] - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
    #pragma omp parallel for
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < C ? j0 + COL_BLOCK : C;
        float aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            float m = mean[i], s = rstd[i];
            for (int j = j0; j < j1; j++) {
                aw[j - j0] += (x[j] - m) * s * dy[j];
                ab[j - j0] += dy[j];
            }
        }
        for (int j = j0; j < j1; j++) { dw[j] += aw[j - j0]; db[j] += ab[j - j0]; }
    }
}

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)

// gelu_new(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3):
// the sigmoid form has no cancellation near 1 + tanh = 0. For u < -9, where float tanh(u) is
// exactly -1, the sigmoid is 0 as well, which also keeps denormals out of the products.
static inline float gelu_sigmoid(float x) {
    float u = GELU_SCALE * (x + 0.044715f * x * x * x);
    return u < -9.0f ? 0.0f : 1.0f / (1.0f + exp_approx(-2.0f * u));
}

void gelu_forward(float *out, const float *inp, int n) {
    #pragma omp parallel for simd
    for (int i = 0; i < n; i++) out[i] = inp[i] * gelu_sigmoid(inp[i]);
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int n) {
    #pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float x = inp[i], sg = gelu_sigmoid(x);
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = (sg + 2.0f * x * sg * (1.0f - sg) * du) * dout[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, int n) {
    #pragma omp parallel for
    for (int i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// Keys visible to query i of row b: [lo1, hi1) and [lo2, i]. Plain rows: one range [lo1, i];
// branched rows at i >= R (position S + i - R): [lo1, S) of the prompt and [lo2, i]. A window
// keeps positions > p - window.
static inline void visible(const int *branch, int b, int i, int window, int *lo1, int *hi1,
                           int *lo2) {
    int S = branch ? branch[2 * b] : 0, R = branch ? branch[2 * b + 1] : 1 << 30;
    if (i >= R && S < R) {
        int p = S + i - R, lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        *lo1 = lo < S ? lo : S;
        *hi1 = S;
        *lo2 = window > 0 && i - window + 1 > R ? i - window + 1 : R;
    } else {
        *lo1 = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
        *hi1 = *lo2 = i + 1;  // one range [lo1, i]
    }
}

// Queries are processed in blocks of ATT_BLOCK rows; a block needs keys [0, i1) only, which
// skips most of the masked upper triangle of Q K^T (and of every product in backward). The
// probabilities of a block live in per-thread scratch: forward keeps only each row's
// log-sum-exp and backward recomputes the block, so memory stays linear in T (flash-style).
#define ATT_BLOCK 64

size_t attention_scratch_floats(int T) {
    return (size_t)omp_get_max_threads() * 2 * ATT_BLOCK * T;
}

// Scores of queries [i0, i1) against keys [0, i1) into p (row stride T), masked entries as
// -INFINITY; the caller exponentiates. q and k have row stride ld.
static void block_scores(float *p, const float *q, const float *k, int ld, const int *branch,
                         int b, int i0, int i1, const AttnDims *d, float scale) {
    int T = d->T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, i1, d->hd, scale,
                q + (size_t)i0 * ld, ld, k, ld, 0.0f, p, T);
    for (int i = i0; i < i1; i++) {
        float *row = p + (size_t)(i - i0) * T;
        int lo1, hi1, lo2;
        visible(branch, b, i, d->window, &lo1, &hi1, &lo2);
        for (int j = 0; j < lo1; j++) row[j] = -INFINITY;     // outside the window
        for (int j = hi1; j < lo2; j++) row[j] = -INFINITY;   // the other branch
        for (int j = i + 1; j < i1; j++) row[j] = -INFINITY;  // causal mask
    }
}

void attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                       const int *branch, const AttnDims *d) {
    int T = d->T, NH = d->NH, hd = d->hd, G = NH / d->KVH;
    int ld = (NH + 2 * d->KVH) * hd, ldo = NH * hd;
    float scale = 1.0f / sqrtf((float)hd);
    // One (sequence, head) per iteration; OpenBLAS runs single-threaded inside the region.
    #pragma omp parallel
    {
        float *p = scratch + (size_t)omp_get_thread_num() * 2 * ATT_BLOCK * T;
        #pragma omp for
        for (int bh = 0; bh < d->B * NH; bh++) {
            int b = bh / NH, h = bh % NH;
            const float *row0 = qkv + (size_t)b * T * ld;
            const float *q = row0 + h * hd, *k = row0 + (NH + h / G) * hd;
            const float *v = row0 + (NH + d->KVH + h / G) * hd;
            float *o = out + (size_t)b * T * ldo + h * hd, *l = lse + (size_t)bh * T;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T;
                block_scores(p, q, k, ld, branch, b, i0, i1, d, scale);
                for (int i = i0; i < i1; i++) {
                    float *row = p + (size_t)(i - i0) * T, mx = row[0], sum = 0.0f;
                    for (int j = 1; j < i1; j++) mx = row[j] > mx ? row[j] : mx;
                    for (int j = 0; j < i1; j++) { row[j] = exp_approx(row[j] - mx); sum += row[j]; }
                    float inv = 1.0f / sum;
                    for (int j = 0; j < i1; j++) row[j] *= inv;
                    l[i] = mx + logf(sum);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hd, i1, 1.0f, p, T,
                            v, ld, 0.0f, o + (size_t)i0 * ldo, ldo);
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                        float *scratch, const int *branch, const AttnDims *d) {
    int T = d->T, NH = d->NH, KVH = d->KVH, hd = d->hd, G = NH / KVH;
    int ld = (NH + 2 * KVH) * hd, ldo = NH * hd;
    float scale = 1.0f / sqrtf((float)hd);
    // One (sequence, key/value head) per iteration: the query heads sharing it add into its dk
    // and dv one after another, so no two threads write the same gradient.
    #pragma omp parallel
    {
        float *p = scratch + (size_t)omp_get_thread_num() * 2 * ATT_BLOCK * T;
        float *dp = p + (size_t)ATT_BLOCK * T;
        #pragma omp for
        for (int bkv = 0; bkv < d->B * KVH; bkv++) {
            int b = bkv / KVH, kvh = bkv % KVH;
            size_t base = (size_t)b * T * ld;
            const float *k = qkv + base + (NH + kvh) * hd, *v = qkv + base + (NH + KVH + kvh) * hd;
            float *dk = dqkv + base + (NH + kvh) * hd, *dv = dqkv + base + (NH + KVH + kvh) * hd;
            for (int h = kvh * G; h < (kvh + 1) * G; h++) {
                const float *q = qkv + base + h * hd, *l = lse + ((size_t)b * NH + h) * T;
                float *dq = dqkv + base + h * hd;
                const float *dy = dout + (size_t)b * T * ldo + h * hd;
                for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                    int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
                    const float *dyb = dy + (size_t)i0 * ldo;
                    block_scores(p, q, k, ld, branch, b, i0, i1, d, scale);
                    for (int i = i0; i < i1; i++) {  // the forward's probabilities, from its lse
                        float *row = p + (size_t)(i - i0) * T;
                        for (int j = 0; j < i1; j++) row[j] = exp_approx(row[j] - l[i]);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, i1, hd, 1.0f, dyb, ldo,
                                v, ld, 0.0f, dp, T);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, nb, 1.0f, p, T, dyb,
                                ldo, 1.0f, dv, ld);
                    // softmax backward, folding in the score scale; dp becomes d(QK^T). Masked
                    // keys have p = 0, so p * (dp - dot) is 0 there too.
                    for (int i = 0; i < nb; i++) {
                        const float *pr = p + (size_t)i * T;
                        float *dr = dp + (size_t)i * T;
                        float dot = 0.0f;
                        for (int j = 0; j < i1; j++) dot += pr[j] * dr[j];
                        for (int j = 0; j < i1; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, i1, 1.0f, dp, T,
                                k, ld, 1.0f, dq + (size_t)i0 * ld, ld);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1, hd, nb, 1.0f, dp, T,
                                q + (size_t)i0 * ld, ld, 1.0f, dk, ld);
                }
            }
        }
    }
}
