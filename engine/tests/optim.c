// AdamW (PyTorch semantics, decay mask) against a scalar double-precision reference, and the
// preference-loss metrics against their TRL definitions on hand-picked numbers.
#include "adamw.h"
#include "gpt2.h"
#include "tiny.h"
#include "losses.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;
static void expect(const char *what, double got, double want, double tol) {
    int bad = !(fabs(got - want) <= tol * fmax(1.0, fabs(want)));
    if (bad) { printf("FAIL %s: got %.9g, want %.9g\n", what, got, want); failures++; }
}

static void test_adamw(void) {
    ModelConfig c = tiny_config("{\"vocab_size\": 11, \"n_positions\": 8, \"n_layer\": 2, \"n_head\": 2, "
                                   "\"n_embd\": 8, \"n_inner\": 12}");
    Model m;
    if (model_build(&m, &c) || model_alloc_grads(&m)) { printf("optim: out of memory\n"); exit(1); }
    model_init_random(&m, 1);
    size_t n = m.num_params;
    float *m1 = calloc(n, 4), *m2 = calloc(n, 4);
    double *p = malloc(n * 8), *a = calloc(n, 8), *b = calloc(n, 8);
    for (size_t i = 0; i < n; i++) p[i] = m.params[i];
    AdamWConfig cfg = {0.9f, 0.95f, 1e-6f, 0.1f};
    const double lrs[3] = {1e-2, 5e-3, 2e-3};
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < n; i++) m.grads[i] = (float)sin(0.37 * i + step) * (i % 5 == 0 ? 1e-4f : 0.5f);
        adamw_step(&m, m1, m2, &cfg, (float)lrs[step - 1], step);
        size_t off = 0;
        for (int t = 0; t < m.ntensors; t++) {
            int decay = t == P_WTE || t == P_WPE || t == P_QKVW || t == P_ATTPROJW || t == P_FCW || t == P_FCPROJW;
            for (size_t i = off; i < off + m.param_sizes[t]; i++) {  // torch.optim.AdamW, step by step
                double g = m.grads[i], lr = lrs[step - 1];
                if (decay) p[i] *= 1 - lr * cfg.weight_decay;
                a[i] = 0.9 * a[i] + 0.1 * g;
                b[i] = 0.95 * b[i] + 0.05 * g * g;
                p[i] -= lr / (1 - pow(0.9, step)) * a[i] / (sqrt(b[i]) / sqrt(1 - pow(0.95, step)) + 1e-6);
            }
            off += m.param_sizes[t];
        }
    }
    double err = 0;
    for (size_t i = 0; i < n; i++) err = fmax(err, fabs(m.params[i] - p[i]));
    printf("adamw: 3 steps, max |engine - reference| = %.2e\n", err);
    expect("adamw weights", err, 0, 1e-6);
    free(m1); free(m2); free(p); free(a); free(b);
    model_free(&m);
}

static double logsig(double x) { return -log(1 + exp(-x)); }

static void test_losses(void) {
    // two pairs; policy and reference log-prob sums, response lengths
    float pc[2] = {-12.0f, -30.0f}, pr[2] = {-15.0f, -20.0f}, rc[2] = {-13.0f, -29.0f}, rr[2] = {-14.0f, -21.0f};
    int nc[2] = {4, 10}, nr[2] = {5, 4};
    float dc[2], dr[2];
    PrefMetrics pm;
    double beta = 0.125, ls = 0.25;  // exact in float
    // dpo with label smoothing: h = (pc - rc) - (pr - rr)
    double h0 = (-12 + 13) - (-15 + 14), h1 = (-30 + 29) - (-20 + 21);
    LossConfig dpo = {LOSS_DPO, (float)beta, 0, (float)ls};
    double loss = preference_loss(&dpo, 2, pc, nc, pr, nr, rc, rr, 4.0, dc, dr, &pm);
    double l0 = -(1 - ls) * logsig(beta * h0) - ls * logsig(-beta * h0),
           l1 = -(1 - ls) * logsig(beta * h1) - ls * logsig(-beta * h1);
    expect("dpo loss", loss, l0 + l1, 1e-9);
    expect("dpo rewards/chosen", pm.reward_chosen, beta * (1 + -1), 1e-9);
    expect("dpo rewards/rejected", pm.reward_rejected, beta * (-1 + 1), 1e-9);
    expect("dpo rewards/accuracies", pm.accuracy, 1, 0);  // pair 0 right, pair 1 wrong
    expect("dpo rewards/margins", pm.margin, beta * (h0 + h1), 1e-9);
    expect("dpo logps/chosen", pm.logp_chosen, -42, 1e-9);
    double s0 = 1 / (1 + exp(beta * h0));  // sigmoid(-beta h0)
    expect("dpo d/dpc (norm 4)", dc[0], beta * (-(1 - ls) * s0 + ls * (1 - s0)) / 4, 1e-6);
    expect("dpo d/dpr = -d/dpc", dr[0], -dc[0], 1e-9);
    // simpo: length-normalized, no reference, target margin gamma
    LossConfig simpo = {LOSS_SIMPO, 2.0f, 0.5f, 0};
    loss = preference_loss(&simpo, 2, pc, nc, pr, nr, NULL, NULL, 2.0, dc, dr, &pm);
    double z0 = 2 * (-12.0 / 4 - -15.0 / 5) - 0.5, z1 = 2 * (-30.0 / 10 - -20.0 / 4) - 0.5;
    expect("simpo loss", loss, -logsig(z0) - logsig(z1), 1e-9);
    expect("simpo rewards/chosen", pm.reward_chosen, 2 * (-3.0 + -3.0), 1e-9);
    expect("simpo logps/rejected", pm.logp_rejected, -3.0 + -5.0, 1e-9);
    expect("simpo d/dpc", dc[1], 2 * -(1 / (1 + exp(z1))) / 10 / 2.0, 1e-6);
    // ipo: length-averaged, (h - 1/(2 beta))^2
    LossConfig ipo = {LOSS_IPO, (float)beta, 0, 0};
    loss = preference_loss(&ipo, 2, pc, nc, pr, nr, rc, rr, 1.0, dc, dr, &pm);
    double i0 = (1.0 / 4 - -1.0 / 5) - 4, i1 = (-1.0 / 10 - 1.0 / 4) - 4;
    expect("ipo loss", loss, i0 * i0 + i1 * i1, 1e-9);
    expect("ipo d/dpr", dr[0], -2 * i0 / 5, 1e-6);
    // hinge: relu(1 - beta h)
    LossConfig hinge = {LOSS_HINGE, 2.0f, 0, 0};
    loss = preference_loss(&hinge, 2, pc, nc, pr, nr, rc, rr, 1.0, dc, dr, &pm);
    expect("hinge loss", loss, 0 + (1 - 2 * h1), 1e-9);  // pair 0: 1 - 2*2 < 0
    expect("hinge d/dpc pair 0 (inactive)", dc[0], 0, 0);
    expect("hinge d/dpc pair 1", dc[1], -2, 1e-9);
    // sft: token-mean NLL
    float lp[2] = {-6.0f, -2.0f}, d[2];
    expect("sft nll", sft_loss(2, lp, 8.0, d), 8, 1e-9);
    expect("sft d/dlogp", d[0], -1.0 / 8, 1e-9);
    printf("losses: dpo, simpo, ipo, hinge, sft values, gradients and metrics checked\n");
}

int main(void) {
    test_adamw();
    test_losses();
    printf("optim: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
