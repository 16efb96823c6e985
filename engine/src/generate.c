// Batched sampling for GPT-2 with a KV cache (llm.c style: flat buffers, plain loops; matrix
// products on weights packed once, packed.h).
// A step's rows are the prompt tokens of newly admitted requests plus one token per decoding
// slot; every row attends only to its own slot's cache, so prefill and decode share one pass.
#include "generate.h"
#include "packed.h"
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
    float *kv;          // per layer: keys [NH][cap/16][hs][16], then values [cap][C]
} Slot;

struct Generator {
    GPT2 *m;
    PackFormat fmt;
    PackedMatrix *mats;            // see pack_model
    int nmats;
    void *scratch;                 // packed_matmul's, sized with the rows
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
    float *head_in;     // [max_batch, C]
    float *logits;      // [max_batch, V]
    float *att_scratch; // [nthreads, att_stride]
    size_t att_stride;  // n_positions rounded up to 16
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

// ---- 16-lane vector helpers (GCC vector extensions: AVX-512 here, narrower vectors elsewhere).
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
static float exp_shift_sum(float *dst, const float *src, int n, float mx) {
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


// Every weight matrix packed once: per layer qkv, attention projection, fc, fc projection; then
// the tied LM head (wte transposed).
enum { MAT_QKV, MAT_ATTPROJ, MAT_FC, MAT_FCPROJ, MATS_PER_LAYER };

static int pack_model(Generator *g, PackFormat fmt) {
    const GPT2 *m = g->m;
    const GPT2Config *c = &m->cfg;
    int L = c->n_layer, C = c->n_embd, F = c->n_inner;
    g->nmats = L * MATS_PER_LAYER + 1;
    g->mats = calloc(g->nmats, sizeof(PackedMatrix));
    if (!g->mats) return err_set(EXIT_IO, "out_of_memory", "cannot allocate packed weights");
    for (int l = 0; l < L; l++) {
        PackedMatrix *pm = g->mats + l * MATS_PER_LAYER;
        if (packed_make(pm + MAT_QKV, fmt, m->param[P_QKVW] + (size_t)l * C * 3 * C, C, 3 * C, 3 * C, 1) ||
            packed_make(pm + MAT_ATTPROJ, fmt, m->param[P_ATTPROJW] + (size_t)l * C * C, C, C, C, 1) ||
            packed_make(pm + MAT_FC, fmt, m->param[P_FCW] + (size_t)l * C * F, C, F, F, 1) ||
            packed_make(pm + MAT_FCPROJ, fmt, m->param[P_FCPROJW] + (size_t)l * F * C, F, C, C, 1))
            return -1;
    }
    // logits = x @ wte^T: element (k = c, j = v) is wte[v*C + c]
    return packed_make(g->mats + L * MATS_PER_LAYER, fmt, m->param[P_WTE], C, c->vocab_size, 1, C);
}

static void linear(Generator *g, float *out, const float *in, int mat, const float *bias, int M) {
    packed_matmul(out, in, &g->mats[mat], bias, M, g->scratch);
}

Generator *gen_create(GPT2 *m, int max_batch, int prefill_budget, int bf16) {
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
    g->att_stride = (c->max_seq_len + 15) / 16 * 16;
    g->att_scratch = malloc((size_t)g->nthreads * g->att_stride * sizeof(float));
    g->cand_val = malloc((size_t)g->nthreads * V * sizeof(float));
    g->cand_idx = malloc((size_t)g->nthreads * V * sizeof(int));
    g->cand_order = malloc((size_t)g->nthreads * V * sizeof(int));
    if (!g->slots || !g->sample_slot || !g->sample_row || !g->sample_tok || !g->sample_lp ||
        !g->sample_top_lp || !g->sample_top_ids || !g->head_in || !g->logits || !g->att_scratch ||
        !g->cand_val || !g->cand_idx || !g->cand_order) {
        err_set(EXIT_IO, "out_of_memory", "cannot allocate the generator for %d sequences", max_batch);
        gen_free(g);
        return NULL;
    }
    g->fmt = bf16 ? PACK_BF16 : PACK_FP32;
    if ((bf16 && !packed_bf16_available()) || pack_model(g, g->fmt)) { gen_free(g); return NULL; }
    return g;
}

static void free_request(Request *r) {
    if (r) { free(r->prompt); free(r); }
}

void gen_free(Generator *g) {
    if (!g) return;
    for (int s = 0; g->slots && s < g->max_batch; s++) { free(g->slots[s].kv); free_request(g->slots[s].req); }
    for (Request *r = g->queue_head, *next; r; r = next) { next = r->next; free_request(r); }
    for (int i = 0; g->mats && i < g->nmats; i++) packed_free(&g->mats[i]);
    void *ps[] = {g->mats, g->scratch, g->slots, g->row_slot, g->row_pos, g->row_tok, g->x, g->ln, g->qkv, g->atty,
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
    size_t sb = packed_scratch_bytes(g->fmt, (int)n, F > C ? (int)F : (int)C);
    if (sb) {
        void *p = realloc(g->scratch, sb);
        if (!p) return err_set(EXIT_IO, "out_of_memory", "cannot allocate activations for %zu rows", n);
        g->scratch = p;
    }
    g->cap_rows = n;
    return 0;
}

// Keys are stored per head in blocks of 16 positions, transposed inside a block
// ([NH][cap/16][hs][16]): one head's scores for 16 positions are 16-lane products over one
// contiguous 4 KB block (for hs 64). Values stay [cap][C].
static float *slot_kt(const Generator *g, const Slot *s, int l) {
    return s->kv + (size_t)(2 * l) * s->cap * g->m->cfg.n_embd;
}
static float *slot_v(const Generator *g, const Slot *s, int l) {
    return s->kv + (size_t)(2 * l + 1) * s->cap * g->m->cfg.n_embd;
}
static void store_key(const Generator *g, Slot *s, int l, int pos, const float *k) {
    const GPT2Config *c = &g->m->cfg;
    int hs = c->n_embd / c->n_head;
    float *kt = slot_kt(g, s, l) + (size_t)(pos / 16) * hs * 16 + pos % 16;
    for (int h = 0; h < c->n_head; h++)
        for (int i = 0; i < hs; i++) kt[(size_t)h * s->cap * hs + (size_t)i * 16] = k[h * hs + i];
}

// Grows a slot's cache to hold n positions (doubling, a multiple of 16 up to n_positions rounded
// up), keeping its contents; unused positions are zero.
static int ensure_cache(Generator *g, Slot *s, int n) {
    if (n <= s->cap) return 0;
    const GPT2Config *c = &g->m->cfg;
    int most = (c->max_seq_len + 15) / 16 * 16, cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > most) cap = most;
    size_t C = c->n_embd, hs = C / c->n_head, blocks = (size_t)(s->len + 15) / 16;
    float *kv = calloc((size_t)2 * c->n_layer * cap * C, sizeof(float));
    if (!kv) return err_set(EXIT_IO, "out_of_memory", "cannot allocate a KV cache of %d positions", cap);
    for (int l = 0; l < c->n_layer && s->len > 0; l++) {
        const float *kt = slot_kt(g, s, l);
        for (int h = 0; h < c->n_head; h++)
            memcpy(kv + 2 * l * C * cap + h * cap * hs, kt + h * s->cap * hs, blocks * hs * 16 * sizeof(float));
        memcpy(kv + (size_t)(2 * l + 1) * cap * C, slot_v(g, s, l), (size_t)s->len * C * sizeof(float));
    }
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
    int max_top = GEN_MAX_TOP_LOGPROBS < c->vocab_size ? GEN_MAX_TOP_LOGPROBS : c->vocab_size;
    if (p->top_logprobs < 0 || p->top_logprobs > max_top)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_logprobs must be in [0, %d]", (long long)id, max_top);
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

// One row's causal attention over its slot's cache, positions 0..pos.
static void attend_rows(Generator *g, int l, int nrows) {
    const GPT2Config *c = &g->m->cfg;
    int C = c->n_embd, NH = c->n_head, hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for schedule(dynamic)
    for (int rh = 0; rh < nrows * NH; rh++) {
        int r = rh / NH, h = rh % NH, npos = g->row_pos[r] + 1;
        const Slot *s = &g->slots[g->row_slot[r]];
        const float *q = g->qkv + (size_t)r * 3 * C + h * hs;
        const float *kt = slot_kt(g, s, l) + (size_t)h * s->cap * hs, *v = slot_v(g, s, l) + h * hs;
        float *p = g->att_scratch + (size_t)omp_get_thread_num() * g->att_stride;
        for (int j0 = 0; j0 < npos; j0 += 16) {  // the cache holds whole 16-position blocks
            const float *blk = kt + (size_t)j0 * hs;
            v16 acc = {0};
            for (int i = 0; i < hs; i++) acc += q[i] * load16(blk + i * 16);
            acc *= scale;
            memcpy(p + j0, &acc, sizeof acc);
        }
        float mx = -INFINITY;
        for (int j = 0; j < npos; j++) if (p[j] > mx) mx = p[j];
        float inv = 1.0f / exp_shift_sum(p, p, npos, mx);
        float *out = g->atty + (size_t)r * C + h * hs;
        if (hs % 16 == 0 && hs <= 256) {  // accumulate in registers rather than through out
            v16 o[16] = {{0}};
            for (int j = 0; j < npos; j++) {
                const float *vj = v + (size_t)j * C;
                float a = p[j] * inv;
                for (int t = 0; t < hs / 16; t++) o[t] += a * load16(vj + 16 * t);
            }
            memcpy(out, o, (size_t)hs * sizeof(float));
        } else {
            for (int i = 0; i < hs; i++) out[i] = 0.0f;
            for (int j = 0; j < npos; j++) {
                const float *vj = v + (size_t)j * C;
                float a = p[j] * inv;
                for (int i = 0; i < hs; i++) out[i] += a * vj[i];
            }
        }
    }
}

// Forward of nrows rows (tokens at positions, written into their slots' caches), then logits
// for the nsample rows listed in sample_row.
static void forward_rows(Generator *g, int nrows, int nsample) {
    GPT2 *m = g->m;
    const GPT2Config *c = &m->cfg;
    int C = c->n_embd, F = c->n_inner, n = nrows;
    for (int r = 0; r < n; r++) {
        const float *te = m->param[P_WTE] + (size_t)g->row_tok[r] * C;
        const float *pe = m->param[P_WPE] + (size_t)g->row_pos[r] * C;
        for (int i = 0; i < C; i++) g->x[(size_t)r * C + i] = te[i] + pe[i];
    }
    for (int l = 0; l < c->n_layer; l++) {
        layernorm_forward(g->ln, NULL, NULL, g->x, m->param[P_LN1W] + (size_t)l * C,
                          m->param[P_LN1B] + (size_t)l * C, n, C, c->ln_eps);
        linear(g, g->qkv, g->ln, l * MATS_PER_LAYER + MAT_QKV, m->param[P_QKVB] + (size_t)l * 3 * C, n);
        for (int r = 0; r < n; r++) {
            Slot *s = &g->slots[g->row_slot[r]];
            const float *kv = g->qkv + (size_t)r * 3 * C;
            store_key(g, s, l, g->row_pos[r], kv + C);
            memcpy(slot_v(g, s, l) + (size_t)g->row_pos[r] * C, kv + 2 * C, C * sizeof(float));
        }
        attend_rows(g, l, n);
        linear(g, g->proj, g->atty, l * MATS_PER_LAYER + MAT_ATTPROJ, m->param[P_ATTPROJB] + (size_t)l * C, n);
        residual_forward(g->x, g->x, g->proj, n * C);
        layernorm_forward(g->ln, NULL, NULL, g->x, m->param[P_LN2W] + (size_t)l * C,
                          m->param[P_LN2B] + (size_t)l * C, n, C, c->ln_eps);
        linear(g, g->fch, g->ln, l * MATS_PER_LAYER + MAT_FC, m->param[P_FCB] + (size_t)l * F, n);
        gelu_forward(g->fch, g->fch, n * F);
        linear(g, g->proj, g->fch, l * MATS_PER_LAYER + MAT_FCPROJ, m->param[P_FCPROJB] + (size_t)l * C, n);
        residual_forward(g->x, g->x, g->proj, n * C);
    }
    for (int i = 0; i < nsample; i++)
        memcpy(g->head_in + (size_t)i * C, g->x + (size_t)g->sample_row[i] * C, C * sizeof(float));
    layernorm_forward(g->head_in, NULL, NULL, g->head_in, m->param[P_LNFW], m->param[P_LNFB],
                      nsample, C, c->ln_eps);
    linear(g, g->logits, g->head_in, c->n_layer * MATS_PER_LAYER, NULL, nsample);  // tied LM head
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
// order of Hugging Face and vLLM). val/idx/order are V-sized scratch. Returns -1 when a logit is
// NaN or infinite (a broken model): no distribution to sample, and the nucleus could be empty.
static int sample_token(const float *z, int V, const GenParams *p, uint64_t *rng, float *val,
                        int *idx, int *order) {
    for (int i = 0; i < V; i++) if (!isfinite(z[i])) return -1;
    if (p->temperature == 0.0f || p->top_k == 1) {
        int best = 0;
        for (int i = 1; i < V; i++) if (z[i] > z[best]) best = i;
        return best;
    }
    int n = V;
    // Shift before scaling: (z - zmax) / T is <= 0 and finite or -inf, never NaN, however small T.
    float zmax = -INFINITY;
    for (int i = 0; i < V; i++) if (z[i] > zmax) zmax = z[i];
    for (int i = 0; i < V; i++) { val[i] = (z[i] - zmax) / p->temperature; idx[i] = i; }
    if (p->top_k > 0 && p->top_k < V) n = select_top(val, idx, V, p->top_k);
    double sum = exp_shift_sum(val, val, n, 0.0f);
    int m = 0;
    if (p->top_p < 1.0f && n > 1) {
        // Tokens below (1-top_p)/(n-1) of the mass cannot be in the nucleus: drop them before
        // sorting (llama2.c's trick), then keep the smallest prefix reaching top_p of the mass.
        // The best token's weight is exactly 1 after the shift: capping the cutoff there keeps it.
        double cutoff = (1.0 - p->top_p) / (n - 1) * sum;
        if (cutoff > 1.0) cutoff = 1.0;
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
    float lse = mx + logf(exp_shift_sum(NULL, z, V, mx));
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
        g->sample_lp[i] = p->logprobs && tok >= 0 ? token_logprobs(z, V, tok, p->top_logprobs, g->cand_val + t, g->cand_idx + t,
                                                       g->sample_top_ids + i * GEN_MAX_TOP_LOGPROBS,
                                                       g->sample_top_lp + i * GEN_MAX_TOP_LOGPROBS)
                                      : NAN;
    }
    for (int i = 0; i < nsample; i++) {
        Slot *s = &g->slots[g->sample_slot[i]];
        const GenParams *p = &s->req->p;
        int tok = g->sample_tok[i];
        if (tok < 0) { finish(g, s, GEN_FINISH_NONFINITE, -1, on_done, ctx); continue; }
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
