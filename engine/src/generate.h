// Batched autoregressive sampling with a per-slot KV cache and continuous batching.
// Requests wait in a FIFO queue; each gen_step() admits queued requests into free slots (their
// prompts are prefilled in the same forward pass), advances every active slot by one token and
// refills finished slots on the next step. Every row is computed by the same arithmetic whatever
// else is in the batch, and each request samples with its own RNG, so a request's output depends
// only on its prompt, parameters and seed.
#pragma once
#include <stdint.h>
#include "model.h"

#define GEN_MAX_STOP_IDS 64
#define GEN_MAX_TOP_LOGPROBS 20

typedef struct {
    float temperature;  // 0 = greedy (argmax)
    float top_p;        // (0, 1]; 1 = off
    int top_k;          // 0 = off
    int max_tokens;     // >= 1; generation also ends ("length") when prompt + completion reach n_positions
    uint64_t seed;      // the request's own RNG
    int logprobs;       // 1 = report each sampled token's log-prob
    int top_logprobs;   // with logprobs: also the most likely alternatives, 0..GEN_MAX_TOP_LOGPROBS
    int n_stop;
    int stop_ids[GEN_MAX_STOP_IDS];  // sampling one of these ends the sequence with "stop"
} GenParams;

// NONFINITE: the model produced a NaN or infinite logit; the request ends without that token.
typedef enum { GEN_FINISH_STOP, GEN_FINISH_LENGTH, GEN_FINISH_CANCELLED, GEN_FINISH_NONFINITE } GenFinish;

// Called for every sampled token that is not a stop token. logprob is log softmax of the raw
// logits (temperature 1, no filtering), NAN unless the request set logprobs; top_ids and
// top_logprobs hold its top_logprobs most likely tokens (n_top of them, best first).
typedef void (*gen_token_fn)(void *ctx, int64_t id, int token, float logprob, int n_top,
                             const int *top_ids, const float *top_logprobs);
// Called once per request. stop_token is the stop id that ended it, or -1.
typedef void (*gen_done_fn)(void *ctx, int64_t id, GenFinish finish, int stop_token,
                            int prompt_tokens, int completion_tokens);

typedef struct Generator Generator;

// max_batch: slots generating at once. prefill_budget: most prompt tokens prefilled in one step
// (a longer prompt is admitted alone). bf16: matrix products with bf16 weights on the best path
// this CPU has (faster, not exact fp32; see packed.h). Returns NULL with err_set() on failure.
Generator *gen_create(Model *model, int max_batch, int prefill_budget, int bf16);
void gen_free(Generator *g);
// The matrix-product path in use: fp32, amx, avx512bf16 or avx2 (see packed.h).
const char *gen_isa(const Generator *g);
// Queues a request (the prompt is copied). Returns 0, or -1 with err_set() for a bad request
// (empty prompt, id out of range, prompt not shorter than n_positions, bad parameters).
int gen_submit(Generator *g, int64_t id, const int *prompt, int prompt_len, const GenParams *p);
// Ends a queued or active request (done callback with GEN_FINISH_CANCELLED). Returns 0, or -1
// when the id is unknown (already finished).
int gen_cancel(Generator *g, int64_t id, gen_done_fn on_done, void *ctx);
// Number of queued plus active requests.
int gen_pending(const Generator *g);
// One step: admit, one forward over all rows, one token per active slot. Returns the number of
// tokens sampled.
int gen_step(Generator *g, gen_token_fn on_token, gen_done_fn on_done, void *ctx);
