#include "json.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

typedef struct {
    const char *s, *end, *start;
    char *err;
    size_t errcap;
    int depth;
} Parser;

static int fail(Parser *p, const char *what) {
    int line = 1, col = 1;
    for (const char *c = p->start; c < p->s && c < p->end; c++) {
        if (*c == '\n') { line++; col = 1; } else col++;
    }
    snprintf(p->err, p->errcap, "line %d, column %d: %s", line, col, what);
    return -1;
}

static void skip_ws(Parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int hex4(Parser *p, unsigned *out) {
    if (p->end - p->s < 4) return fail(p, "expected 4 hex digits after \\u");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *p->s++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return fail(p, "expected a hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static int parse_string(Parser *p, char **out) {
    p->s++;  // opening quote
    // Unescaped output is never longer than the input.
    const char *q = p->s;
    while (q < p->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= p->end) return fail(p, "unterminated string");
    char *buf = checked_realloc(NULL, (size_t)(q - p->s) + 1, 1, "a JSON string"), *w = buf;
    if (!buf) return fail(p, "out of memory");
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s++;
        if (c < 0x20) { free(buf); return fail(p, "control character in string"); }
        if (c != '\\') { *w++ = (char)c; continue; }
        char e = *p->s++;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp)) { free(buf); return -1; }
            // Names and token text are C strings: an embedded NUL would silently cut them.
            if (cp == 0) { free(buf); return fail(p, "\\u0000 (NUL) is not allowed in strings"); }
            if (cp >= 0xDC00 && cp < 0xE000) { free(buf); return fail(p, "unpaired low surrogate in \\u escape"); }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u') {
                    free(buf);
                    return fail(p, "unpaired high surrogate in \\u escape");
                }
                p->s += 2;
                if (hex4(p, &lo)) { free(buf); return -1; }
                if (lo < 0xDC00 || lo >= 0xE000) {
                    free(buf);
                    return fail(p, "high surrogate not followed by a low one in \\u escape");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            // UTF-8 encode (at most 4 bytes; the escape took at least 6 input bytes).
            if (cp < 0x80) *w++ = (char)cp;
            else if (cp < 0x800) { *w++ = (char)(0xC0 | cp >> 6); *w++ = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | cp >> 12);
                *w++ = (char)(0x80 | ((cp >> 6) & 63));
                *w++ = (char)(0x80 | (cp & 63));
            } else {
                *w++ = (char)(0xF0 | cp >> 18);
                *w++ = (char)(0x80 | ((cp >> 12) & 63));
                *w++ = (char)(0x80 | ((cp >> 6) & 63));
                *w++ = (char)(0x80 | (cp & 63));
            }
            break;
        }
        default: free(buf); p->s--; return fail(p, "invalid escape in string");
        }
    }
    p->s++;  // closing quote
    *w = 0;
    *out = buf;
    return 0;
}

static int parse_value(Parser *p, JsonValue *v);

static int digits(Parser *p, const char **q) {
    const char *start = *q;
    while (*q < p->end && **q >= '0' && **q <= '9') (*q)++;
    return *q > start;
}

// RFC 8259's number grammar, any length (strtod gets a NUL-terminated copy); out-of-range
// magnitudes become +-inf or 0 like strtod, which json_is_int and the callers' ranges refuse.
static int parse_number(Parser *p, JsonValue *v) {
    const char *q = p->s;
    if (*q == '-') q++;
    if (q < p->end && *q == '0') q++;
    else if (!digits(p, &q)) return fail(p, "malformed number: expected a digit");
    if (q < p->end && *q == '.') {
        q++;
        if (!digits(p, &q)) return fail(p, "malformed number: expected a digit after '.'");
    }
    if (q < p->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < p->end && (*q == '+' || *q == '-')) q++;
        if (!digits(p, &q)) return fail(p, "malformed number: expected a digit in the exponent");
    }
    size_t n = (size_t)(q - p->s);
    char small[64], *buf = n < sizeof small ? small : checked_realloc(NULL, n + 1, 1, "a JSON number");
    if (!buf) return fail(p, "out of memory for a long number");
    memcpy(buf, p->s, n);
    buf[n] = 0;
    v->num = strtod(buf, NULL);
    if (buf != small) free(buf);
    v->type = JSON_NUMBER;
    p->s = q;
    return 0;
}

static int push(Parser *p, JsonValue *v, int *cap, char *key) {
    if (v->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        JsonValue *items = checked_realloc(v->items, (size_t)*cap, sizeof *items, "JSON values");
        if (!items) return fail(p, "out of memory");
        v->items = items;
        if (v->type == JSON_OBJECT) {
            char **keys = checked_realloc(v->keys, (size_t)*cap, sizeof *keys, "JSON keys");
            if (!keys) return fail(p, "out of memory");
            v->keys = keys;
        }
    }
    memset(&v->items[v->n], 0, sizeof *v->items);
    if (v->type == JSON_OBJECT) v->keys[v->n] = key;
    v->n++;
    if (parse_value(p, &v->items[v->n - 1])) return -1;
    return 0;
}

static int parse_container(Parser *p, JsonValue *v, char close) {
    int cap = 0;
    v->type = close == '}' ? JSON_OBJECT : JSON_ARRAY;
    if (++p->depth > 64) return fail(p, "nesting deeper than 64 levels");
    p->s++;
    skip_ws(p);
    if (p->s < p->end && *p->s == close) { p->s++; p->depth--; return 0; }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (close == '}') {
            if (p->s >= p->end || *p->s != '"') return fail(p, "expected a string key");
            if (parse_string(p, &key)) return -1;
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':') { free(key); return fail(p, "expected ':' after key"); }
            p->s++;
        }
        if (push(p, v, &cap, key)) {
            if (v->n == 0 || v->keys == NULL || v->keys[v->n - 1] != key) free(key);
            return -1;
        }
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == close) { p->s++; p->depth--; return 0; }
        return fail(p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(Parser *p, JsonValue *v) {
    skip_ws(p);
    if (p->s >= p->end) return fail(p, "unexpected end of input");
    char c = *p->s;
    if (c == '{') return parse_container(p, v, '}');
    if (c == '[') return parse_container(p, v, ']');
    if (c == '"') { v->type = JSON_STRING; return parse_string(p, &v->str); }
    static const struct { const char *lit; JsonType t; int b; } lits[] = {
        {"true", JSON_BOOL, 1}, {"false", JSON_BOOL, 0}, {"null", JSON_NULL, 0}};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(lits[i].lit);
        if ((size_t)(p->end - p->s) >= n && !memcmp(p->s, lits[i].lit, n)) {
            v->type = lits[i].t; v->boolean = lits[i].b; p->s += n;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    return fail(p, "expected a value");
}

int json_parse(const char *text, size_t len, JsonValue *out, char *err, size_t errcap) {
    Parser p = {text, text + len, text, err, errcap, 0};
    memset(out, 0, sizeof *out);
    if (parse_value(&p, out)) { json_free(out); return -1; }
    skip_ws(&p);
    if (p.s != p.end) { json_free(out); return fail(&p, "unexpected text after the value"); }
    return 0;
}

void json_free(JsonValue *v) {
    for (int i = 0; i < v->n; i++) {
        json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const JsonValue *json_get(const JsonValue *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

int json_is_int(const JsonValue *v, double lo, double hi) {
    return v && v->type == JSON_NUMBER && v->num == floor(v->num) && v->num >= lo && v->num <= hi;
}

const char *json_type_name(JsonType t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return names[t];
}

const char *json_type_phrase(const JsonValue *v) {
    static const char *phrases[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return v ? phrases[v->type] : "nothing";
}

void json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') { fputc('\\', f); fputc(*c, f); }
        else if (*c == '\n') fputs("\\n", f);
        else if (*c == '\t') fputs("\\t", f);
        else if (*c == '\r') fputs("\\r", f);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
}

void json_write_float(FILE *f, double x) {
    if (!isfinite(x)) { fputs("null", f); return; }
    fprintf(f, "%.9g", x);
}

// Shortest of %.15g..%.17g that reads back as the same double.
static void write_double(FILE *f, double x) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    fputs(buf, f);
}

void json_write_value(FILE *f, const JsonValue *v, int indent) {
    switch (v->type) {
    case JSON_NULL: fputs("null", f); return;
    case JSON_BOOL: fputs(v->boolean ? "true" : "false", f); return;
    case JSON_NUMBER: if (isfinite(v->num)) write_double(f, v->num); else fputs("null", f); return;
    case JSON_STRING: json_write_string(f, v->str); return;
    default: break;
    }
    int obj = v->type == JSON_OBJECT;
    if (v->n == 0) { fputs(obj ? "{}" : "[]", f); return; }
    fputc(obj ? '{' : '[', f);
    for (int i = 0; i < v->n; i++) {
        fprintf(f, "%s\n%*s", i ? "," : "", indent + 2, "");
        if (obj) { json_write_string(f, v->keys[i]); fputs(": ", f); }
        json_write_value(f, &v->items[i], indent + 2);
    }
    fprintf(f, "\n%*s%c", indent, "", obj ? '}' : ']');
}
