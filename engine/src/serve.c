// opsr-engine serve: batched generation over a JSON-lines protocol on stdin/stdout (one long-lived
// process per served model; the Node server feeds it). Protocol in engine/README.md, "serve".
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "generate.h"
#include "json.h"
#include "util.h"

#define MAX_LINE (64 << 20)  // a request line may not exceed 64 MiB

static const char *FINISH[] = {"stop", "length", "cancelled"};

static void on_token(void *ctx, int64_t id, int token, float logprob, int n_top,
                     const int *top_ids, const float *top_lp) {
    printf("{\"event\":\"token\",\"id\":%lld,\"token\":%d", (long long)id, token);
    if (!isnan(logprob)) {
        fputs(",\"logprob\":", stdout);
        json_write_float(stdout, logprob);
        fputs(",\"top_logprobs\":[", stdout);
        for (int i = 0; i < n_top; i++) {
            printf("%s[%d,", i ? "," : "", top_ids[i]);
            json_write_float(stdout, top_lp[i]);
            putchar(']');
        }
        putchar(']');
    }
    fputs("}\n", stdout);
}

static void on_done(void *ctx, int64_t id, GenFinish f, int stop_token, int prompt_tokens,
                    int completion_tokens) {
    if (f == GEN_FINISH_NONFINITE) {  // refused: the client gets an error, not a truncated answer
        printf("{\"event\":\"error\",\"id\":%lld,\"code\":\"nonfinite_logits\",\"message\":\"request %lld: the model "
               "produced a NaN or infinite logit after %d generated tokens; the request is refused\"}\n",
               (long long)id, (long long)id, completion_tokens);
        return;
    }
    printf("{\"event\":\"done\",\"id\":%lld,\"finish_reason\":\"%s\",\"stop_token\":", (long long)id, FINISH[f]);
    if (stop_token >= 0) printf("%d", stop_token); else fputs("null", stdout);
    printf(",\"prompt_tokens\":%d,\"completion_tokens\":%d}\n", prompt_tokens, completion_tokens);
}

static void request_error(const JsonValue *id, const char *message) {
    fputs("{\"event\":\"error\",\"id\":", stdout);
    if (id && json_is_int(id, 0, 9007199254740991.0)) printf("%lld", (long long)id->num); else fputs("null", stdout);
    fputs(",\"code\":\"bad_request\",\"message\":", stdout);
    json_write_string(stdout, message);
    fputs("}\n", stdout);
}

// Optional number field: absent or null keeps *out. Returns 0, or -1 with msg filled.
static int opt_num(const JsonValue *req, const char *key, double *out, char *msg, size_t cap) {
    const JsonValue *v = json_get(req, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_NUMBER) { snprintf(msg, cap, "field %s must be a number", key); return -1; }
    *out = v->num;
    return 0;
}

static int opt_ids(const JsonValue *req, const char *key, int *out, int *n, int max, char *msg, size_t cap) {
    const JsonValue *v = json_get(req, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_ARRAY || v->n > max) {
        snprintf(msg, cap, "field %s must be an array of at most %d token ids", key, max);
        return -1;
    }
    for (int i = 0; i < v->n; i++) {
        if (!json_is_int(&v->items[i], 0, 2147483647.0)) {
            snprintf(msg, cap, "field %s[%d] must be a non-negative integer token id", key, i);
            return -1;
        }
        out[i] = (int)v->items[i].num;
    }
    *n = v->n;
    return 0;
}

static void handle_generate(Generator *g, const JsonValue *req, const JsonValue *id) {
    char msg[256] = "";
    const JsonValue *prompt = json_get(req, "prompt");
    if (!json_is_int(id, 0, 9007199254740991.0)) {
        request_error(id, "field id must be a non-negative integer");
        return;
    }
    if (!prompt || prompt->type != JSON_ARRAY || prompt->n < 1) {
        request_error(id, "field prompt must be a non-empty array of token ids");
        return;
    }
    int *ids = malloc((size_t)prompt->n * sizeof(int));
    if (!ids) { request_error(id, "out of memory for the prompt"); return; }
    for (int i = 0; i < prompt->n && !msg[0]; i++) {
        if (!json_is_int(&prompt->items[i], 0, 2147483647.0))
            snprintf(msg, sizeof msg, "field prompt[%d] must be a non-negative integer token id", i);
        else ids[i] = (int)prompt->items[i].num;
    }
    double temperature = 1.0, top_p = 1.0, top_k = 0, max_tokens = 16, seed = 0, top_logprobs = 0;
    GenParams p = {0};
    const JsonValue *lp = json_get(req, "logprobs");
    if (!msg[0] && lp && lp->type != JSON_NULL && lp->type != JSON_BOOL)
        snprintf(msg, sizeof msg, "field logprobs must be true or false");
    if (!msg[0])
        (void)(opt_num(req, "temperature", &temperature, msg, sizeof msg) ||
               opt_num(req, "top_p", &top_p, msg, sizeof msg) || opt_num(req, "top_k", &top_k, msg, sizeof msg) ||
               opt_num(req, "max_tokens", &max_tokens, msg, sizeof msg) ||
               opt_num(req, "seed", &seed, msg, sizeof msg) ||
               opt_num(req, "top_logprobs", &top_logprobs, msg, sizeof msg) ||
               opt_ids(req, "stop_token_ids", p.stop_ids, &p.n_stop, GEN_MAX_STOP_IDS, msg, sizeof msg));
    if (!msg[0] && (seed < 0 || seed > 18446744073709551615.0 || seed != floor(seed)))
        snprintf(msg, sizeof msg, "field seed must be a non-negative integer");
    if (!msg[0] && (top_k != floor(top_k) || top_k > 2147483647.0))
        snprintf(msg, sizeof msg, "field top_k must be an integer >= 0 (0 = off)");
    if (!msg[0] && (max_tokens != floor(max_tokens) || max_tokens > 2147483647.0))
        snprintf(msg, sizeof msg, "field max_tokens must be an integer >= 1");
    if (!msg[0] && top_logprobs != floor(top_logprobs))
        snprintf(msg, sizeof msg, "field top_logprobs must be an integer in [0, %d]", GEN_MAX_TOP_LOGPROBS);
    if (msg[0]) { request_error(id, msg); free(ids); return; }
    p.temperature = (float)temperature;
    p.top_p = (float)top_p;
    p.top_k = top_k < 0 ? -1 : (int)top_k;
    p.max_tokens = max_tokens < 1 ? 0 : (int)max_tokens;
    p.seed = (uint64_t)seed;
    p.logprobs = lp && lp->type == JSON_BOOL && lp->boolean;
    p.top_logprobs = top_logprobs < 0 || top_logprobs > GEN_MAX_TOP_LOGPROBS ? -1 : (int)top_logprobs;
    if (gen_submit(g, (int64_t)id->num, ids, prompt->n, &p)) request_error(id, err_message());
    free(ids);
}

static void handle_line(Generator *g, const char *line, size_t len) {
    JsonValue req;
    char perr[160], msg[256];
    if (json_parse(line, len, &req, perr, sizeof perr)) {
        snprintf(msg, sizeof msg, "request line is not JSON: %s", perr);
        request_error(NULL, msg);
        return;
    }
    const JsonValue *op = json_get(&req, "op"), *id = json_get(&req, "id");
    if (!op || op->type != JSON_STRING) request_error(id, "field op must be \"generate\" or \"cancel\"");
    else if (!strcmp(op->str, "generate")) handle_generate(g, &req, id);
    else if (!strcmp(op->str, "cancel")) {
        // Cancelling a request that already finished is not an error: its done line was sent.
        if (json_is_int(id, 0, 9007199254740991.0)) gen_cancel(g, (int64_t)id->num, on_done, NULL);
        else request_error(id, "field id must be a non-negative integer");
    } else request_error(id, "field op must be \"generate\" or \"cancel\"");
    json_free(&req);
}

int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *dtype = "fp32";
    long threads = 0, max_batch = 16, prefill_budget = 0;
    ArgSpec specs[] = {{"model", ARG_STR, &model, 0}, {"threads", ARG_INT, &threads, 0},
                       {"max-batch", ARG_INT, &max_batch, 0}, {"prefill-tokens", ARG_INT, &prefill_budget, 0},
                       {"dtype", ARG_STR, &dtype, 0}};
    if (args_parse("serve", argc, argv, specs, 5)) err_exit();
    if (strcmp(dtype, "fp32") && strcmp(dtype, "bf16"))
        die(EXIT_BAD_INPUT, "usage", "serve: --dtype must be fp32 or bf16, got %s", dtype);
    if (!model) die(EXIT_BAD_INPUT, "usage", "serve: --model DIR is required");
    if (max_batch < 1 || max_batch > 4096)
        die(EXIT_BAD_INPUT, "usage", "serve: --max-batch must be in [1, 4096], got %ld", max_batch);
    if (prefill_budget < 0)
        die(EXIT_BAD_INPUT, "usage", "serve: --prefill-tokens must be >= 1 (0 = the context length)");
    set_threads(threads);
    Model m;
    if (hf_load_model(model, &m)) err_exit();
    Generator *g = gen_create(&m, (int)max_batch, prefill_budget ? (int)prefill_budget : m.cfg.max_seq_len,
                              !strcmp(dtype, "bf16"));
    if (!g) err_exit();
    printf("{\"event\":\"ready\",\"n_ctx\":%d,\"vocab_size\":%d,\"max_batch\":%ld,\"dtype\":\"%s\",\"isa\":\"%s\"}\n",
           m.cfg.max_seq_len, m.cfg.vocab_size, max_batch, dtype, gen_isa(g));
    fflush(stdout);

    size_t cap = 1 << 16, have = 0;
    char *buf = malloc(cap);
    int eof = 0;
    while (!eof || gen_pending(g) > 0) {
        // Block for input only when there is nothing to generate.
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        int ready = eof ? 0 : poll(&pfd, 1, gen_pending(g) > 0 ? 0 : -1);
        if (ready < 0 && errno != EINTR) die(EXIT_IO, "io_error", "serve: poll on stdin failed: %s", strerror(errno));
        if (ready > 0) {
            if (have == cap) {
                if (cap >= MAX_LINE)
                    die(EXIT_BAD_INPUT, "line_too_long", "serve: a request line exceeds %d bytes", MAX_LINE);
                buf = realloc(buf, cap *= 2);
                if (!buf) die(EXIT_IO, "out_of_memory", "serve: cannot grow the input buffer");
            }
            ssize_t n = read(0, buf + have, cap - have);
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                die(EXIT_IO, "io_error", "serve: reading stdin failed: %s", strerror(errno));
            if (n == 0) eof = 1;
            if (n > 0) have += (size_t)n;
            size_t start = 0;
            for (size_t i = 0; i < have; i++) {
                if (buf[i] != '\n') continue;
                if (i > start) handle_line(g, buf + start, i - start);
                start = i + 1;
            }
            if (eof && start < have) {  // a last line without its newline
                handle_line(g, buf + start, have - start);
                start = have;
            }
            memmove(buf, buf + start, have - start);
            have -= start;
        }
        if (gen_pending(g) > 0 && gen_step(g, on_token, on_done, NULL) < 0) err_exit();
        if (fflush(stdout)) die(EXIT_IO, "io_error", "serve: cannot write to stdout");
    }
    free(buf);
    gen_free(g);
    model_free(&m);
    return 0;
}
