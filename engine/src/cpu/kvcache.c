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

size_t kvcache_scratch_floats(int P) { return (size_t)(P + 15) / 16 * 16; }

void kvcache_attend(float *out, const float *q, int ldq, float *const *cache, const int *cap,
                    const int *pos, int n, int l, int NH, int KVH, int hd, int window,
                    float *scratch, size_t scratch_stride) {
    int kvd = KVH * hd, G = NH / KVH;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for schedule(dynamic)
    for (int rh = 0; rh < n * NH; rh++) {
        int r = rh / NH, h = rh % NH, kvh = h / G, npos = pos[r] + 1;
        int lo = window > 0 && npos - window > 0 ? npos - window : 0;
        const float *qr = q + (size_t)r * ldq + h * hd;
        const float *kt = cache_kt(cache[r], cap[r], l, kvd) + (size_t)kvh * cap[r] * hd;
        const float *v = cache_v(cache[r], cap[r], l, kvd) + kvh * hd;
        float *p = scratch + (size_t)omp_get_thread_num() * scratch_stride;
        for (int j0 = lo / 16 * 16; j0 < npos; j0 += 16) {  // the cache holds whole 16-position blocks
            const float *blk = kt + (size_t)j0 * hd;
            v16 acc = {0};
            for (int i = 0; i < hd; i++) acc += qr[i] * load16(blk + i * 16);
            acc *= scale;
            memcpy(p + j0, &acc, sizeof acc);
        }
        float mx = -INFINITY;
        for (int j = lo; j < npos; j++) if (p[j] > mx) mx = p[j];
        float inv = 1.0f / exp_shift_sum(p + lo, p + lo, npos - lo, mx);
        float *o = out + (size_t)r * NH * hd + h * hd;
        if (hd % 16 == 0 && hd <= 256) {  // accumulate in registers rather than through out
            v16 acc[16] = {{0}};
            for (int j = lo; j < npos; j++) {
                const float *vj = v + (size_t)j * kvd;
                float a = p[j] * inv;
                for (int t = 0; t < hd / 16; t++) acc[t] += a * load16(vj + 16 * t);
            }
            memcpy(o, acc, (size_t)hd * sizeof(float));
        } else {
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int j = lo; j < npos; j++) {
                const float *vj = v + (size_t)j * kvd;
                float a = p[j] * inv;
                for (int i = 0; i < hd; i++) o[i] += a * vj[i];
            }
        }
    }
}
