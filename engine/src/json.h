// A small JSON reader (a tree of values) and writer helpers, enough for config.json,
// safetensors headers, trainer state and JSON-lines files.
#pragma once
#include <stddef.h>
#include <stdio.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue {
    JsonType type;
    int boolean;
    double num;
    char *str;               // JSON_STRING (NUL-terminated, unescaped)
    int n;                   // JSON_ARRAY / JSON_OBJECT: number of items
    char **keys;             // JSON_OBJECT: item keys
    struct JsonValue *items; // JSON_ARRAY / JSON_OBJECT
} JsonValue;

// Parses exactly one JSON value (surrounding whitespace allowed). On failure returns -1 and
// writes "line L, column C: <what was expected>" into err.
int json_parse(const char *text, size_t len, JsonValue *out, char *err, size_t errcap);
void json_free(JsonValue *v);
// Object member by key, or NULL (also NULL when obj is not an object).
const JsonValue *json_get(const JsonValue *obj, const char *key);
// 1 if v is a number with an integral value in [lo, hi].
int json_is_int(const JsonValue *v, double lo, double hi);
const char *json_type_name(JsonType t);
// The type with its article for messages ("an object", "a number", "null"); NULL v: "nothing".
const char *json_type_phrase(const JsonValue *v);

void json_write_string(FILE *f, const char *s);
// Shortest round-tripping decimal for a float; non-finite values are written as null.
void json_write_float(FILE *f, double x);
// Writes a whole value, pretty-printed with two-space indentation (keys in their order).
void json_write_value(FILE *f, const JsonValue *v, int indent);
