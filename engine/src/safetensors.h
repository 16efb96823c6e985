// safetensors files: 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the raw little-endian data.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_OTHER } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    char dtype_name[16];
    int ndim;
    int64_t shape[8];
    const unsigned char *data;  // into the mapped file
    uint64_t nbytes;
} StTensor;

typedef struct {
    const char *path;
    unsigned char *map;
    size_t size;
    int n;
    StTensor *t;
} StFile;

// Maps and validates a file (header JSON, dtypes' sizes vs offsets, offsets within the file).
// Errors name the file and the tensor. Returns 0 or -1 (error recorded, see util.h).
int st_open(const char *path, StFile *f);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
// Converts n elements of a tensor to float32 (F32, F16 or BF16).
void st_to_f32(const StTensor *t, float *out, size_t n);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;
} StWrite;
// Writes F32 tensors with __metadata__ {"format":"pt"} atomically (temp file, fsync, rename).
int st_save(const char *path, const StWrite *tensors, int n);
