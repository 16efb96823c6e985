// Hugging Face model directories: config.json + model.safetensors (+ tokenizer files).
// Used by every command that loads or writes weights (init, train, logprobs, serve, parity).
#pragma once
#include "model.h"

// Reads and validates an HF config.json (model.h); errors name the file and the field.
int hf_load_config(const char *path, ModelConfig *cfg);
// Loads DIR/config.json and DIR/model.safetensors into m (built here; free with model_free).
int hf_load_model(const char *dir, Model *m);
// Loads only the weights of a safetensors file into an already built m.
int hf_load_weights(const char *path, Model *m);
// Writes DIR/model.safetensors (HF names, F32) atomically.
int hf_save_weights(const Model *m, const char *path);
// Copies the tokenizer files that exist in src_dir into dst_dir (tokenizer.json, ...).
int hf_copy_tokenizer_files(const char *src_dir, const char *dst_dir);
// Builds a complete HF dir for m at dst atomically (temp dir, then replace): config.json from
// src_dir (its dtype set to float32), model.safetensors, tokenizer files from src_dir. extra(dir, ctx), when not
// NULL, adds files (trainer state) before the swap; a DONE marker is written last when done!=0.
int hf_save_dir(const Model *m, const char *src_dir, const char *dst,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done);
