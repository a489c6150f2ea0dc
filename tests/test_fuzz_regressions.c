/*
 * test_fuzz_regressions.c - replays saved inputs through the fuzz targets of
 * fuzz/ (the same code: the targets are included with FUZZ_NO_MAIN).
 *
 * For each reader, every file of tests/fuzz_regressions/<target>/ (inputs
 * that once crashed, hung or leaked, see fuzz/README.md) and of the seed
 * corpus fuzz/corpus/<target>/ must give 0 or -1 with an error message, and
 * neither crash nor hang (Check forks each test, so a crash is a failure).
 * Run under `make SANITIZE=1 check` to also catch silent memory errors.
 */
#define FUZZ_NO_MAIN
#include "../fuzz/fuzz_json.c"
#include "../fuzz/fuzz_safetensors.c"
#include "../fuzz/fuzz_config.c"
#include "../fuzz/fuzz_record.c"
#include "../fuzz/fuzz_tokenizer.c"
#include "../fuzz/fuzz_rawcsv.c"
#include "../fuzz/fuzz_schedcsv.c"
#include "../fuzz/fuzz_gzip.c"

#include "check_util.h"

typedef int (*FuzzOne)(const uint8_t *data, size_t size);

/* Feed every regular file of dir to fn; returns the number of files (-1: no folder). */
static int replay_dir(const char *dir, FuzzOne fn) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        char *text;
        size_t len;
        ck_assert_msg(rf_read_file(path, &text, &len) == 0, "%s", rf_last_error());
        rf_clear_error();
        int rc = fn((const uint8_t *)text, len);
        ck_assert_msg(rc == 0 || (rc == -1 && rf_last_error()[0]), "%s: returned %d, error '%s'", path, rc,
                      rf_last_error());
        free(text);
        n++;
    }
    closedir(d);
    return n;
}

/* The seeds must exist (the test runs from the repository root, as `make
 * check` does); the regression folder may be empty or absent for a reader
 * in which fuzzing found nothing. */
static void replay(const char *name, FuzzOne fn) {
    char dir[256];
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", name);
    int seeds = replay_dir(dir, fn);
    ck_assert_msg(seeds > 0, "%s: no seed inputs (run from the repository root)", dir);
    snprintf(dir, sizeof dir, "tests/fuzz_regressions/%s", name);
    replay_dir(dir, fn);
}

START_TEST(test_json) { replay("json", fuzz_json_one); }
END_TEST
START_TEST(test_safetensors) { replay("safetensors", fuzz_safetensors_one); }
END_TEST
START_TEST(test_config) { replay("config", fuzz_config_one); }
END_TEST
START_TEST(test_record) { replay("record", fuzz_record_one); }
END_TEST
START_TEST(test_tokenizer) { replay("tokenizer", fuzz_tokenizer_one); }
END_TEST
START_TEST(test_rawcsv) { replay("rawcsv", fuzz_rawcsv_one); }
END_TEST
START_TEST(test_schedcsv) { replay("schedcsv", fuzz_schedcsv_one); }
END_TEST
START_TEST(test_gzip) { replay("gzip", fuzz_gzip_one); }
END_TEST

Suite *fuzz_regressions_suite(void) {
    Suite *s = suite_create("fuzz_regressions");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_json);
    tcase_add_test(tc, test_safetensors);
    tcase_add_test(tc, test_config);
    tcase_add_test(tc, test_record);
    tcase_add_test(tc, test_tokenizer);
    tcase_add_test(tc, test_rawcsv);
    tcase_add_test(tc, test_schedcsv);
    tcase_add_test(tc, test_gzip);
    suite_add_tcase(s, tc);
    return s;
}
