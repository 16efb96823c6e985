// Hugging Face GPT-2 model directories: config.json + model.safetensors (+ tokenizer files).
// Used by every command that loads or writes weights (init, train, logprobs, serve, parity).
#pragma once
#include "gpt2.h"

// Parses and validates an HF GPT-2 config.json; errors name the file and the field.
int hf_load_config(const char *path, GPT2Config *cfg);
// Loads DIR/config.json and DIR's weights (single or sharded) into m (built here; free with gpt2_free).
int hf_load_model(const char *dir, GPT2 *m);
// Loads only the weights of DIR (model.safetensors or its sharded index) into an already built m.
int hf_load_weights(const char *dir, GPT2 *m);
// Writes DIR's weights (HF names) as dtype F32/BF16/F16, sharded above shard_bytes (0: one file).
int hf_save_weights(const GPT2 *m, const char *dir, const char *dtype, size_t shard_bytes);
// A complete HF GPT-2 config.json text for cfg; token ids < 0 mean "vocab_size - 1" (GPT-2's).
char *hf_config_json(const GPT2Config *cfg, int bos_token_id, int eos_token_id);
// Copies the tokenizer files that exist in src_dir into dst_dir (tokenizer.json, ...).
int hf_copy_tokenizer_files(const char *src_dir, const char *dst_dir);
// Builds a complete HF dir for m at dst atomically (temp dir, then replace): config.json from
// src_dir (its dtype set to the saved one), the weights (see hf_save_weights), tokenizer files from
// src_dir. extra(dir, ctx), when not NULL, adds files (trainer state) before the swap; a DONE
// marker is written last when done!=0.
int hf_save_dir(const GPT2 *m, const char *src_dir, const char *dst, const char *dtype, size_t shard_bytes,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done);
