// Training objectives on per-sequence response log-probs (TRL semantics, computed in double).
// The model gives logp_sum per sequence; these functions give the loss and d loss / d logp_sum,
// which model_backward takes as dlogp.
#pragma once

typedef enum { LOSS_SFT, LOSS_DPO, LOSS_SIMPO, LOSS_IPO, LOSS_HINGE } LossKind;

typedef struct {
    LossKind kind;
    float beta;             // dpo/ipo/hinge: 0.1 by convention; simpo: 2.0
    float gamma;            // simpo target margin (TRL's simpo_gamma = beta * gamma_beta_ratio)
    float label_smoothing;  // dpo and simpo (TRL's conservative DPO / CPO smoothing)
} LossConfig;

// Sums over the pairs of one call (divide by the pair count for TRL's logged means).
typedef struct {
    double loss;             // sum of per-pair losses (not divided by norm)
    double reward_chosen, reward_rejected, margin, accuracy;
    double logp_chosen, logp_rejected;  // policy log-probs as the loss sees them (sum, or mean
                                        // per token for simpo/ipo)
} PrefMetrics;

// Preference loss for n pairs. pc/pr: policy log-prob sums of chosen/rejected responses, nc/nr
// their token counts (>= 1), rc/rr: reference log-prob sums (dpo/ipo/hinge; ignored, may be
// NULL, for simpo). The optimized objective is sum_i loss_i / norm, where norm is the number of
// pairs in the whole optimizer step, so accumulated micro-batches equal one big batch.
// Writes dc[i] = d objective / d pc[i] and dr[i] = d objective / d pr[i]; fills *out (sums).
// Returns the summed loss. kind must not be LOSS_SFT.
double preference_loss(const LossConfig *cfg, int n, const float *pc, const int *nc,
                       const float *pr, const int *nr, const float *rc, const float *rr,
                       double norm, float *dc, float *dr, PrefMetrics *out);

// SFT: objective = -sum_b logp_sum[b] / norm, norm = response tokens in the optimizer step
// (token-mean NLL). Writes dlogp[b] = -1/norm. Returns the summed NLL of these n sequences.
double sft_loss(int n, const float *logp_sum, double norm, float *dlogp);

// Parses "sft"|"dpo"|"simpo"|"ipo"|"hinge"; returns -1 for anything else.
int loss_kind_parse(const char *name, LossKind *out);
