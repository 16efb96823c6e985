// Hugging Face model directories: config.json + model.safetensors (+ tokenizer files).
// Used by every command that loads or writes weights (init, train, logprobs, serve, parity).
#pragma once
#include "model.h"

// Reads and validates an HF config.json (model.h); errors name the file and the field.
int hf_load_config(const char *path, ModelConfig *cfg);
// Loads DIR/config.json and DIR's weights (single or sharded) into m (built here; free with
// model_free).
int hf_load_model(const char *dir, Model *m);
// Loads only the weights of DIR (model.safetensors or its sharded index) into an already built m.
int hf_load_weights(const char *dir, Model *m);
// Writes DIR's weights (HF names) as dtype F32/BF16/F16, sharded above shard_bytes (0: one file).
int hf_save_weights(const Model *m, const char *dir, const char *dtype, size_t shard_bytes);
// Copies the tokenizer files that exist in src_dir into dst_dir (tokenizer.json, ...).
int hf_copy_tokenizer_files(const char *src_dir, const char *dst_dir);
// Builds a complete HF dir for m at dst atomically (temp dir, then replace): config.json from
// src_dir (its dtype set to the saved one), the weights (see hf_save_weights), tokenizer files from
// src_dir. extra(dir, ctx), when not NULL, adds files (trainer state) before the swap; a DONE
// marker is written last when done!=0.
int hf_save_dir(const Model *m, const char *src_dir, const char *dst, const char *dtype, size_t shard_bytes,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done);
