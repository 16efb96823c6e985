// Batched sampling with a KV cache per sequence for any architecture of the model seam (the
// model's gen_forward runs a step's rows; its matrix products use weights packed once).
// A step's rows are the prompt tokens of newly admitted requests plus one token per decoding
// slot; every row attends only to its own slot's cache, so prefill and decode share one pass.
#include "generate.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"
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
    float *kv;          // the KV cache of all layers (cpu/kernels.h, kvcache_*)
} Slot;

struct Generator {
    Model *m;
    PackFormat fmt;
    void *state;                   // the architecture's packed weights and row buffers
    int max_batch, prefill_budget, nthreads;
    Slot *slots;
    Request *queue_head, *queue_tail;
    int queued;
    // per-step rows, sized for cap_rows
    size_t cap_rows;
    int *row_slot, *row_pos, *row_tok, *row_cap;
    float **row_cache;
    // sampling rows: one per slot that samples this step
    int *sample_slot, *sample_row, *sample_tok;
    float *sample_lp, *sample_top_lp;
    int *sample_top_ids;
    float *logits;      // [max_batch, V]
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

Generator *gen_create(Model *m, int max_batch, int prefill_budget, int bf16) {
    Generator *g = calloc(1, sizeof(Generator));
    if (!g) return NULL;
    const ModelConfig *c = &m->cfg;
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
    g->logits = malloc(B * V * sizeof(float));
    g->cand_val = malloc((size_t)g->nthreads * V * sizeof(float));
    g->cand_idx = malloc((size_t)g->nthreads * V * sizeof(int));
    g->cand_order = malloc((size_t)g->nthreads * V * sizeof(int));
    if (!g->slots || !g->sample_slot || !g->sample_row || !g->sample_tok || !g->sample_lp ||
        !g->sample_top_lp || !g->sample_top_ids || !g->logits || !g->cand_val || !g->cand_idx || !g->cand_order) {
        err_set(EXIT_IO, "out_of_memory", "cannot allocate the generator for %d sequences", max_batch);
        gen_free(g);
        return NULL;
    }
    g->fmt = PACK_FP32;
    if ((bf16 && packed_bf16_format(&g->fmt)) || !(g->state = m->ops->gen_create(m, g->fmt))) {
        gen_free(g);
        return NULL;
    }
    return g;
}

static void free_request(Request *r) {
    if (r) { free(r->prompt); free(r); }
}

void gen_free(Generator *g) {
    if (!g) return;
    for (int s = 0; g->slots && s < g->max_batch; s++) { free(g->slots[s].kv); free_request(g->slots[s].req); }
    for (Request *r = g->queue_head, *next; r; r = next) { next = r->next; free_request(r); }
    if (g->state) g->m->ops->gen_free(g->state);
    void *ps[] = {g->slots, g->row_slot, g->row_pos, g->row_tok, g->row_cap, g->row_cache,
                  g->sample_slot, g->sample_row, g->sample_tok, g->sample_lp, g->sample_top_lp,
                  g->sample_top_ids, g->logits, g->cand_val, g->cand_idx, g->cand_order};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) free(ps[i]);
    free(g);
}

static int ensure_rows(Generator *g, size_t n) {
    if (n <= g->cap_rows) return 0;
    void **bufs[] = {(void **)&g->row_slot, (void **)&g->row_pos, (void **)&g->row_tok,
                     (void **)&g->row_cap, (void **)&g->row_cache};
    size_t sizes[] = {sizeof(int), sizeof(int), sizeof(int), sizeof(int), sizeof(float *)};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        void *p = realloc(*bufs[i], n * sizes[i]);
        if (!p) return err_set(EXIT_IO, "out_of_memory", "cannot allocate activations for %zu rows", n);
        *bufs[i] = p;
    }
    g->cap_rows = n;
    return 0;
}

// Grows a slot's cache to hold n positions (doubling, a multiple of 16 up to the context rounded
// up), keeping its contents; unused positions are zero.
static int ensure_cache(Generator *g, Slot *s, int n) {
    if (n <= s->cap) return 0;
    const ModelConfig *c = &g->m->cfg;
    int most = (c->max_seq_len + 15) / 16 * 16, cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > most) cap = most;
    float *kv = kvcache_grow(s->kv, s->cap, s->len, cap, c->n_layer, c->n_kv_head, c->head_dim);
    if (!kv) return err_set(EXIT_IO, "out_of_memory", "cannot allocate a KV cache of %d positions", cap);
    free(s->kv);
    s->kv = kv;
    s->cap = cap;
    return 0;
}

int gen_submit(Generator *g, int64_t id, const int *prompt, int prompt_len, const GenParams *p) {
    const ModelConfig *c = &g->m->cfg;
    if (id < 0) return err_set(EXIT_BAD_INPUT, "bad_request", "id must be a non-negative integer");
    if (prompt_len < 1)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: prompt must hold at least one token",
                       (long long)id);
    if (prompt_len >= c->max_seq_len)
        return err_set(EXIT_BAD_INPUT, "bad_request",
                       "request %lld: prompt has %d tokens; the context holds %d, so at most %d are allowed",
                       (long long)id, prompt_len, c->max_seq_len, c->max_seq_len - 1);
    for (int i = 0; i < prompt_len; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: prompt[%d] = %d is not a token id in [0, %d)",
                           (long long)id, i, prompt[i], c->vocab_size);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: temperature must be a finite number >= 0",
                       (long long)id);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_p must be in (0, 1]", (long long)id);
    if (p->top_k < 0)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_k must be >= 0 (0 = off)", (long long)id);
    if (p->max_tokens < 1)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: max_tokens must be >= 1", (long long)id);
    int max_top = GEN_MAX_TOP_LOGPROBS < c->vocab_size ? GEN_MAX_TOP_LOGPROBS : c->vocab_size;
    if (p->top_logprobs < 0 || p->top_logprobs > max_top)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: top_logprobs must be in [0, %d]", (long long)id,
                       max_top);
    if (p->n_stop < 0 || p->n_stop > GEN_MAX_STOP_IDS)
        return err_set(EXIT_BAD_INPUT, "bad_request", "request %lld: at most %d stop token ids", (long long)id,
                       GEN_MAX_STOP_IDS);
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= c->vocab_size)
            return err_set(EXIT_BAD_INPUT, "bad_request",
                           "request %lld: stop_token_ids[%d] = %d is not a token id in [0, %d)", (long long)id, i,
                           p->stop_ids[i], c->vocab_size);
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

// The largest of z[0..V) into *mx in one vectorized pass; -1 when a value is NaN or infinite
// (x - x is NaN exactly then, and a NaN stays in the sum).
static int finite_max(const float *z, int V, float *mx) {
    v16 m, bad = {0};
    for (int t = 0; t < 16; t++) m[t] = z[0];
    int i = 0;
    for (; i + 16 <= V; i += 16) {
        v16 x = load16(z + i);
        bad += x - x;
        m = select16(x > m, x, m);
    }
    float best = m[0], nan = 0.0f;
    for (int t = 0; t < 16; t++) { nan += bad[t]; if (m[t] > best) best = m[t]; }
    for (; i < V; i++) { nan += z[i] - z[i]; if (z[i] > best) best = z[i]; }
    *mx = best;
    return nan == nan ? 0 : -1;
}

// Samples one token from logits z for parameters p: temperature, then top_k, then top_p (the
// order of Hugging Face and vLLM). val/idx/order are V-sized scratch. Returns -1 when a logit is
// NaN or infinite (a broken model): no distribution to sample, and the nucleus could be empty.
static int sample_token(const float *z, int V, const GenParams *p, uint64_t *rng, float *val,
                        int *idx, int *order) {
    float zmax;
    if (finite_max(z, V, &zmax)) return -1;
    if (p->temperature == 0.0f || p->top_k == 1) {
        for (int i = 0; i < V; i++) if (z[i] == zmax) return i;  // the first maximum, as argmax
    }
    int n = V;
    const int *ids = NULL;  // candidate ids when top_k or top_p reorders them (else candidate i is token i)
    // Shift before scaling: (z - zmax) / T is <= 0 and finite or -inf, never NaN, however small T.
    for (int i = 0; i < V; i++) val[i] = (z[i] - zmax) / p->temperature;
    if (p->top_k > 0 && p->top_k < V) {
        for (int i = 0; i < V; i++) idx[i] = i;
        n = select_top(val, idx, V, p->top_k);
        ids = idx;
    }
    double sum = exp_shift_sum(val, val, n, 0.0f);
    double u = 0.0, acc = 0.0;
    if (p->top_p < 1.0f && n > 1) {
        if (!ids) {
            for (int i = 0; i < n; i++) idx[i] = i;
            ids = idx;
        }
        // Tokens below (1-top_p)/(n-1) of the mass cannot be in the nucleus: drop them before
        // sorting (llama2.c's trick), then keep the smallest prefix reaching top_p of the mass.
        // The best token's weight is exactly 1 after the shift: capping the cutoff there keeps it.
        double cutoff = (1.0 - p->top_p) / (n - 1) * sum;
        if (cutoff > 1.0) cutoff = 1.0;
        int m = 0;
        for (int i = 0; i < n; i++) if (val[i] >= cutoff) order[m++] = i;
        CandSet cs = {val, idx};
        qsort_r(order, m, sizeof(int), cmp_cand, &cs);
        for (int i = 0; i < m; i++) {
            acc += val[order[i]];
            if (acc >= p->top_p * sum) { m = i + 1; break; }
        }
        u = rng_uniform(rng) * acc;
        acc = 0.0;
        for (int i = 0; i < m; i++) {
            acc += val[order[i]];
            if (u < acc) return ids[order[i]];
        }
        return ids[order[m - 1]];
    }
    u = rng_uniform(rng) * sum;
    for (int i = 0; i < n; i++) {
        acc += val[i];
        if (u < acc) return ids ? ids[i] : i;
    }
    return ids ? ids[n - 1] : n - 1;
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
    const ModelConfig *c = &g->m->cfg;
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
    for (int r = 0; r < nrows; r++) {
        const Slot *s = &g->slots[g->row_slot[r]];
        g->row_cache[r] = s->kv;
        g->row_cap[r] = s->cap;
    }
    GenRows rows = {nrows, g->row_tok, g->row_pos, g->row_cache, g->row_cap};
    if (g->m->ops->gen_forward(g->m, g->state, &rows, g->sample_row, nsample, g->logits)) return -1;

    #pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < nsample; i++) {
        Slot *s = &g->slots[g->sample_slot[i]];
        const GenParams *p = &s->req->p;
        const float *z = g->logits + (size_t)i * V;
        size_t t = (size_t)omp_get_thread_num() * V;
        int tok = sample_token(z, V, p, &s->rng, g->cand_val + t, g->cand_idx + t, g->cand_order + t);
        g->sample_tok[i] = tok;
        g->sample_lp[i] = p->logprobs && tok >= 0
                              ? token_logprobs(z, V, tok, p->top_logprobs, g->cand_val + t, g->cand_idx + t,
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

const char *gen_isa(const Generator *g) { return packed_format_name(g->fmt); }
