// Hugging Face weights: DIR/model.safetensors, or shards listed by DIR/model.safetensors.index.json
// ({"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}). A safetensors file is an
// 8-byte little-endian header length, a JSON header mapping tensor names to {dtype, shape,
// data_offsets} (plus "__metadata__"), then the raw little-endian data.
// Reading converts F32, BF16 and F16 to fp32; writing stores F32, BF16 (round-to-nearest-even, as
// torch) or F16. Every error is recorded with err_set (util.h), names the file and the tensor,
// and exits 2 (bad input) unless the system failed (I/O, memory).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct StSet StSet;

// Maps the weights of DIR (model.safetensors first, like transformers, else the index and its
// shards) and validates every header: dtypes, shapes, offsets inside the data and not overlapping,
// no tensor twice, every weight_map entry present in its shard and every shard tensor in
// the weight_map. Refuses a DIR/config.json holding a quantization_config. NULL on failure.
StSet *st_open_dir(const char *dir);
// Reads tensor `name` into out (fp32), checking that it has exactly `shape` (ndim dims), a
// float dtype and only finite values. Returns 0 or -1 (error recorded).
int st_read_f32(StSet *s, const char *name, const int64_t *shape, int ndim, float *out);
int st_has(const StSet *s, const char *name);
// The shape of tensor `name` into shape[0..8); returns its rank, or -1 when there is no such tensor.
int st_shape(const StSet *s, const char *name, int64_t shape[8]);
// Each call returns one more tensor that was never read (and marks it reported), NULL when none
// is left: callers loop, skip the names they ignore on purpose and refuse the rest.
const char *st_unused(StSet *s);
// The dtype ("F32", "BF16" or "F16") holding most of the checkpoint's elements: the default
// dtype for saving.
const char *st_dtype(const StSet *s);
// Chains FNV-1a (util.h) over the bytes of every weight file, in shard order.
uint64_t st_hash(const StSet *s, uint64_t h);
void st_close(StSet *s);

typedef struct {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[4];
} StOut;
// Writes n tensors into DIR as `dtype` ("F32", "BF16" or "F16", any case): one model.safetensors,
// or, when shard_bytes > 0 and the data exceeds it, model-0000k-of-0000n.safetensors shards of at
// most shard_bytes each (a larger tensor gets a shard of its own) and the index. Every file is
// written atomically (temp file, fsync, rename), the index last; the other layout's entry file
// is removed first so a reader never sees a stale one. Returns 0 or -1 (error recorded).
int st_save_dir(const char *dir, const StOut *t, int n, const char *dtype, size_t shard_bytes);
// Canonical dtype name ("F32", "BF16", "F16") for a case-insensitive spelling, or NULL.
const char *st_save_dtype(const char *name);
// Parses a size such as "1000000", "500MB", "5GB", "2GiB" (KB/MB/GB are powers of 1000, KiB/MiB/GiB
// of 1024, like transformers' max_shard_size). Returns 0 or -1 when malformed or zero.
int st_parse_size(const char *text, size_t *out);
