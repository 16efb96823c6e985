// opsr-engine train: micro-batches -> loss (losses.h) -> gradients -> clip -> AdamW (adamw.h),
// with the HF schedules, seeded per-epoch shuffling, a cached reference pre-pass, JSON-lines
// progress, atomic checkpoints and bit-exact --resume. See engine/README.md.
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "adamw.h"
#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "data.h"
#include "json.h"
#include "logprobs.h"
#include "losses.h"
#include "safetensors.h"
#include "util.h"

enum { SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT };

typedef struct {
    const char *model, *data, *out, *loss, *schedule, *ref_logps, *save_dtype, *max_shard;
    double beta, gamma, label_smoothing, lr, weight_decay, beta1, beta2, eps, warmup_ratio, grad_clip;
    long warmup_steps, batch_size, grad_accum, epochs, max_steps, seed, threads, checkpoint_every, keep;
    int resume;
} TrainArgs;

typedef struct {
    TrainArgs a;
    LossConfig loss;
    AdamWConfig opt;
    int sched;
    Model m;
    DataFile d;
    float *mom1, *mom2;
    float *ref;   // reference log-prob sums [2 * records] (dpo/ipo/hinge)
    int *ref_n;
    int *perm, perm_epoch;
    int *tokens, *targets;
    long total, per_epoch, warmup, step;
    uint64_t model_hash;  // --model's config.json and weights: the run's start (and DPO reference)
    const char *save_dtype;  // F32, BF16 or F16: --save-dtype, else the dtype of --model
    size_t shard_bytes;      // --max-shard-size (0: one model.safetensors)
    char names[24][32], values[24][64];  // the flags that shape the run (checked on resume)
    int nargs;
} Trainer;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

#define USAGE(...) die(EXIT_BAD_INPUT, "usage", __VA_ARGS__)

static void parse_args(Trainer *t, int argc, char **argv) {
    TrainArgs *a = &t->a;
    *a = (TrainArgs){.schedule = "cosine", .label_smoothing = 0, .lr = 1e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                     .grad_clip = 1.0, .batch_size = 1, .grad_accum = 1, .epochs = 1, .keep = 2};
    ArgSpec s[] = {
        {"model", ARG_STR, &a->model, 0}, {"data", ARG_STR, &a->data, 0}, {"out", ARG_STR, &a->out, 0},
        {"loss", ARG_STR, &a->loss, 0}, {"beta", ARG_FLOAT, &a->beta, 0}, {"gamma", ARG_FLOAT, &a->gamma, 0},
        {"label-smoothing", ARG_FLOAT, &a->label_smoothing, 0}, {"lr", ARG_FLOAT, &a->lr, 0},
        {"weight-decay", ARG_FLOAT, &a->weight_decay, 0}, {"adam-beta1", ARG_FLOAT, &a->beta1, 0},
        {"adam-beta2", ARG_FLOAT, &a->beta2, 0}, {"adam-eps", ARG_FLOAT, &a->eps, 0},
        {"warmup-steps", ARG_INT, &a->warmup_steps, 0}, {"warmup-ratio", ARG_FLOAT, &a->warmup_ratio, 0},
        {"schedule", ARG_STR, &a->schedule, 0}, {"grad-clip", ARG_FLOAT, &a->grad_clip, 0},
        {"batch-size", ARG_INT, &a->batch_size, 0}, {"grad-accum", ARG_INT, &a->grad_accum, 0},
        {"epochs", ARG_INT, &a->epochs, 0}, {"max-steps", ARG_INT, &a->max_steps, 0}, {"seed", ARG_INT, &a->seed, 0},
        {"threads", ARG_INT, &a->threads, 0}, {"checkpoint-every", ARG_INT, &a->checkpoint_every, 0},
        {"keep-checkpoints", ARG_INT, &a->keep, 0}, {"resume", ARG_SWITCH, &a->resume, 0},
        {"ref-logps", ARG_STR, &a->ref_logps, 0}, {"save-dtype", ARG_STR, &a->save_dtype, 0},
        {"max-shard-size", ARG_STR, &a->max_shard, 0}};
    int ns = sizeof s / sizeof *s;
    if (args_parse("train", argc, argv, s, ns)) err_exit();
    if (!a->model || !a->data || !a->out || !a->loss) USAGE("train: --model, --data, --out and --loss are required");
    LossKind kind;
    if (loss_kind_parse(a->loss, &kind))
        USAGE("train: --loss must be one of sft, dpo, simpo, ipo, hinge; got \"%s\"", a->loss);
    int has_ref = kind == LOSS_DPO || kind == LOSS_IPO || kind == LOSS_HINGE;
    if (args_get(s, ns, "gamma")->set && kind != LOSS_SIMPO) USAGE("train: --gamma applies only to --loss simpo");
    if (args_get(s, ns, "ref-logps")->set && !has_ref)
        USAGE("train: --ref-logps applies only to --loss dpo, ipo or hinge");
    if (args_get(s, ns, "beta")->set && kind == LOSS_SFT) USAGE("train: --beta does not apply to --loss sft");
    if (args_get(s, ns, "label-smoothing")->set && kind != LOSS_DPO && kind != LOSS_SIMPO)
        USAGE("train: --label-smoothing applies only to --loss dpo or simpo");
    if (args_get(s, ns, "warmup-steps")->set && args_get(s, ns, "warmup-ratio")->set)
        USAGE("train: --warmup-steps and --warmup-ratio conflict; give one");
    if (!args_get(s, ns, "beta")->set) a->beta = kind == LOSS_SIMPO ? 2.0 : 0.1;
    if (!args_get(s, ns, "gamma")->set) a->gamma = 0.5;
    if (!(a->beta > 0)) USAGE("train: --beta must be > 0");
    if (a->label_smoothing < 0 || a->label_smoothing >= 0.5) USAGE("train: --label-smoothing must be in [0, 0.5)");
    if (a->lr < 0) USAGE("train: --lr must be >= 0");
    if (a->weight_decay < 0) USAGE("train: --weight-decay must be >= 0");
    if (a->beta1 < 0 || a->beta1 >= 1 || a->beta2 < 0 || a->beta2 >= 1)
        USAGE("train: --adam-beta1 and --adam-beta2 must be in [0, 1)");
    if (!(a->eps > 0)) USAGE("train: --adam-eps must be > 0");
    if (a->warmup_steps < 0) USAGE("train: --warmup-steps must be >= 0");
    if (a->warmup_ratio < 0 || a->warmup_ratio > 1) USAGE("train: --warmup-ratio must be in [0, 1]");
    if (a->grad_clip < 0) USAGE("train: --grad-clip must be >= 0 (0 turns clipping off)");
    if (a->batch_size < 1 || a->batch_size > 4096) USAGE("train: --batch-size must be in [1, 4096]");
    if (a->grad_accum < 1 || a->grad_accum > 1 << 20) USAGE("train: --grad-accum must be >= 1");
    if (a->epochs < 1 || a->epochs > 1 << 20) USAGE("train: --epochs must be >= 1");
    if (args_get(s, ns, "max-steps")->set && (a->max_steps < 1 || a->max_steps > 99999999))
        USAGE("train: --max-steps must be in [1, 99999999]");
    if (a->seed < 0) USAGE("train: --seed must be >= 0");
    if (args_get(s, ns, "threads")->set && (a->threads < 1 || a->threads > 1024))
        USAGE("train: --threads must be in [1, 1024]");
    if (a->checkpoint_every < 0) USAGE("train: --checkpoint-every must be >= 0 (0: only at the end and on SIGTERM)");
    if (a->keep < 1) USAGE("train: --keep-checkpoints must be >= 1");
    if (!strcmp(a->schedule, "cosine")) t->sched = SCHED_COSINE;
    else if (!strcmp(a->schedule, "linear")) t->sched = SCHED_LINEAR;
    else if (!strcmp(a->schedule, "constant")) t->sched = SCHED_CONSTANT;
    else USAGE("train: --schedule must be cosine, linear or constant; got \"%s\"", a->schedule);
    if (a->save_dtype && !(t->save_dtype = st_save_dtype(a->save_dtype)))
        USAGE("train: --save-dtype must be f32, bf16 or f16; got \"%s\"", a->save_dtype);
    if (a->max_shard && st_parse_size(a->max_shard, &t->shard_bytes))
        USAGE("train: --max-shard-size must be a positive size in bytes, or with a unit (e.g. 500MB, 5GB, 2GiB); "
              "got \"%s\"",
              a->max_shard);
    t->loss = (LossConfig){kind, (float)a->beta, (float)a->gamma, (float)a->label_smoothing};
    t->opt = (AdamWConfig){(float)a->beta1, (float)a->beta2, (float)a->eps, (float)a->weight_decay};
}

// The values that determine the run's numbers; a resumed run must match them.
__attribute__((format(printf, 3, 4))) static void record_arg(Trainer *t, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    snprintf(t->names[t->nargs], sizeof t->names[0], "%s", name);
    vsnprintf(t->values[t->nargs], sizeof t->values[0], fmt, ap);
    va_end(ap);
    t->nargs++;
}

// FNV-1a of a file's bytes, continuing from h; exits naming the file if it cannot be read.
static uint64_t hash_file(const char *path, uint64_t h) {
    char *data;
    size_t size;
    if (read_file(path, &data, &size)) err_exit();
    h = fnv1a(h, data, size);
    free(data);
    return h;
}

static void record_args(Trainer *t) {
    const TrainArgs *a = &t->a;
    record_arg(t, "loss", "%s", a->loss);
    record_arg(t, "beta", "%.9g", a->beta);
    record_arg(t, "gamma", "%.9g", a->gamma);
    record_arg(t, "label-smoothing", "%.9g", a->label_smoothing);
    record_arg(t, "lr", "%.9g", a->lr);
    record_arg(t, "weight-decay", "%.9g", a->weight_decay);
    record_arg(t, "adam-beta1", "%.9g", a->beta1);
    record_arg(t, "adam-beta2", "%.9g", a->beta2);
    record_arg(t, "adam-eps", "%.9g", a->eps);
    record_arg(t, "warmup", "%ld", t->warmup);
    record_arg(t, "schedule", "%s", a->schedule);
    record_arg(t, "grad-clip", "%.9g", a->grad_clip);
    record_arg(t, "batch-size", "%ld", a->batch_size);
    record_arg(t, "grad-accum", "%ld", a->grad_accum);
    record_arg(t, "total-steps", "%ld", t->total);
    record_arg(t, "seed", "%ld", a->seed);
    record_arg(t, "records", "%d", t->d.count);
    record_arg(t, "data-hash", "%016llx", (unsigned long long)t->d.hash);
    record_arg(t, "model-hash", "%016llx", (unsigned long long)t->model_hash);
    record_arg(t, "ref-logps-hash", "%016llx",
               (unsigned long long)(a->ref_logps ? hash_file(a->ref_logps, FNV_OFFSET) : 0));
    record_arg(t, "threads", "%d", omp_get_max_threads());  // bit-exact resume needs the same split of the sums
}

// HF's schedules (transformers.get_*_schedule_with_warmup), s = optimizer steps done so far.
static double learning_rate(const Trainer *t, long s) {
    double lr = t->a.lr;
    if (s < t->warmup) return lr * (double)s / (double)(t->warmup > 1 ? t->warmup : 1);
    double span = (double)(t->total - t->warmup > 1 ? t->total - t->warmup : 1);
    if (t->sched == SCHED_CONSTANT) return lr;
    if (t->sched == SCHED_LINEAR) return lr * fmax(0.0, (double)(t->total - s) / span);
    return lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * (double)(s - t->warmup) / span)));
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Record order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch), so the data cursor
// of any step is a pure function of the step number.
static void epoch_order(Trainer *t, int epoch) {
    if (t->perm_epoch == epoch) return;
    uint64_t rng = (uint64_t)t->a.seed * 0x100000001B3ULL + (uint64_t)epoch;
    for (int i = 0; i < t->d.count; i++) t->perm[i] = i;
    for (int i = t->d.count - 1; i > 0; i--) {
        int j = (int)(splitmix64(&rng) % (uint64_t)(i + 1)), tmp = t->perm[i];
        t->perm[i] = t->perm[j];
        t->perm[j] = tmp;
    }
    t->perm_epoch = epoch;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Preference micro-batch: each pair's prompt is computed once (model_forward_pairs); recs holds
// every record twice (chosen, rejected), as for the padded path.
static void forward_pairs(Model *m, const DataRecord *const *recs, int n, float *lp, int *cnt) {
    ModelPair pairs[4096];
    for (int i = 0; i < n; i++) {
        const DataRecord *r = recs[2 * i];
        pairs[i] = (ModelPair){r->prompt, r->resp[0], r->resp[1], r->prompt_len, r->resp_len[0], r->resp_len[1]};
    }
    model_forward_pairs(m, pairs, n, lp, cnt);
}

// One optimizer step (step counts from 1): forward/backward over its micro-batches, then clip
// and AdamW. Prints the step's JSON line.
static void train_step(Trainer *t, long step) {
    double t0 = now_s();
    int pref = t->loss.kind != LOSS_SFT, bs = (int)t->a.batch_size;
    long j = (step - 1) % t->per_epoch, per_step = t->a.batch_size * t->a.grad_accum;
    epoch_order(t, (int)((step - 1) / t->per_epoch));
    int lo = (int)(j * per_step), hi = (int)(lo + per_step < t->d.count ? lo + per_step : t->d.count);
    double norm = hi - lo, loss = 0, tokens = 0;
    if (!pref) {
        norm = 0;
        for (int i = lo; i < hi; i++) norm += t->d.rec[t->perm[i]].resp_len[0];
    }
    PrefMetrics sum = {0};
    model_zero_grad(&t->m);
    for (int mb = lo; mb < hi; mb += bs) {
        int nb = hi - mb < bs ? hi - mb : bs, B = pref ? 2 * nb : nb;
        const DataRecord *recs[2 * 4096];
        int side[2 * 4096], cnt[2 * 4096];
        float lp[2 * 4096], dlogp[2 * 4096];
        for (int b = 0; b < B; b++) {
            recs[b] = &t->d.rec[t->perm[mb + (pref ? b / 2 : b)]];
            side[b] = pref ? b % 2 : 0;
            tokens += recs[b]->prompt_len + recs[b]->resp_len[side[b]];
        }
        if (pref) forward_pairs(&t->m, recs, nb, lp, cnt);
        else model_forward(&t->m, t->tokens, t->targets, B, data_batch(recs, side, B, t->tokens, t->targets), lp, cnt);
        if (!pref) loss += sft_loss(B, lp, norm, dlogp);
        else {
            float pc[4096], pr[4096], rc[4096], rr[4096], dc[4096], dr[4096];
            int nc[4096], nr[4096];
            for (int b = 0; b < nb; b++) {
                int r = t->perm[mb + b];
                pc[b] = lp[2 * b]; pr[b] = lp[2 * b + 1];
                nc[b] = cnt[2 * b]; nr[b] = cnt[2 * b + 1];
                if (t->ref) { rc[b] = t->ref[2 * r]; rr[b] = t->ref[2 * r + 1]; }
            }
            PrefMetrics pm;
            loss += preference_loss(&t->loss, nb, pc, nc, pr, nr, rc, rr, norm, dc, dr, &pm);
            for (int b = 0; b < nb; b++) { dlogp[2 * b] = dc[b]; dlogp[2 * b + 1] = dr[b]; }
            sum.reward_chosen += pm.reward_chosen; sum.reward_rejected += pm.reward_rejected;
            sum.margin += pm.margin; sum.accuracy += pm.accuracy;
            sum.logp_chosen += pm.logp_chosen; sum.logp_rejected += pm.logp_rejected;
        }
        model_backward(&t->m, dlogp);
    }
    loss /= norm;
    if (!isfinite(loss))
        die(EXIT_NONFINITE, "non_finite_loss", "train: loss is %g at step %ld (lower --lr, check the data)", loss,
            step);
    float gnorm = clip_grad_norm(t->m.grads, t->m.num_params, (float)t->a.grad_clip);
    if (!isfinite(gnorm))
        die(EXIT_NONFINITE, "non_finite_loss", "train: gradient norm is %g at step %ld (lower --lr, check the data)",
            (double)gnorm, step);
    double lr = learning_rate(t, step - 1);
    adamw_step(&t->m, t->mom1, t->mom2, &t->opt, (float)lr, step);
    double dt = now_s() - t0;
    printf("{\"event\":\"step\",\"step\":%ld,\"total_steps\":%ld,\"epoch\":", step, t->total);
    json_write_float(stdout, (double)step / (double)t->per_epoch);
    printf(",\"loss\":");
    json_write_float(stdout, loss);
    printf(",\"grad_norm\":");
    json_write_float(stdout, gnorm);
    printf(",\"learning_rate\":");
    json_write_float(stdout, lr);
    if (pref) {
        double n = norm;
        const char *keys[] = {"rewards/chosen",  "rewards/rejected", "rewards/accuracies",
                              "rewards/margins", "logps/chosen",     "logps/rejected"};
        double vals[] = {sum.reward_chosen / n, sum.reward_rejected / n, sum.accuracy / n,
                         sum.margin / n,        sum.logp_chosen / n,     sum.logp_rejected / n};
        for (int k = 0; k < 6; k++) { printf(",\"%s\":", keys[k]); json_write_float(stdout, vals[k]); }
    }
    printf(",\"tokens_per_s\":");
    json_write_float(stdout, tokens / (dt > 0 ? dt : 1e-9));
    printf("}\n");
    fflush(stdout);
}

// ---- checkpoints -----------------------------------------------------------------------------

#define OPT_MAGIC "OPSROPT1"

static int write_state(const char *dir, void *ctx) {
    Trainer *t = ctx;
    char path[4200], *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "{\n  \"global_step\": %ld,\n  \"total_steps\": %ld,\n  \"epoch\": ", t->step, t->total);
    json_write_float(f, (double)t->step / (double)t->per_epoch);
    fprintf(f, ",\n  \"threads\": %ld,\n  \"args\": {", t->a.threads);
    for (int i = 0; i < t->nargs; i++) {
        fprintf(f, "%s\n    ", i ? "," : "");
        json_write_string(f, t->names[i]);
        fputs(": ", f);
        json_write_string(f, t->values[i]);
    }
    fputs("\n  }\n}\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    int rc = write_file_atomic(path, buf, len);
    free(buf);
    if (rc) return -1;
    // optimizer.bin: magic, u64 step, u64 num_params, u64 seed, u64 epoch, u64 cursor (records of
    // the epoch consumed), then the AdamW moments mom1 and mom2 (f32 each).
    uint64_t n = t->m.num_params, head[5] = {(uint64_t)t->step, n, (uint64_t)t->a.seed, 0, 0};
    head[3] = (uint64_t)(t->step / t->per_epoch);
    head[4] = (uint64_t)((t->step % t->per_epoch) * t->a.batch_size * t->a.grad_accum);
    size_t size = 8 + sizeof head + 2 * n * sizeof(float);
    char *bin = malloc(size);
    if (!bin) return err_set(EXIT_IO, "out_of_memory", "cannot allocate the optimizer state for %s", dir);
    memcpy(bin, OPT_MAGIC, 8);
    memcpy(bin + 8, head, sizeof head);
    memcpy(bin + 8 + sizeof head, t->mom1, n * sizeof(float));
    memcpy(bin + 8 + sizeof head + n * sizeof(float), t->mom2, n * sizeof(float));
    snprintf(path, sizeof path, "%s/optimizer.bin", dir);
    rc = write_file_atomic(path, bin, size);
    free(bin);
    return rc;
}

static int is_checkpoint_name(const char *name, long *step) {
    if (strncmp(name, "step-", 5) || strlen(name) != 13 || strspn(name + 5, "0123456789") != 8) return 0;
    *step = strtol(name + 5, NULL, 10);
    return 1;
}

// A temp file or dir this engine writes in OUT or OUT/checkpoints: NAME.tmp-PID where NAME is
// final, ref_logps.jsonl or a checkpoint. Anything else there is the user's and stays.
static int is_engine_temp(const char *name) {
    const char *t = strstr(name, ".tmp-");
    long step;
    if (!t || !t[5] || strspn(t + 5, "0123456789") != strlen(t + 5)) return 0;
    char base[64];
    if ((size_t)(t - name) >= sizeof base) return 0;
    memcpy(base, name, (size_t)(t - name));
    base[t - name] = 0;
    return !strcmp(base, "final") || !strcmp(base, "ref_logps.jsonl") || is_checkpoint_name(base, &step);
}

// Removes temp dirs left by a crash and, when keep > 0, complete checkpoints beyond the newest
// keep. Returns the newest complete step (0 if none).
static long scan_checkpoints(const char *dir, long keep) {
    long steps[4096], n = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[4200];
        long s;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (is_engine_temp(e->d_name)) remove_tree(path);
        else if (is_checkpoint_name(e->d_name, &s) && n < 4096) {
            snprintf(path, sizeof path, "%s/%s/DONE", dir, e->d_name);
            if (file_exists(path)) steps[n++] = s;
        }
    }
    closedir(d);
    long newest = 0;
    for (long i = 0; i < n; i++) if (steps[i] > newest) newest = steps[i];
    if (keep > 0 && n > keep) {
        for (long i = 0; i < n; i++) {
            long newer = 0;
            for (long k = 0; k < n; k++) newer += steps[k] > steps[i];
            if (newer >= keep) {
                char path[4200];
                snprintf(path, sizeof path, "%s/step-%08ld", dir, steps[i]);
                remove_tree(path);
            }
        }
    }
    return newest;
}

static void save_checkpoint(Trainer *t) {
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoints/step-%08ld", t->a.out, t->step);
    // Checkpoints keep the fp32 master weights so --resume is bit-exact; final/ uses save_dtype.
    if (hf_save_dir(&t->m, t->a.model, path, "F32", t->shard_bytes, write_state, t, 1)) err_exit();
    snprintf(path, sizeof path, "%s/checkpoints", t->a.out);
    scan_checkpoints(path, t->a.keep);
    printf("{\"event\":\"checkpoint\",\"step\":%ld,\"path\":", t->step);
    snprintf(path, sizeof path, "%s/checkpoints/step-%08ld", t->a.out, t->step);
    json_write_string(stdout, path);
    printf("}\n");
    fflush(stdout);
}

static void load_checkpoint(Trainer *t, long step) {
    char dir[4200], path[4200], *text;
    size_t n;
    snprintf(dir, sizeof dir, "%s/checkpoints/step-%08ld", t->a.out, step);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if (read_file(path, &text, &n)) err_exit();
    JsonValue st;
    char perr[128];
    if (json_parse(text, n, &st, perr, sizeof perr))
        die(EXIT_BAD_INPUT, "bad_checkpoint", "%s: not valid JSON (%s)", path, perr);
    free(text);
    const JsonValue *args = json_get(&st, "args");
    for (int i = 0; i < t->nargs; i++) {
        const JsonValue *v = json_get(args, t->names[i]);
        if (!v || v->type != JSON_STRING || strcmp(v->str, t->values[i]))
            die(EXIT_BAD_INPUT, "resume_mismatch",
                "%s: the checkpoint was written with %s = %s, this run has %s; "
                "resume with the same flags and data, or use a fresh --out",
                path, t->names[i], v && v->type == JSON_STRING ? v->str : "(none)", t->values[i]);
    }
    json_free(&st);
    if (hf_load_weights(dir, &t->m)) err_exit();
    snprintf(path, sizeof path, "%s/optimizer.bin", dir);
    if (read_file(path, &text, &n)) err_exit();
    uint64_t head[5], np = t->m.num_params;
    if (n != 8 + sizeof head + 2 * np * sizeof(float) || memcmp(text, OPT_MAGIC, 8))
        die(EXIT_BAD_INPUT, "bad_checkpoint", "%s: not an optimizer state for this model (%zu bytes, expected %zu)",
            path, n, (size_t)(8 + sizeof head + 2 * np * sizeof(float)));
    memcpy(head, text + 8, sizeof head);
    if (head[0] != (uint64_t)step || head[1] != np || head[2] != (uint64_t)t->a.seed)
        die(EXIT_BAD_INPUT, "bad_checkpoint",
            "%s: records step %llu, %llu parameters, seed %llu; expected step %ld, %llu, seed %ld", path,
            (unsigned long long)head[0], (unsigned long long)head[1], (unsigned long long)head[2], step,
            (unsigned long long)np, t->a.seed);
    memcpy(t->mom1, text + 8 + sizeof head, np * sizeof(float));
    memcpy(t->mom2, text + 8 + sizeof head + np * sizeof(float), np * sizeof(float));
    free(text);
    t->step = step;
}

// ---- reference log-probs ---------------------------------------------------------------------

static void reference_pass(Trainer *t) {
    size_t n = 2 * (size_t)t->d.count;
    t->ref = calloc(n, sizeof *t->ref);
    t->ref_n = calloc(n, sizeof *t->ref_n);
    if (t->a.ref_logps) {
        if (logprobs_read(t->a.ref_logps, &t->d, t->ref, t->ref_n, NULL)) err_exit();
        return;
    }
    // The cache is tied to the data and the starting model by a hash of both.
    char path[4200], key[40];
    snprintf(key, sizeof key, "%016llx-%016llx", (unsigned long long)t->d.hash, (unsigned long long)t->model_hash);
    snprintf(path, sizeof path, "%s/ref_logps.jsonl", t->a.out);
    if (file_exists(path) && logprobs_read(path, &t->d, t->ref, t->ref_n, key) == 0) return;
    int rc = logprobs_compute(&t->m, &t->d, t->ref, t->ref_n, &g_stop);
    if (rc < 0) err_exit();
    if (rc > 0)
        die(EXIT_STOPPED, "stopped", "train: stopped by signal %d during the reference pre-pass (no step done)",
            (int)g_stop);
    // Read back what was written so a fresh and a resumed run use the very same numbers.
    if (logprobs_write(path, &t->d, t->ref, t->ref_n, key) || logprobs_read(path, &t->d, t->ref, t->ref_n, key))
        err_exit();
}

int cmd_train(int argc, char **argv) {
    static Trainer tr;
    Trainer *t = &tr;
    parse_args(t, argc, argv);
    set_threads(t->a.threads);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (hf_load_model(t->a.model, &t->m)) err_exit();
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/config.json", t->a.model);
    t->model_hash = hash_file(mpath, FNV_OFFSET);
    StSet *weights = st_open_dir(t->a.model);
    if (!weights) err_exit();
    t->model_hash = st_hash(weights, t->model_hash);
    if (!t->save_dtype) t->save_dtype = st_dtype(weights);  // a static name, valid after st_close
    st_close(weights);
    if (data_load(t->a.data, &t->m.cfg, &t->d)) err_exit();
    int pref = t->loss.kind != LOSS_SFT;
    if (pref != (t->d.kind == DATA_PREF))
        die(EXIT_BAD_INPUT, "usage", "train: --loss %s needs %s data, but %s holds %s records", t->a.loss,
            pref ? "preference" : "sft", t->a.data, t->d.kind == DATA_PREF ? "preference" : "sft");
    long per_step = t->a.batch_size * t->a.grad_accum;
    t->per_epoch = (t->d.count + per_step - 1) / per_step;
    t->total = t->a.max_steps ? t->a.max_steps : t->a.epochs * t->per_epoch;
    t->warmup = t->a.warmup_steps ? t->a.warmup_steps : (long)ceil(t->a.warmup_ratio * (double)t->total);
    record_args(t);

    size_t np = t->m.num_params, cap = 2 * (size_t)t->a.batch_size * (size_t)t->m.cfg.max_seq_len;
    t->mom1 = calloc(np, sizeof(float));
    t->mom2 = calloc(np, sizeof(float));
    t->perm = malloc((size_t)t->d.count * sizeof *t->perm);
    t->tokens = malloc(cap * sizeof(int));
    t->targets = malloc(cap * sizeof(int));
    t->perm_epoch = -1;
    if (!t->mom1 || !t->mom2 || !t->perm || !t->tokens || !t->targets || model_alloc_grads(&t->m))
        die(EXIT_IO, "out_of_memory", "train: cannot allocate the optimizer state for %zu parameters", np);

    char ckdir[4200];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", t->a.out);
    if (mkdir_p(ckdir)) err_exit();
    scan_checkpoints(t->a.out, 0);  // temp files and dirs a killed run left in OUT
    long newest = scan_checkpoints(ckdir, 0);
    if (newest && !t->a.resume)
        die(EXIT_BAD_INPUT, "usage",
            "train: %s already holds checkpoints (newest step %ld); pass --resume to continue it, or use a fresh --out",
            ckdir, newest);
    // Reference log-probs come from --model's weights, before any checkpoint is loaded.
    if (t->loss.kind == LOSS_DPO || t->loss.kind == LOSS_IPO || t->loss.kind == LOSS_HINGE) reference_pass(t);
    if (newest > t->total)
        die(EXIT_BAD_INPUT, "resume_mismatch",
            "train: checkpoint step %ld is beyond this run's %ld steps; resume with the same flags", newest, t->total);
    if (newest) load_checkpoint(t, newest);

    printf("{\"event\":\"start\",\"total_steps\":%ld,\"records\":%d,\"resumed_from\":", t->total, t->d.count);
    if (newest) printf("%ld}\n", newest); else printf("null}\n");
    fflush(stdout);
    long saved = newest;
    while (t->step < t->total) {
        if (g_stop) break;
        train_step(t, t->step + 1);
        t->step++;
        if (t->a.checkpoint_every && t->step % t->a.checkpoint_every == 0) { save_checkpoint(t); saved = t->step; }
    }
    if (g_stop && t->step < t->total) {
        if (saved != t->step) save_checkpoint(t);
        die(EXIT_STOPPED, "stopped", "train: stopped by signal %d after step %ld of %ld; resume with --resume",
            (int)g_stop, t->step, t->total);
    }
    if (saved != t->step) save_checkpoint(t);
    char final[4200];
    snprintf(final, sizeof final, "%s/final", t->a.out);
    if (hf_save_dir(&t->m, t->a.model, final, t->save_dtype, t->shard_bytes, NULL, NULL, 0)) err_exit();
    printf("{\"event\":\"done\",\"step\":%ld,\"path\":", t->step);
    json_write_string(stdout, final);
    printf("}\n");
    fflush(stdout);
    free(t->mom1); free(t->mom2); free(t->perm); free(t->tokens); free(t->targets); free(t->ref); free(t->ref_n);
    data_free(&t->d);
    model_free(&t->m);
    return 0;
}
