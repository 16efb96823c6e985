// The model seam: what train.c, logprobs.c, generate.c, checkpoint.c, adamw.c and init.c know
// about an architecture. Each architecture (gpt2.c, llama.c) fills a ModelOps table and a
// parameter table (HF names, shapes, weight decay); parameters are one flat fp32 allocation,
// tensors in table order, each stacked over layers when per-layer. Device work goes through the
// kernels of cpu/kernels.h (a CUDA backend implements the same kernel interface).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "json.h"
#include "cpu/packed.h"

typedef enum { ARCH_GPT2, ARCH_LLAMA } ModelArch;

typedef struct {
    ModelArch arch;
    char model_type[16];  // config.json model_type: gpt2, llama, mistral, qwen2
    int vocab_size;       // V
    int max_seq_len;      // P  (n_positions / max_position_embeddings)
    int n_layer;          // L
    int n_head;           // NH query heads
    int n_kv_head;        // KVH key/value heads (= NH for GPT-2)
    int head_dim;         // hd (= C / NH for GPT-2)
    int n_embd;           // C
    int n_inner;          // I  MLP hidden size
    float norm_eps;       // layer_norm_epsilon / rms_norm_eps
    // Llama family
    float rope_theta;
    int rope_llama3;      // rope_scaling type llama3 (else default)
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int attention_bias;   // q/k/v/o biases (Llama attention_bias)
    int qkv_bias;         // q/k/v biases only (Qwen2)
    int mlp_bias;         // gate/up/down biases
    int tied_embeddings;  // lm_head is embed_tokens
    int sliding_window;   // Mistral's window in tokens; 0 = plain causal
    float init_std;       // initializer_range
    int pad_token_id;     // -1 when none (its embedding row is zeroed by init, as HF does)
} ModelConfig;

#define MODEL_MAX_TENSORS 24

typedef struct {
    const char *name;   // HF name; per-layer names hold one %d for the layer index
    int per_layer;
    int ndim;
    int64_t shape[2];   // of one layer's slice
    int decay;          // AdamW weight decay applies (matrices and embeddings, as the HF Trainer)
} ParamTensor;

// Preference pair for forward_pairs (the prompt computed once for both responses).
typedef struct {
    const uint32_t *prompt, *chosen, *rejected;
    int prompt_len, chosen_len, rejected_len;
} ModelPair;

// Rows of one generation step: each row is a token at a position of one sequence, and reads and
// writes that sequence's KV cache (layout in cpu/kernels.h, kvcache_*).
typedef struct {
    int n;
    const int *tok, *pos;
    float *const *cache;  // [n] the row's cache base
    const int *cache_cap; // [n] its capacity in positions
} GenRows;

typedef struct Model Model;

// The token rows of the last forward, shared by every architecture (model.c fills it; the
// architecture's body reads tokens, pos and branch). The LM head runs only on scored rows.
typedef struct {
    int B, T;
    int *tokens, *pos;    // [BT] input ids and position ids
    int *branch;          // [2B] per row: prompt length S, rejected start R (see cpu/kernels.h)
    int has_branch;
    size_t cap_bt, cap_rows;
    int nrows;            // scored rows: position (index in BT), target, output slot
    int *row_pos, *row_tgt, *row_slot;
    float *row_x;         // [rows, C] final hidden states of the scored rows
    float *row_dx;        // [rows, C] their gradient
    float *row_p;         // [rows, V] probabilities, turned into dlogits by backward
    float *row_lp;        // [rows] log p(target)
    float *dhidden;       // [BT, C] gradient of the body's output
} ModelBatch;

typedef struct {
    // Reads the architecture's fields of a parsed config.json (model_type already checked) into
    // c; errors (bad_config) name the file and the field.
    int (*parse_config)(const JsonValue *root, const char *path, ModelConfig *c);
    // Parameter table for m->cfg: sets m->ntensors, m->tensor and m->head (the LM head tensor).
    void (*describe)(Model *m);
    // Names in checkpoints that are not parameters (buffers, a tied lm_head).
    int (*ignored)(const Model *m, const char *name);
    // Hugging Face's initialization for the architecture, deterministic for a seed.
    void (*init_random)(Model *m, uint64_t seed);
    // Complete HF config.json text for init.
    char *(*config_json)(const ModelConfig *c, int bos, int eos);
    // Transformer body over m->batch (after model.c sized it): returns the final normalized
    // hidden states [BT, C], kept with what body_backward needs.
    const float *(*body_forward)(Model *m);
    // Accumulates parameter gradients for d(final hidden) = m->batch.dhidden [BT, C].
    void (*body_backward)(Model *m);
    void (*free_acts)(Model *m);
    // Generation: weights packed once (an opaque state, or NULL with err_set), then one step
    // over rows writing logits [nsample, V] of the rows listed in sample_row.
    void *(*gen_create)(Model *m, PackFormat fmt);
    void (*gen_free)(void *state);
    int (*gen_forward)(Model *m, void *state, const GenRows *rows, const int *sample_row,
                       int nsample, float *logits);
} ModelOps;

struct Model {
    ModelConfig cfg;
    const ModelOps *ops;
    int ntensors;
    ParamTensor tensor[MODEL_MAX_TENSORS];
    size_t param_sizes[MODEL_MAX_TENSORS];  // element counts (all layers)
    size_t num_params;
    float *params;                          // one allocation, tensors in table order
    float *param[MODEL_MAX_TENSORS];        // views into params
    float *grads;                           // same layout; NULL until model_alloc_grads
    float *grad[MODEL_MAX_TENSORS];
    int head;                               // tensor of the LM head (the embedding when tied)
    ModelBatch batch;
    void *acts;                             // architecture-private activations
};

extern const ModelOps gpt2_ops, llama_ops;

// Validates a parsed HF config.json (model_type gpt2, llama, mistral or qwen2; missing = gpt2)
// read from path: every dimension checked, tensor sizes checked for overflow. Errors (exit 2,
// bad_config) name the file and the field.
int model_parse_config(const JsonValue *root, const char *path, ModelConfig *cfg);
// Field readers for the architectures' parse_config: a missing field takes def unless required.
int config_int(const JsonValue *root, const char *path, const char *key, int required, int lo,
               int def, int *out);
int config_float(const JsonValue *root, const char *path, const char *key, float def, float *out);
int config_bool(const JsonValue *root, const char *path, const char *key, int def, int *out);
// Allocates parameters (uninitialized). Returns 0, or -1 on allocation failure.
int model_build(Model *m, const ModelConfig *cfg);
int model_alloc_grads(Model *m);
void model_free(Model *m);
void model_zero_grad(Model *m);
// Elements of one layer's slice of tensor t.
size_t model_slice(const Model *m, int t);

// Forward over B sequences padded to T tokens (T <= max_seq_len).
//   tokens [B*T]: input ids (padding: any valid id, e.g. 0)
//   targets[B*T]: the id predicted at each position, or -1 where the position is not scored.
// Writes logp_sum[b] = sum of log p(target) over scored positions of sequence b and ntok[b]
// = their count. Keeps what backward needs.
void model_forward(Model *m, const int *tokens, const int *targets, int B, int T, float *logp_sum,
                   int *ntok);
// Preference pairs with the prompt computed once: each pair is one row of prompt + chosen[:-1] +
// rejected[:-1], where the rejected tokens see the prompt and earlier rejected tokens only and
// take the positions they would have after the prompt. Same results as model_forward on the two
// sequences, for about (P + Rc + Rr) / (2P + Rc + Rr) of the work. Writes logp_sum/ntok[2i] for
// pair i's chosen response and [2i + 1] for its rejected one; model_backward takes dlogp in that
// layout. Needs prompt_len >= 1, responses >= 1 and prompt + response <= max_seq_len.
void model_forward_pairs(Model *m, const ModelPair *pairs, int n, float *logp_sum, int *ntok);
// Accumulates into m->grads the gradient of sum_b dlogp[b] * logp_sum[b] for the batch of the
// last forward (dlogp laid out like its logp_sum). Callers zero grads once per optimizer step.
void model_backward(Model *m, const float *dlogp);
// Full logits [B, T, V] for every position (parity tests and analysis; not the training path).
void model_logits(Model *m, const int *tokens, int B, int T, float *logits);
static inline void model_init_random(Model *m, uint64_t seed) { m->ops->init_random(m, seed); }

// Shared by the architectures: activation buffers that grow on demand (out of memory ends the
// process with the engine's error line) and the deterministic normal generator of init.
void *model_xrealloc(void *p, size_t n);
void model_fill_normal(float *x, size_t n, float std, uint64_t *state);
