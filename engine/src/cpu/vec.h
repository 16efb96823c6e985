// Inline arithmetic shared by the CPU kernels and the sampler: a vectorizable scalar exp and
// 16-lane vector helpers (GCC vector extensions: AVX-512 here, narrower vectors elsewhere).
#pragma once
#include <stdint.h>
#include <string.h>

// exp(x): Cody-Waite range reduction and a degree-6 polynomial (Cephes expf, about 1 ulp).
// Plain arithmetic, so the loops using it vectorize (glibc's expf/tanhf do not without
// -ffast-math, and tanhf was a fifth of a training step). x <= -88 (and -inf, a masked
// attention score) gives exactly 0: k = -127 makes the scale's exponent bits 0.
static inline float exp_approx(float x) {
    x = x < -88.0f ? -88.0f : x > 88.0f ? 88.0f : x;
    float k = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)k + 127) << 23};
    return p * scale.f;
}

// Every result is a fixed sequence of operations per element, so rows stay batch-independent.
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
static inline v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline v16 select16(vi16 mask, v16 a, v16 b) { return (v16)(((vi16)a & mask) | ((vi16)b & ~mask)); }
// exp on 16 lanes: Cephes expf's range reduction and degree-6 polynomial (about 1 ulp), the
// same scheme as kernels.c's scalar exp_approx, written on vectors so softmax over the
// vocabulary and over cached positions runs 16 lanes at a time.
static inline v16 exp16(v16 x) {
    const v16 hi = (v16){0} + 88.0f, lo = (v16){0} - 88.0f;
    x = select16(x > hi, hi, x);
    x = select16(x < lo, lo, x);
    v16 t = x * 1.44269504088896341f + 0.5f;
    vi16 ni = __builtin_convertvector(t, vi16);
    v16 nf = __builtin_convertvector(ni, v16);
    vi16 above = nf > t;  // truncation went up for negative t: floor is one less
    ni += above;
    nf += __builtin_convertvector(above, v16);
    v16 r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    v16 p = (v16){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v16 y = p * r * r + r + 1.0f;
    return y * (v16)((ni + 127) << 23);
}

// dst[i] = exp(src[i] - mx) for i < n (dst may be NULL); returns the sum, in a fixed order.
static inline float exp_shift_sum(float *dst, const float *src, int n, float mx) {
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 e = exp16(load16(src + i) - mx);
        if (dst) memcpy(dst + i, &e, sizeof e);
        acc += e;
    }
    float sum = 0.0f;
    for (int t = 0; t < 16; t++) sum += acc[t];
    if (i < n) {
        v16 x = {0};
        memcpy(&x, src + i, (size_t)(n - i) * sizeof(float));
        v16 e = exp16(x - mx);
        if (dst) memcpy(dst + i, &e, (size_t)(n - i) * sizeof(float));
        for (int t = 0; t < n - i; t++) sum += e[t];
    }
    return sum;
}


