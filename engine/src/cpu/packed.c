// Packed-weight matrix products for generation (see packed.h).
#include "packed.h"
#include "kernels.h"
#include "util.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX 1
#endif

// ---- fp32: panels of PANEL columns stored [K][PANEL]; tiles of up to TILE_M rows ----------
#define PANEL 64
#define TILE_M 6
// Calls tile(..., MR) with MR = the rows left (at most TILE_M) as a constant, so each inlined copy
// keeps its accumulators in registers.
#define TILE_ROWS(rows, tile, ...) do { switch (rows) { \
    case 1: tile(__VA_ARGS__, 1); break; case 2: tile(__VA_ARGS__, 2); break; \
    case 3: tile(__VA_ARGS__, 3); break; case 4: tile(__VA_ARGS__, 4); break; \
    case 5: tile(__VA_ARGS__, 5); break; default: tile(__VA_ARGS__, TILE_M); break; } } while (0)
typedef float v16 __attribute__((vector_size(64)));
#ifdef __AVX512F__
#define FMA16(acc, a, w) ((acc) = (v16)_mm512_fmadd_ps(_mm512_set1_ps(a), (__m512)(w), (__m512)(acc)))
#else
#define FMA16(acc, a, w) ((acc) += (a) * (w))
#endif

static size_t div_up(size_t n, size_t d) { return (n + d - 1) / d; }

// One tile of MR rows by one panel; MR is a constant in each inlined copy, so the accumulators
// live in registers (and every copy does the same fused multiply-adds).
static inline __attribute__((always_inline)) void fp32_tile(float *out, const float *in,
        const float *wp, const float *bias, int K, int N, int j0, int nc, const int MR) {
    v16 acc[TILE_M][PANEL / 16];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < PANEL / 16; c++) acc[r][c] = (v16){0};
    for (int k = 0; k < K; k++) {
        const v16 *w = (const v16 *)(wp + (size_t)k * PANEL);
        v16 w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        for (int r = 0; r < MR; r++) {
            float a = in[(size_t)r * K + k];
            FMA16(acc[r][0], a, w0); FMA16(acc[r][1], a, w1); FMA16(acc[r][2], a, w2); FMA16(acc[r][3], a, w3);
        }
    }
    for (int r = 0; r < MR; r++) {
        float *o = out + (size_t)r * N + j0;
        for (int i = 0; i < nc; i++) o[i] = acc[r][i / 16][i % 16] + (bias ? bias[j0 + i] : 0.0f);
    }
}

static void fp32_matmul(float *out, const float *in, const float *packed, const float *bias,
                        int M, int K, int N) {
    int np = (int)div_up(N, PANEL);
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        const float *wp = packed + (size_t)p * K * PANEL;
        int j0 = p * PANEL, nc = N - j0 < PANEL ? N - j0 : PANEL;
        for (int m0 = 0; m0 < M; m0 += TILE_M) {
            float *o = out + (size_t)m0 * N;
            const float *x = in + (size_t)m0 * K;
            TILE_ROWS(M - m0 < TILE_M ? M - m0 : TILE_M, fp32_tile, o, x, wp, bias, K, N, j0, nc);
        }
    }
}

// ---- bf16 AMX: blocks of 32 columns x 32 k, two 16-column B tiles each in the pair-interleaved
// layout tdpbf16ps reads ([16 k pairs][16 columns][2]); activations as bf16 rows padded to 32.
#define BLK 32

static uint16_t to_bf16(float f) {  // round to nearest even
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

#ifdef HAVE_AMX
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) TileConfig;

static void bf16_matmul(float *out, const float *in, const uint16_t *packed, const float *bias,
                        int M, int K, int N, uint16_t *a) {
    size_t Kp = div_up(K, BLK) * BLK, KC = Kp / BLK;
    int mb = (int)div_up(M, BLK), nb = (int)div_up(N, BLK);
    #pragma omp parallel for
    for (int r = 0; r < mb * BLK; r++)
        for (size_t k = 0; k < Kp; k++) a[r * Kp + k] = r < M && k < (size_t)K ? to_bf16(in[(size_t)r * K + k]) : 0;
    #pragma omp parallel
    {
        // Tiles 0-3 accumulate a 32x32 block of out, 4-5 hold two 16-row slices of a, 6-7 two
        // 16-column slices of W. Tile state is per thread.
        TileConfig cfg = {.palette_id = 1};
        for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
        _tile_loadconfig(&cfg);
        float c[BLK * BLK] __attribute__((aligned(64)));
        #pragma omp for schedule(static)
        for (int jb = 0; jb < nb; jb++) {
            for (int ib = 0; ib < mb; ib++) {
                const uint16_t *a0 = a + (size_t)ib * BLK * Kp;
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                for (size_t kc = 0; kc < KC; kc++) {
                    const uint16_t *b = packed + ((size_t)jb * KC + kc) * 2 * 512;
                    _tile_loadd(4, a0 + kc * BLK, Kp * 2);
                    _tile_loadd(5, a0 + 16 * Kp + kc * BLK, Kp * 2);
                    _tile_loadd(6, b, 64);
                    _tile_loadd(7, b + 512, 64);
                    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
                    _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
                }
                _tile_stored(0, c, BLK * 4); _tile_stored(1, c + 16, BLK * 4);
                _tile_stored(2, c + 16 * BLK, BLK * 4); _tile_stored(3, c + 16 * BLK + 16, BLK * 4);
                int j0 = jb * BLK, nc = N - j0 < BLK ? N - j0 : BLK;
                for (int i = 0; i < BLK && ib * BLK + i < M; i++) {
                    float *o = out + (size_t)(ib * BLK + i) * N + j0;
                    for (int j = 0; j < nc; j++) o[j] = c[i * BLK + j] + (bias ? bias[j0 + j] : 0.0f);
                }
            }
        }
        _tile_release();
    }
}
#endif

// ---- bf16 on AVX-512-BF16: panels of 64 columns stored [K/2 pairs][64][2]; per k pair one
// vdpbf16ps per 16 columns adds x[k] w[k] + x[k+1] w[k+1] to fp32 accumulators. Activations are
// rounded to bf16 pairs first (scratch), so every row does the same operations.
#define BF_PANEL 64
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

static inline __attribute__((always_inline)) AVX512BF16 void avx512bf16_tile(float *out,
        const uint32_t *a, const uint16_t *wp, const float *bias, int KP, int N, int j0, int nc,
        const int MR) {
    __m512 acc[TILE_M][4];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (int kp = 0; kp < KP; kp++) {
        const uint16_t *w = wp + (size_t)kp * BF_PANEL * 2;
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w), w1 = (__m512bh)_mm512_loadu_si512(w + 32);
        __m512bh w2 = (__m512bh)_mm512_loadu_si512(w + 64), w3 = (__m512bh)_mm512_loadu_si512(w + 96);
        for (int r = 0; r < MR; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[(size_t)r * KP + kp]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, w0); acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, w1);
            acc[r][2] = _mm512_dpbf16_ps(acc[r][2], x, w2); acc[r][3] = _mm512_dpbf16_ps(acc[r][3], x, w3);
        }
    }
    for (int r = 0; r < MR; r++) {
        float c[BF_PANEL] __attribute__((aligned(64)));
        for (int t = 0; t < 4; t++) _mm512_store_ps(c + 16 * t, acc[r][t]);
        float *o = out + (size_t)r * N + j0;
        for (int i = 0; i < nc; i++) o[i] = c[i] + (bias ? bias[j0 + i] : 0.0f);
    }
}

static AVX512BF16 void avx512bf16_matmul(float *out, const float *in, const uint16_t *packed,
                                         const float *bias, int M, int K, int N, uint32_t *a) {
    int KP = (K + 1) / 2, np = (int)div_up(N, BF_PANEL);
    #pragma omp parallel for
    for (int r = 0; r < M; r++)
        for (int kp = 0; kp < KP; kp++) {
            int k = 2 * kp;
            uint32_t lo = to_bf16(in[(size_t)r * K + k]), hi = k + 1 < K ? to_bf16(in[(size_t)r * K + k + 1]) : 0;
            a[(size_t)r * KP + kp] = lo | hi << 16;
        }
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        const uint16_t *wp = packed + (size_t)p * KP * BF_PANEL * 2;
        int j0 = p * BF_PANEL, nc = N - j0 < BF_PANEL ? N - j0 : BF_PANEL;
        for (int m0 = 0; m0 < M; m0 += TILE_M) {
            float *o = out + (size_t)m0 * N;
            const uint32_t *x = a + (size_t)m0 * KP;
            TILE_ROWS(M - m0 < TILE_M ? M - m0 : TILE_M, avx512bf16_tile, o, x, wp, bias, KP, N, j0, nc);
        }
    }
}

// ---- bf16 weights on AVX2: panels of 16 columns stored [K][16] as bf16, widened to fp32 (a
// shift) and multiplied with fp32 activations by FMAs: half the weight memory of fp32.
#define W_PANEL 16
#define AVX2FMA __attribute__((target("avx2,fma")))

static inline __attribute__((always_inline)) AVX2FMA void avx2_tile(float *out, const float *in,
        const uint16_t *wp, const float *bias, int K, int N, int j0, int nc, const int MR) {
    __m256 acc[TILE_M][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(wp + (size_t)k * W_PANEL));
        __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(w)), 16));
        __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(w, 1)), 16));
        for (int r = 0; r < MR; r++) {
            __m256 x = _mm256_broadcast_ss(in + (size_t)r * K + k);
            acc[r][0] = _mm256_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < MR; r++) {
        float c[W_PANEL] __attribute__((aligned(32)));
        _mm256_store_ps(c, acc[r][0]);
        _mm256_store_ps(c + 8, acc[r][1]);
        float *o = out + (size_t)r * N + j0;
        for (int i = 0; i < nc; i++) o[i] = c[i] + (bias ? bias[j0 + i] : 0.0f);
    }
}

static AVX2FMA void avx2_matmul(float *out, const float *in, const uint16_t *packed,
                                const float *bias, int M, int K, int N) {
    int np = (int)div_up(N, W_PANEL);
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        const uint16_t *wp = packed + (size_t)p * K * W_PANEL;
        int j0 = p * W_PANEL, nc = N - j0 < W_PANEL ? N - j0 : W_PANEL;
        for (int m0 = 0; m0 < M; m0 += TILE_M) {
            float *o = out + (size_t)m0 * N;
            const float *x = in + (size_t)m0 * K;
            TILE_ROWS(M - m0 < TILE_M ? M - m0 : TILE_M, avx2_tile, o, x, wp, bias, K, N, j0, nc);
        }
    }
}

static int amx_ready(void) {
#ifdef HAVE_AMX
    // Linux hands out AMX tile state only on request (ARCH_REQ_XCOMP_PERM for XTILEDATA).
    __builtin_cpu_init();
    return __builtin_cpu_supports("amx-bf16") && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}

const char *packed_format_name(PackFormat fmt) {
    static const char *names[] = {"fp32", "amx", "avx512bf16", "avx2"};
    return names[fmt];
}

int packed_bf16_format(PackFormat *fmt) {
    __builtin_cpu_init();
    int has[3] = {amx_ready(), __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw"),
                  __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")};
    static const PackFormat F[3] = {PACK_BF16, PACK_BF16_AVX512, PACK_BF16_AVX2};
    const char *want = getenv("OPSR_CPU_ISA");
    if (want && *want) {
        for (int i = 0; i < 3; i++) {
            if (strcmp(want, packed_format_name(F[i]))) continue;
            if (!has[i])
                return err_set(EXIT_BAD_INPUT, "bf16_unavailable", "OPSR_CPU_ISA=%s: %s", want,
                               i == 0 ? "this engine was built without AMX, or the CPU or OS does not grant AMX tiles"
                                      : "this CPU lacks it");
            *fmt = F[i];
            return 0;
        }
        return err_set(EXIT_BAD_INPUT, "bad_env",
                       "OPSR_CPU_ISA is \"%s\"; allowed: amx, avx512bf16, avx2 (or unset: detect)", want);
    }
    for (int i = 0; i < 3; i++)
        if (has[i]) { *fmt = F[i]; return 0; }
    return err_set(EXIT_BAD_INPUT, "bf16_unavailable",
                   "--dtype bf16 needs AMX, AVX-512-BF16 or AVX2 with FMA; this CPU has none");
}

int packed_make(PackedMatrix *pm, PackFormat fmt, const float *w, int K, int N, size_t ks, size_t js) {
    pm->fmt = fmt; pm->K = K; pm->N = N;
    if (fmt == PACK_FP32) {
        size_t np = div_up(N, PANEL);
        float *d = pm->w = aligned_alloc(64, np * K * PANEL * sizeof(float));
        if (!d) return err_set(EXIT_IO, "out_of_memory", "cannot allocate packed weights (%d x %d)", K, N);
        #pragma omp parallel for
        for (size_t p = 0; p < np; p++)
            for (int k = 0; k < K; k++)
                for (int i = 0; i < PANEL; i++) {
                    size_t j = p * PANEL + i;
                    d[(p * K + k) * PANEL + i] = j < (size_t)N ? w[k * ks + j * js] : 0.0f;
                }
        return 0;
    }
    if (fmt == PACK_BF16_AVX512 || fmt == PACK_BF16_AVX2) {
        size_t panel = fmt == PACK_BF16_AVX512 ? BF_PANEL : W_PANEL, np = div_up(N, panel);
        size_t kk = fmt == PACK_BF16_AVX512 ? div_up(K, 2) * 2 : (size_t)K;  // k pairs: K rounded up
        uint16_t *d = pm->w = aligned_alloc(64, div_up(np * kk * panel * sizeof(uint16_t), 64) * 64);
        if (!d) return err_set(EXIT_IO, "out_of_memory", "cannot allocate packed weights (%d x %d)", K, N);
        #pragma omp parallel for
        for (size_t p = 0; p < np; p++)
            for (size_t k = 0; k < kk; k++)
                for (size_t i = 0; i < panel; i++) {
                    size_t j = p * panel + i;
                    // AVX-512: [k/2][column][k%2]; AVX2: [k][column]
                    size_t at = fmt == PACK_BF16_AVX512 ? (p * kk + k / 2 * 2) * panel + i * 2 + k % 2
                                                        : (p * kk + k) * panel + i;
                    d[at] = k < (size_t)K && j < (size_t)N ? to_bf16(w[k * ks + j * js]) : 0;
                }
        return 0;
    }
    size_t KC = div_up(K, BLK), nb = div_up(N, BLK);
    uint16_t *d = pm->w = aligned_alloc(64, nb * KC * 2 * 512 * sizeof(uint16_t));
    if (!d) return err_set(EXIT_IO, "out_of_memory", "cannot allocate packed weights (%d x %d)", K, N);
    #pragma omp parallel for
    for (size_t jb = 0; jb < nb; jb++)
        for (size_t kc = 0; kc < KC; kc++)
            for (int t = 0; t < 2; t++)
                for (int kp = 0; kp < 16; kp++)
                    for (int col = 0; col < 16; col++)
                        for (int e = 0; e < 2; e++) {
                            size_t k = kc * BLK + 2 * kp + e, j = jb * BLK + t * 16 + col;
                            d[((jb * KC + kc) * 2 + t) * 512 + kp * 32 + col * 2 + e] =
                                k < (size_t)K && j < (size_t)N ? to_bf16(w[k * ks + j * js]) : 0;
                        }
    return 0;
}

void packed_free(PackedMatrix *pm) {
    free(pm->w);
    pm->w = NULL;
}

size_t packed_scratch_bytes(PackFormat fmt, int M, int K) {
    if (fmt == PACK_BF16_AVX512) return (size_t)M * div_up(K, 2) * sizeof(uint32_t);
    return fmt == PACK_BF16 ? div_up(M, BLK) * BLK * div_up(K, BLK) * BLK * sizeof(uint16_t) : 0;
}

void packed_matmul(float *out, const float *in, const PackedMatrix *pm, const float *bias, int M, void *scratch) {
    if (M <= 0) return;
#ifdef HAVE_AMX
    if (pm->fmt == PACK_BF16) { bf16_matmul(out, in, pm->w, bias, M, pm->K, pm->N, scratch); return; }
#endif
    if (pm->fmt == PACK_BF16_AVX512) { avx512bf16_matmul(out, in, pm->w, bias, M, pm->K, pm->N, scratch); return; }
    if (pm->fmt == PACK_BF16_AVX2) { avx2_matmul(out, in, pm->w, bias, M, pm->K, pm->N); return; }
    fp32_matmul(out, in, pm->w, bias, M, pm->K, pm->N);
}

PackedSet *packed_set_new(PackFormat fmt, int nmats, int max_k, int nbuf, const size_t *width,
                          int att_positions) {
    PackedSet *s = calloc(1, sizeof *s);
    if (!s) { err_set(EXIT_IO, "out_of_memory", "cannot allocate the generator"); return NULL; }
    s->fmt = fmt;
    s->max_k = max_k;
    s->nbuf = nbuf;
    memcpy(s->width, width, (size_t)nbuf * sizeof *width);
    s->nmats = nmats;
    s->mats = calloc((size_t)nmats, sizeof(PackedMatrix));
    s->att_stride = kvcache_scratch_floats(att_positions);
    s->att_scratch = malloc((size_t)omp_get_max_threads() * s->att_stride * sizeof(float));
    if (!s->mats || !s->att_scratch) {
        err_set(EXIT_IO, "out_of_memory", "cannot allocate the generator");
        packed_set_free(s);
        return NULL;
    }
    return s;
}

int packed_set_rows(PackedSet *s, size_t rows) {
    if (rows <= s->cap_rows) return 0;
    for (int i = 0; i < s->nbuf; i++) {
        float *p = realloc(s->buf[i], rows * s->width[i] * sizeof(float));
        if (!p) return err_set(EXIT_IO, "out_of_memory", "cannot allocate activations for %zu rows", rows);
        s->buf[i] = p;
    }
    size_t sb = packed_scratch_bytes(s->fmt, (int)rows, s->max_k);
    if (sb) {
        void *p = realloc(s->scratch, sb);
        if (!p) return err_set(EXIT_IO, "out_of_memory", "cannot allocate activations for %zu rows", rows);
        s->scratch = p;
    }
    s->cap_rows = rows;
    return 0;
}

void packed_set_free(void *state) {
    PackedSet *s = state;
    if (!s) return;
    for (int i = 0; s->mats && i < s->nmats; i++) packed_free(&s->mats[i]);
    for (int i = 0; i < s->nbuf; i++) free(s->buf[i]);
    free(s->mats);
    free(s->scratch);
    free(s->att_scratch);
    free(s);
}
