// Weight matrices packed once for generation's matrix products, out[M,N] = in[M,K] @ W[K,N].
// Each output element is one fixed sequence of operations over k whatever M is and wherever its
// row sits, so a sequence's numbers do not depend on the rest of the batch (a BLAS sgemm picks
// kernels by shape and does not promise that), and no weights are repacked per call (OpenBLAS
// repacks them on every small-M call, which cost more than the arithmetic in decode steps).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum {
    PACK_FP32,         // fp32 panels of 64 columns, AVX-512 (or generic vector) FMAs: exact fp32
    PACK_BF16,         // bf16 AMX tiles (weights and activations rounded to bf16, fp32 accumulation)
    PACK_BF16_AVX512,  // bf16 k-pair panels for AVX-512-BF16's vdpbf16ps (same rounding as AMX)
    PACK_BF16_AVX2,    // bf16 weight panels widened to fp32 for AVX2 FMAs (fp32 activations)
} PackFormat;

typedef struct {
    PackFormat fmt;
    int K, N;
    void *w;
} PackedMatrix;

// The bf16 format for this CPU, detected at run time: AMX (when built in and the OS grants tile
// state), else AVX-512-BF16, else AVX2 with FMA. OPSR_CPU_ISA=amx|avx512bf16|avx2 picks one (to
// test each path; refused where the CPU lacks it). Returns 0, or -1 with err_set
// (bf16_unavailable, or bad_env for an unknown OPSR_CPU_ISA).
int packed_bf16_format(PackFormat *fmt);
// Name of a format for logs: fp32, amx, avx512bf16, avx2.
const char *packed_format_name(PackFormat fmt);
// Packs W, whose element (k, j) is w[k*ks + j*js]. Returns 0 or -1 (err_set).
int packed_make(PackedMatrix *pm, PackFormat fmt, const float *w, int K, int N, size_t ks, size_t js);
void packed_free(PackedMatrix *pm);
// Bytes of scratch packed_matmul needs for M rows of K inputs (0 for fp32).
size_t packed_scratch_bytes(PackFormat fmt, int M, int K);
// out[M,N] = in[M,K] @ W (+ bias[N] when not NULL).
void packed_matmul(float *out, const float *in, const PackedMatrix *pm, const float *bias, int M, void *scratch);

// A model's matrices packed for generation, with packed_matmul's scratch, the row buffers of a
// step (nbuf buffers of width[i] floats per row, grown with the rows) and per-thread scratch for
// attention over KV caches of up to att_positions positions: an architecture's generation state.
#define PACKED_MAX_BUFS 12
typedef struct {
    PackFormat fmt;
    PackedMatrix *mats;
    int nmats;
    int max_k;                      // largest K of the products (scratch sizing)
    void *scratch;
    size_t cap_rows;
    int nbuf;
    size_t width[PACKED_MAX_BUFS];
    float *buf[PACKED_MAX_BUFS];
    float *att_scratch;             // [nthreads, att_stride]
    size_t att_stride;
} PackedSet;
// NULL with err_set on failure; the matrices are then packed into s->mats by the caller.
PackedSet *packed_set_new(PackFormat fmt, int nmats, int max_k, int nbuf, const size_t *width,
                          int att_positions);
int packed_set_rows(PackedSet *s, size_t rows);
// Frees a PackedSet (and its matrices); takes void * to serve as ModelOps.gen_free.
void packed_set_free(void *s);
