/*
 * fuzz_rawcsv.c - libFuzzer target of the raw-data readers of
 * `recfound build-data` (data.c): the RFC 4180 CSV reader and the parsers of
 * MuDoCo (JSON), Amazon-Google, ESCI and AmazonQA (CSV), MovieLens-100k
 * (u.user, u.item, u.data), the Amazon Reviews 2023 histories (JSON lines) and
 * the Amazon Reviews 2018 meta files and 5-core reviews (gzip of JSON lines),
 * reached through build_data_main with standard output sent to /dev/null.
 *
 * Input: one byte choosing the source (mod 8), then that source's files
 * separated by the line "--8<--".  Files named .gz are written as gzip files
 * of stored blocks holding those bytes (the gzip reader itself has its own
 * target, fuzz_gzip).  Files of the other sources are absent, so their readers
 * only report "cannot open".
 */
#include "fuzz_util.h"

#define FUZZ_SEP "\n--8<--\n"

static const char *const fuzz_raw_files[8][3] = {
    {"mudoco/qr_mudoco_news.json", NULL, NULL},
    {"amazon_google/Amazon.csv", "amazon_google/GoogleProducts.csv",
     "amazon_google/Amzon_GoogleProducts_perfectMapping.csv"},
    {"esci/esci_us_exact_sample_with_product_text.csv", NULL, NULL},
    {"amazonqa_partial/question_answers_Toys_and_Games.csv", NULL, NULL},
    {"movielens/ml-100k/u.user", "movielens/ml-100k/u.item", "movielens/ml-100k/u.data"},
    {"amazon_reviews/2023_user_histories_sample/training.jsonl",
     "amazon_reviews/2023_user_histories_sample/validation.jsonl",
     "amazon_reviews/2023_user_histories_sample/test.jsonl"},
    {"amazon_reviews/2018_meta/meta_Gift_Cards.json.gz", "amazon_reviews/2018_meta/meta_Magazine_Subscriptions.json.gz",
     NULL},
    {"amazon_reviews/2018_5core/Gift_Cards_5.json.gz", "amazon_reviews/2018_5core/Appliances_5.json.gz", NULL},
};

static int fuzz_rawcsv_one(const uint8_t *data, size_t size) {
    char path[600], raw[600], out[600];
    for (int s = 0; s < 8; s++)  /* the previous input's files */
        for (int k = 0; k < 3 && fuzz_raw_files[s][k]; k++) {
            if (snprintf(raw, sizeof raw, "%s/raw/%s", fuzz_dir(), fuzz_raw_files[s][k]) < (int)sizeof raw)
                unlink(raw);
        }
    int src = size ? data[0] % 8 : 0;
    const char *p = size ? (const char *)data + 1 : "", *end = p + (size ? size - 1 : 0);
    for (int k = 0; k < 3 && fuzz_raw_files[src][k]; k++) {
        const char *sep = NULL;
        for (const char *q = p; q + strlen(FUZZ_SEP) <= end && !sep; q++)
            if (!memcmp(q, FUZZ_SEP, strlen(FUZZ_SEP))) sep = q;
        const char *stop = sep ? sep : end;
        if (snprintf(raw, sizeof raw, "raw/%s", fuzz_raw_files[src][k]) >= (int)sizeof raw) abort();
        size_t nlen = strlen(raw);
        if (nlen > 3 && !strcmp(raw + nlen - 3, ".gz")) {
            size_t glen;
            unsigned char *gz = fuzz_gzip_stored(p, (size_t)(stop - p), &glen);
            fuzz_write(fuzz_path(path, sizeof path, raw), gz, glen);
            free(gz);
        } else
            fuzz_write(fuzz_path(path, sizeof path, raw), p, (size_t)(stop - p));
        p = sep ? sep + strlen(FUZZ_SEP) : end;
    }
    if (snprintf(raw, sizeof raw, "%s/raw", fuzz_dir()) >= (int)sizeof raw ||
        snprintf(out, sizeof out, "%s/out", fuzz_dir()) >= (int)sizeof out)
        abort();
    char *argv[] = {"build-data", "--raw", raw, "--out", out, "--seed", "7", NULL};
    rf_clear_error();
    return fuzz_check_rc(fuzz_quiet(build_data_main, 7, argv), "build_data_main");
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_rawcsv_one(data, size);
    return 0;
}
#endif
