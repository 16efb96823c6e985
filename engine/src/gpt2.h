// GPT-2 model: configuration, flat parameter layout and the training-time forward/backward.
// The in-memory layout of every tensor is exactly Hugging Face's GPT-2 layout (Conv1D weights
// stored [in, out]), stacked over layers, so checkpoints load and save with plain copies.
// Device-specific kernels live under cpu/ (and later cuda/); this file is the architecture.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int vocab_size;   // V
    int max_seq_len;  // P  (config.json n_positions)
    int n_layer;      // L
    int n_head;       // NH
    int n_embd;       // C
    int n_inner;      // I  (config.json n_inner, or 4*C when null)
    float ln_eps;     // layer_norm_epsilon
} GPT2Config;

// Parameter tensors in storage order. Shapes (HF names in brackets, i = layer):
//  WTE      [V, C]        transformer.wte.weight
//  WPE      [P, C]        transformer.wpe.weight
//  LN1W/B   [L, C]        transformer.h.i.ln_1.{weight,bias}
//  QKVW     [L, C, 3C]    transformer.h.i.attn.c_attn.weight
//  QKVB     [L, 3C]       transformer.h.i.attn.c_attn.bias
//  ATTPROJW [L, C, C]     transformer.h.i.attn.c_proj.weight
//  ATTPROJB [L, C]        transformer.h.i.attn.c_proj.bias
//  LN2W/B   [L, C]        transformer.h.i.ln_2.{weight,bias}
//  FCW      [L, C, I]     transformer.h.i.mlp.c_fc.weight
//  FCB      [L, I]        transformer.h.i.mlp.c_fc.bias
//  FCPROJW  [L, I, C]     transformer.h.i.mlp.c_proj.weight
//  FCPROJB  [L, C]        transformer.h.i.mlp.c_proj.bias
//  LNFW/B   [C]           transformer.ln_f.{weight,bias}
// The LM head is tied to WTE.
enum {
    P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB,
    NUM_PARAM_TENSORS
};

typedef struct GPT2Acts GPT2Acts;  // activations, private to gpt2.c

typedef struct {
    GPT2Config cfg;
    size_t param_sizes[NUM_PARAM_TENSORS];  // element counts
    size_t num_params;
    float *params;                          // one allocation, tensors in enum order
    float *param[NUM_PARAM_TENSORS];        // views into params
    float *grads;                           // same layout; NULL until gpt2_alloc_grads
    float *grad[NUM_PARAM_TENSORS];
    GPT2Acts *acts;                         // sized lazily for the largest B*T seen
} GPT2;

// Element counts of each tensor for a config (used to validate checkpoints).
void gpt2_param_sizes(const GPT2Config *cfg, size_t sizes[NUM_PARAM_TENSORS]);
// Allocates parameters (uninitialized). Returns 0 on success, -1 on allocation failure.
int gpt2_build(GPT2 *m, const GPT2Config *cfg);
int gpt2_alloc_grads(GPT2 *m);
void gpt2_free(GPT2 *m);
// Hugging Face GPT-2 initialization: N(0, 0.02) weights, c_proj weights N(0, 0.02/sqrt(2L)),
// zero biases, unit LayerNorm weights. Deterministic for a seed.
void gpt2_init_random(GPT2 *m, uint64_t seed);

// Forward over B sequences padded to T tokens (T <= max_seq_len).
//   tokens [B*T]: input ids (padding: any valid id, e.g. 0)
//   targets[B*T]: the id predicted at each position, or -1 where the position is not scored
//                 (prompt positions, padding). Only scored positions pay for the LM head.
// Writes logp_sum[b] = sum of log p(target) over scored positions of sequence b and ntok[b]
// = their count. Keeps what backward needs.
void gpt2_forward(GPT2 *m, const int *tokens, const int *targets, int B, int T,
                  float *logp_sum, int *ntok);
// Preference pairs with the prompt computed once: each pair is one row of prompt + chosen[:-1] +
// rejected[:-1], where the rejected tokens see the prompt and earlier rejected tokens only and
// take the positions they would have after the prompt. Same results as gpt2_forward on the two
// sequences, for about (P + Rc + Rr) / (2P + Rc + Rr) of the work. Writes logp_sum/ntok[2i] for
// pair i's chosen response and [2i + 1] for its rejected one; gpt2_backward takes dlogp in that
// layout. Needs prompt_len >= 1, responses >= 1 and prompt + response <= max_seq_len.
typedef struct {
    const uint32_t *prompt, *chosen, *rejected;
    int prompt_len, chosen_len, rejected_len;
} GPT2Pair;
void gpt2_forward_pairs(GPT2 *m, const GPT2Pair *pairs, int n, float *logp_sum, int *ntok);
// Accumulates into m->grads the gradient of sum_b dlogp[b] * logp_sum[b] for the batch of the
// last gpt2_forward or gpt2_forward_pairs (dlogp laid out like its logp_sum). Caller zeroes grads (gpt2_zero_grad) once per optimizer step.
void gpt2_backward(GPT2 *m, const float *dlogp);
void gpt2_zero_grad(GPT2 *m);
// Full logits [B, T, V] for every position (parity tests and analysis; not the training path).
void gpt2_logits(GPT2 *m, const int *tokens, int B, int T, float *logits);
