// TRL's loss definitions: DPOTrainer (sigmoid, ipo, hinge) and CPOTrainer (simpo).
#include "losses.h"
#include <math.h>
#include <string.h>

static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

double preference_loss(const LossConfig *cfg, int n, const float *pc, const int *nc,
                       const float *pr, const int *nr, const float *rc, const float *rr,
                       double norm, float *dc, float *dr, PrefMetrics *out) {
    memset(out, 0, sizeof(*out));
    double beta = cfg->beta, ls = cfg->label_smoothing;
    // simpo and ipo work on length-averaged log-probs (TRL averages policy and reference alike)
    int averaged = cfg->kind == LOSS_SIMPO || cfg->kind == LOSS_IPO;
    for (int i = 0; i < n; i++) {
        double sc = averaged ? 1.0 / nc[i] : 1.0, sr = averaged ? 1.0 / nr[i] : 1.0;
        double lc = pc[i] * sc, lr = pr[i] * sr;
        double ref_c = 0.0, ref_r = 0.0;
        if (cfg->kind != LOSS_SIMPO) { ref_c = rc[i] * sc; ref_r = rr[i] * sr; }
        double loss, dh;  // dh = d loss / d h, h the pair's logit
        double rew_c, rew_r;
        if (cfg->kind == LOSS_SIMPO) {
            double z = beta * (lc - lr) - cfg->gamma;
            loss = -(1.0 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z);
            dh = beta * (-(1.0 - ls) * sigmoid(-z) + ls * sigmoid(z));
            rew_c = beta * lc;
            rew_r = beta * lr;
        } else {
            double h = (lc - ref_c) - (lr - ref_r);
            if (cfg->kind == LOSS_DPO) {
                double z = beta * h;
                loss = -(1.0 - ls) * log_sigmoid(z) - ls * log_sigmoid(-z);
                dh = beta * (-(1.0 - ls) * sigmoid(-z) + ls * sigmoid(z));
            } else if (cfg->kind == LOSS_IPO) {
                double d = h - 1.0 / (2.0 * beta);
                loss = d * d;
                dh = 2.0 * d;
            } else {  // LOSS_HINGE
                double d = 1.0 - beta * h;
                loss = d > 0 ? d : 0.0;
                dh = d > 0 ? -beta : 0.0;
            }
            rew_c = beta * (lc - ref_c);
            rew_r = beta * (lr - ref_r);
        }
        dc[i] = (float)(dh * sc / norm);
        dr[i] = (float)(-dh * sr / norm);
        out->loss += loss;
        out->reward_chosen += rew_c;
        out->reward_rejected += rew_r;
        out->margin += rew_c - rew_r;
        out->accuracy += rew_c > rew_r ? 1.0 : 0.0;
        out->logp_chosen += lc;
        out->logp_rejected += lr;
    }
    return out->loss;
}

double sft_loss(int n, const float *logp_sum, double norm, float *dlogp) {
    double nll = 0.0;
    for (int b = 0; b < n; b++) {
        nll -= logp_sum[b];
        dlogp[b] = (float)(-1.0 / norm);
    }
    return nll;
}

static const char *const NAMES[] = {"sft", "dpo", "simpo", "ipo", "hinge"};

int loss_kind_parse(const char *name, LossKind *out) {
    for (int k = 0; k < 5; k++)
        if (strcmp(name, NAMES[k]) == 0) { *out = (LossKind)k; return 0; }
    return -1;
}

