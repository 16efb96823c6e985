// Per-record response log-probs: the logprobs command and the reference pre-pass of training.
#pragma once
#include <signal.h>
#include "data.h"
#include "model.h"

// lp[2*i + s], nt[2*i + s]: summed log-prob and token count of record i's response s (s = 0:
// response or chosen, 1: rejected; unused for sft). Returns 0, 1 when stopped early because
// *stop was set, or -1 (error recorded).
int logprobs_compute(Model *m, const DataFile *d, float *lp, int *nt, volatile sig_atomic_t *stop);
// JSON lines as documented in engine/README.md, atomically to path (stdout when NULL). key, when
// not NULL, is added to each line as "key" to tie a cache to its data and model.
int logprobs_write(const char *path, const DataFile *d, const float *lp, const int *nt, const char *key);
// Reads such a file back for d. Returns 0, 1 when key is given and does not match (a stale
// cache), or -1 with an error naming the file and line (wrong count, token counts or fields).
int logprobs_read(const char *path, const DataFile *d, float *lp, int *nt, const char *key);
