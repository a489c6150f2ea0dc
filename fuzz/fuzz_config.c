/*
 * fuzz_config.c - libFuzzer target of config_load and config_validate (io.c)
 * on a config.json holding the fuzzer's bytes.
 *
 * A configuration that validates is saved with config_save and loaded again;
 * the two Configs must be equal field by field (a property).
 */
#include "fuzz_util.h"

static int fuzz_config_same(const Config *a, const Config *b) {
    return a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->max_position_embeddings == b->max_position_embeddings && a->rms_norm_eps == b->rms_norm_eps &&
           a->rope_theta == b->rope_theta && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->sliding_window == b->sliding_window && a->bos_token_id == b->bos_token_id &&
           a->eos_token_id == b->eos_token_id && !strcmp(a->model_type, b->model_type);
}

static int fuzz_config_one(const uint8_t *data, size_t size) {
    char path[600], saved[600];
    fuzz_write(fuzz_path(path, sizeof path, "config.json"), data, size);
    Config c, back;
    rf_clear_error();
    int rc = fuzz_check_rc(config_load(&c, path), "config_load");
    if (rc) return rc;
    rc = fuzz_check_rc(config_validate(&c, path), "config_validate");
    if (rc) return rc;
    fuzz_path(saved, sizeof saved, "saved/config.json");
    if (config_save(&c, saved) || config_load(&back, saved) || !fuzz_config_same(&c, &back)) {
        fprintf(stderr, "fuzz_config: config_save/config_load round trip differs: %s\n", rf_last_error());
        abort();
    }
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_config_one(data, size);
    return 0;
}
#endif
