/*
 * test_data.c - the "data" Check suite: the task table against
 * official-code.md §1 and the paper's Table 1 (written out here), read ->
 * write -> read round trips of hand-written files, the prompt formats against
 * hand-written strings, every kind of bad input, seeded shuffling against a
 * Python transcription of splitmix64 + Fisher-Yates, `recfound synth`
 * (determinism, label balance) and `recfound build-data` on the raw sources.
 */
#include "check_util.h"
#include "recfound.h"

#include <ctype.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh temporary folder for one test. */
static void tmpdir(char *dir, size_t n) {
    snprintf(dir, n, "/tmp/rf_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void write_text(const char *dir, const char *name, const char *text, char *path, size_t n) {
    snprintf(path, n, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Read every record of a file (fails the test on error). */
static int read_all(const char *path, Record *out, int max) {
    DataReader rd;
    ck_assert_msg(data_open(&rd, path, 0) == 0, "%s", rf_last_error());
    int n = 0, rc;
    Record r;
    while ((rc = data_next(&rd, &r)) == 1) {
        ck_assert_int_lt(n, max);
        out[n++] = r;
    }
    ck_assert_msg(rc == 0, "%s", rf_last_error());
    data_close(&rd);
    return n;
}

/* ------------------------------------------------------------ task table */

START_TEST(test_task_table) {
    /* official-code.md §1 and paper Table 1, copied by hand */
    static const struct { const char *name, *short_name; int gen; long tr, va, te; } want[13] = {
        {"Emb_user", "U2I", 0, 86000, 3500, 4800},
        {"Emb_query", "Q2I", 0, 40000, 2600, 4000},
        {"Emb_item", "I2I", 0, 83680, 3340, 4800},
        {"Query_Rewriting", "QR", 1, 3260, 500, 124},
        {"Sequential_Recommendation", "SR", 1, 20000, 500, 1334},
        {"Product_Relation_Prediction", "PRP", 1, 20000, 500, 1333},
        {"Sentiment_Analysis", "SA", 1, 20000, 500, 1334},
        {"Attribute_Value_Extraction", "AVE", 1, 20000, 500, 1334},
        {"Product_Matching", "PM", 1, 4000, 500, 168},
        {"user_profile", "UP", 1, 20000, 500, 227},
        {"item_profile", "IP", 1, 15000, 500, 266},
        {"Answerability_Prediction", "AP", 1, 15000, 500, 1334},
        {"Answer_Generation", "AG", 1, 20000, 500, 1332},
    };
    ck_assert_int_eq(N_TASKS, 13);
    long tot[3] = {0, 0, 0};
    for (int t = 0; t < 13; t++) {
        ck_assert_int_eq(TASKS[t].id, t);
        ck_assert_str_eq(TASKS[t].name, want[t].name);
        ck_assert_str_eq(TASKS[t].short_name, want[t].short_name);
        ck_assert_int_eq(TASKS[t].kind, want[t].gen ? KIND_GEN : KIND_EMB);
        ck_assert_int_eq(TASKS[t].size[0], want[t].tr);
        ck_assert_int_eq(TASKS[t].size[1], want[t].va);
        ck_assert_int_eq(TASKS[t].size[2], want[t].te);
        ck_assert_int_eq(task_by_name(want[t].name), t);
        ck_assert_int_eq(task_by_short(want[t].short_name), t);
        for (int s = 0; s < 3; s++) tot[s] += TASKS[t].size[s];
    }
    /* Table 1's "Total" column says 366,940 / 14,940 / 22,383; its own
     * per-task columns sum to 366,940 / 14,440 / 22,386 (hand sums), so the
     * paper's last two totals are typos and the per-task sizes are used. */
    ck_assert_int_eq(tot[0], 366940);
    ck_assert_int_eq(tot[1], 14440);
    ck_assert_int_eq(tot[2], 22386);
    ck_assert_str_eq(TASKS[TASK_U2I].metric, "MRR@20");
    ck_assert_str_eq(TASKS[TASK_I2I].metric, "NDCG@20");
    ck_assert_str_eq(TASKS[TASK_SR].metric, "Recall@1");
    ck_assert_int_eq(task_by_short("pm"), TASK_PM);
    ck_assert_int_eq(task_by_name("Emb_User"), -1); /* names are case-sensitive */
    ck_assert_int_eq(task_by_name("Query_Product_Ranking"), -1);
    ck_assert_int_eq(task_by_short("XYZ"), -1);
}
END_TEST

/* ------------------------------------------------------------ round trips */

static const char *EMB_FILE =
    "{\"query\": [\"Represent this user query to find a matching item: \", \"red mug\"], "
    "\"pos\": [[\"Represent the product:\", \"Acme Red Ceramic Mug\"]], "
    "\"neg\": [[\"Represent the product:\", \"Acme Blue Glass\"], [\"\", \"Zed Lamp\"]], "
    "\"task\": \"Emb_query\", \"id\": 17, \"source\": \"Home\"}\n"
    "\n" /* blank lines are skipped */
    "{\"task\":\"Emb_user\",\"query\":\"caf\\u00e9 \\ud83d\\ude00\",\"pos\":[\"plain\"],\"neg\":[],\"id\":\"u-1\"}\r\n"
    "{\"query\": [\"I\", \"Q\"], \"pos\": [[\"I\", \"P\"]], \"neg\": [[\"I\", \"N\"]], \"task\": \"Emb_item\", \"extra\": 1}\n";

static const char *GEN_FILE =
    "{\"text\": [\"Is it blue?\", \" yes\\n\"], \"task\": \"Product_Matching\", \"source\": \"cat\"}\n"
    "{\"text\": [\"A: hi\", \"B: hello\", \"A: more\", \"B: turns\"], \"task\": \"Query_Rewriting\", \"id\": \"d-3\"}\n"
    "{\"id\": 2.5, \"task\": \"Sentiment_Analysis\", \"text\": [\"tab\\there \\\"q\\\" \\\\ /\", \"A: very positive\"]}\n";

static const char *ARRAY_FILE =
    "[\n"
    "  {\"query\": [\"Find similar items: \", \"title: Terra Men's Pilot, categories: Fashion\"],\n"
    "   \"pos\": [[\"Similar item:\", [\"title: Terra Pilot II\", \"title: Terra Aviator\"]]],\n"
    "   \"neg\": [[\"Similar item:\", [\"n1\", \"n2\", \"n3\", \"n4\", \"n5\"]]],\n"
    "   \"task\": \"Emb_item\", \"source\": \"Fashion\"},\n"
    "  {\"query\": [\"q\", \"t\"], \"pos\": [[\"p\", \"single\"]], \"neg\": [[\"n\", [\"only\"]]], \"task\": \"Emb_item\"}\n"
    "]\n";

/* write every record with the writer, read it back: equal field by field */
static void round_trip(const char *dir, const char *name, Record *recs, int n, int is_array) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    DataWriter w;
    ck_assert_msg(data_writer_open(&w, path, is_array) == 0, "%s", rf_last_error());
    for (int i = 0; i < n; i++) ck_assert_int_eq(data_writer_put(&w, &recs[i]), 0);
    ck_assert_msg(data_writer_close(&w) == 0, "%s", rf_last_error());
    Record back[8];
    int m = read_all(path, back, 8);
    ck_assert_int_eq(m, n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(record_equal(&recs[i], &back[i]), "%s: record %d differs after write", name, i);
        /* and the copy is equal too */
        Record c;
        ck_assert_int_eq(record_copy(&c, &back[i]), 0);
        ck_assert(record_equal(&c, &recs[i]));
        record_free(&c);
        record_free(&back[i]);
    }
}

START_TEST(test_roundtrip_embedding) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "Embedding_dataset_train.jsonl", EMB_FILE, path, sizeof path);
    Record r[8];
    int n = read_all(path, r, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(r[0].task, TASK_Q2I);
    ck_assert_int_eq(r[0].kind, KIND_EMB);
    ck_assert_str_eq(r[0].query.instr, "Represent this user query to find a matching item: ");
    ck_assert_str_eq(r[0].query.texts[0], "red mug");
    ck_assert_int_eq(r[0].n_pos, 1);
    ck_assert_str_eq(r[0].pos[0].texts[0], "Acme Red Ceramic Mug");
    ck_assert_int_eq(r[0].n_neg, 2);
    ck_assert_str_eq(r[0].neg[1].instr, "");
    ck_assert_str_eq(r[0].neg[1].texts[0], "Zed Lamp");
    ck_assert_str_eq(r[0].id, "17");
    ck_assert_int_eq(r[0].id_is_number, 1);
    ck_assert_str_eq(r[0].source, "Home");
    ck_assert_int_eq(r[0].line, 1);
    /* second record: bare-string query and positive, \u escapes with a surrogate pair */
    ck_assert_int_eq(r[1].task, TASK_U2I);
    ck_assert_int_eq(r[1].query.is_string, 1);
    ck_assert_str_eq(r[1].query.texts[0], "caf\xc3\xa9 \xf0\x9f\x98\x80");
    ck_assert_int_eq(r[1].pos[0].is_string, 1);
    ck_assert_int_eq(r[1].n_neg, 0);
    ck_assert_str_eq(r[1].id, "u-1");
    ck_assert_int_eq(r[1].id_is_number, 0);
    ck_assert_ptr_null(r[1].source);
    ck_assert_int_eq(r[1].line, 3);
    ck_assert_int_eq(r[2].task, TASK_I2I);
    ck_assert_ptr_null(r[2].id);
    round_trip(dir, "rt.jsonl", r, n, 0);
    /* the written text of the first record is the published layout */
    RfBuf b = {0};
    record_to_json(&b, &r[0]);
    buf_append(&b, "", 1);
    ck_assert_str_eq(b.data,
                     "{\"query\": [\"Represent this user query to find a matching item: \", \"red mug\"], "
                     "\"pos\": [[\"Represent the product:\", \"Acme Red Ceramic Mug\"]], "
                     "\"neg\": [[\"Represent the product:\", \"Acme Blue Glass\"], [\"\", \"Zed Lamp\"]], "
                     "\"task\": \"Emb_query\", \"id\": 17, \"source\": \"Home\"}");
    buf_free(&b);
    for (int i = 0; i < n; i++) record_free(&r[i]);
    rm_tree(dir);
}
END_TEST

START_TEST(test_roundtrip_generative) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "Generative_dataset_test.jsonl", GEN_FILE, path, sizeof path);
    Record r[8];
    int n = read_all(path, r, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(r[0].task, TASK_PM);
    ck_assert_int_eq(r[0].kind, KIND_GEN);
    ck_assert_int_eq(r[0].n_turns, 2);
    ck_assert_str_eq(r[0].turns[0], "Is it blue?");
    ck_assert_str_eq(r[0].turns[1], " yes\n"); /* stored unchanged; stripped only when formatted */
    ck_assert_str_eq(r[0].source, "cat");
    ck_assert_int_eq(r[1].task, TASK_QR);
    ck_assert_int_eq(r[1].n_turns, 4);
    ck_assert_str_eq(r[1].turns[3], "B: turns");
    ck_assert_str_eq(r[1].id, "d-3");
    ck_assert_int_eq(r[2].task, TASK_SA);
    ck_assert_str_eq(r[2].turns[0], "tab\there \"q\" \\ /");
    ck_assert_str_eq(r[2].id, "2.5");
    ck_assert_int_eq(r[2].id_is_number, 1);
    round_trip(dir, "rt.jsonl", r, n, 0);
    for (int i = 0; i < n; i++) record_free(&r[i]);
    rm_tree(dir);
}
END_TEST

START_TEST(test_roundtrip_item_embedding_test) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "item_embedding_test.json", ARRAY_FILE, path, sizeof path);
    Record r[8];
    int n = read_all(path, r, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(r[0].task, TASK_I2I);
    ck_assert_int_eq(r[0].pos[0].is_list, 1);
    ck_assert_int_eq(r[0].pos[0].n_texts, 2);
    ck_assert_str_eq(r[0].pos[0].texts[1], "title: Terra Aviator");
    ck_assert_int_eq(r[0].neg[0].n_texts, 5);
    ck_assert_str_eq(r[0].neg[0].texts[4], "n5");
    ck_assert_int_eq(r[0].line, 1);  /* element number */
    ck_assert_int_eq(r[1].pos[0].is_list, 0);
    ck_assert_int_eq(r[1].neg[0].is_list, 1); /* a one-element list stays a list */
    ck_assert_int_eq(r[1].neg[0].n_texts, 1);
    round_trip(dir, "rt.json", r, n, 1);
    for (int i = 0; i < n; i++) record_free(&r[i]);
    rm_tree(dir);
}
END_TEST

START_TEST(test_dataset_pools) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "Embedding_dataset_eval.jsonl", EMB_FILE, path, sizeof path);
    write_text(dir, "Generative_dataset_eval.jsonl", GEN_FILE, path, sizeof path);
    Dataset d;
    memset(&d, 0, sizeof d);
    ck_assert_msg(dataset_load_split(&d, dir, "eval", 0) == 0, "%s", rf_last_error());
    int want[N_TASKS] = {0};
    want[TASK_Q2I] = want[TASK_U2I] = want[TASK_I2I] = 1;
    want[TASK_PM] = want[TASK_QR] = want[TASK_SA] = 1;
    for (int t = 0; t < N_TASKS; t++) ck_assert_int_eq((int)d.pool[t].n, want[t]);
    ck_assert_str_eq(d.pool[TASK_QR].recs[0].turns[0], "A: hi");
    dataset_free(&d);
    memset(&d, 0, sizeof d);
    ck_assert_int_eq(dataset_load_split(&d, dir, "train", 0), -1); /* no such files */
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "Embedding_dataset_train.jsonl"));
    dataset_free(&d);
    rm_tree(dir);
}
END_TEST

/* ------------------------------------------------------------ prompt formats */

static void check_gen(const char *user, const char *ans, const char *want_p, const char *want_a) {
    RfBuf p = {0}, a = {0};
    format_gen(&p, &a, user, ans);
    buf_append(&p, "", 1);
    buf_append(&a, "", 1);
    ck_assert_str_eq(p.data, want_p);
    ck_assert_str_eq(a.data, want_a);
    buf_free(&p);
    buf_free(&a);
}

static void check_emb(const char *instr, const char *text, EmbFormat f, const char *want_p, const char *want_t) {
    RfBuf p = {0}, t = {0};
    format_emb(&p, &t, instr, text, f);
    buf_append(&p, "", 1);
    buf_append(&t, "", 1);
    ck_assert_str_eq(p.data, want_p);
    ck_assert_str_eq(t.data, want_t);
    buf_free(&p);
    buf_free(&t);
}

START_TEST(test_formats) {
    /* <s><|user|>\n{text[0]}\n<|assistant|>\n{text[1].strip()}</s> */
    check_gen("Is it blue?", " yes\n", "<s><|user|>\nIs it blue?\n<|assistant|>\n", "yes</s>");
    check_gen("Q\n", "A: very positive", "<s><|user|>\nQ\n\n<|assistant|>\n", "A: very positive</s>");
    /* Python's strip() also removes \v \f \x1c and U+00A0, U+3000 */
    check_gen("p", "\x0b\x0c\x1c\xc2\xa0 B \xe3\x80\x80\r\n", "<s><|user|>\np\n<|assistant|>\n", "B</s>");
    /* and U+0085, U+1680, U+2028, U+205F, U+202F, U+2029, U+200A (Python 3:
     * ' \u0085\u1680\u2028 B \u205f\u202f\u2029\u200a'.strip() == 'B') */
    check_gen("p", " \xc2\x85\xe1\x9a\x80\xe2\x80\xa8 B \xe2\x81\x9f\xe2\x80\xaf\xe2\x80\xa9\xe2\x80\x8a",
              "<s><|user|>\np\n<|assistant|>\n", "B</s>");
    /* ...but not U+200B, which str.isspace() calls no space */
    check_gen("p", "\xe2\x80\x8b B \xe2\x80\x8b", "<s><|user|>\np\n<|assistant|>\n", "\xe2\x80\x8b B \xe2\x80\x8b</s>");
    /* ...nor a non-space character that ends in a continuation byte (U+00E9) */
    check_gen("p", " caf\xc3\xa9 ", "<s><|user|>\np\n<|assistant|>\n", "caf\xc3\xa9</s>");
    /* embedding: instruction stripped of "\t\n :" */
    check_emb("Represent this user query to find a matching item: ", "red mug", EMB_FMT_TRAIN,
              "<s><|user|>\nRepresent this user query to find a matching item\n<|embed|>\n", "red mug");
    check_emb(" \t:Encode this: \n", "x y", EMB_FMT_TRAIN, "<s><|user|>\nEncode this\n<|embed|>\n", "x y");
    check_emb("", "plain", EMB_FMT_TRAIN, "<s><|embed|>\n", "plain");
    check_emb(" : \n", "plain", EMB_FMT_TRAIN, "<s><|embed|>\n", "plain");
    check_emb(NULL, "plain", EMB_FMT_TRAIN, "<s><|embed|>\n", "plain");
    /* inner colons and other characters stay */
    check_emb("a: b.", "t", EMB_FMT_TRAIN, "<s><|user|>\na: b.\n<|embed|>\n", "t");
    /* the authors' test-time query: instruction + "\n" + text, no markers */
    check_emb("Find the item:", "red mug", EMB_FMT_CODE_TEST, "<s>", "Find the item:\nred mug");
}
END_TEST

/* ------------------------------------------------------------ bad input */

static void expect_bad(const char *content, int kind, const char *line_tag, const char *problem) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "bad.jsonl", content, path, sizeof path);
    /* strict: one error line naming the file and line */
    DataReader rd;
    ck_assert_int_eq(data_open(&rd, path, 0), 0);
    Record r;
    int rc;
    while ((rc = data_next(&rd, &r)) == 1) record_free(&r);
    ck_assert_int_eq(rc, -1);
    const char *e = rf_last_error();
    char want[4200];
    snprintf(want, sizeof want, "%s: %s: ", path, line_tag);
    ck_assert_msg(!strncmp(e, want, strlen(want)), "error \"%s\" does not start with \"%s\"", e, want);
    ck_assert_msg(strstr(e, problem), "error \"%s\" does not mention \"%s\"", e, problem);
    ck_assert_ptr_null(strchr(e, '\n'));
    data_close(&rd);
    /* skip_bad: the good records come through and the bad one is counted */
    ck_assert_int_eq(data_open(&rd, path, 1), 0);
    int good = 0;
    while ((rc = data_next(&rd, &r)) == 1) good++, record_free(&r);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(good, 1);
    for (int k = 0; k < N_BAD; k++) ck_assert_int_eq(rd.n_bad[k], k == kind);
    data_close(&rd);
    rm_tree(dir);
}

#define GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment_Analysis\"}\n"

START_TEST(test_bad_input) {
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment_Analysis\"\n", BAD_JSON, "line 2",
               "bad JSON");
    expect_bad(GOOD_GEN "[1, 2]\n", BAD_FIELD, "line 2", "JSON object");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"]}\n", BAD_FIELD, "line 2", "missing field \"task\"");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": 3}\n", BAD_FIELD, "line 2", "\"task\" is not a string");
    expect_bad(GOOD_GEN "{\"task\": \"Sentiment_Analysis\"}\n", BAD_FIELD, "line 2", "missing field \"text\"");
    expect_bad(GOOD_GEN "{\"text\": \"p\", \"task\": \"Sentiment_Analysis\"}\n", BAD_FIELD, "line 2", "\"text\"");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", 5], \"task\": \"Sentiment_Analysis\"}\n", BAD_FIELD, "line 2",
               "text[1]");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment\"}\n", BAD_TASK, "line 2",
               "unknown task \"Sentiment\"");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"caf\xe9\"], \"task\": \"Sentiment_Analysis\"}\n", BAD_UTF8, "line 2",
               "invalid UTF-8 byte 0xE9");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"\xed\xa0\x80\"], \"task\": \"Sentiment_Analysis\"}\n", BAD_UTF8,
               "line 2", "UTF-8"); /* an encoded surrogate */
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \" \\n \"], \"task\": \"Sentiment_Analysis\"}\n", BAD_EMPTY, "line 2",
               "empty answer");
    expect_bad(GOOD_GEN "{\"text\": [\"\\t\", \"a\"], \"task\": \"Sentiment_Analysis\"}\n", BAD_EMPTY, "line 2",
               "empty prompt");
    expect_bad(GOOD_GEN "{\"text\": [\"p\"], \"task\": \"Sentiment_Analysis\"}\n", BAD_FIELD, "line 2",
               "[prompt, answer, ...]");  /* no answer */
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment_Analysis\", \"id\": 1e999}\n", BAD_FIELD,
               "line 2", "\"id\" is a number out of range");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment_Analysis\", \"id\": [1]}\n", BAD_FIELD,
               "line 2", "\"id\"");
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Sentiment_Analysis\", \"source\": 1}\n", BAD_FIELD,
               "line 2", "\"source\"");
    /* embedding records */
    expect_bad(GOOD_GEN "{\"query\": [\"i\", \"q\"], \"neg\": [], \"task\": \"Emb_user\"}\n", BAD_FIELD, "line 2",
               "missing field \"pos\"");
    expect_bad(GOOD_GEN "{\"query\": [\"i\", \"q\"], \"pos\": [], \"neg\": [], \"task\": \"Emb_user\"}\n", BAD_FIELD,
               "line 2", "\"pos\"");
    expect_bad(GOOD_GEN "{\"query\": [\"i\"], \"pos\": [[\"i\", \"p\"]], \"neg\": [], \"task\": \"Emb_user\"}\n",
               BAD_FIELD, "line 2", "\"query\"");
    expect_bad(GOOD_GEN "{\"query\": [\"i\", \"q\"], \"pos\": [[\"i\", \"p\"]], \"task\": \"Emb_user\"}\n",
               BAD_FIELD, "line 2", "missing field \"neg\"");
    /* an embedding task with a generative body */
    expect_bad(GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"Emb_query\"}\n", BAD_FIELD, "line 2",
               "missing field \"query\"");
    /* the error of a later line names that line (blank lines count) */
    expect_bad(GOOD_GEN "\n\n{\"text\": [\"p\", \"\"], \"task\": \"Sentiment_Analysis\"}\n", BAD_EMPTY, "line 4",
               "empty answer");
}
END_TEST

START_TEST(test_bad_input_counts) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    write_text(dir, "mixed.jsonl",
               GOOD_GEN "{oops\n" GOOD_GEN "{\"text\": [\"p\", \"a\"], \"task\": \"X\"}\n{\"text\": [\"p\", \"\"], "
                        "\"task\": \"Sentiment_Analysis\"}\n{bad\n",
               path, sizeof path);
    Dataset d;
    memset(&d, 0, sizeof d);
    ck_assert_int_eq(dataset_load_file(&d, path, 0), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "line 2"));
    dataset_free(&d);
    memset(&d, 0, sizeof d);
    ck_assert_int_eq(dataset_load_file(&d, path, 1), 0);
    ck_assert_int_eq((int)d.pool[TASK_SA].n, 2);
    ck_assert_int_eq(d.n_bad[BAD_JSON], 2);
    ck_assert_int_eq(d.n_bad[BAD_TASK], 1);
    ck_assert_int_eq(d.n_bad[BAD_EMPTY], 1);
    ck_assert_int_eq(d.n_bad[BAD_UTF8], 0);
    dataset_free(&d);
    /* the caller's report line */
    DataReader rd;
    ck_assert_int_eq(data_open(&rd, path, 1), 0);
    Record r;
    while (data_next(&rd, &r) == 1) record_free(&r);
    char out[512] = {0};
    FILE *f = fmemopen(out, sizeof out - 1, "w");
    data_report_skipped(&rd, f);
    fclose(f);
    ck_assert_msg(strstr(out, "skipped 4 bad records") && strstr(out, "2 bad JSON") && strstr(out, "1 unknown task") &&
                      strstr(out, "1 empty answer"),
                  "report: %s", out);
    data_close(&rd);
    /* a missing file and a broken JSON array */
    ck_assert_int_eq(data_open(&rd, "/nonexistent/x.jsonl", 0), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "/nonexistent/x.jsonl"));
    write_text(dir, "arr.json", "[{\"query\": [\"i\", \"q\"], \"pos\": [[\"i\", \"p\"]], \"neg\": [], \"task\": \"Emb_item\"},\n"
               " {\"query\": [\"i\", \"q\"], \"pos\": [[\"i\", [\"p\", 3]]], \"neg\": [], \"task\": \"Emb_item\"}]\n",
               path, sizeof path);
    ck_assert_int_eq(data_open(&rd, path, 0), 0);
    ck_assert_int_eq(data_next(&rd, &r), 1);
    record_free(&r);
    ck_assert_int_eq(data_next(&rd, &r), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "element 2"));
    data_close(&rd);
    write_text(dir, "arr2.json", "[\n{\"query\": \"\xff\"}]", path, sizeof path);
    ck_assert_int_eq(data_open(&rd, path, 0), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "line 2"));
    rm_tree(dir);
}
END_TEST

/* ------------------------------------------------------------ shuffling */

START_TEST(test_shuffle) {
    /* Reference: a Python transcription of splitmix64 (model.c), rejection
     * sampling below n, and Fisher-Yates from the top:
     *   r = seed 42; idx = list(range(10))
     *   for i in range(10, 1, -1): j = below(i); idx[i-1], idx[j] = idx[j], idx[i-1]
     * gives the first epoch, and the same loop again (continuing the stream
     * on the shuffled list) the second. */
    static const size_t e1[10] = {0, 9, 5, 8, 6, 4, 7, 2, 1, 3};
    static const size_t e2[10] = {0, 3, 8, 5, 4, 2, 9, 7, 1, 6};
    PoolIter it;
    ck_assert_int_eq(pool_iter_init(&it, 10, 42), 0);
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(pool_iter_next(&it), e1[i]);
    ck_assert_int_eq(it.epoch, 0);
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(pool_iter_next(&it), e2[i]);
    ck_assert_int_eq(it.epoch, 1);
    pool_iter_free(&it);
    /* without replacement: each epoch of a bigger pool is a permutation */
    ck_assert_int_eq(pool_iter_init(&it, 1000, 7), 0);
    for (int ep = 0; ep < 3; ep++) {
        char seen[1000] = {0};
        for (int i = 0; i < 1000; i++) {
            size_t k = pool_iter_next(&it);
            ck_assert_uint_lt(k, 1000);
            ck_assert_int_eq(seen[k], 0);
            seen[k] = 1;
        }
    }
    pool_iter_free(&it);
    /* rng_below stays in range and is roughly uniform */
    Rng r;
    rng_seed(&r, 1);
    int cnt[3] = {0};
    for (int i = 0; i < 30000; i++) cnt[rng_below(&r, 3)]++;
    for (int k = 0; k < 3; k++) ck_assert_int_gt(cnt[k], 9500);
    ck_assert_int_eq((int)rng_below(&r, 1), 0);
}
END_TEST


/* ------------------------------------------------------------ synth */

static int run_synth(const char *out, const char *seed) {
    char *argv[] = {"synth", "--out", (char *)out, "--seed", (char *)seed, NULL};
    return synth_main(5, argv);
}

static int files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    ck_assert_int_eq(rf_read_file(a, &x, &nx), 0);
    ck_assert_int_eq(rf_read_file(b, &y, &ny), 0);
    int eq = nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}

static const char *SYN_FILES[7] = {"Embedding_dataset_train.jsonl", "Embedding_dataset_eval.jsonl",
                                   "Embedding_dataset_test.jsonl", "Generative_dataset_train.jsonl",
                                   "Generative_dataset_eval.jsonl", "Generative_dataset_test.jsonl",
                                   "item_embedding_test.json"};

START_TEST(test_synth_deterministic) {
    char d1[64], d2[64], d3[64], a[4096], b[4096];
    tmpdir(d1, sizeof d1);
    tmpdir(d2, sizeof d2);
    tmpdir(d3, sizeof d3);
    ck_assert_msg(run_synth(d1, "7") == 0, "%s", rf_last_error());
    ck_assert_msg(run_synth(d2, "7") == 0, "%s", rf_last_error());
    ck_assert_msg(run_synth(d3, "8") == 0, "%s", rf_last_error());
    for (int f = 0; f < 7; f++) {
        snprintf(a, sizeof a, "%s/%s", d1, SYN_FILES[f]);
        snprintf(b, sizeof b, "%s/%s", d2, SYN_FILES[f]);
        ck_assert_msg(files_equal(a, b), "%s differs between two runs with seed 7", SYN_FILES[f]);
        snprintf(b, sizeof b, "%s/%s", d3, SYN_FILES[f]);
        ck_assert_msg(!files_equal(a, b), "%s is the same for seeds 7 and 8", SYN_FILES[f]);
    }
    /* no temp files are left behind */
    DIR *dd = opendir(d1);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dd))) n += e->d_name[0] != '.';
    closedir(dd);
    ck_assert_int_eq(n, 7);
    rm_tree(d1);
    rm_tree(d2);
    rm_tree(d3);
    /* bad options */
    char *bad1[] = {"synth", "--scale", "0", "--out", "/tmp/x", NULL};
    ck_assert_int_eq(synth_main(5, bad1), -1);
    char *bad2[] = {"synth", "--scale", "0.01", NULL};
    ck_assert_int_eq(synth_main(3, bad2), -1);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--out"));
}
END_TEST

/* Every file parses; every task has records in every split; classification
 * labels are balanced; answers are learnable-looking. */
START_TEST(test_synth_content) {
    char dir[64], path[4096];
    tmpdir(dir, sizeof dir);
    ck_assert_msg(run_synth(dir, "42") == 0, "%s", rf_last_error());
    for (int s = 0; s < 3; s++) {
        Dataset d;
        memset(&d, 0, sizeof d);
        ck_assert_msg(dataset_load_split(&d, dir, SPLIT_NAMES[s], 0) == 0, "%s", rf_last_error());
        for (int t = 0; t < N_TASKS; t++) {
            long want = (long)floor(TASKS[t].size[s] * 0.01 + 0.5);
            if (want < 10) want = 10;
            ck_assert_msg((long)d.pool[t].n == want, "%s %s: %zu records, want %ld", TASKS[t].short_name,
                          SPLIT_NAMES[s], d.pool[t].n, want);
        }
        if (s == 0) {
            /* label counts of the training split */
            const int bin[2] = {TASK_PM, TASK_AP};
            for (int k = 0; k < 2; k++) {
                const Pool *p = &d.pool[bin[k]];
                size_t yes = 0;
                for (size_t i = 0; i < p->n; i++) {
                    const char *a = p->recs[i].turns[1];
                    ck_assert_msg(!strcmp(a, "yes") || !strcmp(a, "no"), "%s answer '%s'", TASKS[bin[k]].short_name, a);
                    yes += !strcmp(a, "yes");
                }
                ck_assert_msg(yes <= 0.6 * p->n && yes >= 0.4 * p->n, "%s: %zu yes of %zu", TASKS[bin[k]].short_name,
                              yes, p->n);
            }
            const int five[2] = {TASK_SA, TASK_PRP};
            for (int k = 0; k < 2; k++) {
                const Pool *p = &d.pool[five[k]];
                size_t cnt[5] = {0};
                for (size_t i = 0; i < p->n; i++) {
                    int c = p->recs[i].turns[1][0] - 'A';
                    ck_assert_msg(c >= 0 && c < 5, "%s answer '%s'", TASKS[five[k]].short_name, p->recs[i].turns[1]);
                    cnt[c]++;
                }
                for (int c = 0; c < 5; c++)
                    ck_assert_msg(cnt[c] > 0 && cnt[c] <= 0.4 * p->n, "%s: letter %c %zu of %zu",
                                  TASKS[five[k]].short_name, 'A' + c, cnt[c], p->n);
            }
            const Pool *p = &d.pool[TASK_SR];
            size_t cnt[20] = {0}, maxc = 0;
            int letters = 0;
            for (size_t i = 0; i < p->n; i++) {
                const char *a = p->recs[i].turns[1];
                ck_assert_msg(strlen(a) == 1 && a[0] >= 'A' && a[0] <= 'T', "SR answer '%s'", a);
                /* the answer letter is one of the 20 options of the prompt */
                char opt[8];
                snprintf(opt, sizeof opt, "\n%c: ", a[0]);
                ck_assert_ptr_nonnull(strstr(p->recs[i].turns[0], opt));
                cnt[a[0] - 'A']++;
            }
            for (int c = 0; c < 20; c++) letters += cnt[c] > 0, maxc = cnt[c] > maxc ? cnt[c] : maxc;
            ck_assert_int_ge(letters, 18);
            ck_assert_uint_le(maxc, p->n / 5);
            /* AVE answers are JSON lists of {attribute, value, source} */
            p = &d.pool[TASK_AVE];
            for (size_t i = 0; i < p->n; i++) {
                Json v;
                const char *a = p->recs[i].turns[1];
                ck_assert_msg(json_parse(&v, a, strlen(a), "ave") == 0, "%s", rf_last_error());
                ck_assert_int_eq(v.type, JSON_ARRAY);
                ck_assert_uint_ge(v.count, 1);
                for (size_t k = 0; k < v.count; k++) {
                    const Json *val = json_get(&v.items[k], "value");
                    ck_assert_ptr_nonnull(json_get(&v.items[k], "attribute"));
                    ck_assert_ptr_nonnull(json_get(&v.items[k], "source"));
                    ck_assert_ptr_nonnull(val);
                    /* the value occurs in the product text (case-insensitively: titles capitalise) */
                    char low[4096];
                    size_t n = strlen(p->recs[i].turns[0]);
                    if (n >= sizeof low) n = sizeof low - 1;
                    for (size_t j = 0; j < n; j++) low[j] = (char)tolower((unsigned char)p->recs[i].turns[0][j]);
                    low[n] = 0;
                    ck_assert_ptr_nonnull(strstr(low, val->string));
                }
                json_free(&v);
            }
            /* every embedding record has a positive different from its negative */
            for (int t = 0; t < 3; t++)
                for (size_t i = 0; i < d.pool[t].n; i++) {
                    const Record *r = &d.pool[t].recs[i];
                    ck_assert_int_ge(r->n_pos, 1);
                    ck_assert_int_ge(r->n_neg, 1);
                    ck_assert_str_ne(r->pos[0].texts[0], r->neg[0].texts[0]);
                }
        }
        dataset_free(&d);
    }
    /* item_embedding_test.json: list positives and five negatives */
    snprintf(path, sizeof path, "%s/item_embedding_test.json", dir);
    Dataset d;
    memset(&d, 0, sizeof d);
    ck_assert_msg(dataset_load_file(&d, path, 0) == 0, "%s", rf_last_error());
    ck_assert_uint_eq(d.pool[TASK_I2I].n, 48);
    for (size_t i = 0; i < d.pool[TASK_I2I].n; i++) {
        const Record *r = &d.pool[TASK_I2I].recs[i];
        ck_assert_int_eq(r->pos[0].is_list, 1);
        ck_assert_int_eq(r->neg[0].is_list, 1);
        ck_assert_int_eq(r->neg[0].n_texts, 5);
    }
    dataset_free(&d);
    rm_tree(dir);
}
END_TEST

/* ------------------------------------------------------------ build-data */

/* raw = the shared data/raw folder when FILE (a path inside it) is there;
 * otherwise says that TEST is skipped and returns 0. */
static int shared_raw(const char *test, const char *file, char *raw, size_t n) {
    char rel[512], buf[4096];
    snprintf(rel, sizeof rel, "data/raw/%s", file);
    if (!shared_path(rel, buf, sizeof buf)) {
        printf("%s: skipped: %s not found (set RECFOUND_SHARED)\n", test, buf);
        return 0;
    }
    buf[strlen(buf) - strlen(file) - 1] = 0;
    snprintf(raw, n, "%s", buf);
    return 1;
}

START_TEST(test_build_data) {
    char raw[4096], dir[64];
    if (!shared_raw("test_build_data", "README.md", raw, sizeof raw)) return;
    tmpdir(dir, sizeof dir);
    char *argv[] = {"build-data", "--raw", raw, "--out", dir, NULL};
    ck_assert_msg(build_data_main(5, argv) == 0, "%s", rf_last_error());
    long n[N_TASKS] = {0};
    for (int s = 0; s < 3; s++) {
        Dataset d;
        memset(&d, 0, sizeof d);
        /* strict reading: every record the builder wrote is valid */
        ck_assert_msg(dataset_load_split(&d, dir, SPLIT_NAMES[s], 0) == 0, "%s", rf_last_error());
        for (int t = 0; t < N_TASKS; t++) n[t] += (long)d.pool[t].n;
        dataset_free(&d);
    }
    /* what the README says each source can feed (counts from the files) */
    ck_assert_int_gt(n[TASK_QR], 100);   /* MuDoCo news + weather dialogues needing a rewrite */
    ck_assert_int_gt(n[TASK_PM], 1200);  /* 1,300 gold Amazon-Google matches, half kept as "yes" */
    ck_assert_int_gt(n[TASK_Q2I], 400);  /* 485 ESCI exact rows */
    ck_assert_int_gt(n[TASK_AG], 5000);  /* 7,407 AmazonQA questions */
    ck_assert_int_gt(n[TASK_SR], 1000);  /* ml-100k users with >= 12 ratings + Amazon 2023 users */
    ck_assert_int_gt(n[TASK_U2I], 1000);
    ck_assert_int_gt(n[TASK_SA], 3000);  /* 5 reviews per Amazon 2023 user */
    ck_assert_int_gt(n[TASK_UP], 900);
    ck_assert_int_gt(n[TASK_IP], 500);
    ck_assert_int_gt(n[TASK_I2I], 1500); /* Amazon 2018 meta: 1,828 items with an also-viewed item */
    ck_assert_int_gt(n[TASK_PRP], 4000); /* 1,018 A + 1,723 B + 1,905 E */
    rm_tree(dir);
}
END_TEST

/* A raw folder holding only the given sources: symlinks into the real one. */
static void raw_subset(const char *raw, const char *dir, const char *const *rels, int n) {
    char from[8192], to[4096], abs[4096] = "";
    if (raw[0] != '/') { /* a relative target would be read from the link's folder */
        ck_assert_ptr_nonnull(getcwd(abs, sizeof abs - 1));
        strcat(abs, "/");
    }
    snprintf(to, sizeof to, "%s/amazon_reviews", dir);
    ck_assert_int_eq(rf_mkdirs(to), 0);
    for (int i = 0; i < n; i++) {
        snprintf(from, sizeof from, "%s%s/%s", abs, raw, rels[i]);
        snprintf(to, sizeof to, "%s/%s", dir, rels[i]);
        ck_assert_msg(symlink(from, to) == 0, "symlink %s", to);
    }
}

static long build_quiet(const char *raw, const char *out, long sa[3]) {
    char *argv[] = {"build-data", "--raw", (char *)raw, "--out", (char *)out, NULL};
    ck_assert_msg(build_data_main(5, argv) == 0, "%s", rf_last_error());
    long total = 0;
    for (int s = 0; s < 3; s++) {
        Dataset d;
        memset(&d, 0, sizeof d);
        ck_assert_msg(dataset_load_split(&d, out, SPLIT_NAMES[s], 0) == 0, "%s", rf_last_error());
        sa[s] = (long)d.pool[TASK_SA].n;
        total += sa[s];
        dataset_free(&d);
    }
    return total;
}

/* The text of the prompt between `key` and the next newline. */
static char *line_after(const char *s, const char *key) {
    const char *p = strstr(s, key);
    if (!p) return NULL;
    p += strlen(key);
    const char *e = strchr(p, '\n');
    return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

/* A raw title as the builder names an item: "&amp;" is "&", "&#39;" is "'",
 * runs of spaces one space, no space at either end (some raw titles start
 * with a space). */
static char *title_norm(const Json *t) {
    if (!t || t->type != JSON_STRING) return strdup("");
    char *norm = malloc(t->len + 1);
    size_t n = 0;
    int gap = 0;
    for (const char *p = t->string; *p; p++) {
        if (isspace((unsigned char)*p)) { gap = n > 0; continue; }
        if (gap) norm[n++] = ' ', gap = 0;
        if (!strncmp(p, "&amp;", 5)) norm[n++] = '&', p += 4;
        else if (!strncmp(p, "&#39;", 5)) norm[n++] = '\'', p += 4;
        else norm[n++] = *p;
    }
    norm[n] = 0;
    return norm;
}

/* Does any item titled a list any item titled b in its `key` list (also_buy,
 * also_view)?  meta: the raw lines, title: their titles (title_norm). */
static int titled_link(const Json *meta, char **title, int n, const char *a, const char *b, const char *key) {
    for (int i = 0; i < n; i++) {
        const Json *l = json_get(&meta[i], key);
        if (strcmp(title[i], a) || !l || l->type != JSON_ARRAY) continue;
        for (int j = 0; j < n; j++) {
            const Json *aj = json_get(&meta[j], "asin");
            if (strcmp(title[j], b) || !aj || aj->type != JSON_STRING) continue;
            for (size_t k = 0; k < l->count; k++)
                if (l->items[k].type == JSON_STRING && !strcmp(l->items[k].string, aj->string)) return 1;
        }
    }
    return 0;
}

static int has_title(char **title, int n, const char *a) {
    for (int i = 0; i < n; i++)
        if (!strcmp(title[i], a)) return 1;
    return 0;
}

/* I2I and PRP from the Amazon 2018 meta files, SA from the 2018 5-core
 * reviews when the 2023 histories are absent.  The counts come from
 * tests/reference/amazon2018_counts.py (Python's gzip and json on the raw
 * files); the labels of the Gift_Cards PRP records are checked against the
 * raw also_buy / also_view lists, looked up here by title. */
START_TEST(test_build_data_amazon2018) {
    char raw[4096], dir[64], sub[64], path[4200];
    if (!shared_raw("test_build_data_amazon2018", "amazon_reviews/2018_meta/meta_Gift_Cards.json.gz", raw, sizeof raw))
        return;
    tmpdir(dir, sizeof dir);
    long sa_all[3];
    build_quiet(raw, dir, sa_all);
    static const long I2I_WANT[3] = {1470, 184, 174}, PRP_WANT[3] = {1018, 1723, 1905}; /* A, B, E */
    static const long SA_2018_WANT[3] = {13135, 1605, 1301};
    /* the three PRP instructions of Appendix B.2 this project uses, and the options block */
    static const char *const PRP_INS[3] = {"predict if the two products are similar", "best describes the relation",
                                           "Predict whether two products are similar"};
    const char *options = "### Options:\nA: Users who buy product 1 may also buy product 2.\n"
                          "B: Users who view product 1 may also view product 2.\n";
    snprintf(path, sizeof path, "%s/amazon_reviews/2018_meta/meta_Gift_Cards.json.gz", raw);
    char *text;
    size_t len;
    ck_assert_msg(rf_read_file_gz(path, &text, &len) == 0, "%s", rf_last_error());
    Json *meta = calloc(4096, sizeof *meta);
    int nm = 0;
    for (char *l = strtok(text, "\n"); l && nm < 4096; l = strtok(NULL, "\n"))
        ck_assert_msg(json_parse(&meta[nm++], l, strlen(l), "meta") == 0, "%s", rf_last_error());
    ck_assert_int_eq(nm, 1547); /* the README's item count */
    char **title = malloc((size_t)nm * sizeof *title);
    for (int i = 0; i < nm; i++) title[i] = title_norm(json_get(&meta[i], "title"));
    long prp[3] = {0}, checked = 0, gift = 0;
    for (int s = 0; s < 3; s++) {
        Dataset d;
        memset(&d, 0, sizeof d);
        ck_assert_msg(dataset_load_split(&d, dir, SPLIT_NAMES[s], 0) == 0, "%s", rf_last_error());
        ck_assert_int_eq((long)d.pool[TASK_I2I].n, I2I_WANT[s]);
        for (size_t i = 0; i < d.pool[TASK_I2I].n; i++) {
            const Record *r = &d.pool[TASK_I2I].recs[i];
            ck_assert(r->n_pos == 1 && r->n_neg == 1 && r->query.instr[0] && r->pos[0].instr[0]);
            const char *q = r->query.texts[0], *p = r->pos[0].texts[0], *n = r->neg[0].texts[0];
            ck_assert_msg(!strncmp(q, "title: ", 7) && strstr(q, ", categories: ") && !strncmp(p, "title: ", 7) &&
                              !strncmp(n, "title: ", 7), "I2I texts: %s / %s / %s", q, p, n);
            ck_assert_msg(strcmp(n, q) && strcmp(n, p), "I2I negative equals the query or the positive: %s", n);
        }
        for (size_t i = 0; i < d.pool[TASK_PRP].n; i++) {
            const Record *r = &d.pool[TASK_PRP].recs[i];
            const char *pr = r->turns[0], *ans = r->turns[1];
            int ins = 0;
            for (int k = 0; k < 3; k++) ins |= strstr(pr, PRP_INS[k]) != NULL;
            ck_assert_msg(ins && strstr(pr, "### Input:\nProduct 1:: ") && strstr(pr, "\nProduct 2:: ") &&
                              strstr(pr, options) && strstr(pr, "### Response:"), "PRP prompt: %s", pr);
            ck_assert_msg(!strcmp(ans, "A") || !strcmp(ans, "B") || !strcmp(ans, "E"), "PRP answer %s", ans);
            prp[ans[0] == 'A' ? 0 : ans[0] == 'B' ? 1 : 2]++;
            if (strcmp(r->source, "Gift_Cards")) continue;
            gift++;
            char *a = line_after(pr, "Product 1:: "), *b = line_after(pr, "Product 2:: ");
            ck_assert(a && b && strcmp(a, b));
            if (has_title(title, nm, a) && has_title(title, nm, b)) { /* a title with another entity is not found */
                int buy = titled_link(meta, title, nm, a, b, "also_buy"), view = titled_link(meta, title, nm, a, b, "also_view");
                int back = titled_link(meta, title, nm, b, a, "also_buy") || titled_link(meta, title, nm, b, a, "also_view");
                if (ans[0] == 'A') ck_assert_msg(buy, "A without also_buy: %s -> %s", a, b);
                if (ans[0] == 'B') ck_assert_msg(view, "B without also_view: %s -> %s", a, b);
                if (ans[0] == 'E') ck_assert_msg(!buy && !view && !back, "E but related: %s -> %s", a, b);
                checked++;
            }
            free(a), free(b);
        }
        dataset_free(&d);
    }
    for (int k = 0; k < 3; k++) ck_assert_int_eq(prp[k], PRP_WANT[k]);
    ck_assert_msg(gift > 1000 && checked > gift * 9 / 10, "%ld of %ld Gift_Cards PRP records checked", checked, gift);
    for (int i = 0; i < nm; i++) json_free(&meta[i]), free(title[i]);
    free(meta);
    free(title);
    free(text);
    /* item_embedding_test.json: the test items, every also-viewed item a positive, 5 negatives */
    Dataset items;
    memset(&items, 0, sizeof items);
    snprintf(path, sizeof path, "%s/item_embedding_test.json", dir);
    ck_assert_msg(dataset_load_file(&items, path, 0) == 0, "%s", rf_last_error());
    ck_assert_int_eq((long)items.pool[TASK_I2I].n, I2I_WANT[2]);
    for (size_t i = 0; i < items.pool[TASK_I2I].n; i++) {
        const Record *r = &items.pool[TASK_I2I].recs[i];
        ck_assert(r->n_pos == 1 && r->pos[0].is_list && r->pos[0].n_texts >= 1 && r->pos[0].n_texts <= 10);
        ck_assert(r->n_neg == 1 && r->neg[0].is_list && r->neg[0].n_texts == 5);
        for (int k = 0; k < 5; k++) ck_assert(strcmp(r->neg[0].texts[k], r->query.texts[0]));
    }
    dataset_free(&items);
    rm_tree(dir);
    /* SA: the 2023 histories alone when present (the same counts as from them alone) ... */
    static const char *const only2023[1] = {"amazon_reviews/2023_user_histories_sample"};
    static const char *const only2018[2] = {"amazon_reviews/2018_meta", "amazon_reviews/2018_5core"};
    long sa[3];
    tmpdir(sub, sizeof sub);
    raw_subset(raw, sub, only2023, 1);
    snprintf(path, sizeof path, "%s/out", sub);
    build_quiet(sub, path, sa);
    for (int s = 0; s < 3; s++) ck_assert_int_eq(sa[s], sa_all[s]);
    rm_tree(sub);
    /* ... and every 2018 5-core review without them */
    tmpdir(sub, sizeof sub);
    raw_subset(raw, sub, only2018, 2);
    snprintf(path, sizeof path, "%s/out", sub);
    build_quiet(sub, path, sa);
    for (int s = 0; s < 3; s++) ck_assert_int_eq(sa[s], SA_2018_WANT[s]);
    rm_tree(sub);
}
END_TEST

/* Tokenised samples: the answer span and the pooling start are where the
 * formats put them; a sample too long loses prompt tokens after <s>, never
 * answer tokens; one whose answer cannot fit is dropped and counted; and the
 * batch's loss weights cover exactly the answer (and </s>). */
/* A tokenizer trained on one generative and one embedding text of the formats,
 * and a QR record of the given two turns. */
static void mug_tokenizer(Tokenizer *tok) {
    const char *corpus[2] = {"<s><|user|>\nwhich colour is the mug\n<|assistant|>\nred</s>",
                             "<s><|user|>\nfind a mug\n<|embed|>\nred ceramic mug"};
    ck_assert_msg(tok_train(tok, corpus, NULL, 2, 300) == 0, "%s", rf_last_error());
}

static Record qr_record(char **turns) {
    Record r;
    memset(&r, 0, sizeof r);
    r.task = TASK_QR;
    r.kind = KIND_GEN;
    r.turns = turns;
    r.n_turns = 2;
    return r;
}

START_TEST(test_samples_and_batches) {
    Tokenizer tok;
    mug_tokenizer(&tok);
    char *turns[2] = {"which colour is the mug, the one on the left of the big shelf by the window", " red "};
    Record r = qr_record(turns);
    SampleStats st = {0};
    Sample full, cut, none;
    ck_assert_int_eq(sample_gen(&full, &tok, &r, 4096, &st), 1);
    /* the answer part is enc("red</s>") at the end: "</s>" is the last token */
    ck_assert_int_eq(full.ids[full.len - 1], tok.eos_id);
    ck_assert_int_eq(full.ids[0], tok.bos_id);
    int n_answer = full.len - full.start;
    ck_assert_int_ge(n_answer, 2);
    ck_assert_int_eq(st.truncated + st.dropped, 0);
    /* 10 tokens: <s>, the last prompt tokens, the whole answer */
    ck_assert_int_eq(sample_gen(&cut, &tok, &r, n_answer + 4, &st), 1);
    ck_assert_int_eq(cut.len, n_answer + 4);
    ck_assert_int_eq(cut.ids[0], tok.bos_id);
    ck_assert_int_eq(cut.len - cut.start, n_answer);
    for (int i = 0; i < n_answer + 3; i++) ck_assert_int_eq(cut.ids[cut.len - 1 - i], full.ids[full.len - 1 - i]);
    ck_assert_int_eq(st.truncated, 1);
    /* the answer alone does not fit: dropped */
    ck_assert_int_eq(sample_gen(&none, &tok, &r, n_answer, &st), 0);
    ck_assert_int_eq(st.dropped, 1);
    /* embedding: prefix tokens are those of "<s><|user|>\nfind a mug\n<|embed|>\n" */
    Sample e;
    long merges_before = st.boundary_merges;
    ck_assert_int_eq(sample_emb(&e, &tok, "find a mug: ", "red ceramic mug", TASK_Q2I, 4096, EMB_FMT_TRAIN, &st), 1);
    int *pid, np;
    const char *prefix = "<s><|user|>\nfind a mug\n<|embed|>\n";
    ck_assert(tok_encode(&tok, prefix, strlen(prefix), 0, &pid, &np) == 0);
    /* pooling starts after the prefix's tokens; where the tokenizer merged the
     * prefix's last token with the text's first, at the longest common prefix,
     * and the merge is counted */
    ck_assert_int_le(e.start, np);
    for (int i = 0; i < e.start; i++) ck_assert_int_eq(e.ids[i], pid[i]);
    ck_assert_int_eq(st.boundary_merges - merges_before, e.start < np ? 1 : 0);
    if (e.start < np) ck_assert_int_ne(e.ids[e.start], pid[e.start]);
    free(pid);
    /* batch: right padding and answer weights */
    TokBatch tb;
    Sample *rows[2] = {&full, &cut};
    ck_assert_int_eq(batch_alloc(&tb, 2, 4096), 0);
    Batch b = batch_fill(&tb, rows, 2, 0);
    ck_assert_int_eq(b.T, full.len);
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < b.T; t++) {
            float want = (t >= rows[k]->start - 1 && t < rows[k]->len - 1) ? 1.0f : 0.0f;
            ck_assert_msg(tb.weights[k * b.T + t] == want, "row %d position %d", k, t);
            if (t >= rows[k]->len) ck_assert_int_eq(tb.ids[k * b.T + t], 0);
        }
    ck_assert_int_eq(tb.tasks[1], TASK_QR);
    batch_free(&tb);
    sample_free(&full);
    sample_free(&cut);
    sample_free(&e);
    tok_free(&tok);
}
END_TEST

/* A BPE tokenizer that merges "\n" + "r" + "e" + "d" into one token (the
 * trained ones here never merge across a newline), for the boundary case of
 * test_sample_edges: single characters, then "\nr", "\nre", "\nred". */
static void newline_merging_tokenizer(Tokenizer *t) {
    static const char *pieces[] = {"<", "s", ">", "|", "u", "e", "r", "\\n", "f", "i", "n", "d", "\u2581", "a", "m",
                                   "g", "b", "l", "c", "o", "\\nr", "\\nre", "\\nred"};
    char json[4096];
    int at = snprintf(json, sizeof json, "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, "
                      "{\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", "
                      "\"special\": true}], \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                      "\"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
                      "\"content\": \"\\u2581\"}]}, \"pre_tokenizer\": null, \"post_processor\": null, \"decoder\": null, "
                      "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
                      "\"byte_fallback\": false, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
    for (int i = 0; i < (int)(sizeof pieces / sizeof *pieces); i++)
        at += snprintf(json + at, sizeof json - at, ", \"%s\": %d", pieces[i], 3 + i);
    at += snprintf(json + at, sizeof json - at, "}, \"merges\": [\"\\n r\", \"\\nr e\", \"\\nre d\"]}}");
    ck_assert((size_t)at < sizeof json);
    Json root;
    ck_assert_msg(json_parse(&root, json, strlen(json), "newline-merging") == 0, "%s", rf_last_error());
    ck_assert_msg(tok_load_json(t, &root, "newline-merging") == 0, "%s", rf_last_error());
    json_free(&root);
}

/* The edges of the cuts.  Generative: a sample needs <s>, one prompt token and
 * its answer; with room for <s> and the answer only, it is dropped.  Embedding:
 * a prefix that fills max_len leaves nothing to pool, so the sample is
 * dropped; one more token keeps it with one text token.  And with a tokenizer
 * that merges the prefix's last "\n" into the text ("\nred"), pooling starts
 * at the longest common prefix of enc(prefix) and enc(prefix + text), and the
 * merge is counted. */
START_TEST(test_sample_edges) {
    Tokenizer tok;
    mug_tokenizer(&tok);
    char *turns[2] = {"which colour is the mug on the shelf", "red"};
    Record r = qr_record(turns);
    SampleStats st = {0};
    Sample full, s;
    ck_assert_int_eq(sample_gen(&full, &tok, &r, 4096, &st), 1);
    int n_answer = full.len - full.start;
    ck_assert_int_eq(sample_gen(&s, &tok, &r, n_answer + 1, &st), 0);  /* <s> + answer: no prompt left */
    ck_assert_int_eq(st.dropped, 1);
    ck_assert_int_eq(sample_gen(&s, &tok, &r, n_answer + 2, &st), 1);  /* <s>, the prompt's last token, answer */
    ck_assert_int_eq(s.len, n_answer + 2);
    ck_assert_int_eq(s.start, 2);
    ck_assert_int_eq(s.ids[0], tok.bos_id);
    ck_assert_int_eq(s.ids[1], full.ids[full.start - 1]);
    sample_free(&s);
    sample_free(&full);
    /* embedding: the prefix alone fills max_len */
    ck_assert_int_eq(sample_emb(&full, &tok, "find a mug", "blue ceramic mug", TASK_Q2I, 4096, EMB_FMT_TRAIN, &st), 1);
    int start = full.start;
    ck_assert_int_lt(start, full.len);
    long dropped = st.dropped;
    ck_assert_int_eq(sample_emb(&s, &tok, "find a mug", "blue ceramic mug", TASK_Q2I, start, EMB_FMT_TRAIN, &st), 0);
    ck_assert_int_eq(st.dropped, dropped + 1);
    ck_assert_int_eq(sample_emb(&s, &tok, "find a mug", "blue ceramic mug", TASK_Q2I, start + 1, EMB_FMT_TRAIN, &st),
                     1);
    ck_assert_int_eq(s.start, start);
    ck_assert_int_eq(s.len, start + 1);
    sample_free(&s);
    sample_free(&full);
    tok_free(&tok);
    /* the merge across the boundary: enc(prefix) ends with "\n", enc(prefix + "red") with "\nred" */
    newline_merging_tokenizer(&tok);
    const char *prefix = "<s><|user|>\nfind a mug\n<|embed|>\n";
    int *pid, np;
    ck_assert(tok_encode(&tok, prefix, strlen(prefix), 0, &pid, &np) == 0);
    long merges = st.boundary_merges;
    ck_assert_int_eq(sample_emb(&s, &tok, "find a mug", "red", TASK_Q2I, 4096, EMB_FMT_TRAIN, &st), 1);
    ck_assert_int_eq(st.boundary_merges, merges + 1);
    ck_assert_int_eq(s.start, np - 1);          /* everything before the prefix's last "\n" */
    ck_assert_int_eq(s.len, np);                /* ... then the one token "\nred" */
    for (int i = 0; i < s.start; i++) ck_assert_int_eq(s.ids[i], pid[i]);
    ck_assert_int_eq(s.ids[s.start], tok_id(&tok, "\nred", 4));
    free(pid);
    sample_free(&s);
    tok_free(&tok);
}
END_TEST

Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("tasks");
    tcase_add_test(tc, test_task_table);
    suite_add_tcase(s, tc);
    tc = tcase_create("records");
    tcase_add_test(tc, test_roundtrip_embedding);
    tcase_add_test(tc, test_roundtrip_generative);
    tcase_add_test(tc, test_roundtrip_item_embedding_test);
    tcase_add_test(tc, test_dataset_pools);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_bad_input_counts);
    suite_add_tcase(s, tc);
    tc = tcase_create("formats");
    tcase_add_test(tc, test_formats);
    tcase_add_test(tc, test_sample_edges);
    tcase_add_test(tc, test_shuffle);
    tcase_add_test(tc, test_samples_and_batches);
    suite_add_tcase(s, tc);
    tc = tcase_create("synth");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_synth_deterministic);
    tcase_add_test(tc, test_synth_content);
    suite_add_tcase(s, tc);
    tc = tcase_create("build-data");
    tcase_set_timeout(tc, 120); /* four builds from the raw files; slower under the sanitizers */
    tcase_add_test(tc, test_build_data);
    tcase_add_test(tc, test_build_data_amazon2018);
    suite_add_tcase(s, tc);
    return s;
}
