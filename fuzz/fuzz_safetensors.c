/*
 * fuzz_safetensors.c - libFuzzer target of st_open, st_find, st_read_f32 and
 * st_read_bf16 (io.c) on a .safetensors file holding the fuzzer's bytes.
 *
 * Every tensor that st_open accepts is found by name and read whole: its byte
 * range was validated against the file, so reading must succeed, and reading
 * it as stored in bf16 must succeed exactly when its dtype is BF16.
 */
#include "fuzz_util.h"

static int fuzz_safetensors_one(const uint8_t *data, size_t size) {
    char path[600];
    fuzz_write(fuzz_path(path, sizeof path, "fuzz.safetensors"), data, size);
    StFile f;
    rf_clear_error();
    int rc = fuzz_check_rc(st_open(&f, path), "st_open");
    if (rc) return rc;
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = st_find(&f, f.tensors[i].name);
        if (!t) abort();
        float *dst = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *dst);
        if (!dst) abort();
        if (st_read_f32(&f, t, dst)) {
            fprintf(stderr, "fuzz_safetensors: validated tensor unreadable: %s\n", rf_last_error());
            abort();
        }
        free(dst);
        uint16_t *raw = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *raw);
        if (!raw) abort();
        if (!st_read_bf16(&f, t, raw) != (t->dtype == ST_BF16)) {
            fprintf(stderr, "fuzz_safetensors: st_read_bf16 on a %s tensor: %s\n",
                    t->dtype == ST_BF16 ? "BF16" : "non-BF16", rf_last_error());
            abort();
        }
        free(raw);
    }
    st_close(&f);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_safetensors_one(data, size);
    return 0;
}
#endif
