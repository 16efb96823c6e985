// KV caches of generation (layout in kernels.h) and attention of one step's rows over them.
// Each row's result is a fixed sequence of operations whatever else is in the batch.
#include "kernels.h"
#include "vec.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

size_t kvcache_floats(int cap, int L, int KVH, int hd) {
    return (size_t)2 * L * cap * KVH * hd;
}

static float *cache_kt(float *cache, int cap, int l, int kvd) {
    return cache + (size_t)(2 * l) * cap * kvd;
}
static float *cache_v(float *cache, int cap, int l, int kvd) {
    return cache + (size_t)(2 * l + 1) * cap * kvd;
}

float *kvcache_grow(const float *old, int old_cap, int len, int new_cap, int L, int KVH, int hd) {
    size_t kvd = (size_t)KVH * hd, blocks = (size_t)(len + 15) / 16;
    float *kv = calloc(kvcache_floats(new_cap, L, KVH, hd), sizeof(float));
    if (!kv) return NULL;
    for (int l = 0; l < L && old && len > 0; l++) {
        const float *kt = old + (size_t)(2 * l) * old_cap * kvd;
        for (int h = 0; h < KVH; h++)
            memcpy(kv + 2 * l * kvd * new_cap + h * new_cap * hd, kt + h * old_cap * hd,
                   blocks * hd * 16 * sizeof(float));
        memcpy(kv + (size_t)(2 * l + 1) * new_cap * kvd, old + (size_t)(2 * l + 1) * old_cap * kvd,
               (size_t)len * kvd * sizeof(float));
    }
    return kv;
}

void kvcache_store(float *cache, int cap, int l, int pos, const float *k, const float *v, int KVH,
                   int hd) {
    int kvd = KVH * hd;
    float *kt = cache_kt(cache, cap, l, kvd) + (size_t)(pos / 16) * hd * 16 + pos % 16;
    for (int h = 0; h < KVH; h++)
        for (int i = 0; i < hd; i++) kt[(size_t)h * cap * hd + (size_t)i * 16] = k[h * hd + i];
    memcpy(cache_v(cache, cap, l, kvd) + (size_t)pos * kvd, v, (size_t)kvd * sizeof(float));
}

// Query heads sharing a KV head are attended together (up to GROUP_MAX per pass): each key and
// value vector is loaded once for all of them, and the independent sums of several heads (and
// of several 16-position blocks) keep the adder busy instead of waiting on one chain. Every
// output element is still the same sequence of operations as one head alone.
#define GROUP_MAX 4

size_t kvcache_scratch_floats(int P) { return (size_t)GROUP_MAX * ((P + 15) / 16 * 16); }

// Scores of GP heads for positions [lo, npos) (whole 16-position blocks from lo/16*16) into
// p[g * ps + j]; NB blocks at a time.
static inline __attribute__((always_inline)) void group_scores(float *p, size_t ps, const float *const *qg,
        const float *kt, int lo, int npos, int hd, float scale, const int GP, const int NB) {
    int j0 = lo / 16 * 16;
    for (; j0 + 16 * (NB - 1) < npos; j0 += 16 * NB) {
        v16 acc[NB][GROUP_MAX];
        for (int b = 0; b < NB; b++)
            for (int g = 0; g < GP; g++) acc[b][g] = (v16){0};
        for (int i = 0; i < hd; i++)
            for (int b = 0; b < NB; b++) {
                v16 k = load16(kt + (size_t)(j0 + 16 * b) * hd + i * 16);
                for (int g = 0; g < GP; g++) acc[b][g] += qg[g][i] * k;
            }
        for (int b = 0; b < NB; b++)
            for (int g = 0; g < GP; g++) {
                v16 x = acc[b][g] * scale;
                memcpy(p + g * ps + j0 + 16 * b, &x, sizeof x);
            }
    }
    for (; j0 < npos; j0 += 16) {
        v16 acc[GROUP_MAX];
        for (int g = 0; g < GP; g++) acc[g] = (v16){0};
        for (int i = 0; i < hd; i++) {
            v16 k = load16(kt + (size_t)j0 * hd + i * 16);
            for (int g = 0; g < GP; g++) acc[g] += qg[g][i] * k;
        }
        for (int g = 0; g < GP; g++) {
            v16 x = acc[g] * scale;
            memcpy(p + g * ps + j0, &x, sizeof x);
        }
    }
}

// out_g = sum_j w[g * ps + j] v_j for GP heads (hd a multiple of 16), 64 columns at a time.
static inline __attribute__((always_inline)) void group_values(float *const *og, const float *w, size_t ps,
        const float *v, int kvd, int lo, int npos, int hd, const int GP) {
    int c0 = 0;
    for (; c0 + 64 <= hd; c0 += 64) {
        v16 acc[GROUP_MAX][4];
        for (int g = 0; g < GP; g++)
            for (int t = 0; t < 4; t++) acc[g][t] = (v16){0};
        for (int j = lo; j < npos; j++) {
            const float *vj = v + (size_t)j * kvd + c0;
            v16 v0 = load16(vj), v1 = load16(vj + 16), v2 = load16(vj + 32), v3 = load16(vj + 48);
            for (int g = 0; g < GP; g++) {
                float a = w[g * ps + j];
                acc[g][0] += a * v0; acc[g][1] += a * v1; acc[g][2] += a * v2; acc[g][3] += a * v3;
            }
        }
        for (int g = 0; g < GP; g++) memcpy(og[g] + c0, acc[g], sizeof acc[g]);
    }
    for (; c0 < hd; c0 += 16) {
        v16 acc[GROUP_MAX];
        for (int g = 0; g < GP; g++) acc[g] = (v16){0};
        for (int j = lo; j < npos; j++) {
            v16 vj = load16(v + (size_t)j * kvd + c0);
            for (int g = 0; g < GP; g++) acc[g] += w[g * ps + j] * vj;
        }
        for (int g = 0; g < GP; g++) memcpy(og[g] + c0, &acc[g], sizeof acc[g]);
    }
}

static inline __attribute__((always_inline)) void attend_group(float *const *og, const float *const *qg,
        const float *kt, const float *v, int kvd, int lo, int npos, int hd, float scale, float *p, size_t ps,
        const int GP) {
    group_scores(p, ps, qg, kt, lo, npos, hd, scale, GP, GP == 1 ? 4 : 2);
    for (int g = 0; g < GP; g++) {
        float *pg = p + g * ps, mx = -INFINITY;
        for (int j = lo; j < npos; j++) if (pg[j] > mx) mx = pg[j];
        float inv = 1.0f / exp_shift_sum(pg + lo, pg + lo, npos - lo, mx);
        for (int j = lo; j < npos; j++) pg[j] *= inv;
    }
    if (hd % 16 == 0) {
        group_values(og, p, ps, v, kvd, lo, npos, hd, GP);
        return;
    }
    for (int g = 0; g < GP; g++) {
        float *o = og[g];
        for (int i = 0; i < hd; i++) o[i] = 0.0f;
        for (int j = lo; j < npos; j++) {
            const float *vj = v + (size_t)j * kvd;
            float a = p[g * ps + j];
            for (int i = 0; i < hd; i++) o[i] += a * vj[i];
        }
    }
}

void kvcache_attend(float *out, const float *q, int ldq, float *const *cache, const int *cap,
                    const int *pos, int n, int l, int NH, int KVH, int hd, int window,
                    float *scratch, size_t scratch_stride) {
    int kvd = KVH * hd, G = NH / KVH, passes = (G + GROUP_MAX - 1) / GROUP_MAX;
    float scale = 1.0f / sqrtf((float)hd);
    size_t ps = scratch_stride / GROUP_MAX;
    #pragma omp parallel for schedule(dynamic)
    for (int item = 0; item < n * KVH * passes; item++) {
        int r = item / (KVH * passes), kvh = item / passes % KVH, pass = item % passes, npos = pos[r] + 1;
        int lo = window > 0 && npos - window > 0 ? npos - window : 0;
        int h0 = kvh * G + pass * GROUP_MAX, GP = G - pass * GROUP_MAX < GROUP_MAX ? G - pass * GROUP_MAX : GROUP_MAX;
        const float *kt = cache_kt(cache[r], cap[r], l, kvd) + (size_t)kvh * cap[r] * hd;
        const float *v = cache_v(cache[r], cap[r], l, kvd) + kvh * hd;
        float *p = scratch + (size_t)omp_get_thread_num() * scratch_stride;
        const float *qg[GROUP_MAX];
        float *og[GROUP_MAX];
        for (int g = 0; g < GP; g++) {
            qg[g] = q + (size_t)r * ldq + (h0 + g) * hd;
            og[g] = out + (size_t)r * NH * hd + (h0 + g) * hd;
        }
        switch (GP) {
        case 1: attend_group(og, qg, kt, v, kvd, lo, npos, hd, scale, p, ps, 1); break;
        case 2: attend_group(og, qg, kt, v, kvd, lo, npos, hd, scale, p, ps, 2); break;
        case 3: attend_group(og, qg, kt, v, kvd, lo, npos, hd, scale, p, ps, 3); break;
        default: attend_group(og, qg, kt, v, kvd, lo, npos, hd, scale, p, ps, 4); break;
        }
    }
}
