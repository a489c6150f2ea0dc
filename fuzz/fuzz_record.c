/*
 * fuzz_record.c - libFuzzer target of the dataset readers (data.c):
 * record_parse on the bytes as one record, then data_open/data_next on a file
 * holding them (JSON lines, or one JSON array when it starts with '['),
 * skipping bad records when the input's length is odd.
 *
 * Every record read is written back with record_to_json and parsed again; it
 * must compare equal (a property).
 */
#include "fuzz_util.h"

static void fuzz_record_roundtrip(const Record *r) {
    RfBuf b = {0};
    Record back;
    int bad;
    record_to_json(&b, r);
    if (!b.data || record_parse(&back, b.data, b.len, "rewritten", &bad) || !record_equal(r, &back)) {
        fprintf(stderr, "fuzz_record: record does not survive record_to_json: %s\n", rf_last_error());
        abort();
    }
    record_free(&back);
    buf_free(&b);
}

static int fuzz_record_one(const uint8_t *data, size_t size) {
    Record r;
    int bad = -1;
    rf_clear_error();
    int rc = fuzz_check_rc(record_parse(&r, (const char *)data, size, "fuzz", &bad), "record_parse");
    if (rc == 0) {
        fuzz_record_roundtrip(&r);
        record_free(&r);
    } else if (bad < 0 || bad >= N_BAD) {
        abort();
    }

    char path[600];
    fuzz_write(fuzz_path(path, sizeof path, "fuzz.jsonl"), data, size);
    DataReader rd;
    rf_clear_error();
    if (fuzz_check_rc(data_open(&rd, path, (int)(size & 1)), "data_open")) return -1;
    int got;
    while ((got = data_next(&rd, &r)) == 1) {
        fuzz_record_roundtrip(&r);
        record_free(&r);
    }
    if (got == -1) fuzz_check_rc(got, "data_next");
    else if (got != 0) abort();
    FILE *null = fopen("/dev/null", "w");
    if (null) data_report_skipped(&rd, null), fclose(null);
    data_close(&rd);
    (void)rc;  /* the file reader's answer decides */
    return got == 0 ? 0 : -1;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_record_one(data, size);
    return 0;
}
#endif
