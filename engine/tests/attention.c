// attention_forward/backward (blocked, BLAS) against a direct double-precision implementation,
// for rows longer than a query block, plain causal and branched (shared prompt) masks.
#include "cpu/kernels.h"
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 2, T = 150, C = 32, NH = 2, HS = C / NH };

static int sees(const int *branch, int b, int i, int j) {
    if (j > i) return 0;
    if (branch && i >= branch[2 * b + 1] && j >= branch[2 * b] && j < branch[2 * b + 1]) return 0;
    return 1;
}

// out and, for the loss sum(out * g), dqkv
static void reference(const float *qkv, const float *g, const int *branch, double *out, double *dqkv) {
    double *p = malloc(sizeof(double) * T * T), *dp = malloc(sizeof(double) * T * T);
    for (int i = 0; i < B * T * 3 * C; i++) dqkv[i] = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * 3 * C + h * HS;
            double *dbase = dqkv + (size_t)b * T * 3 * C + h * HS;
            for (int i = 0; i < T; i++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += (double)base[i * 3 * C + d] * base[j * 3 * C + C + d];
                    p[i * T + j] = sees(branch, b, i, j) ? s / sqrt((double)HS) : -INFINITY;
                    if (p[i * T + j] > mx) mx = p[i * T + j];
                }
                for (int j = 0; j < T; j++) { p[i * T + j] = exp(p[i * T + j] - mx); sum += p[i * T + j]; }
                for (int j = 0; j < T; j++) p[i * T + j] /= sum;
                for (int d = 0; d < HS; d++) {
                    double o = 0;
                    for (int j = 0; j < T; j++) o += p[i * T + j] * base[j * 3 * C + 2 * C + d];
                    out[((size_t)b * T + i) * C + h * HS + d] = o;
                }
            }
            for (int i = 0; i < T; i++) {
                const float *gi = g + ((size_t)b * T + i) * C + h * HS;
                double dot = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += gi[d] * (double)base[j * 3 * C + 2 * C + d];
                    dp[i * T + j] = s;
                    dot += s * p[i * T + j];
                    for (int d = 0; d < HS; d++) dbase[j * 3 * C + 2 * C + d] += p[i * T + j] * gi[d];
                }
                for (int j = 0; j < T; j++) {
                    double ds = p[i * T + j] * (dp[i * T + j] - dot) / sqrt((double)HS);
                    for (int d = 0; d < HS; d++) {
                        dbase[i * 3 * C + d] += ds * base[j * 3 * C + C + d];
                        dbase[j * 3 * C + C + d] += ds * base[i * 3 * C + d];
                    }
                }
            }
        }
    free(p); free(dp);
}

static double max_rel(const float *a, const double *b, size_t n) {
    double err = 0, mx = 0;
    for (size_t i = 0; i < n; i++) { err = fmax(err, fabs(a[i] - b[i])); mx = fmax(mx, fabs(b[i])); }
    return err / fmax(mx, 1e-30);
}

int main(void) {
    blas_init();
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = malloc(nq * 4), *g = malloc(no * 4), *out = malloc(no * 4), *dqkv = malloc(nq * 4);
    float *lse = malloc((size_t)B * NH * T * 4), *scratch = malloc(attention_scratch_floats(T) * 4);
    double *rout = malloc(no * 8), *rdqkv = malloc(nq * 8);
    uint32_t s = 12345;
    for (size_t i = 0; i < nq; i++) {
        s = s * 1664525u + 1013904223u;
        qkv[i] = (float)((s >> 8) % 2000) / 1000.0f - 1.0f;
    }
    for (size_t i = 0; i < no; i++) {
        s = s * 1664525u + 1013904223u;
        g[i] = (float)((s >> 8) % 2000) / 1000.0f - 1.0f;
    }
    int branch[2 * B] = {40, 97, 1, 140};  // prompt 40 + branch at 97; prompt 1 + branch at 140
    int failures = 0;
    for (int mode = 0; mode < 2; mode++) {
        const int *br = mode ? branch : NULL;
        AttnDims d = {B, T, NH, NH, HS, 0};
        attention_forward(out, lse, qkv, scratch, br, &d);
        for (size_t i = 0; i < nq; i++) dqkv[i] = 0;
        attention_backward(dqkv, g, qkv, lse, scratch, br, &d);
        reference(qkv, g, br, rout, rdqkv);
        double eo = max_rel(out, rout, no), ed = max_rel(dqkv, rdqkv, nq);
        int bad = eo > 1e-5 || ed > 1e-4;
        printf("attention (%s): out rel err %.2e, dqkv rel err %.2e: %s\n", mode ? "branched" : "causal", eo, ed,
               bad ? "FAILED" : "ok");
        failures += bad;
    }
    free(qkv); free(g); free(out); free(dqkv); free(lse); free(scratch); free(rout); free(rdqkv);
    return failures ? 1 : 0;
}
