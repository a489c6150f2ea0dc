/*
 * fuzz_tokenizer.c - libFuzzer target of the tokenizer (tokenizer.c).
 *
 * Input: a tokenizer.json, a NUL byte, then a text.  The JSON is loaded with
 * tok_load (through a file) when the input's length is even and with
 * json_parse + tok_load_json when odd.  A tokenizer that loads encodes the
 * text (with and without the post-processor), decodes the ids it got, and
 * decodes the text's bytes read as raw ids (many out of range: they must be
 * refused with an error, never read).
 */
#include "fuzz_util.h"

static int fuzz_tokenizer_one(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - jlen - 1 : 0;
    Tokenizer t;
    int rc;
    rf_clear_error();
    if (size % 2 == 0) {
        char path[600];
        fuzz_write(fuzz_path(path, sizeof path, "tokenizer.json"), data, jlen);
        rc = fuzz_check_rc(tok_load(&t, path), "tok_load");
    } else {
        Json root;
        rc = fuzz_check_rc(json_parse(&root, (const char *)data, jlen, "fuzz"), "json_parse");
        if (rc) return rc;
        rc = fuzz_check_rc(tok_load_json(&t, &root, "fuzz"), "tok_load_json");
        json_free(&root);
    }
    if (rc) return rc;
    for (int special = 0; special < 2; special++) {
        int *ids = NULL, n = 0;
        rf_clear_error();
        if (fuzz_check_rc(tok_encode(&t, text, tlen, special, &ids, &n), "tok_encode") == 0) {
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= t.n_vocab) {
                    fprintf(stderr, "fuzz_tokenizer: tok_encode gave id %d outside 0..%d\n", ids[i], t.n_vocab - 1);
                    abort();
                }
            char *out = NULL;
            size_t olen;
            if (fuzz_check_rc(tok_decode(&t, ids, n, &out, &olen), "tok_decode") == 0 && (!out || out[olen]))
                abort();
            free(out);
        }
        free(ids);
    }
    /* the text's bytes as ids: pairs of bytes, signed, around the vocabulary size */
    int n_raw = (int)(tlen / 2), *raw = malloc((size_t)(n_raw ? n_raw : 1) * sizeof *raw);
    if (!raw) abort();
    for (int i = 0; i < n_raw; i++) {
        int v = (signed char)text[2 * i] * 256 + (unsigned char)text[2 * i + 1];
        raw[i] = (int)(v % ((long)t.n_vocab + 2));
    }
    char *out = NULL;
    size_t olen;
    rf_clear_error();
    if (fuzz_check_rc(tok_decode(&t, raw, n_raw, &out, &olen), "tok_decode") == 0 && (!out || out[olen])) abort();
    free(out);
    free(raw);
    tok_free(&t);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_tokenizer_one(data, size);
    return 0;
}
#endif
