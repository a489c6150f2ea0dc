/*
 * fuzz_gzip.c - libFuzzer target of the gzip reader (io.c): rf_gunzip on the
 * bytes, and rf_read_file_gz on the same bytes as a file named x.gz.
 *
 * Checked beyond "no crash": both give the same result; a success ends with a
 * NUL byte and stays within the size limit; its output, written again as a
 * gzip file of stored blocks (fuzz_gzip_stored), reads back to the same bytes.
 * The limit is 1 MiB here, so that inputs which expand further exercise the
 * refusal rather than the memory limit of the fuzzer.
 */
#include "fuzz_util.h"

#define FUZZ_GZ_MAX ((size_t)1 << 20)

static int fuzz_gzip_one(const uint8_t *data, size_t size) {
    char *out, *again, *file_out, path[600];
    size_t n, n2, nf;
    rf_clear_error();
    int rc = fuzz_check_rc(rf_gunzip(&out, &n, data, size, FUZZ_GZ_MAX, "fuzz.gz"), "rf_gunzip");
    if (rc == 0) {
        if (n > FUZZ_GZ_MAX || out[n] != '\0') {
            fprintf(stderr, "fuzz_gzip: %zu bytes, or no final NUL\n", n);
            abort();
        }
        size_t glen;
        unsigned char *gz = fuzz_gzip_stored(out, n, &glen);
        if (rf_gunzip(&again, &n2, gz, glen, FUZZ_GZ_MAX, "stored.gz") || n2 != n || memcmp(again, out, n)) {
            fprintf(stderr, "fuzz_gzip: the output written as stored blocks does not read back: %s\n", rf_last_error());
            abort();
        }
        free(again);
        free(gz);
    }
    /* the file reader: a name ending in .gz is always decompressed, with the default limit */
    fuzz_write(fuzz_path(path, sizeof path, "x.gz"), data, size);
    rf_clear_error();
    int rcf = fuzz_check_rc(rf_read_file_gz(path, &file_out, &nf), "rf_read_file_gz");
    if (rc == 0 && (rcf != 0 || nf != n || memcmp(file_out, out, n))) {
        fprintf(stderr, "fuzz_gzip: rf_read_file_gz and rf_gunzip disagree\n");
        abort();
    }
    if (rcf == 0) free(file_out);
    if (rc == 0) free(out);
    return rc;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_gzip_one(data, size);
    return 0;
}
#endif
