/*
 * test_cli.c - the "cli" suite: the `recfound` binary as a user runs it.
 *
 * score / embed / pretrain are checked against the PyTorch fixtures of
 * tests/fixtures/ (so the printed numbers themselves are verified), and every
 * kind of bad input must give one error line naming the file, a non-zero exit
 * and no output folder.  The binary is $RECFOUND_BIN (make check sets it).
 */
#include "check_util.h"
#include "recfound.h"

#include <sys/stat.h>
#include <unistd.h>

static const char *bin(void) {
    const char *b = getenv("RECFOUND_BIN");
    return b ? b : "./recfound";
}

/* Run `recfound ARGS`, capturing stdout and stderr into malloc'd strings. */
static int run(const char *args, char **out, char **err) {
    char dir[] = "/tmp/rfcliXXXXXX", cmd[4096], po[64], pe[64];
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(po, sizeof po, "%s/out", dir);
    snprintf(pe, sizeof pe, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 %s %s >%s 2>%s", bin(), args, po, pe);
    int status = system(cmd);
    size_t n;
    if (rf_read_file(po, out, &n)) *out = strdup("");
    if (rf_read_file(pe, err, &n)) *err = strdup("");
    unlink(po);
    unlink(pe);
    rmdir(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Exit non-zero with exactly one stderr line that mentions `needle`. */
static void expect_error(const char *args, const char *needle) {
    char *out, *err;
    int rc = run(args, &out, &err);
    ck_assert_msg(rc != 0, "'recfound %s' should fail", args);
    ck_assert_msg(rc != 134 && rc != 139 && rc >= 0, "'recfound %s' crashed (status %d)", args, rc);
    ck_assert_msg(count_lines(err) == 1, "'recfound %s': want one error line, got:\n%s", args, err);
    ck_assert_msg(strstr(err, needle) != NULL, "'recfound %s': error '%s' does not mention '%s'", args, err, needle);
    free(out);
    free(err);
}

static void read_floats(const char *text, float *v, int n) {
    char *end;
    for (int i = 0; i < n; i++) {
        v[i] = strtof(text, &end);
        ck_assert_msg(end != text, "output has fewer than %d numbers", n);
        text = end;
    }
}

static void expected(const char *fixture, const char *name, float *dst, int64_t numel) {
    char path[256];
    StFile f;
    snprintf(path, sizeof path, "tests/fixtures/%s/expected.safetensors", fixture);
    ck_assert_msg(st_open(&f, path) == 0, "%s", rf_last_error());
    const StTensor *t = st_find(&f, name);
    ck_assert_msg(t && t->numel == numel, "%s: no tensor %s of %lld values", path, name, (long long)numel);
    ck_assert(st_read_f32(&f, t, dst) == 0);
    st_close(&f);
}

START_TEST(test_score_matches_reference) {
    const char *fx = "gqa_tied";
    char *out, *err;
    ck_assert_int_eq(run("score --model tests/fixtures/gqa_tied/model --ids tests/fixtures/gqa_tied/ids.txt", &out, &err), 0);
    int B = count_lines(out);
    ck_assert_int_ge(B, 2);
    float got[64], want[64];
    read_floats(out, got, B);
    expected(fx, "seq_loss", want, B);
    assert_allclose(got, want, B, 1e-5, 0, "score");
    free(out); free(err);
    ck_assert_int_eq(run("score --bidirectional --model tests/fixtures/gqa_tied/model --ids tests/fixtures/gqa_tied/ids.txt",
                         &out, &err), 0);
    read_floats(out, got, B);
    expected(fx, "seq_loss_bidir", want, B);
    assert_allclose(got, want, B, 1e-5, 0, "score --bidirectional");
    free(out); free(err);
}
END_TEST

START_TEST(test_embed_matches_reference) {
    char *out, *err, path[256];
    Config c;
    snprintf(path, sizeof path, "tests/fixtures/mha_untied_window/model/config.json");
    ck_assert(config_load(&c, path) == 0);
    /* make_fixtures.py pools from position 2 (meta.json "pool_from") */
    ck_assert_int_eq(run("embed --pool-from 2 --model tests/fixtures/mha_untied_window/model "
                         "--ids tests/fixtures/mha_untied_window/ids.txt", &out, &err), 0);
    int B = count_lines(out), C = c.hidden_size;
    float *got = malloc(B * C * 4), *want = malloc(B * C * 4);
    read_floats(out, got, B * C);
    expected("mha_untied_window", "embed", want, (int64_t)B * C);
    ck_assert_msg(nerr(got, want, (size_t)B * C) <= 1e-8, "embed: normalised error %.3g", nerr(got, want, (size_t)B * C));
    free(got); free(want); free(out); free(err);
}
END_TEST

/* One SGD step's weight change is exactly -lr x gradient: compare the written
 * model with the reference's p - lr * grad (sgd.safetensors). */
START_TEST(test_pretrain_sgd_step) {
    char dir[] = "/tmp/rfsgdXXXXXX", args[512], path[600], *out, *err;
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(args, sizeof args, "pretrain --model tests/fixtures/llama_bf16_sharded/model --ids "
             "tests/fixtures/llama_bf16_sharded/ids.txt --steps 1 --lr 0.1 --optimizer sgd --out %s/m", dir);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    Model m;
    snprintf(path, sizeof path, "%s/m", dir);
    ck_assert_msg(model_load(&m, path) == 0, "%s", rf_last_error());
    StFile f;
    ck_assert(st_open(&f, "tests/fixtures/llama_bf16_sharded/sgd.safetensors") == 0);
    float *want = malloc(m.total * 4);
    for (int i = 0; i < m.n_params; i++) {
        const StTensor *t = st_find(&f, m.spec[i].name);
        ck_assert_msg(t && (size_t)t->numel == m.spec[i].numel, "sgd.safetensors lacks %s", m.spec[i].name);
        ck_assert(st_read_f32(&f, t, want) == 0);
        double e = nerr(m.params + m.spec[i].offset, want, m.spec[i].numel);
        ck_assert_msg(e <= 1e-10, "%s after one SGD step: normalised error %.3g", m.spec[i].name, e);
    }
    st_close(&f);
    free(want);
    model_free(&m);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    ck_assert_int_eq(system(path), 0);
    free(out); free(err);
}
END_TEST

/* init writes a loadable folder; the same seed gives the same bytes. */
START_TEST(test_init_deterministic) {
    char dir[] = "/tmp/rfinitXXXXXX", args[256], cmd[600], *out, *err;
    ck_assert(mkdtemp(dir) != NULL);
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "init --preset tiny --seed 5 --out %s/m%d", dir, k);
        ck_assert_int_eq(run(args, &out, &err), 0);
        free(out); free(err);
    }
    snprintf(cmd, sizeof cmd, "cmp -s %s/m0/model.safetensors %s/m1/model.safetensors", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "init --preset tiny --seed 6 --out %s/m2", dir);
    ck_assert_int_eq(run(args, &out, &err), 0);
    snprintf(cmd, sizeof cmd, "cmp -s %s/m0/model.safetensors %s/m2/model.safetensors", dir, dir);
    ck_assert_int_ne(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(out); free(err);
}
END_TEST

START_TEST(test_help_and_usage_errors) {
    const char *cmds[] = {"init", "score", "embed", "pretrain", "bench-train"};
    char args[64], *out, *err;
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        ck_assert_int_eq(run(args, &out, &err), 0);
        ck_assert_msg(strstr(out, "usage: recfound") != NULL, "%s --help printed no usage", cmds[i]);
        free(out); free(err);
    }
    expect_error("score --model", "needs a value");
    expect_error("score --frobnicate 1", "unknown option");
    expect_error("score --ids x", "--model");
    expect_error("init --preset huge --out /tmp/never", "unknown preset");
    expect_error("pretrain --model tests/fixtures/gqa_tied/model --ids tests/fixtures/gqa_tied/ids.txt "
                 "--optimizer adam --out /tmp/never", "sgd or adamw");
    ck_assert_int_ne(run("no-such-command", &out, &err), 0);
    free(out); free(err);
}
END_TEST

/* Bad model folders and id files: one line naming the file, nothing written. */
START_TEST(test_bad_input) {
    char dir[] = "/tmp/rfbadXXXXXX", cmd[1024], args[1024];
    ck_assert(mkdtemp(dir) != NULL);
    const char *fx = "tests/fixtures/gqa_tied";
    /* a model folder without config.json */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/noconf && cp %s/model/model.safetensors %s/noconf/", dir, fx, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "pretrain --model %s/noconf --ids %s/ids.txt --out %s/out1", dir, fx, dir);
    expect_error(args, "config.json");
    /* a truncated config.json */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/trunc && head -c 60 %s/model/config.json > %s/trunc/config.json && "
             "cp %s/model/model.safetensors %s/trunc/", dir, fx, dir, fx, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "score --model %s/trunc --ids %s/ids.txt", dir, fx);
    expect_error(args, "config.json");
    /* a truncated safetensors file */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/short && cp %s/model/config.json %s/short/ && "
             "head -c 3000 %s/model/model.safetensors > %s/short/model.safetensors", dir, fx, dir, fx, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "pretrain --model %s/short --ids %s/ids.txt --out %s/out2", dir, fx, dir);
    expect_error(args, "model.safetensors");
    /* a config whose sizes disagree with the tensors */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/shape && sed 's/\"intermediate_size\": *[0-9]*/\"intermediate_size\": 8/' "
             "%s/model/config.json > %s/shape/config.json && cp %s/model/model.safetensors %s/shape/",
             dir, fx, dir, fx, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "score --model %s/shape --ids %s/ids.txt", dir, fx);
    expect_error(args, "shape");
    /* ids: out of the vocabulary, not a number, too short */
    snprintf(cmd, sizeof cmd, "printf '5 6 7\\n5 999999 7\\n' > %s/big.txt && printf '5 x 7\\n' > %s/nan.txt && "
             "printf '5\\n' > %s/one.txt", dir, dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "score --model %s/model --ids %s/big.txt", fx, dir);
    expect_error(args, "line 2");
    snprintf(args, sizeof args, "score --model %s/model --ids %s/nan.txt", fx, dir);
    expect_error(args, "not a token id");
    snprintf(args, sizeof args, "score --model %s/model --ids %s/one.txt", fx, dir);
    expect_error(args, "at least 2");
    /* nothing was written for any failing pretrain */
    struct stat st;
    snprintf(cmd, sizeof cmd, "%s/out1", dir);
    ck_assert(stat(cmd, &st) != 0);
    snprintf(cmd, sizeof cmd, "%s/out2", dir);
    ck_assert(stat(cmd, &st) != 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

Suite *cli_suite(void) {
    Suite *s = suite_create("cli");
    TCase *ref = tcase_create("against_reference");
    tcase_set_timeout(ref, 60);
    tcase_add_test(ref, test_score_matches_reference);
    tcase_add_test(ref, test_embed_matches_reference);
    tcase_add_test(ref, test_pretrain_sgd_step);
    tcase_add_test(ref, test_init_deterministic);
    suite_add_tcase(s, ref);
    TCase *bad = tcase_create("usage_and_bad_input");
    tcase_set_timeout(bad, 60);
    tcase_add_test(bad, test_help_and_usage_errors);
    tcase_add_test(bad, test_bad_input);
    suite_add_tcase(s, bad);
    return s;
}
