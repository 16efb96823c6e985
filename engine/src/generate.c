// Batched sampling for GPT-2 with a KV cache (llm.c style: flat buffers, plain loops, BLAS).
// A step's rows are the prompt tokens of newly admitted requests plus one token per decoding
// slot; every row attends only to its own slot's cache, so prefill and decode share one pass.
#include "generate.h"
#include "cpu/kernels.h"
#include "util.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct Request {
    int64_t id;
    int *prompt;
    int prompt_len;
    GenParams p;
    struct Request *next;
} Request;

typedef struct {
    Request *req;       // NULL when the slot is free
    uint64_t rng;
    int len;            // tokens in the cache
    int generated;      // tokens sampled so far (stop token included)
    int next_token;     // sampled, not yet in the cache
    int cap;            // cache capacity in positions
    float *kv;          // [L][2][cap][C]: keys then values per layer
} Slot;

struct Generator {
    GPT2 *m;
    float *packed;                 // one 64-byte aligned block holding every packed matrix
    float **qkvw, **attprojw, **fcw, **fcprojw;  // [L] views into packed
    float *wte_t;                  // the tied LM head, packed from wte transposed
    int max_batch, prefill_budget, nthreads;
    Slot *slots;
    Request *queue_head, *queue_tail;
    int queued;
    // per-step rows, sized for cap_rows
    size_t cap_rows;
    int *row_slot, *row_pos, *row_tok;
    float *x, *ln, *qkv, *atty, *proj, *fch;
    // sampling rows: one per slot that samples this step
    int *sample_slot, *sample_row, *sample_tok;
    float *sample_lp, *sample_top_lp;
    int *sample_top_ids;
    float *head_in;     // [max_batch rounded up, C]
    float *logits;      // [max_batch rounded up, V]
    float *att_scratch; // [nthreads, P]
    float *cand_val;    // [nthreads, V]
    int *cand_idx;      // [nthreads, V]
    int *cand_order;    // [nthreads, V]
};

static uint64_t rng_next(uint64_t *s) {  // splitmix64
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

// ---- matrix products for generation --------------------------------------------------------
// out[M,N] = in[M,K] @ W[K,N] (+ bias) with W packed once into panels of PANEL columns stored
// [K][PANEL], so each panel streams contiguously and stays in L2 while every row tile uses it.
// Each output element is one fixed sequence of multiply-adds over k, whatever M is and wherever
// the row sits: a sequence's numbers do not depend on the rest of the batch (a BLAS sgemm picks
// kernels by shape and does not promise that), and no weights are repacked per call (OpenBLAS
// repacks them on every small-M call, which cost more than the arithmetic here).
#define PANEL 64
#define TILE_M 6
typedef float v16 __attribute__((vector_size(64)));
#ifdef __AVX512F__
#include <immintrin.h>
#define FMA16(acc, a, w) ((acc) = (v16)_mm512_fmadd_ps(_mm512_set1_ps(a), (__m512)(w), (__m512)(acc)))
#else
#define FMA16(acc, a, w) ((acc) += (a) * (w))
#endif

static size_t panels_of(int n) { return (size_t)(n + PANEL - 1) / PANEL; }

// Packs W (element (k, j) at w[k*ks + j*js]) of shape [K, N] into dst; padding columns are 0.
static void pack_panels(float *dst, const float *w, int K, int N, size_t ks, size_t js) {
    #pragma omp parallel for
    for (size_t p = 0; p < panels_of(N); p++)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < PANEL; i++) {
                size_t j = p * PANEL + i;
                dst[(p * K + k) * PANEL + i] = j < (size_t)N ? w[k * ks + j * js] : 0.0f;
            }
}

// One tile of MR rows by one panel; MR is a constant in each inlined copy, so the accumulators
// live in registers (and every copy does the same fused multiply-adds).
static inline __attribute__((always_inline)) void gemm_tile(float *out, const float *in,
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

static void gemm_packed(float *out, const float *in, const float *packed, const float *bias,
                        int M, int K, int N) {
    int np = (int)panels_of(N);
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        const float *wp = packed + (size_t)p * K * PANEL;
        int j0 = p * PANEL, nc = N - j0 < PANEL ? N - j0 : PANEL;
        for (int m0 = 0; m0 < M; m0 += TILE_M) {
            float *o = out + (size_t)m0 * N;
            const float *x = in + (size_t)m0 * K;
            switch (M - m0 < TILE_M ? M - m0 : TILE_M) {
                case 1: gemm_tile(o, x, wp, bias, K, N, j0, nc, 1); break;
                case 2: gemm_tile(o, x, wp, bias, K, N, j0, nc, 2); break;
                case 3: gemm_tile(o, x, wp, bias, K, N, j0, nc, 3); break;
                case 4: gemm_tile(o, x, wp, bias, K, N, j0, nc, 4); break;
                case 5: gemm_tile(o, x, wp, bias, K, N, j0, nc, 5); break;
                default: gemm_tile(o, x, wp, bias, K, N, j0, nc, TILE_M); break;
            }
        }
    }
}

// Packs every weight matrix of the model (about the size of the model again).
static int pack_model(Generator *g) {
    const GPT2 *m = g->m;
    const GPT2Config *c = &m->cfg;
    int L = c->n_layer, C = c->n_embd, F = c->n_inner, V = c->vocab_size;
    size_t per_layer = (panels_of(3 * C) + panels_of(C)) * C * PANEL + panels_of(F) * C * PANEL + panels_of(C) * F * PANEL;
    size_t total = per_layer * L + panels_of(V) * C * PANEL;
    g->packed = aligned_alloc(64, total * sizeof(float));
    g->qkvw = malloc(4 * (size_t)L * sizeof(float *));
    if (!g->packed || !g->qkvw) return err_set(EXIT_IO, "out_of_memory", "cannot allocate %zu MB for packed weights", total * 4 >> 20);
    g->attprojw = g->qkvw + L; g->fcw = g->attprojw + L; g->fcprojw = g->fcw + L;
    float *p = g->packed;
    for (int l = 0; l < L; l++) {
        g->qkvw[l] = p;
        pack_panels(p, m->param[P_QKVW] + (size_t)l * C * 3 * C, C, 3 * C, 3 * C, 1);
        p += panels_of(3 * C) * C * PANEL;
        g->attprojw[l] = p;
        pack_panels(p, m->param[P_ATTPROJW] + (size_t)l * C * C, C, C, C, 1);
        p += panels_of(C) * C * PANEL;
        g->fcw[l] = p;
        pack_panels(p, m->param[P_FCW] + (size_t)l * C * F, C, F, F, 1);
        p += panels_of(F) * C * PANEL;
        g->fcprojw[l] = p;
        pack_panels(p, m->param[P_FCPROJW] + (size_t)l * F * C, F, C, C, 1);
        p += panels_of(C) * F * PANEL;
    }
    g->wte_t = p;  // logits = x @ wte^T: element (k=c, j=v) is wte[v*C + c]
    pack_panels(p, m->param[P_WTE], C, V, 1, C);
    return 0;
}

Generator *gen_create(GPT2 *m, int max_batch, int prefill_budget) {
    Generator *g = calloc(1, sizeof(Generator));
    if (!g) return NULL;
    const GPT2Config *c = &m->cfg;
    size_t B = max_batch, V = c->vocab_size;
    g->m = m;
    g->max_batch = max_batch;
    g->prefill_budget = prefill_budget;
    g->nthreads = omp_get_max_threads();
    g->slots = calloc(max_batch, sizeof(Slot));
    g->sample_slot = malloc(B * sizeof(int));
    g->sample_row = malloc(B * sizeof(int));
    g->sample_tok = malloc(B * sizeof(int));
    g->sample_lp = malloc(B * sizeof(float));
    g->sample_top_lp = malloc(B * GEN_MAX_TOP_LOGPROBS * sizeof(float));
    g->sample_top_ids = malloc(B * GEN_MAX_TOP_LOGPROBS * sizeof(int));
    g->head_in = calloc(B * c->n_embd, sizeof(float));
    g->logits = malloc(B * V * sizeof(float));
    g->att_scratch = malloc((size_t)g->nthreads * c->max_seq_len * sizeof(float));
    g->cand_val = malloc((size_t)g->nthreads * V * sizeof(float));
    g->cand_idx = malloc((size_t)g->nthreads * V * sizeof(int));
    g->cand_order = malloc((size_t)g->nthreads * V * sizeof(int));
    if (!g->slots || !g->sample_slot || !g->sample_row || !g->sample_tok || !g->sample_lp ||
        !g->sample_top_lp || !g->sample_top_ids || !g->head_in || !g->logits || !g->att_scratch ||
        !g->cand_val || !g->cand_idx || !g->cand_order) {
        gen_free(g);
        return NULL;
    }
    if (pack_model(g)) { gen_free(g); return NULL; }
    return g;
}

static void free_request(Request *r) {
    if (r) { free(r->prompt); free(r); }
}

void gen_free(Generator *g) {
    if (!g) return;
    for (int s = 0; g->slots && s < g->max_batch; s++) { free(g->slots[s].kv); free_request(g->slots[s].req); }
    for (Request *r = g->queue_head, *next; r; r = next) { next = r->next; free_request(r); }
    void *ps[] = {g->packed, g->qkvw, g->slots, g->row_slot, g->row_pos, g->row_tok, g->x, g->ln, g->qkv, g->atty,
                  g->proj, g->fch, g->sample_slot, g->sample_row, g->sample_tok, g->sample_lp,
                  g->sample_top_lp, g->sample_top_ids, g->head_in, g->logits, g->att_scratch,
                  g->cand_val, g->cand_idx, g->cand_order};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    free(g);
}

static int ensure_rows(Generator *g, size_t n) {
    if (n <= g->cap_rows) return 0;
    const GPT2Config *c = &g->m->cfg;
    size_t C = c->n_embd, F = c->n_inner;
    void **bufs[] = {(void **)&g->row_slot, (void **)&g->row_pos, (void **)&g->row_tok,
                     (void **)&g->x, (void **)&g->ln, (void **)&g->qkv, (void **)&g->atty,
                     (void **)&g->proj, (void **)&g->fch};
    size_t sizes[] = {sizeof(int), sizeof(int), sizeof(int), C * 4, C * 4, 3 * C * 4, C * 4,
                      C * 4, F * 4};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        void *p = realloc(*bufs[i], n * sizes[i]);
        if (!p) return err_set(EXIT_IO, "out_of_memory", "cannot allocate activations for %zu rows", n);
        *bufs[i] = p;
    }
    g->cap_rows = n;
    return 0;
}

static float *slot_k(const Generator *g, const Slot *s, int l) {
    return s->kv + (size_t)(2 * l) * s->cap * g->m->cfg.n_embd;
}
static float *slot_v(const Generator *g, const Slot *s, int l) {
    return s->kv + (size_t)(2 * l + 1) * s->cap * g->m->cfg.n_embd;
}

// Grows a slot's cache to hold n positions (doubling, at most n_positions), keeping its contents.
static int ensure_cache(Generator *g, Slot *s, int n) {
    if (n <= s->cap) return 0;
    const GPT2Config *c = &g->m->cfg;
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > c->max_seq_len) cap = c->max_seq_len;
    size_t C = c->n_embd;
    float *kv = malloc((size_t)2 * c->n_layer * cap * C * sizeof(float));
    if (!kv) return err_set(EXIT_IO, "out_of_memory", "cannot allocate a KV cache of %d positions", cap);
    for (int i = 0; i < 2 * c->n_layer && s->len > 0; i++)
        memcpy(kv + (size_t)i * cap * C, s->kv + (size_t)i * s->cap * C, (size_t)s->len * C * sizeof(float));
    free(s->kv);
    s->kv = kv;
    s->cap = cap;
    return 0;
}

int gen_submit(Generator *g, int64_t id, const int *prompt, int prompt_len, const GenParams *p) {
    const GPT2Config *c = &g->m->cfg;
    if (id < 0) return err_set(EXIT_BAD_INPUT, "bad_request", "id must be a non-negative integer");
    if (prompt_len < 1) return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: prompt must hold at least one token", (long long)id);
    if (prompt_len >= c->max_seq_len)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: prompt has %d tokens; the context holds %d, so at most %d are allowed",
                       (long long)id, prompt_len, c->max_seq_len, c->max_seq_len - 1);
    for (int i = 0; i < prompt_len; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: prompt[%d] = %d is not a token id in [0, %d)",
                           (long long)id, i, prompt[i], c->vocab_size);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: temperature must be a finite number >= 0", (long long)id);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_p must be in (0, 1]", (long long)id);
    if (p->top_k < 0) return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_k must be >= 0 (0 = off)", (long long)id);
    if (p->max_tokens < 1) return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: max_tokens must be >= 1", (long long)id);
    if (p->top_logprobs < 0 || p->top_logprobs > GEN_MAX_TOP_LOGPROBS)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_logprobs must be in [0, %d]", (long long)id, GEN_MAX_TOP_LOGPROBS);
    if (p->n_stop < 0 || p->n_stop > GEN_MAX_STOP_IDS)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: at most %d stop token ids", (long long)id, GEN_MAX_STOP_IDS);
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= c->vocab_size)
            return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: stop_token_ids[%d] = %d is not a token id in [0, %d)",
                           (long long)id, i, p->stop_ids[i], c->vocab_size);
    Request *r = calloc(1, sizeof(Request));
    if (!r || !(r->prompt = malloc((size_t)prompt_len * sizeof(int)))) {
        free(r);
        return err_set(EXIT_IO, "out_of_memory", "request %lld: cannot queue the prompt", (long long)id);
    }
    memcpy(r->prompt, prompt, (size_t)prompt_len * sizeof(int));
    r->id = id;
    r->prompt_len = prompt_len;
    r->p = *p;
    if (g->queue_tail) g->queue_tail->next = r; else g->queue_head = r;
    g->queue_tail = r;
    g->queued++;
    return 0;
}

static void release_slot(Slot *s) {
    free_request(s->req);
    s->req = NULL;
    s->len = s->generated = 0;
}

int gen_cancel(Generator *g, int64_t id, gen_done_fn on_done, void *ctx) {
    for (Request **pp = &g->queue_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        Request *r = *pp;
        if (r->id != id) continue;
        *pp = r->next;
        if (g->queue_tail == r) g->queue_tail = prev;
        g->queued--;
        on_done(ctx, id, GEN_FINISH_CANCELLED, -1, r->prompt_len, 0);
        free_request(r);
        return 0;
    }
    for (int i = 0; i < g->max_batch; i++) {
        Slot *s = &g->slots[i];
        if (!s->req || s->req->id != id) continue;
        on_done(ctx, id, GEN_FINISH_CANCELLED, -1, s->req->prompt_len, s->generated);
        release_slot(s);
        return 0;
    }
    return -1;
}

int gen_pending(const Generator *g) {
    int n = g->queued;
    for (int i = 0; i < g->max_batch; i++) n += g->slots[i].req != NULL;
    return n;
}

static inline v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }

// Dot product in 16 lanes then one fixed-order sum (C forbids the compiler reordering a scalar
// reduction, which would leave it unvectorized).
static float dot(const float *a, const float *b, int n) {
    int i = 0;
    float sum = 0.0f;
    if (n >= 16) {
        v16 acc = {0};
        for (; i + 16 <= n; i += 16) acc += load16(a + i) * load16(b + i);
        for (int t = 0; t < 16; t++) sum += acc[t];
    }
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// GPT-2's gelu_new for generation, 16 lanes at a time: 0.5x(1 + tanh(u)) = x / (1 + exp(-2u)),
// with a Cephes-style polynomial exp (about 2 ulp). libm's scalar tanhf made gelu a fifth of a
// decode step; this is within float rounding of it (greedy parity with transformers holds).
typedef int32_t vi16 __attribute__((vector_size(64)));
static inline v16 select16(vi16 mask, v16 a, v16 b) { return (v16)(((vi16)a & mask) | ((vi16)b & ~mask)); }
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

static void gelu16(float *x, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i += 16) {
        v16 v = {0};
        size_t m = n - i < 16 ? n - i : 16;
        memcpy(&v, x + i, m * sizeof(float));
        v16 u = (v + 0.044715f * v * v * v) * 0.7978845608028654f;
        v = v / (1.0f + exp16(-2.0f * u));
        memcpy(x + i, &v, m * sizeof(float));
    }
}

// One row's causal attention over its slot's cache, positions 0..pos.
static void attend_rows(Generator *g, int l, int nrows) {
    const GPT2Config *c = &g->m->cfg;
    int C = c->n_embd, NH = c->n_head, hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for schedule(dynamic)
    for (int rh = 0; rh < nrows * NH; rh++) {
        int r = rh / NH, h = rh % NH, pos = g->row_pos[r];
        const Slot *s = &g->slots[g->row_slot[r]];
        const float *q = g->qkv + (size_t)r * 3 * C + h * hs;
        const float *k = slot_k(g, s, l) + h * hs, *v = slot_v(g, s, l) + h * hs;
        float *p = g->att_scratch + (size_t)omp_get_thread_num() * c->max_seq_len;
        float mx = -INFINITY;
        for (int j = 0; j <= pos; j++) {
            p[j] = dot(q, k + (size_t)j * C, hs) * scale;
            if (p[j] > mx) mx = p[j];
        }
        float sum = 0.0f;
        for (int j = 0; j <= pos; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
        float inv = 1.0f / sum;
        float *out = g->atty + (size_t)r * C + h * hs;
        for (int i = 0; i < hs; i++) out[i] = 0.0f;
        for (int j = 0; j <= pos; j++) {
            const float *vj = v + (size_t)j * C;
            float a = p[j] * inv;
            for (int i = 0; i < hs; i++) out[i] += a * vj[i];
        }
    }
}

// Forward of nrows rows (tokens at positions, written into their slots' caches), then logits
// for the nsample rows listed in sample_row.
static void forward_rows(Generator *g, int nrows, int nsample) {
    GPT2 *m = g->m;
    const GPT2Config *c = &m->cfg;
    int C = c->n_embd, F = c->n_inner, V = c->vocab_size, n = nrows;
    for (int r = 0; r < n; r++) {
        const float *te = m->param[P_WTE] + (size_t)g->row_tok[r] * C;
        const float *pe = m->param[P_WPE] + (size_t)g->row_pos[r] * C;
        for (int i = 0; i < C; i++) g->x[(size_t)r * C + i] = te[i] + pe[i];
    }
    for (int l = 0; l < c->n_layer; l++) {
        layernorm_forward(g->ln, NULL, NULL, g->x, m->param[P_LN1W] + (size_t)l * C,
                          m->param[P_LN1B] + (size_t)l * C, n, C, c->ln_eps);
        gemm_packed(g->qkv, g->ln, g->qkvw[l], m->param[P_QKVB] + (size_t)l * 3 * C, n, C, 3 * C);
        for (int r = 0; r < n; r++) {
            Slot *s = &g->slots[g->row_slot[r]];
            const float *kv = g->qkv + (size_t)r * 3 * C;
            memcpy(slot_k(g, s, l) + (size_t)g->row_pos[r] * C, kv + C, C * sizeof(float));
            memcpy(slot_v(g, s, l) + (size_t)g->row_pos[r] * C, kv + 2 * C, C * sizeof(float));
        }
        attend_rows(g, l, n);
        gemm_packed(g->proj, g->atty, g->attprojw[l], m->param[P_ATTPROJB] + (size_t)l * C, n, C, C);
        residual_forward(g->x, g->x, g->proj, n * C);
        layernorm_forward(g->ln, NULL, NULL, g->x, m->param[P_LN2W] + (size_t)l * C,
                          m->param[P_LN2B] + (size_t)l * C, n, C, c->ln_eps);
        gemm_packed(g->fch, g->ln, g->fcw[l], m->param[P_FCB] + (size_t)l * F, n, C, F);
        gelu16(g->fch, (size_t)n * F);
        gemm_packed(g->proj, g->fch, g->fcprojw[l], m->param[P_FCPROJB] + (size_t)l * C, n, F, C);
        residual_forward(g->x, g->x, g->proj, n * C);
    }
    for (int i = 0; i < nsample; i++)
        memcpy(g->head_in + (size_t)i * C, g->x + (size_t)g->sample_row[i] * C, C * sizeof(float));
    layernorm_forward(g->head_in, NULL, NULL, g->head_in, m->param[P_LNFW], m->param[P_LNFB],
                      nsample, C, c->ln_eps);
    gemm_packed(g->logits, g->head_in, g->wte_t, NULL, nsample, C, V);  // tied LM head
}

// Ranking of candidates: higher value first, lower id on ties (as torch.argmax / topk pick).
static int better(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

// Keeps in (val, idx)[0..k) the k best of n candidates, best first (bounded insertion: k is small
// for reporting and typical top_k; the heap-free loop is O(n k) worst case, O(n) typical).
static int select_top(float *val, int *idx, int n, int k) {
    if (k >= n) k = n;
    int have = 0;
    for (int i = 0; i < n; i++) {
        float v = val[i];
        int id = idx[i];
        if (have == k && !better(v, id, val[k - 1], idx[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && better(v, id, val[j - 1], idx[j - 1])) { val[j] = val[j - 1]; idx[j] = idx[j - 1]; j--; }
        val[j] = v; idx[j] = id;
    }
    return k;
}

// Orders candidate positions by (probability desc, token id asc).
typedef struct { const float *val; const int *idx; } CandSet;
static int cmp_cand(const void *a, const void *b, void *set) {
    const CandSet *cs = set;
    int pa = *(const int *)a, pb = *(const int *)b;
    if (better(cs->val[pa], cs->idx[pa], cs->val[pb], cs->idx[pb])) return -1;
    return better(cs->val[pb], cs->idx[pb], cs->val[pa], cs->idx[pa]) ? 1 : 0;
}

// Samples one token from logits z for parameters p: temperature, then top_k, then top_p (the
// order of Hugging Face and vLLM). val/idx/order are V-sized scratch.
static int sample_token(const float *z, int V, const GenParams *p, uint64_t *rng, float *val,
                        int *idx, int *order) {
    if (p->temperature == 0.0f || p->top_k == 1) {
        int best = 0;
        for (int i = 1; i < V; i++) if (z[i] > z[best]) best = i;
        return best;
    }
    int n = V;
    for (int i = 0; i < V; i++) { val[i] = z[i] / p->temperature; idx[i] = i; }
    if (p->top_k > 0 && p->top_k < V) n = select_top(val, idx, V, p->top_k);
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) if (val[i] > mx) mx = val[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) { val[i] = expf(val[i] - mx); sum += val[i]; }
    int m = 0;
    if (p->top_p < 1.0f && n > 1) {
        // Tokens below (1-top_p)/(n-1) of the mass cannot be in the nucleus: drop them before
        // sorting (llama2.c's trick), then keep the smallest prefix reaching top_p of the mass.
        double cutoff = (1.0 - p->top_p) / (n - 1) * sum;
        for (int i = 0; i < n; i++) if (val[i] >= cutoff) order[m++] = i;
        CandSet cs = {val, idx};
        qsort_r(order, m, sizeof(int), cmp_cand, &cs);
        double acc = 0.0;
        for (int i = 0; i < m; i++) {
            acc += val[order[i]];
            if (acc >= p->top_p * sum) { m = i + 1; break; }
        }
        sum = acc;
    } else {
        for (int i = 0; i < n; i++) order[m++] = i;
    }
    double u = rng_uniform(rng) * sum, acc = 0.0;
    for (int i = 0; i < m; i++) {
        acc += val[order[i]];
        if (u < acc) return idx[order[i]];
    }
    return idx[order[m - 1]];
}

// Log-prob of token under the raw logits, and the ntop most likely tokens with theirs.
static float token_logprobs(const float *z, int V, int token, int ntop, float *val, int *idx,
                            int *top_ids, float *top_lp) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) if (z[i] > mx) mx = z[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += expf(z[i] - mx);
    float lse = mx + (float)log(sum);
    if (ntop > 0) {
        for (int i = 0; i < V; i++) { val[i] = z[i]; idx[i] = i; }
        select_top(val, idx, V, ntop);
        for (int i = 0; i < ntop; i++) { top_ids[i] = idx[i]; top_lp[i] = val[i] - lse; }
    }
    return z[token] - lse;
}

static void finish(Generator *g, Slot *s, GenFinish f, int stop_token, gen_done_fn on_done, void *ctx) {
    on_done(ctx, s->req->id, f, stop_token, s->req->prompt_len, s->generated);
    release_slot(s);
}

int gen_step(Generator *g, gen_token_fn on_token, gen_done_fn on_done, void *ctx) {
    const GPT2Config *c = &g->m->cfg;
    int V = c->vocab_size, nrows = 0, nsample = 0, prefill = 0;
    // Decoding slots first, then admissions in queue order (at least one per step when a slot is
    // free, more while the prefill budget lasts).
    for (int i = 0; i < g->max_batch; i++) {
        Slot *s = &g->slots[i];
        if (!s->req) continue;
        if (ensure_cache(g, s, s->len + 1) || ensure_rows(g, nrows + 1)) return -1;
        g->row_slot[nrows] = i; g->row_pos[nrows] = s->len; g->row_tok[nrows] = s->next_token;
        g->sample_slot[nsample] = i; g->sample_row[nsample++] = nrows++;
        s->len++;
    }
    for (int i = 0; i < g->max_batch && g->queue_head; i++) {
        Slot *s = &g->slots[i];
        Request *r = g->queue_head;
        if (s->req) continue;
        if (prefill > 0 && prefill + r->prompt_len > g->prefill_budget) break;
        if (ensure_cache(g, s, r->prompt_len) || ensure_rows(g, nrows + r->prompt_len)) return -1;
        g->queue_head = r->next;
        if (!g->queue_head) g->queue_tail = NULL;
        g->queued--;
        r->next = NULL;
        s->req = r;
        s->rng = r->p.seed;
        s->len = r->prompt_len;
        s->generated = 0;
        for (int t = 0; t < r->prompt_len; t++) {
            g->row_slot[nrows] = i; g->row_pos[nrows] = t; g->row_tok[nrows++] = r->prompt[t];
        }
        g->sample_slot[nsample] = i; g->sample_row[nsample++] = nrows - 1;
        prefill += r->prompt_len;
    }
    if (nsample == 0) return 0;
    forward_rows(g, nrows, nsample);

    #pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < nsample; i++) {
        Slot *s = &g->slots[g->sample_slot[i]];
        const GenParams *p = &s->req->p;
        const float *z = g->logits + (size_t)i * V;
        size_t t = (size_t)omp_get_thread_num() * V;
        int tok = sample_token(z, V, p, &s->rng, g->cand_val + t, g->cand_idx + t, g->cand_order + t);
        g->sample_tok[i] = tok;
        g->sample_lp[i] = p->logprobs ? token_logprobs(z, V, tok, p->top_logprobs, g->cand_val + t, g->cand_idx + t,
                                                       g->sample_top_ids + i * GEN_MAX_TOP_LOGPROBS,
                                                       g->sample_top_lp + i * GEN_MAX_TOP_LOGPROBS)
                                      : NAN;
    }
    for (int i = 0; i < nsample; i++) {
        Slot *s = &g->slots[g->sample_slot[i]];
        const GenParams *p = &s->req->p;
        int tok = g->sample_tok[i];
        s->generated++;
        s->next_token = tok;
        int stop = 0;
        for (int j = 0; j < p->n_stop; j++) stop |= p->stop_ids[j] == tok;
        if (stop) { finish(g, s, GEN_FINISH_STOP, tok, on_done, ctx); continue; }
        on_token(ctx, s->req->id, tok, g->sample_lp[i], p->logprobs ? p->top_logprobs : 0,
                 g->sample_top_ids + i * GEN_MAX_TOP_LOGPROBS, g->sample_top_lp + i * GEN_MAX_TOP_LOGPROBS);
        if (s->generated >= p->max_tokens || s->len + 1 >= c->max_seq_len)  // prompt + completion fill the context
            finish(g, s, GEN_FINISH_LENGTH, -1, on_done, ctx);
    }
    return nsample;
}
