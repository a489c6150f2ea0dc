/*
 * fuzz_json.c - libFuzzer target of json_parse (io.c).
 *
 * The bytes are parsed as one JSON text.  On success every string and key is
 * written back with json_write_string and parsed again: it must come back as
 * the same bytes (a property, checked with abort()).  json_get is exercised on
 * every object.
 */
#include "fuzz_util.h"

static void fuzz_json_walk(const Json *v, int depth) {
    if (v->type == JSON_STRING) {
        RfBuf b = {0};
        json_write_string(&b, v->string, v->len);
        Json back;
        if (!b.data || json_parse(&back, b.data, b.len, "rewritten") || back.type != JSON_STRING ||
            back.len != v->len || memcmp(back.string, v->string, v->len)) {
            fprintf(stderr, "fuzz_json: string of %zu bytes does not survive json_write_string\n", v->len);
            abort();
        }
        json_free(&back);
        buf_free(&b);
        return;
    }
    if (v->type != JSON_ARRAY && v->type != JSON_OBJECT) return;
    for (size_t i = 0; i < v->count; i++) {
        if (v->type == JSON_OBJECT && !json_get(v, v->keys[i])) abort();  /* a key present must be found */
        fuzz_json_walk(&v->items[i], depth + 1);
    }
}

static int fuzz_json_one(const uint8_t *data, size_t size) {
    Json v;
    rf_clear_error();
    int rc = fuzz_check_rc(json_parse(&v, (const char *)data, size, "fuzz"), "json_parse");
    if (rc == 0) {
        fuzz_json_walk(&v, 0);
        json_free(&v);
    }
    return rc;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_json_one(data, size);
    return 0;
}
#endif
