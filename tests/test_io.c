/*
 * test_io.c - the "io" Check suite: gzip, JSON, safetensors, config.json and
 * model folders.  Expected values are written out by hand (byte patterns of
 * F16/BF16 numbers, UTF-8 encodings, line/column of each malformed input,
 * gzip members bit by bit) or come from Python's standard library (the gzip
 * files of tests/reference/make_gz_fixtures.py), never from the code under
 * test.  Files go to a mkdtemp folder under /tmp.
 */
#include "check_util.h"
#include "recfound.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char g_dir[64];

static void tmp_setup(void) {
    strcpy(g_dir, "/tmp/rf_io_XXXXXX");
    if (!mkdtemp(g_dir)) ck_abort_msg("mkdtemp failed");
}

static void tmp_teardown(void) {
    if (g_dir[0]) rm_tree(g_dir);
}

static const char *tpath(char *buf, const char *rel) {
    snprintf(buf, 256, "%s/%s", g_dir, rel);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* The last error must contain every given substring (NULL-terminated list). */
static void expect_error_has(const char *what, ...) {
    const char *err = rf_last_error();
    va_list ap;
    va_start(ap, what);
    for (const char *s; (s = va_arg(ap, const char *));)
        ck_assert_msg(strstr(err, s) != NULL, "%s: error \"%s\" lacks \"%s\"", what, err, s);
    va_end(ap);
    ck_assert_msg(strchr(err, '\n') == NULL, "%s: error is not one line: \"%s\"", what, err);
}

/* ------------------------------------------------------------ JSON */

START_TEST(test_json_values) {
    const char *t = "{\"a\": -1.5e3, \"b\": [1, 2.5, true, false, null, 0, -0.25, 1E2, 123456789012],\n"
                    " \"c\": {\"d\": \"x\", \"e\": []}, \"empty\": \"\", \"o\": {}}";
    Json j;
    ck_assert_int_eq(json_parse(&j, t, strlen(t), "t.json"), 0);
    ck_assert_int_eq(j.type, JSON_OBJECT);
    ck_assert_uint_eq(j.count, 5);
    const Json *a = json_get(&j, "a");
    ck_assert(a && a->type == JSON_NUMBER && a->number == -1500.0);
    const Json *b = json_get(&j, "b");
    ck_assert(b && b->type == JSON_ARRAY && b->count == 9);
    ck_assert(b->items[0].type == JSON_NUMBER && b->items[0].number == 1.0);
    ck_assert(b->items[1].number == 2.5);
    ck_assert(b->items[2].type == JSON_BOOL && b->items[2].boolean == 1);
    ck_assert(b->items[3].type == JSON_BOOL && b->items[3].boolean == 0);
    ck_assert(b->items[4].type == JSON_NULL);
    ck_assert(b->items[5].number == 0.0);
    ck_assert(b->items[6].number == -0.25);
    ck_assert(b->items[7].number == 100.0);
    ck_assert(b->items[8].number == 123456789012.0);
    const Json *c = json_get(&j, "c");
    ck_assert(c && c->type == JSON_OBJECT && c->count == 2);
    const Json *d = json_get(c, "d");
    ck_assert(d && d->type == JSON_STRING && d->len == 1 && !strcmp(d->string, "x"));
    ck_assert(json_get(c, "e")->type == JSON_ARRAY && json_get(c, "e")->count == 0);
    ck_assert(json_get(&j, "empty")->len == 0 && json_get(&j, "empty")->string[0] == '\0');
    ck_assert(json_get(&j, "o")->type == JSON_OBJECT && json_get(&j, "o")->count == 0);
    ck_assert_ptr_null(json_get(&j, "missing"));
    ck_assert_ptr_null(json_get(a, "a"));  /* not an object */
    json_free(&j);

    /* top-level scalars, surrounding whitespace, duplicate keys (last wins, as Python) */
    ck_assert_int_eq(json_parse(&j, " \r\n\t 42 \n", 9, "n"), 0);
    ck_assert(j.type == JSON_NUMBER && j.number == 42.0);
    json_free(&j);
    ck_assert_int_eq(json_parse(&j, "{\"k\":1,\"k\":2}", 13, "dup"), 0);
    ck_assert(json_get(&j, "k")->number == 2.0);
    json_free(&j);
}
END_TEST

START_TEST(test_json_escapes) {
    /* Every escape, BMP code points and a surrogate pair; expected UTF-8 bytes
     * by hand: U+00E9 = C3 A9, U+20AC = E2 82 AC, U+1F600 = F0 9F 98 80. */
    const char *t = "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\u0000z\xC3\xA9\"";
    const unsigned char want[] = {'"', '\\', '/', '\b', '\f', '\n', '\r', '\t', 'A', 0xC3, 0xA9,
                                  0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0x00, 'z', 0xC3, 0xA9};
    Json j;
    ck_assert_int_eq(json_parse(&j, t, strlen(t), "esc"), 0);
    ck_assert_int_eq(j.type, JSON_STRING);
    ck_assert_uint_eq(j.len, sizeof want);
    ck_assert(memcmp(j.string, want, sizeof want) == 0);
    ck_assert_int_eq(j.string[j.len], 0);
    json_free(&j);
    /* U+10FFFF, the largest code point: \udbff\udfff = F4 8F BF BF */
    ck_assert_int_eq(json_parse(&j, "\"\\udbff\\udfff\"", 14, "max"), 0);
    ck_assert(j.len == 4 && !memcmp(j.string, "\xF4\x8F\xBF\xBF", 4));
    json_free(&j);
    /* the edges of the 2- and 3-byte forms: U+07FF = DF BF, U+0800 = E0 A0 80 */
    ck_assert_int_eq(json_parse(&j, "\"\\u07ff\\u0800\"", 14, "edges"), 0);
    ck_assert(j.len == 5 && !memcmp(j.string, "\xDF\xBF\xE0\xA0\x80", 5));
    json_free(&j);
}
END_TEST

START_TEST(test_json_write_string) {
    RfBuf b = {0};
    const char in[] = "a\"b\\c\n\x01\x1f\t\xC3\xA9\xF0\x9F\x98\x80/";
    json_write_string(&b, in, sizeof in - 1);
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u001f\\t\xC3\xA9\xF0\x9F\x98\x80/\"");
    buf_free(&b);
    /* invalid UTF-8 (a lone 0xFF, a truncated sequence) becomes U+FFFD */
    json_write_string(&b, "x\xFFy\xE2\x82", 5);
    ck_assert_str_eq(b.data, "\"x\\ufffdy\\ufffd\\ufffd\"");
    buf_free(&b);

    /* round trip of awkward strings, with an embedded NUL */
    const char *cases[] = {"", "plain", "\"quoted\"", "tab\there", "nul\0mid", "\xE4\xB8\xAD\xE6\x96\x87",
                           "\x7f\x1b[0m"};
    size_t lens[] = {0, 5, 8, 8, 7, 6, 5};
    for (int i = 0; i < 7; i++) {
        json_write_string(&b, cases[i], lens[i]);
        Json j;
        ck_assert_int_eq(json_parse(&j, b.data, b.len, "rt"), 0);
        ck_assert(j.type == JSON_STRING && j.len == lens[i] && !memcmp(j.string, cases[i], lens[i]));
        json_free(&j);
        buf_free(&b);
    }
    /* buf_printf grows past its first allocation */
    for (int i = 0; i < 1000; i++) buf_printf(&b, "%d,", i % 10);
    ck_assert_uint_eq(b.len, 2000);
    ck_assert_uint_eq(strlen(b.data), 2000);
    ck_assert(b.data[1998] == '9' && b.data[1999] == ',');
    buf_free(&b);
}
END_TEST

START_TEST(test_json_nesting) {
    char t[2 * 700 + 1];
    int d = 500;  /* fine */
    for (int i = 0; i < d; i++) t[i] = '[', t[2 * d - 1 - i] = ']';
    Json j;
    ck_assert_int_eq(json_parse(&j, t, 2 * d, "deep"), 0);
    const Json *x = &j;
    for (int i = 1; i < d; i++) {
        ck_assert(x->type == JSON_ARRAY && x->count == 1);
        x = &x->items[0];
    }
    ck_assert(x->type == JSON_ARRAY && x->count == 0);
    json_free(&j);
    d = 700;  /* beyond the limit: a clean error, not a stack overflow */
    for (int i = 0; i < d; i++) t[i] = '[', t[2 * d - 1 - i] = ']';
    ck_assert_int_eq(json_parse(&j, t, 2 * d, "deep"), -1);
    expect_error_has("deep", "deep: line 1, column 513", "nesting", NULL);
    /* a hostile unterminated 100000 '[' */
    char *h = malloc(100000);
    memset(h, '[', 100000);
    ck_assert_int_eq(json_parse(&j, h, 100000, "hostile"), -1);
    free(h);
}
END_TEST

START_TEST(test_json_errors) {
    static const struct { const char *text; const char *where, *what; } bad[] = {
        {"{\"a\": 1,\n \"b\" 2}", "line 2, column 6", "expected ':'"},
        {"{\"a\": 1 \"b\": 2}", "line 1, column 9", "expected ',' or '}'"},
        {"[1 2]", "line 1, column 4", "expected ',' or ']'"},
        {"[1, 2,]", "line 1, column 7", "trailing comma"},
        {"{\"a\":1,}", "line 1, column 8", "trailing comma"},
        {"{1:2}", "line 1, column 2", "expected a string key"},
        {"[01]", "line 1, column 3", "leading zero"},
        {"1.", "line 1, column 3", "after '.'"},
        {"-", "line 1, column 2", "expected a digit"},
        {"1e+", "line 1, column 4", "exponent"},
        {"+1", "line 1, column 1", "expected a value"},
        {".5", "line 1, column 1", "expected a value"},
        {"\"abc", "line 1, column 1", "unterminated string"},
        {"\"\\x\"", "line 1, column 2", "invalid escape"},
        {"\"\\u12G4\"", "line 1, column 6", "4 hex digits"},
        {"\"\\ud83d\"", "line 1, column 2", "high surrogate"},
        {"\"\\ud83d\\u0041\"", "line 1, column 2", "not a low surrogate"},
        {"\"\\ude00\"", "line 1, column 2", "unpaired low surrogate"},
        {"\"a\x01\"", "line 1, column 3", "control character"},
        {"\"a\nb\"", "line 1, column 3", "control character"},
        {"\"\xC3\x28\"", "line 1, column 2", "invalid UTF-8"},
        {"\"\xED\xA0\x80\"", "line 1, column 2", "invalid UTF-8"},  /* encoded surrogate */
        {"\"\xC0\xAF\"", "line 1, column 2", "invalid UTF-8"},      /* overlong '/' */
        {"\"\xE0\x80\xAF\"", "line 1, column 2", "invalid UTF-8"},  /* overlong '/' in 3 bytes */
        {"\"\xF0\x8F\xBF\xBF\"", "line 1, column 2", "invalid UTF-8"}, /* overlong U+FFFF in 4 bytes */
        {"\"\xF4\x90\x80\x80\"", "line 1, column 2", "invalid UTF-8"}, /* > U+10FFFF */
        {"tru", "line 1, column 1", "expected a value"},
        {"nul", "line 1, column 1", "expected a value"},
        {"[1] x", "line 1, column 5", "unexpected text"},
        {"\"\xC3\xA9\" x", "line 1, column 5", "unexpected text"},  /* columns count characters */
        {"", "line 1, column 1", "unexpected end"},
        {"  \n\n   ", "line 3, column 4", "unexpected end"},
        {"{\"a\":", "line 1, column 6", "unexpected end"},
        {"[\n  1,\n  2\n", "line 4, column 1", "expected ',' or ']'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Json j;
        rf_clear_error();
        int rc = json_parse(&j, bad[i].text, strlen(bad[i].text), "bad.json");
        ck_assert_msg(rc == -1, "case %zu (%s) was accepted", i, bad[i].text);
        ck_assert_int_eq(j.type, JSON_NULL);  /* left zeroed */
        ck_assert_ptr_null(j.items);
        expect_error_has(bad[i].text, "bad.json: ", bad[i].where, bad[i].what, NULL);
    }
}
END_TEST

/* The real Mistral tokenizer.json (1.8 MB, much non-ASCII): expected values
 * from Python's json module (json.load of the same file). */
START_TEST(test_json_shared_tokenizer) {
    char buf[512];
    const char *path = shared_path("data/tokenizers/mistral-7b-v0.1/tokenizer.json", buf, sizeof buf);
    if (!path) {
        printf("io: skipping test_json_shared_tokenizer: shared tokenizer.json not found\n");
        return;
    }
    char *text;
    size_t len;
    ck_assert_int_eq(rf_read_file(path, &text, &len), 0);
    Json j;
    ck_assert_msg(json_parse(&j, text, len, path) == 0, "%s", rf_last_error());
    free(text);
    ck_assert_uint_eq(j.count, 9);
    const Json *model = json_get(&j, "model"), *vocab = json_get(model, "vocab");
    ck_assert_str_eq(json_get(model, "type")->string, "BPE");
    ck_assert_uint_eq(vocab->count, 32000);
    ck_assert_uint_eq(json_get(model, "merges")->count, 58980);
    ck_assert(json_get(vocab, "<0x0A>")->number == 13);
    ck_assert(json_get(vocab, "\xE2\x96\x81the")->number == 272);          /* "▁the" */
    ck_assert(json_get(vocab, "\xE2\x96\x81\xE2\x96\x81")->number == 259); /* "▁▁" */
    ck_assert_str_eq(vocab->keys[31999], "\xE6\xA2\xA6");
    ck_assert(vocab->items[31999].number == 31999);
    json_free(&j);
}
END_TEST

/* ------------------------------------------------------------ files */

START_TEST(test_files) {
    char p[256], q[256];
    char *text;
    size_t len;
    ck_assert_int_eq(rf_write_file_atomic(tpath(p, "f.txt"), "hello\0x", 7), 0);
    ck_assert_int_eq(rf_read_file(p, &text, &len), 0);
    ck_assert(len == 7 && !memcmp(text, "hello\0x", 7) && text[7] == '\0');
    free(text);
    ck_assert_int_eq(rf_write_file_atomic(p, "new", 3), 0);  /* replaces */
    ck_assert_int_eq(rf_read_file(p, &text, &len), 0);
    ck_assert(len == 3 && !strcmp(text, "new"));
    free(text);
    /* no temporary file is left behind */
    DIR *d = opendir(g_dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(n, 1);
    /* a missing folder is made; a file where a folder should be is a failure: one line naming the file */
    ck_assert_int_eq(rf_write_file_atomic(tpath(q, "new/sub/f"), "x", 1), 0);
    ck_assert_int_eq(rf_read_file(tpath(q, "new/sub/f"), &text, &len), 0);
    ck_assert_int_eq(len, 1);
    free(text);
    ck_assert_int_eq(rf_write_file_atomic(tpath(q, "new/sub/f/g"), "x", 1), -1);
    expect_error_has("atomic", q, NULL);
    ck_assert_int_eq(rf_read_file(tpath(q, "missing.txt"), &text, &len), -1);
    ck_assert_ptr_null(text);
    expect_error_has("read", q, "cannot open", NULL);
    /* mkdir -p, idempotent; a file in the way is an error */
    ck_assert_int_eq(rf_mkdirs(tpath(q, "a/b/c")), 0);
    ck_assert_int_eq(rf_mkdirs(q), 0);
    struct stat st;
    ck_assert(stat(q, &st) == 0 && S_ISDIR(st.st_mode));
    ck_assert_int_eq(rf_mkdirs(tpath(q, "f.txt/sub")), -1);
    expect_error_has("mkdirs", "f.txt", NULL);
    /* rf_error may quote the previous error */
    rf_error("first %d", 1);
    rf_error("%s: then %s", "dir", rf_last_error());
    ck_assert_str_eq(rf_last_error(), "dir: then first 1");
}
END_TEST

/* The memory figures' parsers on texts written out here, as /proc/meminfo,
 * a cgroup's memory.stat / memory.max and /proc/self/cgroup hold them; then
 * this machine's own figures, which must at least be positive. */
START_TEST(test_memory_figures) {
    const char *meminfo = "MemTotal:       24106384 kB\nMemFree:         1000000 kB\n"
                          "MemAvailable:   20000000 kB\nBuffers:            9080 kB\n";
    ck_assert(text_field(meminfo, "MemAvailable") == 20000000);
    ck_assert(text_field(meminfo, "MemTotal") == 24106384);
    ck_assert(text_field(meminfo, "Mem") == -1);                       /* a whole key, not a prefix */
    ck_assert(text_field("MemTotal: 1 kB\nMemFree: 1 kB\n", "MemAvailable") == -1);  /* kernels before 3.14 */
    ck_assert(text_field("MemAvailable: kB\n", "MemAvailable") == -1);
    const char *v1stat = "cache 4096\ntotal_cache 8192\nhierarchical_memory_limit 2147483648\n";
    ck_assert(text_field(v1stat, "total_cache") == 8192);
    ck_assert(text_field(v1stat, "cache") == 4096);                    /* the line that starts with it */
    ck_assert(text_field(v1stat, "hierarchical_memory_limit") == 2147483648.0);
    ck_assert(text_field("anon 123\nfile_mapped 7\nfile 456\n", "file") == 456);
    ck_assert(text_field("", "file") == -1 && text_field(NULL, "file") == -1);

    ck_assert(cgroup_limit_value("max\n") == -1);                      /* v2: no limit */
    ck_assert(cgroup_limit_value("8589934592\n") == 8589934592.0);
    ck_assert(cgroup_limit_value("9223372036854771712\n") == -1);      /* v1: no limit */
    ck_assert(cgroup_limit_value("") == -1 && cgroup_limit_value(NULL) == -1);

    char v1[64], v2[64];
    cgroup_paths("9:name=systemd:/\n4:memory:/process_api/add6\n1:cpu:/\n0::/\n", v1, v2, sizeof v1);
    ck_assert_str_eq(v1, "/process_api/add6");
    ck_assert_str_eq(v2, "/");
    cgroup_paths("0::/user.slice/app.scope\n", v1, v2, sizeof v1);    /* cgroup v2 only */
    ck_assert_str_eq(v1, "");
    ck_assert_str_eq(v2, "/user.slice/app.scope");
    cgroup_paths("5:cpu,memory,pids:/docker/abc\n3:memoryx:/x", v1, v2, sizeof v1);
    ck_assert_str_eq(v1, "/docker/abc");
    ck_assert_str_eq(v2, "");
    cgroup_paths("", v1, v2, sizeof v1);
    ck_assert(!v1[0] && !v2[0]);

    const char *where = NULL;
    ck_assert(mem_total(&where) > 0);
    ck_assert(!strcmp(where, "this machine's") || !strcmp(where, "this cgroup's"));
    if (access("/proc/meminfo", R_OK) == 0) ck_assert(mem_available() > 0);
}
END_TEST

/* ------------------------------------------------------------ gzip */

/* CRC-32 check values of the CRC catalogue (CRC-32/ISO-HDLC): "123456789"
 * gives 0xCBF43926, "a" 0xE8B7BE43, nothing 0; a CRC continues across calls. */
START_TEST(test_crc32) {
    ck_assert_uint_eq(rf_crc32(0, "123456789", 9), 0xCBF43926u);
    ck_assert_uint_eq(rf_crc32(0, "a", 1), 0xE8B7BE43u);
    ck_assert_uint_eq(rf_crc32(0, "", 0), 0);
    ck_assert_uint_eq(rf_crc32(rf_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}
END_TEST

/* The files of tests/reference/make_gz_fixtures.py (Python's gzip and zlib):
 * every valid NAME.gz decompresses to NAME.txt byte for byte. */
START_TEST(test_gzip_fixtures) {
    static const char *const valid[] = {"stored", "fixed", "dynamic", "multi", "empty", "fname", "extra", "padded"};
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        char gz[256], txt[256], *want, *got;
        size_t nw, ng;
        snprintf(gz, sizeof gz, "tests/fixtures/gz/%s.gz", valid[i]);
        snprintf(txt, sizeof txt, "tests/fixtures/gz/%s.txt", valid[i]);
        ck_assert_msg(rf_read_file(txt, &want, &nw) == 0, "%s (run from the repository root)", rf_last_error());
        ck_assert_msg(rf_read_file_gz(gz, &got, &ng) == 0, "%s", rf_last_error());
        ck_assert_msg(ng == nw && !memcmp(got, want, nw), "%s: %zu bytes decompressed, want %zu (or the bytes differ)",
                      gz, ng, nw);
        ck_assert_int_eq(got[ng], '\0');
        free(want);
        free(got);
    }
    /* the three block types are really there: BTYPE is bits 1-2 of the byte after a 10-byte header */
    static const char *const kind[3] = {"stored", "fixed", "dynamic"};
    for (int t = 0; t < 3; t++) {
        char gz[256], *raw;
        size_t n;
        snprintf(gz, sizeof gz, "tests/fixtures/gz/%s.gz", kind[t]);
        ck_assert_int_eq(rf_read_file(gz, &raw, &n), 0);
        ck_assert_msg(n > 10 && raw[3] == 0 && (((unsigned char)raw[10] >> 1) & 3) == t, "%s: first block type", gz);
        free(raw);
    }
}
END_TEST

/* Members written out by hand (RFC 1952 §2.3, RFC 1951 §3.2.4 and §3.2.6). */
START_TEST(test_gzip_by_hand) {
    /* "a" in one stored block: header 1f 8b 08 00, MTIME 0, XFL 0, OS ff; block 01 (BFINAL, BTYPE 00),
     * LEN 0001, NLEN fffe, 'a'; CRC-32 of "a" = e8b7be43 and ISIZE 1, little-endian */
    static const unsigned char stored[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01, 0x01, 0x00, 0xfe, 0xff,
                                           'a',  0x43, 0xbe, 0xb7, 0xe8, 1, 0, 0, 0};
    /* "aaaaaa" as a fixed-Huffman block: BFINAL 1, BTYPE 01, literal 'a' (code 0x30 + 0x61 in 8 bits),
     * length 5 (symbol 259, code 0000011), distance 1 (code 00000), end of block (0000000).  Bits in
     * order 1 10 10010001 0000011 00000 0000000, packed from each byte's lowest bit: 4b 04 03 00.  The
     * copy overlaps what it writes (distance 1 < length 5).  CRC-32 of "aaaaaa" = 5ae419f8. */
    static const unsigned char fixed[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x4b, 0x04, 0x03, 0x00,
                                          0xf8, 0x19, 0xe4, 0x5a, 6, 0, 0, 0};
    char *out;
    size_t n;
    ck_assert_msg(rf_gunzip(&out, &n, stored, sizeof stored, 100, "stored") == 0, "%s", rf_last_error());
    ck_assert(n == 1 && !strcmp(out, "a"));
    free(out);
    ck_assert_msg(rf_gunzip(&out, &n, fixed, sizeof fixed, 100, "fixed") == 0, "%s", rf_last_error());
    ck_assert(n == 6 && !strcmp(out, "aaaaaa"));
    free(out);
    /* both members one after the other */
    unsigned char two[sizeof stored + sizeof fixed];
    memcpy(two, fixed, sizeof fixed);
    memcpy(two + sizeof fixed, stored, sizeof stored);
    ck_assert_msg(rf_gunzip(&out, &n, two, sizeof two, 100, "two") == 0, "%s", rf_last_error());
    ck_assert(n == 7 && !strcmp(out, "aaaaaaa"));
    free(out);
    /* the limit: 6 bytes may come out of `fixed`, not 5 */
    ck_assert_int_eq(rf_gunzip(&out, &n, fixed, sizeof fixed, 6, "fixed"), 0);
    free(out);
    ck_assert_int_eq(rf_gunzip(&out, &n, fixed, sizeof fixed, 5, "fixed"), -1);
    ck_assert_ptr_null(out);
    expect_error_has("limit", "fixed: byte", "exceeds the limit of 5 bytes", NULL);
    /* every strict prefix is an error (truncated somewhere), never a crash */
    for (size_t k = 0; k < sizeof fixed; k++) {
        ck_assert_msg(rf_gunzip(&out, &n, fixed, k, 100, "cut") == -1, "prefix of %zu bytes accepted", k);
        expect_error_has("prefix", "cut: byte", "truncated", NULL);
    }
}
END_TEST

/* Corrupt files: -1, no output, one line naming the file and the problem. */
START_TEST(test_gzip_corrupt) {
    static const struct { const char *name, *problem; } cases[] = {
        {"bad_magic", "bad magic bytes 1f 8c"},
        {"bad_method", "compression method 7 is not deflate"},
        {"bad_flags", "reserved gzip header flags"},
        {"bad_crc", "CRC-32 mismatch"},
        {"bad_isize", "length mismatch (ISIZE says 89 bytes, the data gave 88)"},
        {"bad_hcrc", "gzip header CRC mismatch"},
        {"truncated_data", "truncated"},
        {"truncated_trailer", "truncated gzip trailer"},
        {"truncated_header", "truncated gzip header"},
        {"bad_btype", "bad block type 3"},
        {"bad_stored_len", "stored block length 3 does not match its complement"},
        {"too_far", "distance 1 too far back (only 0 bytes written)"},
        {"oversubscribed", "bad Huffman code lengths: the code-length code is over-subscribed"},
        {"trailing_garbage", "bytes after gzip member 1 are not another member"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char gz[256], *out = (char *)1;
        size_t n = 99;
        snprintf(gz, sizeof gz, "tests/fixtures/gz/%s.gz", cases[i].name);
        rf_clear_error();
        ck_assert_msg(rf_read_file_gz(gz, &out, &n) == -1, "%s: accepted", gz);
        ck_assert_ptr_null(out);
        expect_error_has(cases[i].name, gz, cases[i].problem, NULL);
    }
}
END_TEST

/* rf_read_file_gz reads plain files unchanged; a ".gz" name must hold gzip. */
START_TEST(test_gzip_plain_files) {
    char p[256], *out;
    size_t n;
    write_text(tpath(p, "plain.txt"), "not compressed\n");
    ck_assert_int_eq(rf_read_file_gz(p, &out, &n), 0);
    ck_assert(n == 15 && !strcmp(out, "not compressed\n"));
    free(out);
    write_text(tpath(p, "fake.json.gz"), "{\"a\": 1}\n");
    ck_assert_int_eq(rf_read_file_gz(p, &out, &n), -1);
    expect_error_has("fake", "fake.json.gz: byte 0", "not a gzip file", NULL);
    ck_assert_int_eq(rf_read_file_gz(tpath(p, "missing.gz"), &out, &n), -1);
    expect_error_has("missing", "missing.gz", "cannot open", NULL);
}
END_TEST

/* ------------------------------------------------------------ safetensors */

/* A safetensors file from a header text and data bytes, built by hand. */
static void build_st(const char *path, const char *header, uint64_t header_len, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(header_len >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

START_TEST(test_st_roundtrip) {
    char p[256];
    float a[6] = {1.0f, -2.5f, 3.25f, 1e-30f, -0.0f, 123456.789f}, b[4] = {0.1f, 0.2f, 0.3f, 0.4f}, sc = 7.0f;
    StOut out[4] = {{"layer.a", 2, {2, 3}, a}, {"b\"quoted\"", 1, {4}, b}, {"scalar", 0, {0}, &sc},
                    {"empty", 2, {0, 5}, NULL}};
    ck_assert_int_eq(st_write(tpath(p, "t.safetensors"), out, 4), 0);
    /* the raw bytes, by hand: header length, data 8-byte aligned, a[0] = 1.0f = 00 00 80 3F */
    char *raw;
    size_t len;
    ck_assert_int_eq(rf_read_file(p, &raw, &len), 0);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | (unsigned char)raw[i];
    ck_assert_uint_eq((8 + hl) % 8, 0);
    ck_assert_uint_eq(len, 8 + hl + 4 * (6 + 4 + 1));
    ck_assert(raw[8] == '{');
    ck_assert(!memcmp(raw + 8 + hl, "\x00\x00\x80\x3F", 4));
    free(raw);

    StFile f;
    ck_assert_int_eq(st_open(&f, p), 0);
    ck_assert_int_eq(f.n, 4);
    ck_assert_uint_eq(f.data_start, 8 + hl);
    const StTensor *t = st_find(&f, "layer.a");
    ck_assert(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    float got[6];
    ck_assert_int_eq(st_read_f32(&f, t, got), 0);
    ck_assert(!memcmp(got, a, sizeof a));  /* bit-exact, including -0.0 */
    t = st_find(&f, "b\"quoted\"");
    ck_assert(t && t->ndim == 1 && t->numel == 4);
    ck_assert_int_eq(st_read_f32(&f, t, got), 0);
    ck_assert(!memcmp(got, b, sizeof b));
    t = st_find(&f, "scalar");
    ck_assert(t && t->ndim == 0 && t->numel == 1);
    ck_assert_int_eq(st_read_f32(&f, t, got), 0);
    ck_assert(got[0] == 7.0f);
    t = st_find(&f, "empty");
    ck_assert(t && t->ndim == 2 && t->numel == 0 && t->begin == t->end);
    ck_assert_ptr_null(st_find(&f, "nope"));
    st_close(&f);
    ck_assert_ptr_null(f.fp);

    /* duplicate names are refused before anything is written */
    StOut dup[2] = {{"x", 1, {1}, b}, {"x", 1, {1}, b}};
    ck_assert_int_eq(st_write(tpath(p, "dup.safetensors"), dup, 2), -1);
    expect_error_has("dup", "dup.safetensors", "'x'", NULL);
    ck_assert(access(p, F_OK) != 0);
}
END_TEST

START_TEST(test_st_half_types) {
    /* F16 bit patterns and their values worked out by hand:
     * 3C00 = 1, C000 = -2, 0001 = 2^-24 (smallest subnormal), 03FF = 1023 * 2^-24
     * (largest subnormal), 8400 = -2^-14, 7BFF = 65504 (largest finite),
     * 3555 = (1 + 341/1024) / 4, 7C00 = +inf, FC00 = -inf, 7E00 = NaN, 8000 = -0.
     * BF16 is the top half of a float32: 3F80 = 1, C040 = -3, 4049 = 3.140625,
     * 0001 = 2^-133 (float32 subnormal 0x00010000), FF80 = -inf. */
    const uint16_t h[11] = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x8400, 0x7BFF, 0x3555, 0x7C00, 0xFC00, 0x7E00, 0x8000};
    const float hv[11] = {1.0f, -2.0f, 0x1p-24f, 1023 * 0x1p-24f, -0x1p-14f, 65504.0f, 0.333251953125f,
                          INFINITY, -INFINITY, NAN, -0.0f};
    const uint16_t bf[5] = {0x3F80, 0xC040, 0x4049, 0x0001, 0xFF80};
    const float bv[5] = {1.0f, -3.0f, 3.140625f, 0x1p-133f, -INFINITY};
    unsigned char data[32];
    for (int i = 0; i < 11; i++) data[2 * i] = h[i] & 0xFF, data[2 * i + 1] = h[i] >> 8;
    for (int i = 0; i < 5; i++) data[22 + 2 * i] = bf[i] & 0xFF, data[22 + 2 * i + 1] = bf[i] >> 8;
    const char *hdr = "{\"half\":{\"dtype\":\"F16\",\"shape\":[11],\"data_offsets\":[0,22]},"
                      "\"__metadata__\":{\"format\":\"pt\"},"
                      "\"brain\":{\"dtype\":\"BF16\",\"shape\":[5,1],\"data_offsets\":[22,32]}}";
    char p[256];
    build_st(tpath(p, "half.safetensors"), hdr, strlen(hdr), data, 32);
    StFile f;
    ck_assert_int_eq(st_open(&f, p), 0);
    const StTensor *t = st_find(&f, "half");
    ck_assert(t && t->dtype == ST_F16 && t->numel == 11);
    float got[11];
    ck_assert_int_eq(st_read_f32(&f, t, got), 0);
    for (int i = 0; i < 11; i++) {
        if (isnan(hv[i])) ck_assert_msg(isnan(got[i]), "F16 %04X: got %g, want NaN", h[i], got[i]);
        else ck_assert_msg(got[i] == hv[i] && signbit(got[i]) == signbit(hv[i]), "F16 %04X: got %.9g, want %.9g",
                           h[i], got[i], hv[i]);
    }
    t = st_find(&f, "brain");
    ck_assert(t && t->dtype == ST_BF16 && t->ndim == 2 && t->numel == 5);
    ck_assert_int_eq(st_read_f32(&f, t, got), 0);
    for (int i = 0; i < 5; i++)
        ck_assert_msg(got[i] == bv[i], "BF16 %04X: got %.9g, want %.9g", bf[i], got[i], bv[i]);
    st_close(&f);

    /* lazy reads: a file truncated after st_open gives a clean short-read
     * error for the tensor cut off, while the one before it still reads
     * (tensors of 64 KiB each, beyond any stdio buffer) */
    float *big = calloc(2 * 16384, sizeof(float));
    big[0] = 5.0f;
    StOut two[2] = {{"first", 1, {16384}, big}, {"second", 1, {16384}, big + 16384}};
    ck_assert_int_eq(st_write(tpath(p, "two.safetensors"), two, 2), 0);
    ck_assert_int_eq(st_open(&f, p), 0);
    ck_assert_int_eq(truncate(p, (off_t)f.data_start + 65536 + 100), 0);
    ck_assert_int_eq(st_read_f32(&f, st_find(&f, "second"), big), -1);
    expect_error_has("short", p, "'second'", "short read", NULL);
    ck_assert_int_eq(st_read_f32(&f, st_find(&f, "first"), big), 0);
    ck_assert(big[0] == 5.0f);
    st_close(&f);
    free(big);
}
END_TEST

START_TEST(test_st_bad_inputs) {
    char p[256];
    StFile f;
    unsigned char zeros[64] = {0};

    ck_assert_int_eq(st_open(&f, tpath(p, "missing.safetensors")), -1);
    expect_error_has("missing", p, "cannot open", NULL);
    ck_assert_ptr_null(f.fp);

    write_bytes(tpath(p, "short.safetensors"), "\x10\0\0\0\0", 5);
    ck_assert_int_eq(st_open(&f, p), -1);
    expect_error_has("short", p, "5 bytes", "too short", NULL);

    build_st(tpath(p, "beyond.safetensors"), "{}", 1000, NULL, 0);
    ck_assert_int_eq(st_open(&f, p), -1);
    expect_error_has("beyond", p, "header length 1000", "beyond the end", NULL);

    build_st(tpath(p, "huge.safetensors"), "{}", UINT64_MAX, NULL, 0);
    ck_assert_int_eq(st_open(&f, p), -1);
    expect_error_has("huge", p, "beyond the end", NULL);

    /* a (sparse) 200 MB file whose header claims 150 MB: beyond the format's limit */
    build_st(tpath(p, "absurd.safetensors"), "{}", 150u << 20, NULL, 0);
    ck_assert_int_eq(truncate(p, 200 << 20), 0);
    ck_assert_int_eq(st_open(&f, p), -1);
    expect_error_has("absurd", p, "exceeds the format's limit", NULL);
    unlink(p);

    static const struct { const char *header; size_t data; const char *what, *also; } bad[] = {
        {"{\"a\": ", 0, "header: line 1, column 7", "expected a value"},
        {"[1, 2]", 0, "not a JSON object", NULL},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "missing \"dtype\""},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "missing \"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a'", "missing \"data_offsets\""},
        {"{\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "tensor 'ids'", "dtype I64 is not supported"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "shape[0] is -1"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12, "tensor 'a'", "shape[1] is 1.5, not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "not an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, "tensor 'a'",
         "hold 12 bytes, but shape [2, 2] of F32 needs 16"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,12]}}", 16, "tensor 'a'", "of BF16 needs 6"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, "tensor 'a'",
         "beyond the data section (16 bytes)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 15, "tensor 'a'",
         "beyond the data section (15 bytes)"},  /* one byte short */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 16, "tensor 'a'", "end before"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 16, "tensor 'a'", "[begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, "'a' [0, 16) and 'b' [8, 24)", "overlap"},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[3,7]}}", 8, "'a' [0, 4) and 'b' [3, 7)", "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'a'", "twice"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__", "not a string"},
        {"{\"a\":[1]}", 0, "tensor 'a'", "not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        build_st(tpath(p, name), bad[i].header, strlen(bad[i].header), zeros, bad[i].data);
        rf_clear_error();
        ck_assert_msg(st_open(&f, p) == -1, "case %zu (%s) was accepted", i, bad[i].header);
        ck_assert_ptr_null(f.fp);
        ck_assert_ptr_null(f.tensors);
        expect_error_has(bad[i].header, p, bad[i].what, bad[i].also, NULL);
    }
}
END_TEST

/* ------------------------------------------------------------ config.json */

static const char *MISTRAL_CFG =  /* Mistral-7B-Instruct-v0.3's config.json */
    "{\n  \"architectures\": [\"MistralForCausalLM\"],\n  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n  \"intermediate_size\": 14336,\n  \"max_position_embeddings\": 32768,\n"
    "  \"model_type\": \"mistral\",\n  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 8,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 1000000.0,\n"
    "  \"sliding_window\": null,\n  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.42.0.dev0\",\n  \"use_cache\": true,\n  \"vocab_size\": 32768\n}\n";

START_TEST(test_config_load) {
    char p[256];
    Config c;
    write_text(tpath(p, "mistral.json"), MISTRAL_CFG);
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert_int_eq(config_validate(&c, p), 0);
    ck_assert_str_eq(c.model_type, "mistral");
    ck_assert_int_eq(c.vocab_size, 32768);
    ck_assert_int_eq(c.hidden_size, 4096);
    ck_assert_int_eq(c.intermediate_size, 14336);
    ck_assert_int_eq(c.n_layers, 32);
    ck_assert_int_eq(c.n_heads, 32);
    ck_assert_int_eq(c.n_kv_heads, 8);
    ck_assert_int_eq(c.head_dim, 128);  /* 4096 / 32 */
    ck_assert_int_eq(c.max_position_embeddings, 32768);
    ck_assert(c.rms_norm_eps == 1e-5f && c.rope_theta == 1e6f);
    ck_assert_int_eq(c.tie_word_embeddings, 0);
    ck_assert_int_eq(c.sliding_window, 0);
    ck_assert(c.bos_token_id == 1 && c.eos_token_id == 2);

    /* Llama style: explicit head_dim (not hidden/heads), eos list, defaults for
     * num_key_value_heads and rope_theta; a llama has no sliding window. */
    write_text(tpath(p, "llama.json"),
               "{\"model_type\": \"llama\", \"hidden_size\": 512, \"intermediate_size\": 1376,\n"
               " \"num_hidden_layers\": 3, \"num_attention_heads\": 8, \"head_dim\": 32,\n"
               " \"vocab_size\": 1000, \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-06,\n"
               " \"tie_word_embeddings\": true, \"bos_token_id\": 0, \"eos_token_id\": [7, 8, 9],\n"
               " \"attention_bias\": false, \"mlp_bias\": false, \"rope_scaling\": null, \"sliding_window\": 4096}");
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert_int_eq(config_validate(&c, p), 0);
    ck_assert_str_eq(c.model_type, "llama");
    ck_assert(c.hidden_size == 512 && c.intermediate_size == 1376 && c.n_layers == 3 && c.n_heads == 8);
    ck_assert_int_eq(c.n_kv_heads, 8);
    ck_assert_int_eq(c.head_dim, 32);
    ck_assert(c.rope_theta == 10000.0f && c.rms_norm_eps == 1e-6f);
    ck_assert(c.tie_word_embeddings == 1 && c.sliding_window == 0);
    ck_assert(c.bos_token_id == 0 && c.eos_token_id == 7);
    ck_assert(c.vocab_size == 1000 && c.max_position_embeddings == 256);

    /* only the required keys: the defaults of transformers' MistralConfig (max_position_embeddings
     * 4096 * 32, rms_norm_eps 1e-6, rope_theta 10000, bos 1, eos 2, untied, num_key_value_heads 8,
     * sliding_window 4096) and LlamaConfig (2048, 1e-6, 10000, 1, 2, untied, as many kv heads as
     * heads, no window); head_dim hidden / heads in both */
    write_text(tpath(p, "bare_mistral.json"),
               "{\"model_type\": \"mistral\", \"hidden_size\": 256, \"intermediate_size\": 512,"
               " \"num_hidden_layers\": 2, \"num_attention_heads\": 16, \"vocab_size\": 100}");
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert_int_eq(config_validate(&c, p), 0);
    ck_assert(c.max_position_embeddings == 131072 && c.rms_norm_eps == 1e-6f && c.rope_theta == 10000.0f);
    ck_assert(c.bos_token_id == 1 && c.eos_token_id == 2 && c.tie_word_embeddings == 0);
    ck_assert(c.n_kv_heads == 8 && c.sliding_window == 4096 && c.head_dim == 16);
    write_text(tpath(p, "bare_llama.json"),
               "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 512,"
               " \"num_hidden_layers\": 2, \"num_attention_heads\": 16, \"vocab_size\": 100}");
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert_int_eq(config_validate(&c, p), 0);
    ck_assert(c.max_position_embeddings == 2048 && c.rms_norm_eps == 1e-6f && c.rope_theta == 10000.0f);
    ck_assert(c.bos_token_id == 1 && c.eos_token_id == 2 && c.tie_word_embeddings == 0);
    ck_assert(c.n_kv_heads == 16 && c.sliding_window == 0 && c.head_dim == 16);
    /* null is None: as many kv heads as heads, no window */
    write_text(tpath(p, "null_mistral.json"),
               "{\"model_type\": \"mistral\", \"hidden_size\": 256, \"intermediate_size\": 512,"
               " \"num_hidden_layers\": 2, \"num_attention_heads\": 16, \"vocab_size\": 100,"
               " \"num_key_value_heads\": null, \"sliding_window\": null}");
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert(c.n_kv_heads == 16 && c.sliding_window == 0);

    /* a Mistral sliding window, head_dim null */
    write_text(tpath(p, "sw.json"),
               "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"head_dim\": null,"
               " \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 1,"
               " \"vocab_size\": 50, \"sliding_window\": 4096}");
    ck_assert_int_eq(config_load(&c, p), 0);
    ck_assert(c.sliding_window == 4096 && c.head_dim == 16 && c.n_kv_heads == 1);
}
END_TEST

START_TEST(test_config_errors) {
    static const struct { const char *text, *what; } bad[] = {
        {"{\"model_type\": \"mistral\", \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
         " \"num_attention_heads\": 2, \"vocab_size\": 10}", "\"hidden_size\" is missing"},
        {"{\"model_type\": \"mistral\", \"hidden_size\": \"64\", \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
         " \"num_attention_heads\": 2, \"vocab_size\": 10}", "\"hidden_size\" is a string, not an integer"},
        {"{\"model_type\": \"mistral\", \"hidden_size\": 64.5, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
         " \"num_attention_heads\": 2, \"vocab_size\": 10}", "\"hidden_size\" is 64.5, not an integer"},
        {"{\"model_type\": \"gpt2\"}", "only 'mistral' and 'llama'"},
        {"{\"hidden_size\": 64}", "\"model_type\" is missing"},
        {"{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"llama3\"}}", "rope_scaling"},
        {"{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "hidden_act"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
         " \"num_attention_heads\": 2, \"vocab_size\": 10, \"tie_word_embeddings\": 1}", "tie_word_embeddings"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
         " \"num_attention_heads\": 2, \"vocab_size\": 10, \"eos_token_id\": []}", "eos_token_id"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64,", "line 1, column"},
        {"[]", "not an object"},
    };
    char p[256];
    Config c;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(tpath(p, "config.json"), bad[i].text);
        rf_clear_error();
        ck_assert_msg(config_load(&c, p) == -1, "case %zu accepted", i);
        expect_error_has(bad[i].text, p, bad[i].what, NULL);
    }
    ck_assert_int_eq(config_load(&c, tpath(p, "none.json")), -1);
    expect_error_has("none", p, "cannot open", NULL);

    /* config_validate: each broken rule names the key */
    Config ok;
    ck_assert_int_eq(config_preset(&ok, "tiny", 0), 0);
    ck_assert_int_eq(config_validate(&ok, "x.json"), 0);
    c = ok, c.n_kv_heads = 3;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("kv", "x.json", "not a multiple", NULL);
    c = ok, c.head_dim = 15;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("odd", "x.json", "head_dim 15 is odd", NULL);
    c = ok, c.hidden_size = 0;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("zero", "x.json", "hidden_size", NULL);
    c = ok, c.rms_norm_eps = 0;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("eps", "x.json", "rms_norm_eps 0 must be positive", NULL);
    c = ok, c.rope_theta = 0;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("theta", "x.json", "rope_theta 0 must be positive", NULL);
    c = ok, c.sliding_window = -1;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("window", "x.json", "sliding_window -1 is negative", NULL);
    c = ok, snprintf(c.model_type, sizeof c.model_type, "llama"), c.sliding_window = 8;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
    expect_error_has("llama window", "x.json", "on a llama model", NULL);
    c.sliding_window = 0;  /* the same llama without a window is fine */
    ck_assert_int_eq(config_validate(&c, "x.json"), 0);
    c = ok, c.eos_token_id = ok.vocab_size;
    ck_assert_int_eq(config_validate(&c, "x.json"), -1);
}
END_TEST

START_TEST(test_config_save) {
    char p[256];
    Config c, back;
    ck_assert_int_eq(config_preset(&c, "tiny", 0), 0);
    ck_assert_int_eq(config_save(&c, tpath(p, "config.json")), 0);
    char *text;
    size_t len;
    ck_assert_int_eq(rf_read_file(p, &text, &len), 0);
    /* what transformers' MistralConfig expects, written out by hand */
    const char *want[] = {"\"architectures\": [\"MistralForCausalLM\"]", "\"model_type\": \"mistral\"",
                          "\"torch_dtype\": \"float32\"", "\"hidden_act\": \"silu\"", "\"sliding_window\": null",
                          "\"rms_norm_eps\": 1e-05,", "\"rope_theta\": 10000.0,", "\"tie_word_embeddings\": true",
                          "\"hidden_size\": 64,", "\"intermediate_size\": 160,", "\"num_hidden_layers\": 2,",
                          "\"num_attention_heads\": 4,", "\"num_key_value_heads\": 2,", "\"head_dim\": 16,",
                          "\"vocab_size\": 256", "\"max_position_embeddings\": 512,", "\"bos_token_id\": 1,",
                          "\"eos_token_id\": 2,"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]), "config.json lacks %s:\n%s", want[i], text);
    Json j;
    ck_assert_int_eq(json_parse(&j, text, len, p), 0);
    json_free(&j);
    free(text);
    ck_assert_int_eq(config_load(&back, p), 0);
    ck_assert(!memcmp(&back, &c, sizeof c));
    /* Llama with a window size: sliding_window absent, Llama architecture */
    memset(c.model_type, 0, sizeof c.model_type);  /* the struct is compared bytewise */
    strcpy(c.model_type, "llama");
    c.tie_word_embeddings = 0;
    c.rope_theta = 500000.0f;
    c.rms_norm_eps = 1e-6f;
    ck_assert_int_eq(config_save(&c, p), 0);
    ck_assert_int_eq(rf_read_file(p, &text, &len), 0);
    ck_assert(strstr(text, "\"architectures\": [\"LlamaForCausalLM\"]") && !strstr(text, "sliding_window"));
    ck_assert(strstr(text, "\"rope_theta\": 500000.0,") && strstr(text, "\"rms_norm_eps\": 1e-06,"));
    ck_assert(strstr(text, "\"tie_word_embeddings\": false"));
    free(text);
    ck_assert_int_eq(config_load(&back, p), 0);
    ck_assert(!memcmp(&back, &c, sizeof c));
}
END_TEST

/* ------------------------------------------------------------ model folders */

static void tiny_model(Model *m, int tied, uint64_t seed) {
    Config c;
    ck_assert_int_eq(config_preset(&c, "tiny", 0), 0);
    c.tie_word_embeddings = tied;
    ck_assert_int_eq(model_alloc(m, &c), 0);
    model_init_random(m, seed);
    /* norms are 1 after init; make them distinct so a swap would show */
    for (size_t i = 0; i < (size_t)c.hidden_size; i++) m->final_norm[i] = 1.0f + 0.01f * (float)i;
}

static void assert_models_equal(const Model *a, const Model *b) {
    ck_assert(!memcmp(&a->cfg, &b->cfg, sizeof a->cfg));
    ck_assert_int_eq(a->n_params, b->n_params);
    ck_assert_uint_eq(a->total, b->total);
    for (int i = 0; i < a->n_params; i++) ck_assert_str_eq(a->spec[i].name, b->spec[i].name);
    ck_assert_msg(!memcmp(a->params, b->params, a->total * sizeof(float)), "parameters differ");
}

static void assert_zeroed(const Model *m) {
    ck_assert_ptr_null(m->params);
    ck_assert_ptr_null(m->spec);
    ck_assert_int_eq(m->n_params, 0);
}

START_TEST(test_model_roundtrip) {
    char d[128], p[256];
    for (int tied = 1; tied >= 0; tied--) {
        Model m, back;
        tiny_model(&m, tied, 42 + tied);
        snprintf(d, sizeof d, "%s/out/model%d", g_dir, tied);  /* parent folders created */
        ck_assert_int_eq(model_save(&m, d), 0);
        ck_assert_int_eq(model_load(&back, d), 0);
        assert_models_equal(&back, &m);
        /* the file holds Hugging Face names and shapes (tiny: C=64, I=160, V=256, kv=2*16) */
        StFile f;
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        ck_assert_int_eq(st_open(&f, p), 0);
        ck_assert_int_eq(f.n, 1 + 2 * 9 + 1 + !tied);
        const StTensor *t = st_find(&f, "model.layers.1.mlp.down_proj.weight");
        ck_assert(t && t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 160);
        t = st_find(&f, "model.layers.0.self_attn.k_proj.weight");
        ck_assert(t && t->shape[0] == 32 && t->shape[1] == 64);
        t = st_find(&f, "model.norm.weight");
        ck_assert(t && t->ndim == 1 && t->shape[0] == 64);
        ck_assert(tied ? !st_find(&f, "lm_head.weight") : st_find(&f, "lm_head.weight") != NULL);
        st_close(&f);
        model_free(&back);
        model_free(&m);
    }
}
END_TEST

/* A model folder whose safetensors file holds the given subset of m's tensors
 * (skip = a name to leave out), plus extra tensors. */
static void write_model_file(const Model *m, const char *path, const char *skip, const StOut *extra, int n_extra) {
    StOut *o = calloc((size_t)m->n_params + n_extra, sizeof *o);
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamSpec *s = &m->spec[i];
        if (skip && !strcmp(s->name, skip)) continue;
        o[n++] = (StOut){s->name, s->ndim, {s->shape[0], s->shape[1]}, m->params + s->offset};
    }
    for (int i = 0; i < n_extra; i++) o[n++] = extra[i];
    ck_assert_int_eq(st_write(path, o, n), 0);
    free(o);
}

START_TEST(test_model_load_errors) {
    char d[128], p[256];
    Model m, back;
    tiny_model(&m, 1, 7);
    snprintf(d, sizeof d, "%s/m", g_dir);

    ck_assert_int_eq(rf_mkdirs(d), 0);
    ck_assert_int_eq(model_load(&back, d), -1);  /* empty folder */
    expect_error_has("no config", d, "config.json", "cannot open", NULL);
    assert_zeroed(&back);

    ck_assert_int_eq(model_save(&m, d), 0);
    snprintf(p, sizeof p, "%s/config.json", d);
    char *text;
    size_t len;
    ck_assert_int_eq(rf_read_file(p, &text, &len), 0);
    write_bytes(p, text, len / 2);  /* truncated config.json */
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("truncated", p, "line", "column", NULL);
    assert_zeroed(&back);
    write_bytes(p, text, len);
    free(text);

    /* extra tensors (a tied lm_head, rotary buffers) are ignored */
    float junk[64 * 256] = {0}, inv[8] = {0};
    StOut extra[2] = {{"lm_head.weight", 2, {256, 64}, junk}, {"model.layers.0.self_attn.rotary_emb.inv_freq", 1, {8}, inv}};
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    write_model_file(&m, p, NULL, extra, 2);
    ck_assert_int_eq(model_load(&back, d), 0);
    assert_models_equal(&back, &m);
    model_free(&back);

    /* a missing tensor */
    write_model_file(&m, p, "model.layers.1.self_attn.v_proj.weight", NULL, 0);
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("missing", d, "'model.layers.1.self_attn.v_proj.weight'", "missing", NULL);
    assert_zeroed(&back);

    /* the config disagrees with the shapes: intermediate_size 128, file has 160 */
    write_model_file(&m, p, NULL, NULL, 0);
    Config c = m.cfg;
    c.intermediate_size = 128;
    snprintf(p, sizeof p, "%s/config.json", d);
    ck_assert_int_eq(config_save(&c, p), 0);
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("shape", "model.safetensors", "'model.layers.0.mlp.gate_proj.weight'", "[160, 64]",
                     "[128, 64]", NULL);
    assert_zeroed(&back);

    /* untied config: lm_head.weight is required */
    c = m.cfg;
    c.tie_word_embeddings = 0;
    ck_assert_int_eq(config_save(&c, p), 0);
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("lm_head", d, "'lm_head.weight'", "missing", NULL);
    assert_zeroed(&back);

    /* a config that fails config_validate */
    c = m.cfg;
    c.n_kv_heads = 3;
    ck_assert_int_eq(config_save(&c, p), 0);
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("validate", p, "not a multiple", NULL);
    assert_zeroed(&back);
    model_free(&m);
}
END_TEST

START_TEST(test_model_sharded) {
    char d[128], p[256];
    Model m, back;
    tiny_model(&m, 0, 11);
    snprintf(d, sizeof d, "%s/sharded", g_dir);
    ck_assert_int_eq(rf_mkdirs(d), 0);
    snprintf(p, sizeof p, "%s/config.json", d);
    ck_assert_int_eq(config_save(&m.cfg, p), 0);
    /* two shards: tensors [0, 9) and [9, n), named in the index as HF does */
    int split = 9;
    StOut *o = calloc((size_t)m.n_params, sizeof *o);
    RfBuf idx = {0};
    buf_printf(&idx, "{\"metadata\": {\"total_size\": %zu}, \"weight_map\": {", m.total * 4);
    for (int i = 0; i < m.n_params; i++) {
        const ParamSpec *s = &m.spec[i];
        o[i] = (StOut){s->name, s->ndim, {s->shape[0], s->shape[1]}, m.params + s->offset};
        buf_printf(&idx, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", s->name, i < split ? 1 : 2);
    }
    buf_printf(&idx, "}}");
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    ck_assert_int_eq(st_write(p, o, split), 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    ck_assert_int_eq(st_write(p, o + split, m.n_params - split), 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_bytes(p, idx.data, idx.len);
    ck_assert_int_eq(model_load(&back, d), 0);
    assert_models_equal(&back, &m);
    model_free(&back);

    /* a tensor absent from the weight_map */
    char *cut = strstr(idx.data, "\"model.norm.weight\"");
    ck_assert(cut);
    memcpy(cut, "\"model.norm.weigh_\"", 19);
    write_bytes(p, idx.data, idx.len);
    ck_assert_int_eq(model_load(&back, d), -1);
    expect_error_has("weight_map", d, "'model.norm.weight'", "weight_map", NULL);
    assert_zeroed(&back);

    /* model_save into this folder replaces the sharded layout */
    ck_assert_int_eq(model_save(&m, d), 0);
    ck_assert(access(p, F_OK) != 0);
    ck_assert_int_eq(model_load(&back, d), 0);
    assert_models_equal(&back, &m);
    model_free(&back);
    buf_free(&idx);
    free(o);
    model_free(&m);
}
END_TEST

/* ------------------------------------------------------------ suite */

Suite *io_suite(void) {
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, test_json_values);
    tcase_add_test(tc, test_json_escapes);
    tcase_add_test(tc, test_json_write_string);
    tcase_add_test(tc, test_json_nesting);
    tcase_add_test(tc, test_json_errors);
    tcase_add_test(tc, test_json_shared_tokenizer);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_memory_figures);
    suite_add_tcase(s, tc);

    tc = tcase_create("gzip");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_crc32);
    tcase_add_test(tc, test_gzip_fixtures);
    tcase_add_test(tc, test_gzip_by_hand);
    tcase_add_test(tc, test_gzip_corrupt);
    tcase_add_test(tc, test_gzip_plain_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_st_roundtrip);
    tcase_add_test(tc, test_st_half_types);
    tcase_add_test(tc, test_st_bad_inputs);
    suite_add_tcase(s, tc);

    tc = tcase_create("config");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_config_load);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_config_save);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_model_roundtrip);
    tcase_add_test(tc, test_model_load_errors);
    tcase_add_test(tc, test_model_sharded);
    suite_add_tcase(s, tc);
    return s;
}
