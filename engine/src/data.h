// The training data file written by lib/tokdata.ts (little-endian):
//   header (24 bytes): "OPSRDATA", u32 version = 1, u32 kind (1 sft, 2 preference),
//                      u32 record_count, u32 reserved = 0
//   sft record:        u32 prompt_len, u32 response_len, prompt ids, response ids
//   preference record: u32 prompt_len, u32 chosen_len, u32 rejected_len, prompt, chosen,
//                      rejected ids (all u32)
// Losses and log-probs count response tokens only.
#pragma once
#include <stdint.h>
#include "model.h"

enum { DATA_SFT = 1, DATA_PREF = 2 };

typedef struct {
    int prompt_len;
    int resp_len[2];           // [0] response or chosen, [1] rejected (0 for sft)
    const uint32_t *prompt;
    const uint32_t *resp[2];
} DataRecord;

typedef struct {
    int kind;
    int count;
    DataRecord *rec;
    char *buf;        // the file's bytes
    uint64_t hash;    // FNV-1a of the file's bytes (identifies the data for caches)
} DataFile;

// Reads and validates a data file against a model config: magic, version, kind, lengths vs
// file size, ids < vocab_size, 1 <= prompt_len, 1 <= response_len, prompt + response <=
// n_positions. Errors name the file and the record index. Returns 0 or -1 (error recorded).
int data_load(const char *path, const ModelConfig *cfg, DataFile *d);
void data_free(DataFile *d);

// Builds one padded micro-batch of sequences (prompt + response, minus the last token as
// input) into tokens/targets [B*T]; targets are -1 outside the response. Returns T.
int data_batch(const DataRecord *const *seq_rec, const int *seq_side, int B, int *tokens, int *targets);
