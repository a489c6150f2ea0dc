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

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* Run `recfound ARGS`, capturing stdout and stderr into malloc'd strings. */
static int run(const char *args, char **out, char **err) {
    char cmd[4096];
    ck_assert((size_t)snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 %s %s", recfound_bin(), args) < sizeof cmd);
    return run_capture(cmd, out, err);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Options of the quick training runs: small adapters, so that a step takes milliseconds. */
#define SMALL_RUN "--max-len 64 --rank 2 --task-dim 8 --sched-val 2"

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

/* Comma-separated numbers. */
static void read_floats_sep(const char *text, float *v, int n) {
    char *end;
    for (int i = 0; i < n; i++) {
        v[i] = strtof(text, &end);
        ck_assert_msg(end != text, "fewer than %d numbers", n);
        text = *end == ',' ? end + 1 : end;
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
    const char *cmds[] = {"init", "score", "embed", "pretrain", "train", "loss", "eval", "metrics", "generate", "route",
                          "tokenizer encode", "tokenizer decode", "tokenizer train", "synth", "build-data", "sched",
                          "merge", "bench-train", "bench-recfound", "bench-infer", "bench-merge", "bench-matmul"};
    char args[64], *out, *err;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        ck_assert_int_eq(run(args, &out, &err), 0);
        ck_assert_msg(strstr(out, "usage: recfound") != NULL, "%s --help printed no usage", cmds[i]);
        free(out); free(err);
    }
    expect_error("score --model", "needs a value");
    expect_error("score --frobnicate 1", "unknown option");
    expect_error("score --ids x", "--model");
    expect_error("eval --model m --data d --limit -3", "--limit must be >= 0, got -3");
    /* numeric options out of range: one line naming the option, before anything is loaded */
    expect_error("train --model m --data d --out /tmp/rf-never-trained --temperature 0", "--temperature must be > 0");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --warmup 5", "--warmup must be in [0, 1]");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --lr -1", "--lr must be >= 0");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --optimizer adam",
                 "--optimizer must be adamw or sgd, got 'adam'");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --optimizer sgd --weight-decay 0.1",
                 "--weight-decay is AdamW's; --optimizer sgd takes none");
    expect_error("pretrain --model m --ids i --out /tmp/rf-never-trained --clip -1", "--clip must be >= 0");
    expect_error("loss --model m --data d --temperature -0.5", "--temperature must be > 0");
    /* whole-number options too: the option and the value given */
    expect_error("train --model m --data d --out /tmp/rf-never-trained --steps -2", "--steps must be >= 0, got -2");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --rank 0", "--rank must be >= 1, got 0");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --gen-batch 5000",
                 "--gen-batch must be in [0, 4096], got 5000");
    expect_error("pretrain --model m --ids i --out /tmp/rf-never-trained --micro 0", "--micro must be >= 1, got 0");
    expect_error("eval --model m --data d --negatives 61", "--negatives must be in [1, 60], got 61");
    expect_error("loss --model m --data d --samples 0", "--samples must be >= 1, got 0");
    expect_error("sched --losses l.csv --window 1", "--window must be >= 2, got 1");
    expect_error("sched --losses l.csv --warmup -4", "--warmup must be >= 0, got -4");
    expect_error("bench-train --len 1", "--len must be >= 2, got 1");
    expect_error("bench-recfound --gen 0", "--gen must be >= 1, got 0");
    expect_error("bench-infer --reps 0", "--reps must be >= 1, got 0");
    expect_error("generate --model m --prompt hi --max-new -3", "--max-new must be >= 0, got -3");
    /* whole numbers past an int (4294967297 would wrap to 1), and lengths no buffer can hold */
    expect_error("train --model m --data d --out /tmp/rf-never-trained --micro 4294967297",
                 "--micro must be a whole number from -2147483647 to 2147483647");
    expect_error("loss --model m --data d --max-len 2000000", "--max-len must be in [8, 1048576], got 2000000");
    expect_error("generate --model m --prompt hi --max-len 1", "--max-len must be in [2, 1048576], got 1");
    expect_error("eval --model m --data d --max-new -3", "--max-new must be >= 0, got -3");
    expect_error("tokenizer train --data d --vocab 100 --out /tmp/rf-never-trained",
                 "--vocab must be in [260, 1000000]");
    /* TMoLE's settings are checked before the model is read (m does not exist) */
    expect_error("train --model m --data d --out /tmp/rf-never-trained --experts 0,0,0", "expert split 0/0/0");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --experts 2,0,0", "leaves a pass without");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --experts 2,2,2x", "got '2,2,2x'");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --router-hidden 8,0",
                 "hidden layer 1 has width 0");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --router-hidden 1,2,3,4,5", "up to 4 widths");
    expect_error("train --model m --data d --out /tmp/rf-never-trained --router-hidden 8,x", "got '8,x'");
    ck_assert_int_ne(access("/tmp/rf-never-trained", F_OK), 0);
    expect_error("init --preset huge --out /tmp/never", "unknown preset");
    expect_error("pretrain --model tests/fixtures/gqa_tied/model --ids tests/fixtures/gqa_tied/ids.txt "
                 "--optimizer adam --out /tmp/never", "sgd or adamw");
    ck_assert_int_ne(run("no-such-command", &out, &err), 0);
    free(out); free(err);
    /* a raw folder where no source can be read: an error, and no dataset folder */
    expect_error("build-data --raw /nonexistent-raw --out /tmp/rf-never-built", "no source could be read");
    ck_assert_int_ne(access("/tmp/rf-never-built", F_OK), 0);
    expect_error("build-data --seed x --raw a --out b", "whole number");
}
END_TEST

/* A model whose vocabulary is larger than its tokenizer's (padded, or a
 * tokenizer of another version), taught by ten AdamW steps to predict id
 * 3999: `generate` drops the ids past the tokenizer's from the text with one
 * warning line, as Hugging Face's decode does, instead of failing at the end.
 * A prompt cut to fit --max-len is said too. */
START_TEST(test_generate_padded_vocab) {
    char d[] = "/tmp/rfpadXXXXXX", args[2048], path[600], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(path, sizeof path, "%s/hi.txt", d);
    const char *ids = "5 3999 3999 3999 3999 3999 3999 3999\n5 3999 3999 3999 3999 3999 3999 3999\n";
    ck_assert_int_eq(rf_write_file_atomic(path, ids, strlen(ids)), 0);
    snprintf(args, sizeof args, "init --preset tiny --vocab 4000 --out %s/init && %s pretrain --model %s/init --ids %s "
             "--steps 10 --lr 0.01 --optimizer adamw --out %s/big", d, recfound_bin(), d, path, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out), free(err);
    snprintf(args, sizeof args, "generate --model %s/big --tokenizer %s/tok.json --prompt 'a gift card' --max-new 12", d,
             d);
    int rc = run(args, &out, &err);
    ck_assert_msg(rc == 0, "status %d:\n%s", rc, err);
    ck_assert_msg(strstr(err, "generate: ") && strstr(err, "with an id past the tokenizer's 400 (the model has 4000) "
                  "dropped from the text"), "%s", err);
    ck_assert_int_eq(count_lines(out), 1);
    ck_assert_msg(!strstr(err, "prompt was cut"), "%s", err);
    free(out), free(err);
    /* a prompt longer than --max-len allows: cut, and said so */
    snprintf(args, sizeof args, "generate --model %s/big --tokenizer %s/tok.json --prompt 'a gift card' --max-new 2 "
             "--max-len 8", d, d);
    rc = run(args, &out, &err);
    ck_assert_msg(rc == 0 && strstr(err, "generate: warning: the prompt was cut") &&
                  strstr(err, "fit in 8 tokens"), "status %d: %s",
                  rc, err);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* A sequence longer than the model's max_position_embeddings (64 in the
 * fixture) is scored, with one warning line naming the file. */
START_TEST(test_beyond_max_positions) {
    char d[] = "/tmp/rfposXXXXXX", line[400] = "", path[600], args[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    for (int i = 0; i < 70; i++) strcat(line, i ? " 5" : "5");
    strcat(line, "\n");
    snprintf(path, sizeof path, "%s/long.txt", d);
    ck_assert_int_eq(rf_write_file_atomic(path, line, strlen(line)), 0);
    snprintf(args, sizeof args, "score --model tests/fixtures/gqa_tied/model --ids %s/long.txt", d);
    ck_assert_int_eq(run(args, &out, &err), 0);
    ck_assert_msg(count_lines(out) == 1 && count_lines(err) == 1 &&
                  strstr(err, "score: warning: ") && strstr(err, "long.txt holds a sequence of 70 tokens, more than "
                  "the model's max_position_embeddings (64)"), "%s", err);
    free(out), free(err);
    ck_assert_int_eq(run("score --model tests/fixtures/gqa_tied/model --ids tests/fixtures/gqa_tied/ids.txt", &out, &err), 0);
    ck_assert_msg(!strstr(err, "warning"), "%s", err);
    free(out), free(err);
    rm_tree(d);
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
             "printf '5\\n' > %s/one.txt && printf '5 99999999999999999999 7\\n' > %s/huge.txt", dir, dir, dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "score --model %s/model --ids %s/big.txt", fx, dir);
    expect_error(args, "line 2: token id 999999 is outside the vocabulary");
    snprintf(args, sizeof args, "score --model %s/model --ids %s/huge.txt", fx, dir);  /* past a long: as written */
    expect_error(args, "token id 99999999999999999999 is outside");
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

/* score --adapter --task prints what the library computes for the adapted model
 * (the library's TMoLE is itself checked against PyTorch in the tmole suite). */
START_TEST(test_score_with_adapter) {
    const char *fx = "tests/fixtures/tmole/tmole_222";
    char dir[] = "/tmp/rfadaXXXXXX", ids[600], args[1600], *out, *err;
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(ids, sizeof ids, "%s/ids.txt", dir);
    FILE *f = fopen(ids, "w");
    int rows[2][6] = {{27, 88, 49, 44, 44, 35}, {33, 67, 14, 20, 0, 0}}, len[2] = {6, 4};
    for (int r = 0; r < 2; r++) {
        for (int t = 0; t < len[r]; t++) fprintf(f, "%d ", rows[r][t]);
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(args, sizeof args, "score --model %s/model --ids %s --adapter %s/adapter --task SR", fx, ids, fx);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    float got[2], plain[2];
    read_floats(out, got, 2);
    free(out); free(err);
    snprintf(args, sizeof args, "score --model %s/model --ids %s", fx, ids);
    ck_assert_int_eq(run(args, &out, &err), 0);
    read_floats(out, plain, 2);
    free(out); free(err);
    /* the same in-process */
    Model m;
    Tmole tm;
    char path[600];
    snprintf(path, sizeof path, "%s/model", fx);
    ck_assert(model_load(&m, path) == 0);
    snprintf(path, sizeof path, "%s/adapter", fx);
    ck_assert(tmole_load(&tm, path, &m.cfg) == 0);
    int flat[12], tasks[2] = {TASK_SR, TASK_SR};
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < 6; t++) flat[r * 6 + t] = rows[r][t];
    Batch b = {.B = 2, .T = 6, .ids = flat, .lengths = len, .tasks = tasks};
    float w[12], tl[12], want[2];
    for (int i = 0; i < 12; i++) w[i] = (i % 6) < len[i / 6] - 1;
    Acts *a = acts_new(&m, 2, 6);
    model_forward(&m, &tm, a, &b, ATTN_CAUSAL);
    model_lm_loss(&m, a, &b, w, tl, NULL, 0);
    for (int r = 0; r < 2; r++) {
        double sum = 0;
        for (int t = 0; t < len[r] - 1; t++) sum += tl[r * 6 + t];
        want[r] = (float)(sum / (len[r] - 1));
    }
    assert_allclose(got, want, 2, 1e-6, 0, "score --adapter --task SR");
    ck_assert_msg(fabsf(got[0] - plain[0]) > 1e-4, "the adapters changed nothing");
    acts_free(a);
    tmole_free(&tm);
    model_free(&m);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    ck_assert_int_eq(system(args), 0);
    snprintf(args, sizeof args, "score --model %s/model --ids %s/batch.json --adapter %s/adapter", fx, fx, fx);
    expect_error(args, "--task");
    snprintf(args, sizeof args, "score --model %s/model --ids x --adapter %s/adapter --task NOPE", fx, fx);
    expect_error(args, "unknown task");
}
END_TEST

/* route prints eq. (1) for every projection and task in the task's own pass:
 * compared with the routing of the independent PyTorch implementation. */
START_TEST(test_route_matches_reference) {
    const char *fx = "tests/fixtures/tmole/tmole_303_hidden";
    char args[600], *out, *err;
    snprintf(args, sizeof args, "route --adapter %s/adapter --out ''", fx);
    expect_error(args, "non-empty PREFIX");  /* it would write the hidden files .csv and .svg */
    snprintf(args, sizeof args, "route --adapter %s/adapter", fx);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    StFile f;
    char path[600];
    snprintf(path, sizeof path, "%s/expected.safetensors", fx);
    ck_assert(st_open(&f, path) == 0);
    int N = 6, sites = 8;
    float *gen = malloc(sites * 14 * N * 4), *emb = malloc(sites * 14 * N * 4);
    ck_assert(st_read_f32(&f, st_find(&f, "route_gen"), gen) == 0);
    ck_assert(st_read_f32(&f, st_find(&f, "route_emb"), emb) == 0);
    st_close(&f);
    ck_assert_int_eq(count_lines(out), 1 + sites * N_TASKS);
    static const char *pn = "qkvo";
    char *line = strchr(out, '\n') + 1;
    for (int k = 0; k < sites * N_TASKS; k++) {
        int layer, task = -1;
        char proj, tname[16], pass[16];
        ck_assert(sscanf(line, "%d,%c,%15[^,],%15[^,],", &layer, &proj, tname, pass) == 4);
        task = task_by_short(tname);
        ck_assert_int_ge(task, 0);
        int site = layer * 4 + (int)(strchr(pn, proj) - pn);
        const float *want = (TASKS[task].kind == KIND_EMB ? emb : gen) + ((size_t)site * 14 + task) * N;
        char *p = line;
        for (int c = 0; c < 4; c++) p = strchr(p, ',') + 1;
        float got[6];
        read_floats_sep(p, got, N);
        assert_allclose(got, want, N, 1e-5, 1e-7, "route");
        line = strchr(line, '\n') + 1;
    }
    free(gen); free(emb); free(out); free(err);
}
END_TEST

/* Mean loss of one kind ('E' or 'G') in `recfound loss` output, NaN rows skipped. */
static double mean_loss(const char *csv, char kind, int *n) {
    double sum = 0;
    *n = 0;
    for (const char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char task[16], k;
        int samples;
        double loss;
        if (sscanf(line + 1, "%15[^,],%c,%d,%lf", task, &k, &samples, &loss) == 4 && k == kind && isfinite(loss)) {
            sum += loss;
            (*n)++;
        }
    }
    return *n ? sum / *n : NAN;
}

/* The whole pipeline on a tiny world: synth, tokenizer, tiny backbone,
 * pretrain, RecFound training with TMoLE and S2Sched.  The run folder has
 * what Model Merge and resuming need, and the trained adapters beat the
 * step-0 adapters on held-out data of both branches. */
START_TEST(test_train_pipeline) {
    char d[] = "/tmp/rftrainXXXXXX", args[2048], path[600], *out, *err, *l0, *l1;
    ck_assert(mkdtemp(d) != NULL);
    const char *steps[] = {
        "synth --out %s/w --scale 0.003 --seed 3",
        "tokenizer train --data %s/w --vocab 400 --out %s/tok.json",
        "init --preset tiny --vocab 400 --out %s/base",
        "pretrain --model %s/base --data %s/w --tokenizer %s/tok.json --steps 30 --batch 16 --max-len 160 --lr 3e-3 --out %s/pre",
        "train --model %s/pre --tokenizer %s/tok.json --data %s/w --out %s/run --steps 30 --emb-batch 6 --gen-batch 10 "
        "--max-len 160 --rank 4 --alpha 16 --task-dim 16 --lr 3e-3 --sched-val 4 --sched-remainder largest --save-every 10"};
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, steps[i], d, d, d, d);
        ck_assert_msg(run(args, &out, &err) == 0, "recfound %s\n%s", args, err);
        free(out); free(err);
    }
    const char *files[] = {"run/step-0/adapter_model.safetensors", "run/step-10/adapter_config.json",
                           "run/step-20/adapter_model.safetensors", "run/final/adapter_model.safetensors",
                           "run/losses.csv", "run/sched.csv"};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", d, files[i]);
        FILE *f = fopen(path, "r");
        ck_assert_msg(f != NULL, "train did not write %s", files[i]);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/run/losses.csv", d);
    size_t n;
    char *csv;
    ck_assert(rf_read_file(path, &csv, &n) == 0);
    ck_assert_int_eq(count_lines(csv), 31);
    free(csv);
    /* step-0 is the untrained adapter: every B_j is zero */
    Model m;
    Tmole tm;
    snprintf(path, sizeof path, "%s/pre", d);
    ck_assert(model_load(&m, path) == 0);
    snprintf(path, sizeof path, "%s/run/step-0", d);
    ck_assert(tmole_load(&tm, path, &m.cfg) == 0);
    for (int i = 0; i < tm.n_sites; i++)
        for (int j = 0; j < tmole_n_experts(&tm.cfg) && tm.site[i].in; j++)
            for (int k = 0; k < tm.site[i].out * tm.cfg.rank; k++) ck_assert(tm.params[tm.site[i].B[j] + k] == 0);
    tmole_free(&tm);
    model_free(&m);
    const char *q = "loss --model %s/pre --tokenizer %s/tok.json --data %s/w --samples 16 --max-len 160 --adapter %s/run/%s";
    snprintf(args, sizeof args, q, d, d, d, d, "step-0");
    ck_assert_int_eq(run(args, &l0, &err), 0);
    free(err);
    snprintf(args, sizeof args, q, d, d, d, d, "final");
    ck_assert_int_eq(run(args, &l1, &err), 0);
    free(err);
    int ne0, ne1, ng0, ng1;
    double e0 = mean_loss(l0, 'E', &ne0), e1 = mean_loss(l1, 'E', &ne1);
    double g0 = mean_loss(l0, 'G', &ng0), g1 = mean_loss(l1, 'G', &ng1);
    ck_assert_msg(ne0 >= 2 && ng0 >= 8 && ne0 == ne1 && ng0 == ng1, "too few tasks measured:\n%s", l0);
    ck_assert_msg(e1 < e0 - 0.05, "embedding held-out loss %.4f -> %.4f did not fall", e0, e1);
    ck_assert_msg(g1 < g0 - 0.05, "generative held-out loss %.4f -> %.4f did not fall", g0, g1);
    free(l0);
    free(l1);
    /* QR's answers do not fit 8 tokens: its loss is nan, and stderr says so in one line */
    snprintf(args, sizeof args, "loss --model %s/pre --tokenizer %s/tok.json --data %s/w --samples 4 --max-len 8", d, d, d);
    ck_assert_int_eq(run(args, &l0, &err), 0);
    ck_assert_msg(strstr(l0, "QR,G,4,nan") != NULL, "want QR unmeasured:\n%s", l0);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "loss: warning: ") && strstr(err, "QR") &&
                      strstr(err, "no sample fits --max-len 8"), "want one warning naming QR, got:\n%s", err);
    free(l0);
    free(err);
    snprintf(args, sizeof args, "rm -rf %s", d);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

/* `loss`, composed again by hand from the library's parts.
 * The embedding loss is InfoNCE of each query against every
 * positive and every hard negative of the batch (official-code.md §4), at
 * temperature 0.02: here it is composed by hand from embed_texts' vectors of
 * the U2I eval records (each has one positive and one negative, and --samples
 * takes them all, so nothing is drawn) and must match.
 *   s_ik = q_i . p_k / 0.02 over the Q positives and the Q negatives,
 *   L = (1/Q) sum_i [ log sum_k exp s_ik - s_ii ]. */
START_TEST(test_loss_by_hand) {
    char d[] = "/tmp/rfinfonceXXXXXX", args[1024], path[600], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(args, sizeof args, "loss --model %s/base --tokenizer %s/tok.json --data %s/w --samples 100000", d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    const char *line = strstr(out, "\nU2I,E,");
    ck_assert_msg(line != NULL, "no U2I line:\n%s", out);
    int q_used = 0, sa_used = 0;
    double got = NAN, sa_got = NAN;
    ck_assert_int_eq(sscanf(line, "\nU2I,E,%d,%lf", &q_used, &got), 2);
    line = strstr(out, "\nSA,G,");
    ck_assert_msg(line != NULL && sscanf(line, "\nSA,G,%d,%lf", &sa_used, &sa_got) == 2, "no SA line:\n%s", out);
    free(out);
    free(err);

    Model m;
    Tokenizer tok;
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(path, sizeof path, "%s/base", d);
    ck_assert(model_load(&m, path) == 0);
    snprintf(path, sizeof path, "%s/tok.json", d);
    ck_assert(tok_load(&tok, path) == 0);
    snprintf(path, sizeof path, "%s/w", d);
    ck_assert(dataset_load_split(&ds, path, "eval", 0) == 0);
    const Pool *p = &ds.pool[TASK_U2I];
    int Q = (int)p->n, C = m.cfg.hidden_size;
    ck_assert_int_eq(q_used, Q);
    ck_assert(Q >= 3);
    const char **instr = malloc(3 * Q * sizeof *instr), **text = malloc(3 * Q * sizeof *text);
    for (int i = 0; i < Q; i++) {  /* queries, then positives, then negatives */
        const Record *r = &p->recs[i];
        ck_assert(r->n_pos == 1 && r->n_neg == 1 && !r->pos[0].is_list && !r->neg[0].is_list);
        instr[i] = r->query.instr, text[i] = r->query.texts[0];
        instr[Q + i] = r->pos[0].instr, text[Q + i] = r->pos[0].texts[0];
        instr[2 * Q + i] = r->neg[0].instr, text[2 * Q + i] = r->neg[0].texts[0];
    }
    float *e = malloc((size_t)3 * Q * C * sizeof *e);
    long dropped = 0;
    ck_assert(embed_texts(e, &m, NULL, &tok, instr, text, 3 * Q, TASK_U2I, EMB_FMT_TRAIN, 256, 8, &dropped, NULL) == 0);
    ck_assert_int_eq(dropped, 0);
    double want = 0;
    for (int i = 0; i < Q; i++) {
        double s[4096], mx = -INFINITY, sum = 0;
        ck_assert(2 * Q <= 4096);
        for (int k = 0; k < 2 * Q; k++) {
            double dot = 0;
            for (int c = 0; c < C; c++) dot += (double)e[(size_t)i * C + c] * e[(size_t)(Q + k) * C + c];
            s[k] = dot / 0.02;
            mx = s[k] > mx ? s[k] : mx;
        }
        for (int k = 0; k < 2 * Q; k++) sum += exp(s[k] - mx);
        want += mx + log(sum) - s[i];
    }
    want /= Q;
    ck_assert_msg(fabs(got - want) <= 1e-4 * fabs(want), "loss printed %.9g, composed by hand %.9g", got, want);
    free(e); free(instr); free(text);

    /* A generative task's loss: the mean cross-entropy over every answer token
     * (and </s>) of all the records together, not a mean of per-record means.
     * Each record alone through the decoder: the CE of predicting token t + 1
     * at position t, summed over the answer's tokens ids[start..len). */
    const Pool *g = &ds.pool[TASK_SA];
    ck_assert(g->n >= 2);
    double ce_sum = 0;
    long n_tok = 0, shortest = -1, longest = -1;
    for (size_t i = 0; i < g->n; i++) {
        Sample smp;
        ck_assert_int_eq(sample_gen(&smp, &tok, &g->recs[i], 256, NULL), 1);
        int T = smp.len;
        float *w = calloc(T, sizeof *w), *ce = calloc(T, sizeof *ce);
        int zero = 0;
        Batch b = {.B = 1, .T = T, .ids = smp.ids, .lengths = &T, .tasks = &zero};
        for (int t = 0; t + 1 < T; t++) w[t] = 1;
        Acts *a = acts_new(&m, 1, T);
        model_forward(&m, NULL, a, &b, ATTN_CAUSAL);
        model_lm_loss(&m, a, &b, w, ce, NULL, 0);
        for (int t = smp.start; t < T; t++) ce_sum += ce[t - 1], n_tok++;
        long answer = T - smp.start;
        if (shortest < 0 || answer < shortest) shortest = answer;
        if (answer > longest) longest = answer;
        acts_free(a);
        free(w); free(ce);
        sample_free(&smp);
    }
    ck_assert_msg(shortest != longest, "SA's answers all have %ld tokens: a per-record mean would agree", shortest);
    ck_assert_int_eq(sa_used, (int)g->n);
    ck_assert_msg(fabs(sa_got - ce_sum / n_tok) <= 1e-5 * (ce_sum / n_tok), "SA: loss printed %.9g, by hand %.9g",
                  sa_got, ce_sum / n_tok);
    dataset_free(&ds);
    tok_free(&tok);
    model_free(&m);
    rm_tree(d);
}
END_TEST

/* The losses.csv of a run without its last column (seconds). */
static char *losses_without_time(const char *run) {
    char path[600], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/losses.csv", run);
    ck_assert_msg(rf_read_file(path, &text, &n) == 0, "%s", rf_last_error());
    char *out = malloc(n + 1), *o = out;
    for (char *line = text; *line;) {
        char *eol = strchr(line, '\n'), *comma = NULL;
        for (char *c = line; c < (eol ? eol : line + strlen(line)); c++)
            if (*c == ',') comma = c;
        size_t keep = comma ? (size_t)(comma - line) : strlen(line);
        memcpy(o, line, keep);
        o += keep;
        *o++ = '\n';
        if (!eol) break;
        line = eol + 1;
    }
    *o = 0;
    free(text);
    return out;
}

/* The end-of-run count of training samples truncated to --max-len counts
 * training samples only: S2Sched's validation passes (more of them with a
 * larger --sched-val) leave it unchanged. */
static long truncated_count(const char *err) {
    const char *p = strstr(err, " truncated");
    ck_assert_msg(p != NULL, "no truncation count in: %s", err);
    while (p > err && p[-1] >= '0' && p[-1] <= '9') p--;
    return atol(p);
}

START_TEST(test_truncation_count_excludes_validation) {
    char d[] = "/tmp/rftruncXXXXXX", args[4096], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    long count[2];
    int val[2] = {2, 12};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 2 --emb-batch 4 "
                 "--gen-batch 6 --max-len 64 --rank 4 --alpha 16 --task-dim 16 --sched-val %d --out %s/run%d",
                 d, d, d, val[k], d, k);
        ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
        count[k] = truncated_count(err);
        free(out); free(err);
    }
    ck_assert_msg(count[0] > 0, "no training sample was truncated at --max-len 64: the test checks nothing");
    ck_assert_msg(count[0] == count[1], "truncated: %ld with --sched-val 2, %ld with --sched-val 12", count[0], count[1]);
    rm_tree(d);
}
END_TEST

/* S2Sched's validation embeds in chunks no larger than a training batch, so
 * it needs no more activation memory than training without it (a 7B backbone
 * then fits with S2Sched on): `--dry-run` prints the same activations. */
static void dry_run_activations(const char *d, const char *extra, char *line, size_t n) {
    char args[4096], *out, *err;
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 2 --emb-batch 1 "
             "--micro 1 --max-len 64 --rank 4 --alpha 16 --task-dim 16 --dry-run --out %s/dry %s", d, d, d, d, extra);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    const char *a = strstr(err, "activations");
    ck_assert_msg(a != NULL, "no memory line in: %s", err);
    snprintf(line, n, "%.*s", (int)strcspn(a, ")"), a);
    free(out);
    free(err);
}

START_TEST(test_dry_run_validation_rows) {
    char d[] = "/tmp/rfdryXXXXXX", with[256], without[256];
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    dry_run_activations(d, "", with, sizeof with);
    dry_run_activations(d, "--no-s2sched", without, sizeof without);
    ck_assert_msg(strstr(with, "(3 rows x 64 tokens") != NULL, "%s", with);
    ck_assert_str_eq(with, without);
    rm_tree(d);
}
END_TEST

/* S2Sched's n_i = floor(B omega_i) with `drop` and fewer samples per step than
 * tasks: the branch gets nothing (always with one sample, in the warm-up with
 * more), which train says before it starts; not with `largest` or without S2Sched. */
static char *dry_run_stderr(const char *d, const char *extra) {
    char args[4096], *out, *err;
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 20 --max-len 64 "
             "--rank 4 --alpha 16 --task-dim 16 --dry-run --out %s/dry %s", d, d, d, d, extra);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out);
    return err;
}

START_TEST(test_dry_run_starved_branch) {
    char d[] = "/tmp/rfstarveXXXXXX";
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    char *err = dry_run_stderr(d, "--emb-batch 1 --gen-batch 1");
    ck_assert_msg(strstr(err, "warning: 1 embedding sample per step for 3 tasks") && strstr(err, "at every step") &&
                  strstr(err, "warning: 1 generative sample per step for"), "%s", err);
    free(err);
    err = dry_run_stderr(d, "--emb-batch 2 --gen-batch 64");
    ck_assert_msg(strstr(err, "warning: 2 embedding samples per step for 3 tasks") &&
                  strstr(err, "the first 2 steps") && !strstr(err, "generative sample"), "%s", err);
    free(err);
    const char *quiet[3] = {"--emb-batch 3 --gen-batch 64", "--emb-batch 1 --gen-batch 1 --sched-remainder largest",
                            "--emb-batch 1 --gen-batch 1 --no-s2sched"};
    for (int i = 0; i < 3; i++) {
        err = dry_run_stderr(d, quiet[i]);
        ck_assert_msg(!strstr(err, "warning"), "%s: %s", quiet[i], err);
        free(err);
    }
    rm_tree(d);
}
END_TEST

/* A branch whose tasks have no training record trains nothing, which train
 * says before it starts; the progress line shows "-" for a branch that drew no
 * sample in a step, and a run in which no step drew anything ends with a
 * warning that counts those steps (here: --gen-batch 2 over 10 tasks with
 * `drop`, so floor(2 omega_i) = 0 while omega is uniform). */
START_TEST(test_empty_branch_said) {
    char d[] = "/tmp/rfemptyXXXXXX", path[600], args[4096], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(path, sizeof path, "%s/w/Embedding_dataset_train.jsonl", d);
    ck_assert_int_eq(rf_write_file_atomic(path, "", 0), 0);
    const char *opts = "train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 2 --gen-batch 2 " SMALL_RUN
                       " --out %s/%s";
    snprintf(args, sizeof args, opts, d, d, d, d, "drop");
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "warning: no training record of an embedding task in") && strstr(err, "(emb -, gen -)") &&
                  strstr(err, "warning: 2 of the 2 steps drew no sample in either branch"), "%s", err);
    free(out), free(err);
    snprintf(args, sizeof args, opts, d, d, d, d, "largest --sched-remainder largest");
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "warning: no training record of an embedding task in") && strstr(err, "(emb -, gen ") &&
                  !strstr(err, "gen -") && !strstr(err, "drew no sample"), "%s", err);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* An error in the middle of a run starts a line of its own, after the progress
 * line (here: the loss turns NaN at step 2 under a learning rate of 1e30), and
 * the checkpoint written before stays. */
START_TEST(test_error_after_progress_line) {
    char d[] = "/tmp/rfnanXXXXXX", args[2048], path[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s/run --steps 5 "
             "--lr 1e30 --clip 0 --emb-batch 2 --gen-batch 4 --sched-remainder largest " SMALL_RUN, d, d, d, d);
    int rc = run(args, &out, &err);
    ck_assert_msg(rc == 1, "status %d: %s", rc, err);
    ck_assert_msg(strstr(err, "\ntrain: step 1/5") && strstr(err, "\nrecfound train: step ") &&
                  strstr(err, "is not finite"), "%s", err);
    snprintf(path, sizeof path, "%s/run/step-0/adapter_model.safetensors", d);
    ck_assert_int_eq(access(path, F_OK), 0);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* The progress line rewrites itself with "\r" on a terminal only.  Into a file
 * or a pipe (here: captured) each update is a whole line, at most one every 10
 * seconds, and the last one is written when the run ends: of 3 quick steps,
 * steps 1 and 3.  Under a terminal (script(1) gives the command one) the line
 * still rewrites itself, every step. */
START_TEST(test_progress_not_a_terminal) {
    char d[] = "/tmp/rfprogXXXXXX", args[2048], cmd[4096], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    const char *opts = "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s/%s --steps 3 --emb-batch 2 "
                       "--gen-batch 4 " SMALL_RUN;
    snprintf(args, sizeof args, opts, d, d, d, d, "run");
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(!strchr(err, '\r'), "%s", err);
    ck_assert_msg(strstr(err, "\ntrain: step 1/3") && strstr(err, "\ntrain: step 3/3") && !strstr(err, "step 2/3"),
                  "%s", err);
    free(out), free(err);
    if (access("/usr/bin/script", X_OK) == 0) {
        snprintf(args, sizeof args, opts, d, d, d, d, "run2");
        snprintf(cmd, sizeof cmd, "/usr/bin/script -qec 'OMP_NUM_THREADS=2 %s %s' /dev/null", recfound_bin(), args);
        int rc = run_capture(cmd, &out, &err);
        ck_assert_msg(rc == 0 && strstr(out, "\rtrain: step 1/3") && strstr(out, "\rtrain: step 2/3") &&
                      strstr(out, "\rtrain: step 3/3"), "status %d:\n%s%s", rc, out, err);
        free(out), free(err);
    } else {
        fprintf(stderr, "test_progress_not_a_terminal: no /usr/bin/script, the terminal half is skipped\n");
    }
    rm_tree(d);
}
END_TEST

/* A checkpoint that cannot be written whole (here each file may have 75 KiB,
 * `prlimit --fsize`: the adapters fit, AdamW's moments do not, as on a full
 * disk) stops the run with one line naming the file, and its half-written
 * folder is removed, not left to take the space the next try needs. */
START_TEST(test_failed_checkpoint_removed) {
    char d[] = "/tmp/rffullXXXXXX", cmd[4096], path[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; OMP_NUM_THREADS=2 prlimit --fsize=76800 %s train --model %s/base --tokenizer "
             "%s/tok.json --data %s/w --out %s/run --steps 2 --emb-batch 2 --gen-batch 4 " SMALL_RUN, recfound_bin(), d,
             d, d, d);
    int rc = run_capture(cmd, &out, &err);
    ck_assert_msg(rc == 1 && strstr(err, "/.step-0.partial/optimizer.safetensors") && strstr(err, "File too large"),
                  "status %d: %s", rc, err);
    snprintf(path, sizeof path, "%s/run/.step-0.partial", d);
    ck_assert_msg(access(path, F_OK) != 0, "%s was left behind", path);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* A run started with relative paths from its own folder resumes from any
 * other folder: args.json keeps the input paths absolute. */
START_TEST(test_resume_from_elsewhere) {
    char d[] = "/tmp/rfelseXXXXXX", cmd[3072], args[700], path[700], here[1024], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    ck_assert(getcwd(here, sizeof here) != NULL);
    const char *bin = recfound_bin();
    snprintf(cmd, sizeof cmd, "cd %s && OMP_NUM_THREADS=2 %s%s%s train --model base --tokenizer tok.json --data w "
             "--out run --steps 3 --save-every 1 --stop-at 1 --emb-batch 2 --gen-batch 4 " SMALL_RUN, d,
             bin[0] == '/' ? "" : here, bin[0] == '/' ? "" : "/", bin);
    ck_assert_msg(run_capture(cmd, &out, &err) == 0, "%s", err);
    free(out), free(err);
    snprintf(args, sizeof args, "train --resume %s/run", d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/run/final/adapter_model.safetensors", d);
    ck_assert_int_eq(access(path, F_OK), 0);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* A short training run of the tiny world in d into d/name (4 embedding queries,
 * uniform mixing, no warmup) with the given further options. */
static void train_short(const char *d, const char *name, const char *opts) {
    char args[2048], *out, *err;
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s/%s --emb-batch 4 "
             "--no-s2sched --max-len 128 --rank 4 --task-dim 16 --lr 1e-2 --warmup 0 %s", d, d, d, d, name, opts);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out), free(err);
}

/* Step 1's row of run d/name's losses.csv: its learning rate, the loss
 * L_emb + lambda L_gen of the step's batch, and the two branch losses. */
static void first_step(const char *d, const char *name, double *lr, double *loss, double *le, double *lg) {
    char path[700], *csv, *p;
    snprintf(path, sizeof path, "%s/%s/losses.csv", d, name);
    ck_assert(rf_read_file(path, &csv, NULL) == 0);
    const char *row = strchr(csv, '\n');
    ck_assert(row != NULL);
    strtol(row + 1, &p, 10);
    *lr = strtod(p + 1, &p);
    *loss = strtod(p + 1, &p);
    *le = strtod(p + 1, &p);
    *lg = strtod(p + 1, &p);
    free(csv);
}

/* 1 when runs d/a and d/b wrote byte-identical final adapters. */
static int same_adapters(const char *d, const char *a, const char *b) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cmp -s %s/%s/final/adapter_model.safetensors %s/%s/final/adapter_model.safetensors",
             d, a, d, b);
    return system(cmd) == 0;
}

/* --lambda-gen weighs the generative gradient: with 0, one step changes the
 * adapters exactly as a step without the generative branch does (its loss is
 * still measured and reported, and the embedding branch draws the same
 * records), and with 1 they change otherwise.  (A weight of 0 used to end the
 * run: the loss was divided by it.) */
START_TEST(test_lambda_gen_weighs_the_gradient) {
    char d[] = "/tmp/rflambdaXXXXXX";
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    train_short(d, "l0", "--steps 1 --gen-batch 6 --lambda-gen 0");
    train_short(d, "e0", "--steps 1 --gen-batch 0");
    train_short(d, "l1", "--steps 1 --gen-batch 6 --lambda-gen 1");
    ck_assert_msg(same_adapters(d, "l0", "e0"), "lambda 0 should train as the embedding branch alone");
    ck_assert_msg(!same_adapters(d, "l0", "l1"), "lambda 1 should differ from lambda 0");
    /* the step of lambda 0: loss = loss_emb, a finite generative loss beside it */
    double lr, loss, le, lg;
    first_step(d, "l0", &lr, &loss, &le, &lg);
    ck_assert_msg(lr > 0 && loss == le && isfinite(lg) && lg > 0, "lr %g, loss %g, L_emb %g, L_gen %g", lr, loss, le,
                  lg);
    rm_tree(d);
}
END_TEST

/* --clip C rescales a step's gradient to norm C when it is larger (0: never).
 * The gradients of these 3 steps have norms of a few units, so --clip 1000
 * never acts and trains exactly as --clip 0, while --clip 1e-3 acts at every
 * step and trains otherwise (AdamW's first step is blind to a uniform scale,
 * its later ones are not). */
START_TEST(test_clip_is_applied) {
    char d[] = "/tmp/rfclipXXXXXX";
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    train_short(d, "c0", "--steps 3 --gen-batch 6 --clip 0");
    train_short(d, "c1000", "--steps 3 --gen-batch 6 --clip 1000");
    train_short(d, "c1e-3", "--steps 3 --gen-batch 6 --clip 1e-3");
    ck_assert_msg(same_adapters(d, "c0", "c1000"), "--clip 1000 should not act here");
    ck_assert_msg(!same_adapters(d, "c0", "c1e-3"), "--clip 1e-3 should change the run");
    rm_tree(d);
}
END_TEST

/* The gradient of a training step, checked against the loss the step reports.
 * From adapters A (three AdamW steps away from their initialisation, so that
 * every B is non-zero), one --optimizer sgd step with --lr 1, no warmup and no
 * clipping writes A - g, g being the gradient `train` computes for its first
 * batch.  The same first step from A + e u and from A - e u, u = g / |g|,
 * reports the loss L = L_emb + lambda L_gen of the same batch (same seed, same
 * records, same dropout masks; no S2Sched), and the central differences at
 * e and e/2, Richardson-combined, give the derivative of L along u, which must
 * be |g|.  This pins the training step's own composition of the two branches,
 * which no other test recomposes: InfoNCE's gradient beside the generative
 * one, lambda = 0.5 on the latter, two micro-batches of 3 accumulated, and
 * dropout.  Measured: agreement to 7e-5 of |g|; a `train` that doubles
 * the embedding branch's gradient is off by 50%, one that drops lambda
 * from the generative gradient by 3%. */
START_TEST(test_train_gradient_by_differences) {
    char d[] = "/tmp/rfgradXXXXXX", path[700], at[32], run_name[32];
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    const char *step = "--steps 1 --gen-batch 6 --micro 3 --lambda-gen 0.5 --optimizer sgd --lr 1 --clip 0 "
                       "--init-adapter %s/%s";
    char opts[1024];
    train_short(d, "a", "--steps 3 --gen-batch 6");
    snprintf(opts, sizeof opts, step, d, "a/final");
    train_short(d, "sgd", opts);

    Config cfg;
    Tmole a, b;
    snprintf(path, sizeof path, "%s/base/config.json", d);
    ck_assert(config_load(&cfg, path) == 0);
    snprintf(path, sizeof path, "%s/a/final", d);
    ck_assert_msg(tmole_load(&a, path, &cfg) == 0, "%s", rf_last_error());
    snprintf(path, sizeof path, "%s/sgd/final", d);
    ck_assert_msg(tmole_load(&b, path, &cfg) == 0, "%s", rf_last_error());
    ck_assert_int_eq(a.total, b.total);
    size_t n = a.total;
    double *u = malloc(n * sizeof *u), gnorm = 0;
    float *a0 = malloc(n * sizeof *a0);
    ck_assert(u && a0);
    memcpy(a0, a.params, n * sizeof *a0);
    for (size_t i = 0; i < n; i++) {  /* g = A - (A - 1 * g) */
        u[i] = (double)a.params[i] - b.params[i];
        gnorm += u[i] * u[i];
    }
    gnorm = sqrt(gnorm);
    ck_assert(gnorm > 0.1);
    for (size_t i = 0; i < n; i++) u[i] /= gnorm;

    /* L(A + s e u) for s = +1, -1 at e and e/2 */
    const double e = 2e-3;
    double l[4];
    for (int k = 0; k < 4; k++) {
        double x = (k & 1 ? -1 : 1) * (k < 2 ? e : e / 2);
        for (size_t i = 0; i < n; i++) a.params[i] = (float)(a0[i] + x * u[i]);
        snprintf(at, sizeof at, "at%d", k);  /* the adapters, and the run that starts from them */
        snprintf(run_name, sizeof run_name, "run%d", k);
        snprintf(path, sizeof path, "%s/%s", d, at);
        ck_assert_msg(tmole_save(&a, path) == 0, "%s", rf_last_error());
        snprintf(opts, sizeof opts, step, d, at);
        train_short(d, run_name, opts);
        double lr, le, lg;
        first_step(d, run_name, &lr, &l[k], &le, &lg);
    }
    double d1 = (l[0] - l[1]) / (2 * e), d2 = (l[2] - l[3]) / e, fd = (4 * d2 - d1) / 3;
    double rel = fabs(fd - gnorm) / gnorm;
    ck_assert_msg(rel < 5e-3, "derivative of the reported loss along the step: %.6g by differences, |g| = %.6g "
                  "from the sgd step (relative error %.3g)", fd, gnorm, rel);
    free(u), free(a0);
    tmole_free(&a), tmole_free(&b);
    rm_tree(d);
}
END_TEST

/* Every checkpoint records the CRC-32 of its run's step-0 adapters (the
 * value zlib.crc32 gives for that file), and merge warns when a checkpoint
 * comes from another run than its --base: the task vectors would subtract
 * another run's random A matrices.  A trainer_state.json it cannot read is
 * named, and the merge goes on. */
START_TEST(test_merge_warns_foreign_base) {
    char d[] = "/tmp/rfbaseXXXXXX", args[2048], path[700], *out, *err, *text;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    train_short(d, "r1", "--steps 1 --gen-batch 2");
    train_short(d, "r2", "--steps 1 --gen-batch 2 --seed 7");
    uint32_t crc;
    snprintf(path, sizeof path, "%s/r1/step-0/adapter_model.safetensors", d);
    ck_assert(rf_file_crc32(path, &crc) == 0);
    char want[64];
    snprintf(want, sizeof want, "\"step0_crc32\": \"%08x\"", (unsigned)crc);
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/r1/%s/trainer_state.json", d, k ? "final" : "step-0");
        ck_assert(rf_read_file(path, &text, NULL) == 0);
        ck_assert_msg(strstr(text, want) != NULL, "%s lacks %s", path, want);
        free(text);
    }
    snprintf(args, sizeof args, "merge --base %s/r1/step-0 %s/r1/final --out %s/m1", d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "warning") == NULL, "%s", err);
    free(out), free(err);
    snprintf(args, sizeof args, "merge --base %s/r1/step-0 %s/r1/final %s/r2/final --out %s/m2", d, d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    snprintf(want, sizeof want, "%s/r2/final was trained from another step-0 than the base", d);
    ck_assert_msg(strstr(err, want) != NULL && count_lines(err) == 1, "%s", err);
    free(out), free(err);
    snprintf(path, sizeof path, "%s/r2/final/trainer_state.json", d);
    ck_assert(rf_write_file_atomic(path, "{", 1) == 0);
    snprintf(args, sizeof args, "merge --base %s/r1/step-0 %s/r2/final --out %s/m3", d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "trainer_state.json") && strstr(err, "its base is not checked"), "%s", err);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* losses.csv is rewritten whole after every step, so only a hand (or a disk)
 * can take rows out of it; --resume then names the first missing step and
 * goes on.  Case 1: step 1's row removed, step 2's kept; case 2: the file cut
 * after step 1, while the checkpoint is at step 2. */
static void run_stopped_at_2(const char *d, const char *name) {
    char args[2048], *out, *err;
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s/%s --steps 3 "
             "--save-every 1 --stop-at 2 --emb-batch 2 --gen-batch 4 " SMALL_RUN, d, d, d, d, name);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out), free(err);
}

START_TEST(test_resume_names_missing_loss_rows) {
    char d[] = "/tmp/rfrowsXXXXXX", args[2048], path[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    run_stopped_at_2(d, "run");
    snprintf(args, sizeof args, "cp -r %s/run %s/run2", d, d);
    ck_assert_int_eq(system(args), 0);
    for (int c = 0; c < 2; c++) {
        const char *run_dir = c == 0 ? "run" : "run2";
        char *text;
        snprintf(path, sizeof path, "%s/%s/losses.csv", d, run_dir);
        ck_assert(rf_read_file(path, &text, NULL) == 0);
        char *row1 = strstr(text, "\n1,"), *row2 = strstr(text, "\n2,");
        ck_assert_msg(row1 && row2 && row1 < row2, "%s", text);
        if (c == 0) memmove(row1 + 1, row2 + 1, strlen(row2 + 1) + 1);  /* drop step 1 */
        else row2[1] = 0;                                                /* cut after step 1 */
        ck_assert(rf_write_file_atomic(path, text, strlen(text)) == 0);
        free(text);
        snprintf(args, sizeof args, "train --resume %s/%s", d, run_dir);
        ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
        const char *want = c == 0 ? "losses.csv has no row for step 1 (step 2 comes next)"
                                  : "losses.csv ends before step 2, while the checkpoint is at step 2";
        ck_assert_msg(strstr(err, want) && strstr(err, "resuming"), "want '%s' in:\n%s", want, err);
        free(out), free(err);
        snprintf(path, sizeof path, "%s/%s/final/adapter_model.safetensors", d, run_dir);
        ck_assert_int_eq(access(path, F_OK), 0);
        ck_assert(rf_read_file(path, &text, NULL) == 0);  /* the file is there and readable */
        free(text);
    }
    /* an intact file: no warning */
    run_stopped_at_2(d, "run3");
    snprintf(args, sizeof args, "train --resume %s/run3", d);
    ck_assert_msg(run(args, &out, &err) == 0 && strstr(err, "resuming") && !strstr(err, "no row for") &&
                  !strstr(err, "ends before"), "%s", err);
    free(out), free(err);
    rm_tree(d);
}
END_TEST

/* train's memory check reads the process's cgroup limit (a container's
 * --memory).  The test makes a cgroup of its own under this process's memory
 * group (cgroup v1 memory controller or v2 group), with a limit of half the
 * machine's memory, runs `train --dry-run` in it, then the same with 64 MiB and
 * a configuration that needs more: one line, exit 1, nothing written.  Where
 * this process may not make or fill a cgroup it says so and checks nothing. */
static int cgroup_for_test(char *cg, size_t cap, const char **limit_file) {
    char *text, v1[2048], v2[2048];
    errno = ENOENT;
    if (rf_read_file("/proc/self/cgroup", &text, NULL)) {
        rf_clear_error();
        return -1;
    }
    cgroup_paths(text, v1, v2, sizeof v1);
    free(text);
    if (!v1[0] && !v2[0]) return -1;
    const char *root = v1[0] ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup", *path = v1[0] ? v1 : v2;
    char dir[2200];
    snprintf(dir, sizeof dir, "%s%s", root, strcmp(path, "/") ? path : "");
    if (access(dir, W_OK)) snprintf(dir, sizeof dir, "%s", root);  /* a container's group at the root */
    *limit_file = v1[0] ? "memory.limit_in_bytes" : "memory.max";
    snprintf(cg, cap, "%s/rftest%d", dir, (int)getpid());
    return mkdir(cg, 0755);
}

static int write_text(const char *dir, const char *name, const char *text) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Entries of folder `dir` ("." and ".." aside). */
static int count_entries(const char *dir) {
    char cmd[700], *out, *err;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    ck_assert_int_eq(run_capture(cmd, &out, &err), 0);
    int n = atoi(out);
    free(out), free(err);
    return n;
}

/* A command never replaces what an earlier one saved: init, pretrain, train,
 * merge, tokenizer train, synth and build-data, given an --out that already
 * holds something, stop with one line naming it, and the folder (or file) is
 * byte for byte as it was: merging into one of the merged checkpoints
 * included.  An empty folder is taken. */
START_TEST(test_outputs_not_replaced) {
    char d[] = "/tmp/rfkeepXXXXXX", args[2048], keep[600], file[640], cmd[1400], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s/run --steps 1 "
             "--emb-batch 2 --gen-batch 2 " SMALL_RUN, d, d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out), free(err);
    snprintf(keep, sizeof keep, "%s/keep", d);
    snprintf(file, sizeof file, "%s/tokenizer.json", keep);
    ck_assert_int_eq(mkdir(keep, 0755), 0);
    ck_assert_int_eq(write_text(keep, "tokenizer.json", "precious\n"), 0);
    ck_assert_int_eq(write_text(d, "ids.txt", "5 6 7 8\n"), 0);
    snprintf(cmd, sizeof cmd, "cp -r %s/run/final %s/final.copy", d, d);
    ck_assert_int_eq(system(cmd), 0);
    char cases[8][1400];
    int n = 0;
    snprintf(cases[n++], sizeof cases[0], "init --preset tiny --out %s", keep);
    snprintf(cases[n++], sizeof cases[0], "pretrain --model %s/base --ids %s/ids.txt --steps 1 --lr 0.01 --optimizer sgd "
             "--out %s", d, d, keep);
    snprintf(cases[n++], sizeof cases[0], "train --model %s/base --tokenizer %s/tok.json --data %s/w --out %s --steps 1",
             d, d, d, keep);
    snprintf(cases[n++], sizeof cases[0], "merge --base %s/run/step-0 %s/run/final --out %s", d, d, keep);
    snprintf(cases[n++], sizeof cases[0], "synth --out %s --scale 0.003", keep);
    snprintf(cases[n++], sizeof cases[0], "build-data --raw %s --out %s", d, keep);
    snprintf(cases[n++], sizeof cases[0], "tokenizer train --data %s/w --vocab 300 --out %s", d, file);
    snprintf(cases[n++], sizeof cases[0], "merge --base %s/run/step-0 %s/run/final --out %s/run/final", d, d, d);
    for (int i = 0; i < n; i++) {
        expect_error(cases[i], "already exists");
        char *text;
        size_t len;
        ck_assert_int_eq(rf_read_file(file, &text, &len), 0);
        ck_assert_msg(!strcmp(text, "precious\n") && count_entries(keep) == 1, "'%s' changed %s", cases[i], keep);
        free(text);
    }
    snprintf(cmd, sizeof cmd, "diff -r %s/run/final %s/final.copy", d, d);
    ck_assert_msg(system(cmd) == 0, "merge replaced its own input %s/run/final", d);
    snprintf(args, sizeof args, "init --preset tiny --out %s/empty", d);
    snprintf(cmd, sizeof cmd, "%s/empty", d);
    ck_assert_int_eq(mkdir(cmd, 0755), 0);
    ck_assert_msg(run(args, &out, &err) == 0, "an empty folder: %s", err);
    free(out), free(err);
    ck_assert_int_eq(count_entries(cmd), 2);  /* config.json, model.safetensors */
    rm_tree(d);
}
END_TEST

START_TEST(test_train_respects_cgroup_limit) {
    char cg[4300], d[] = "/tmp/rfcgroupXXXXXX", cmd[8192], lim[64], want[96], run_dir[600], *out, *err1, *err2;
    const char *limit_file;
    if (cgroup_for_test(cg, sizeof cg, &limit_file)) {
        fprintf(stderr, "cli: cgroup test skipped: this process cannot make a memory cgroup (%s)\n", strerror(errno));
        return;
    }
    double half = floor((double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 2 / 1048576);
    snprintf(lim, sizeof lim, "%.0f", half * 1048576);
    if (write_text(cg, limit_file, lim)) {
        fprintf(stderr, "cli: cgroup test skipped: cannot set %s/%s\n", cg, limit_file);
        rmdir(cg);
        return;
    }
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    const char *fmt = "sh -c 'echo $$ > %s/cgroup.procs && OMP_NUM_THREADS=2 exec %s train --model %s/base "
                      "--tokenizer %s/tok.json --data %s/w --steps 2 --max-len %d --emb-batch %d --rank 4 --alpha 16 "
                      "--task-dim 16 %s --out %s/run'";
    snprintf(cmd, sizeof cmd, fmt, cg, recfound_bin(), d, d, d, 64, 4, "--dry-run", d);
    int rc1 = run_capture(cmd, &out, &err1);
    free(out);
    int set = write_text(cg, limit_file, "67108864");  /* 64 MiB, for a run that needs more */
    snprintf(cmd, sizeof cmd, fmt, cg, recfound_bin(), d, d, d, 512, 64, "", d);
    int rc2 = run_capture(cmd, &out, &err2);
    free(out);
    int gone = rmdir(cg);  /* before any check can end the test */
    ck_assert_msg(gone == 0, "rmdir %s: %s", cg, strerror(errno));
    snprintf(want, sizeof want, "of this cgroup's %.0f MiB", half);
    ck_assert_msg(rc1 == 0 && strstr(err1, want), "status %d, want '%s' in:\n%s", rc1, want, err1);
    ck_assert_int_eq(set, 0);
    ck_assert_msg(rc2 == 1 && strstr(err2, "recfound train: needs about ") &&
                  strstr(err2, "more than 90% of this cgroup's 64 MiB"), "status %d:\n%s", rc2, err2);
    snprintf(run_dir, sizeof run_dir, "%s/run", d);
    ck_assert_msg(access(run_dir, F_OK) != 0, "%s was made", run_dir);
    free(err1), free(err2);
    rm_tree(d);
}
END_TEST

/* Interrupted at step 1 (S2Sched and lr warmup), 3 (right after a save) and 5,
 * then resumed: losses, schedule and adapters are bit-identical to a run that
 * was never interrupted.  The run cut at 3 is resumed from a copy, which
 * continues in the copy's folder and leaves the original as it was; other
 * options beside --resume are refused. */
START_TEST(test_resume_bit_identical) {
    char d[] = "/tmp/rfresumeXXXXXX", args[4096], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    const char *opts = "--model %s/base --tokenizer %s/tok.json --data %s/w --steps 7 --emb-batch 4 --gen-batch 6 "
                       "--max-len 128 --rank 4 --alpha 16 --task-dim 16 --lr 3e-3 --sched-val 3 --sched-remainder largest "
                       "--sched-warmup 0.3 --warmup 0.3 --lambda-gen 0.5 --save-every 3 --out %s/%s";
    char fmt[1200];
    snprintf(fmt, sizeof fmt, "train %s", opts);
    snprintf(args, sizeof args, fmt, d, d, d, d, "whole");
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    ck_assert_msg(strstr(err, "/whole/step-0, step-3 to step-6 (every 3), ") != NULL, "%s", err);
    free(out); free(err);
    char whole[600], cut[600];
    snprintf(whole, sizeof whole, "%s/whole", d);
    char *ref = losses_without_time(whole);
    /* lr warmup: ⌈0.3 × 7⌉ = 3 steps from 0, then linear decay to 0 at step 7:
     * 0, 1e-3, 2e-3, 3e-3 (4/4), 2.25e-3 (3/4), 1.5e-3, 7.5e-4;  and the loss
     * column is L_emb + λ L_gen with λ = 0.5 */
    const double want_lr[7] = {0, 1e-3, 2e-3, 3e-3, 2.25e-3, 1.5e-3, 7.5e-4};
    const char *row = strchr(ref, '\n');
    for (int i = 0; i < 7; i++) {
        ck_assert_msg(row && row[1], "losses.csv has %d rows, want 7", i);
        char *p;
        double v[5];
        strtol(row + 1, &p, 10);
        for (int c = 0; c < 5; c++) v[c] = strtod(p + 1, &p);  /* lr, loss, loss_emb, loss_gen, grad_norm */
        ck_assert_msg(fabs(v[0] - want_lr[i]) <= 1e-9, "step %d: lr %g, want %g", i + 1, v[0], want_lr[i]);
        ck_assert_msg(fabs(v[1] - (v[2] + 0.5 * v[3])) <= 1e-5 * fabs(v[1]), "step %d: loss %g is not %g + 0.5 x %g",
                      i + 1, v[1], v[2], v[3]);
        row = strchr(row + 1, '\n');
    }
    /* sched.csv: S2Sched's rows start after its warmup of ⌈0.3 x 7⌉ = 3 steps (steps 3..6, counted from 0) */
    snprintf(args, sizeof args, "%s/sched.csv", whole);
    char *sched;
    size_t sched_len;
    ck_assert(rf_read_file(args, &sched, &sched_len) == 0);
    const char *first = strchr(sched, '\n');
    ck_assert_msg(first && !strncmp(first + 1, "3,", 2), "sched.csv should start at step 3:\n%s", sched);
    ck_assert_msg(strstr(sched, "\n6,") && !strstr(sched, "\n7,"), "sched.csv should end at step 6:\n%s", sched);
    free(sched);
    int stops[3] = {1, 3, 5};
    for (int k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "cut%d", stops[k]);
        snprintf(fmt, sizeof fmt, "train %s --stop-at %d", opts, stops[k]);
        snprintf(args, sizeof args, fmt, d, d, d, d, name);
        ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
        ck_assert_msg(strstr(err, "--resume") != NULL, "no resume hint: %s", err);
        free(out); free(err);
        snprintf(cut, sizeof cut, "%s/%s", d, name);
        if (stops[k] == 3) {  /* a copy resumes in its own folder: the run it was copied from stays as it was */
            snprintf(args, sizeof args, "cp -r %s %s.orig && cp -r %s %s.copy", cut, cut, cut, cut);
            ck_assert_int_eq(system(args), 0);
            strcat(cut, ".copy");
        }
        snprintf(args, sizeof args, "train --resume %s", cut);
        ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
        free(out); free(err);
        if (stops[k] == 3) {
            snprintf(args, sizeof args, "diff -r %s/%s %s/%s.orig", d, name, d, name);
            ck_assert_msg(system(args) == 0, "resuming %s changed %s/%s", cut, d, name);
            snprintf(args, sizeof args, "train --resume %s --steps 100", cut);
            expect_error(args, "--steps with --resume");
        }
        char *got = losses_without_time(cut);
        ck_assert_msg(!strcmp(got, ref), "interrupted at %d: losses differ\n%s\nvs\n%s", stops[k], got, ref);
        free(got);
        snprintf(args, sizeof args, "cmp -s %s/final/adapter_model.safetensors %s/final/adapter_model.safetensors && "
                 "cmp -s %s/sched.csv %s/sched.csv", whole, cut, whole, cut);
        ck_assert_msg(system(args) == 0, "interrupted at %d: adapters or schedule differ", stops[k]);
    }
    free(ref);
    /* a finished run resumed: nothing to do, and nothing of it rewritten */
    snprintf(args, sizeof args, "cp -rp %s %s.before && sleep 1", whole, whole);
    ck_assert_int_eq(system(args), 0);
    snprintf(args, sizeof args, "train --resume %s", whole);
    ck_assert_msg(run(args, &out, &err) == 0 && strstr(err, "is finished (final, step 7 of 7): nothing to do"), "%s", err);
    free(out); free(err);
    snprintf(args, sizeof args, "diff -r %s %s.before && test ! %s/final/trainer_state.json -nt "
             "%s.before/final/trainer_state.json", whole, whole, whole, whole);
    ck_assert_msg(system(args) == 0, "resuming a finished run changed it");
    snprintf(args, sizeof args, "rm -rf %s", d);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

/* SIGTERM (as Ctrl-C's SIGINT) stops pretrain after the step it is in, and the
 * model of that step is written and loads; it stops train the same way, with a
 * checkpoint and the command that resumes it.  Each gets its signal once its
 * first step is on stderr (a file here, so train's progress is a line per
 * update, the first at once and then one every 10 s, and waiting for a later
 * step would wait that long).  (SIGINT itself cannot be tested so: `cmd &` in a
 * shell without job control starts cmd with SIGINT ignored, which recfound
 * leaves as it is.) */
static int stop_after_first_step(const char *cmd, const char *sig, const char *errfile) {
    char sh[4096];
    snprintf(sh, sizeof sh, "OMP_NUM_THREADS=2 %s 2> %s & pid=$!; i=0; "
             "while ! grep -q 'step 1/' %s && kill -0 $pid 2>/dev/null && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); "
             "done; kill -%s $pid; wait $pid", cmd, errfile, errfile, sig);
    int rc = system(sh);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

START_TEST(test_stop_signal_saves) {
    char d[] = "/tmp/rfstopXXXXXX", cmd[2048], path[700], *err;
    size_t len;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    ck_assert_int_eq(write_text(d, "ids.txt", "5 6 7 8 9\n10 11 12 13 14\n"), 0);
    snprintf(cmd, sizeof cmd, "%s pretrain --model %s/base --ids %s/ids.txt --steps 1000000 --lr 1e-3 "
             "--optimizer adamw --out %s/pre", recfound_bin(), d, d, d);
    snprintf(path, sizeof path, "%s/pre.err", d);
    ck_assert_int_eq(stop_after_first_step(cmd, "TERM", path), 0);
    ck_assert_int_eq(rf_read_file(path, &err, &len), 0);
    ck_assert_msg(strstr(err, "pretrain: stopped after step ") && strstr(err, "pretrain: wrote "), "%s", err);
    free(err);
    Model m;
    snprintf(path, sizeof path, "%s/pre", d);
    ck_assert_msg(model_load(&m, path) == 0, "%s", rf_last_error());
    model_free(&m);
    snprintf(cmd, sizeof cmd, "%s train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 1000000 "
             "--emb-batch 2 --gen-batch 4 " SMALL_RUN " --out %s/run", recfound_bin(), d, d, d, d);
    snprintf(path, sizeof path, "%s/train.err", d);
    ck_assert_int_eq(stop_after_first_step(cmd, "TERM", path), 0);
    ck_assert_int_eq(rf_read_file(path, &err, &len), 0);
    ck_assert_msg(strstr(err, "train: stopped after step ") && strstr(err, "continue with: recfound train --resume"),
                  "%s", err);
    free(err);
    rm_tree(d);
}
END_TEST

/* Without S2Sched every task of a branch gets an equal share of its batch,
 * the leftover going one sample each to the first tasks (largest remainder):
 * --emb-batch 2 over U2I, Q2I, I2I draws 1 + 1 + 0, not 0 each as flooring
 * 2/3 would; --gen-batch 3 over the ten generative tasks draws 3. */
START_TEST(test_uniform_counts_without_s2sched) {
    char d[] = "/tmp/rfuniformXXXXXX", args[2048], path[700], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    snprintf(args, sizeof args, "train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 4 --emb-batch 2 "
             "--gen-batch 3 --max-len 256 --rank 2 --task-dim 8 --no-s2sched --out %s/run", d, d, d, d);
    ck_assert_msg(run(args, &out, &err) == 0, "%s", err);
    free(out); free(err);
    snprintf(path, sizeof path, "%s/run/losses.csv", d);
    char *csv;
    size_t n;
    ck_assert(rf_read_file(path, &csv, &n) == 0);
    int rows = 0;
    for (const char *l = strchr(csv, '\n'); l && l[1]; l = strchr(l + 1, '\n'), rows++) {
        const char *c = l + 1;
        for (int k = 0; k < 6; k++) c = strchr(c, ',') + 1;  /* step,lr,loss,loss_emb,loss_gen,grad_norm, */
        long emb = strtol(c, (char **)&c, 10), gen = strtol(c + 1, NULL, 10);
        ck_assert_msg(emb == 2 && gen == 3, "row %d: %ld embedding queries and %ld generative samples, want 2 and 3:\n%s",
                      rows + 1, emb, gen, csv);
    }
    ck_assert_int_eq(rows, 4);
    free(csv);
    rm_tree(d);
}
END_TEST

/* SIGKILL at random moments of a run that saves after every step: every
 * checkpoint left behind loads, and the run resumes. */
START_TEST(test_sigkill_keeps_checkpoints) {
    char d[] = "/tmp/rfkillXXXXXX", args[2048], path[1024], *out, *err;
    ck_assert(mkdtemp(d) != NULL);
    tiny_world(d);
    Model m;
    snprintf(path, sizeof path, "%s/base", d);
    ck_assert(model_load(&m, path) == 0);
    for (int round = 0; round < 4; round++) {
        if (round == 0)
            snprintf(args, sizeof args, "%s train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 400 "
                     "--emb-batch 2 --gen-batch 3 --max-len 96 --rank 4 --task-dim 16 --no-s2sched --save-every 1 "
                     "--out %s/run >/dev/null 2>&1 & pid=$!; sleep 0.3; kill -9 $pid; wait $pid 2>/dev/null; true",
                     recfound_bin(), d, d, d, d);
        else  /* later rounds resume the same run and are killed again */
            snprintf(args, sizeof args, "%s train --resume %s/run >/dev/null 2>&1 & pid=$!; sleep 0.%d; "
                     "kill -9 $pid; wait $pid 2>/dev/null; true", recfound_bin(), d, 3 + 2 * round);
        ck_assert_int_eq(system(args), 0);
        /* every step-K folder is a complete checkpoint */
        snprintf(args, sizeof args, "ls -d %s/run/step-* 2>/dev/null", d);
        FILE *ls = popen(args, "r");
        char line[700];
        int n = 0;
        while (fgets(line, sizeof line, ls)) {
            line[strcspn(line, "\n")] = 0;
            Tmole t;
            ck_assert_msg(tmole_load(&t, line, &m.cfg) == 0, "after SIGKILL: %s", rf_last_error());
            tmole_free(&t);
            snprintf(path, sizeof path, "%s/trainer_state.json", line);
            FILE *f = fopen(path, "r");
            ck_assert_msg(f != NULL, "after SIGKILL: %s lacks its trainer state", line);
            fclose(f);
            n++;
        }
        pclose(ls);
        ck_assert_msg(n >= 1, "no checkpoint at all after round %d", round);
    }
    /* and the run goes on from where it was killed: one more step */
    snprintf(args, sizeof args, "train --resume %s/run --stop-at 1", d);
    ck_assert_msg(run(args, &out, &err) == 0 && strstr(err, "resuming") && strstr(err, "stopped after step"), "%s", err);
    free(out); free(err);
    /* killed as soon as step-0 exists (before step 1 is done): it resumes too */
    snprintf(args, sizeof args, "%s train --model %s/base --tokenizer %s/tok.json --data %s/w --steps 400 --emb-batch 2 "
             "--gen-batch 3 --max-len 96 --rank 4 --task-dim 16 --out %s/run0 >/dev/null 2>&1 & pid=$!; "
             "while [ ! -d %s/run0/step-0 ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done; kill -9 $pid; "
             "wait $pid 2>/dev/null; test -d %s/run0/step-0", recfound_bin(), d, d, d, d, d, d);
    ck_assert_msg(system(args) == 0, "no step-0 before the kill");
    snprintf(args, sizeof args, "train --resume %s/run0 --stop-at 1", d);
    ck_assert_msg(run(args, &out, &err) == 0 && strstr(err, "resuming") && strstr(err, "stopped after step"), "%s", err);
    free(out); free(err);
    model_free(&m);
    snprintf(args, sizeof args, "rm -rf %s", d);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

/* RECFOUND_WEIGHTS: bf16 weights print the same scores and embeddings as
 * float ones on the BF16 fixture; asking for them on an F32 checkpoint, or an
 * unknown value, is one error line. */
static int run_env(const char *env, const char *args, char **out, char **err) {
    char cmd[4096];
    ck_assert((size_t)snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 RECFOUND_WEIGHTS=%s %s %s", env, recfound_bin(),
                               args) < sizeof cmd);
    return run_capture(cmd, out, err);
}

START_TEST(test_weights_env) {
    const char *F = "tests/fixtures/llama_bf16_sharded";
    char args[1024];
    for (int e = 0; e < 2; e++) {
        snprintf(args, sizeof args, e ? "embed --model %s/model --ids %s/ids.txt --pool-from 2"
                                      : "score --model %s/model --ids %s/ids.txt", F, F);
        char *o1, *e1, *o2, *e2, *o3, *e3;
        ck_assert_int_eq(run(args, &o1, &e1), 0);
        ck_assert_int_eq(run_env("bf16", args, &o2, &e2), 0);
        ck_assert_int_eq(run_env("f32", args, &o3, &e3), 0);
        ck_assert_int_gt(count_lines(o1), 1);
        ck_assert_msg(!strcmp(o1, o2) && !strcmp(o1, o3), "%s: the outputs differ between weight types", args);
        free(o1); free(e1); free(o2); free(e2); free(o3); free(e3);
    }
    char *out, *err;
    snprintf(args, sizeof args, "score --model tests/fixtures/gqa_tied/model --ids %s/ids.txt", F);
    int rc = run_env("bf16", args, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "BF16"), "%s", err);
    free(out); free(err);
    rc = run_env("half", args, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "RECFOUND_WEIGHTS=half"), "%s", err);
    free(out); free(err);
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
    tcase_add_test(ref, test_score_with_adapter);
    tcase_add_test(ref, test_route_matches_reference);
    tcase_add_test(ref, test_weights_env);
    suite_add_tcase(s, ref);
    TCase *bad = tcase_create("usage_and_bad_input");
    tcase_set_timeout(bad, 60);
    tcase_add_test(bad, test_help_and_usage_errors);
    tcase_add_test(bad, test_bad_input);
    tcase_add_test(bad, test_generate_padded_vocab);
    tcase_add_test(bad, test_beyond_max_positions);
    suite_add_tcase(s, bad);
    TCase *train = tcase_create("training");
    tcase_set_timeout(train, 300);
    tcase_add_test(train, test_train_pipeline);
    tcase_add_test(train, test_resume_bit_identical);
    tcase_add_test(train, test_loss_by_hand);
    tcase_add_test(train, test_uniform_counts_without_s2sched);
    tcase_add_test(train, test_truncation_count_excludes_validation);
    tcase_add_test(train, test_dry_run_validation_rows);
    tcase_add_test(train, test_dry_run_starved_branch);
    tcase_add_test(train, test_empty_branch_said);
    tcase_add_test(train, test_error_after_progress_line);
    tcase_add_test(train, test_progress_not_a_terminal);
    tcase_add_test(train, test_failed_checkpoint_removed);
    tcase_add_test(train, test_resume_from_elsewhere);
    tcase_add_test(train, test_resume_names_missing_loss_rows);
    tcase_add_test(train, test_lambda_gen_weighs_the_gradient);
    tcase_add_test(train, test_clip_is_applied);
    tcase_add_test(train, test_train_gradient_by_differences);
    tcase_add_test(train, test_merge_warns_foreign_base);
    tcase_add_test(train, test_stop_signal_saves);
    tcase_add_test(train, test_train_respects_cgroup_limit);
    tcase_add_test(train, test_sigkill_keeps_checkpoints);
    tcase_add_test(train, test_outputs_not_replaced);
    suite_add_tcase(s, train);
    return s;
}
