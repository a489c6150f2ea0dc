/*
 * recfound.h - the one shared header of RecFound in C.
 *
 * RecFound ("Generative Representational Learning of Foundation Models for
 * Recommendation") fine-tunes one decoder LLM on embedding and generative
 * recommendation tasks at once.  This header declares, file by file:
 *
 *   io.c        errors, gzip, JSON, safetensors, config.json, model folders (HF layout)
 *   matmul.c    the three matrix products of a linear layer (plain + fast twins)
 *   model.c     the Llama/Mistral decoder: forward, backward, losses, AdamW
 *   tokenizer.c Hugging Face tokenizer.json (BPE with byte fallback)
 *   data.c      the 13 tasks, the published dataset files, prompts (§3, App. B)
 *   tmole.c     §4.2   s2sched.c §4.3   merge.c §4.4   eval.c §5
 *   recfound.c  the command line and the training loop
 *
 * Conventions (see STYLE.md): functions take outputs first, then inputs, then
 * sizes; backward functions accumulate (+=) into gradients; a function that
 * can fail returns 0 on success and -1 on failure after calling rf_error().
 */
#ifndef RECFOUND_H
#define RECFOUND_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ errors */

/* rf_error formats one line ("FILE: position: problem") into the process-wide
 * error buffer and returns -1, so a failing function can `return rf_error(..)`.
 * main() prints rf_last_error() and exits non-zero.  This buffer, the
 * progress line's state (below) and the process's place in an MPI run
 * (dist.c: rank, size, collective timeout) are the library's only global
 * state besides the documented RNG seeds; the program adds one flag, set by
 * SIGINT/SIGTERM, that train and pretrain check between steps (recfound.c). */
int rf_error(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
const char *rf_last_error(void);
void rf_clear_error(void);
/* A progress line that rewrites itself ("\r..." on stderr), and its end: the
 * newline, written once, before the next line of output or an error (the
 * error printer calls rf_progress_end, so an error never lands on the end of a
 * progress line).  When stderr is not a terminal (a log file, a pipe), each
 * update is a line of its own instead, at most one every 10 seconds, and the
 * end writes the latest. */
void rf_progress(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
void rf_progress_end(void);
/* Seconds on a monotonic clock: the timer behind progress lines and benchmarks. */
double rf_now(void);

/* The sub-commands' options: a typed table where each flag writes straight
 * into a variable that holds its default.  type 's' string (const char *),
 * 'i' whole number (long, within ±INT_MAX), 'f' number (double), 'b' switch (int set to 1).
 * argv[0] is the sub-command.  Returns 0, 1 after printing --help (usage is
 * the line after "recfound CMD"), or -1 with rf_error set. */
typedef struct {
    const char *name;
    char type;
    void *target;
    const char *help;
} Flag;
int parse_flags(int argc, char **argv, const Flag *f, int n, const char *usage);
/* rf_error("CMD: missing required option NAME ...") when value is NULL. */
int need_flag(const char *cmd, const char *name, const char *value);
/* A numeric option's range: 0, or one line naming it ("--lr must be >= 0, got
 * -1"); lo_open makes the lower end exclusive, hi = INFINITY means no upper end. */
int check_range(const char *name, double v, double lo, int lo_open, double hi);
/* The largest --max-len any command takes (tokens per sequence): far above any
 * model's positions, and small enough for every buffer size computed from it. */
#define RF_MAX_LEN (1 << 20)

/* Read a whole file into a NUL-terminated buffer (caller frees). */
int rf_read_file(const char *path, char **out, size_t *len);
/* The memory this process may have, in bytes: the machine's, or its cgroup's
 * limit when that is lower (a container's --memory); *where says which
 * ("this machine's" or "this cgroup's").  mem_available: what a new
 * allocation can have (MemAvailable of /proc/meminfo, or less when the
 * cgroup's limit leaves less), -1 when the system does not say.  The parsers
 * behind them: text_field (a "key 123" or "key: 123 kB" line),
 * cgroup_limit_value ("max" or bytes) and cgroup_paths (/proc/self/cgroup). */
double mem_total(const char **where);
double mem_available(void);
double text_field(const char *text, const char *key);
double cgroup_limit_value(const char *text);
void cgroup_paths(const char *text, char *v1, char *v2, size_t cap);
/* gzip (RFC 1952) with DEFLATE (RFC 1951), written here from the RFCs: stored,
 * fixed and dynamic Huffman blocks; header fields FEXTRA, FNAME, FCOMMENT,
 * FHCRC; CRC-32 and ISIZE checked; members concatenated (zero padding after
 * the last is allowed).  The output is NUL-terminated; more than max_out bytes
 * is refused with an error, so a small hostile file cannot expand without
 * bound.  Errors: "NAME: byte OFFSET: problem". */
#define RF_GUNZIP_MAX ((size_t)256 << 20)  /* 256 MiB: the largest raw source expands to 6 MiB */
int rf_gunzip(char **out, size_t *out_len, const unsigned char *in, size_t n, size_t max_out, const char *name);
/* rf_read_file, decompressed when the name ends in ".gz" or the file starts
 * with the gzip magic 1f 8b (limit RF_GUNZIP_MAX). */
int rf_read_file_gz(const char *path, char **out, size_t *len);
/* CRC-32 of RFC 1952 §8 over data[0..n); crc = 0 to start, or a previous
 * result to continue.  rf_crc32(0, "123456789", 9) = 0xCBF43926. */
uint32_t rf_crc32(uint32_t crc, const void *data, size_t n);
/* rf_crc32 of a whole file, read in chunks: the fingerprint of a run's step-0
 * adapters, which every checkpoint of the run records and `merge` compares
 * with its --base. */
int rf_file_crc32(const char *path, uint32_t *crc);
/* Write a file atomically: temp name in the same folder, fsync, rename.  A crash
 * at any moment leaves either the old complete file or the new one.  A missing
 * folder is created. */
int rf_write_file_atomic(const char *path, const void *data, size_t len);
/* mkdir -p; 0 when the folder exists afterwards. */
int rf_mkdirs(const char *path);
/* Whether the folder of `path` exists or rf_mkdirs could make it: its nearest
 * existing ancestor must be a folder this process may write in; nothing is
 * created.  Asked before long work whose output is written at the end (tokenizer
 * train), so that a bad --out fails at once and a refused input leaves no empty
 * folder behind. */
int rf_can_make_folder_of(const char *path);
/* An output that replaces nothing already saved: 0 when `path` does not exist
 * or is an empty folder; otherwise one error line naming the file, or the
 * first entries of the folder, and ending with `hint` (what to do instead;
 * NULL: "choose another --out, or remove it first"). */
int rf_new_output(const char *path, const char *hint);

/* -------------------------------------------------------------------- JSON */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct Json {
    JsonType type;
    int boolean;          /* JSON_BOOL */
    double number;        /* JSON_NUMBER */
    int integer;          /* JSON_NUMBER: written without fraction or exponent (Python's json reads an int) */
    char *string;         /* JSON_STRING: UTF-8, NUL-terminated (may hold \0: see len) */
    size_t len;           /* JSON_STRING: byte length */
    struct Json *items;   /* JSON_ARRAY / JSON_OBJECT: values, in order */
    char **keys;          /* JSON_OBJECT: keys[i] names items[i] */
    size_t count;         /* JSON_ARRAY / JSON_OBJECT: number of items */
} Json;

/* Parse text[0..len) (RFC 8259, UTF-8 validated, \uXXXX with surrogate pairs).
 * `name` is used in the error line: "NAME: line L, column C: problem". */
int json_parse(Json *out, const char *text, size_t len, const char *name);
void json_free(Json *v);
const Json *json_get(const Json *obj, const char *key); /* NULL if absent or not an object */
/* Append the JSON encoding of a UTF-8 string (with quotes) to a growing buffer. */
typedef struct { char *data; size_t len, cap; } RfBuf;
void buf_append(RfBuf *b, const char *s, size_t n);
void buf_printf(RfBuf *b, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void json_write_string(RfBuf *b, const char *s, size_t n);
void buf_free(RfBuf *b);

/* ------------------------------------------------------------- safetensors */

typedef enum { ST_F32, ST_F16, ST_BF16 } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    int64_t numel;
    uint64_t begin, end;  /* byte offsets relative to the start of the data section */
} StTensor;

typedef struct {
    char *path;
    FILE *fp;
    uint64_t header_len;  /* the 8-byte little-endian length */
    uint64_t data_start;  /* 8 + header_len */
    uint64_t file_size;
    StTensor *tensors;
    int n;
} StFile;

/* Open and validate a .safetensors file: header length within the file, valid
 * JSON, known dtypes, shapes agree with byte ranges, ranges inside the file and
 * not overlapping.  Tensor data is read lazily (st_read_f32), so a 7B model is
 * never held twice. */
int st_open(StFile *f, const char *path);
const StTensor *st_find(const StFile *f, const char *name);
/* Read a tensor converted to float32 into dst[numel]. */
int st_read_f32(const StFile *f, const StTensor *t, float *dst);
/* Read a BF16 tensor as it is stored into dst[numel]; any other dtype is an error. */
int st_read_bf16(const StFile *f, const StTensor *t, uint16_t *dst);
void st_close(StFile *f);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;
} StOut;
/* Write F32 tensors (atomically, see rf_write_file_atomic). */
int st_write(const char *path, const StOut *tensors, int n);

/* ------------------------------------------------------------ the decoder */

typedef struct {
    int vocab_size;
    int hidden_size;        /* C */
    int intermediate_size;  /* I, SwiGLU width */
    int n_layers;
    int n_heads;            /* H query heads */
    int n_kv_heads;         /* KV heads (GQA when < n_heads) */
    int head_dim;           /* hd; hidden_size / n_heads unless config.json says otherwise */
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    int tie_word_embeddings;
    int sliding_window;     /* 0 = none */
    int bos_token_id, eos_token_id;
    char model_type[32];    /* "mistral" or "llama" */
} Config;

int config_load(Config *c, const char *path);            /* config.json */
int config_save(const Config *c, const char *path);
int config_validate(const Config *c, const char *path);  /* sizes positive, divisible, ... */

/* The parameter table: every tensor, its Hugging Face name, shape and offset
 * in the one flat parameter buffer (llm.c style).  Order: embed_tokens, then
 * per layer input_layernorm, q,k,v,o_proj, post_attention_layernorm,
 * gate,up,down_proj; then model.norm, then lm_head (absent when tied). */
enum { P_ATTN_NORM, P_Q, P_K, P_V, P_O, P_MLP_NORM, P_GATE, P_UP, P_DOWN, P_PER_LAYER };

typedef struct {
    char name[128];
    int ndim;
    int shape[2];
    size_t offset;  /* in floats */
    size_t numel;
} ParamSpec;

typedef struct {
    Config cfg;
    int n_params;           /* entries of spec */
    ParamSpec *spec;
    size_t total;           /* floats in params */
    float *params;
    /* named views into params */
    float *embed;           /* [V, C] */
    float **layer;          /* layer[l * P_PER_LAYER + P_x] */
    float *final_norm;      /* [C] */
    float *lm_head;         /* [V, C]; == embed when tied */
    /* bf16 weights (model_load_bf16): the matrices stay in bfloat16, as a BF16
     * checkpoint stores them, in params16 at the table's offsets; their float
     * views above are NULL and params holds the norm vectors alone.  Widening
     * bf16 to float is exact, so every result equals that of the float copy;
     * the weights cannot train (the backbone stays frozen). */
    uint16_t *params16;     /* NULL for float weights */
    const uint16_t *embed16, *lm_head16;
    const uint16_t **layer16;
} Model;

/* bfloat16 is the top half of a float32. */
static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Append a tensor to a parameter table; returns its offset in the flat buffer. */
size_t param_table_add(ParamSpec *spec, int *n, size_t *total, const char *name, int rows, int cols);
/* Build the parameter table for cfg and allocate params (zeroed). */
int model_alloc(Model *m, const Config *cfg);
/* The same with bf16 weights (see Model): params16 for the matrices. */
int model_alloc_bf16(Model *m, const Config *cfg);
/* The two halves of model_alloc: the parameter table (spec, n_params,
 * total), then the weights it describes, float or (bf16 = 1) bf16. */
int model_alloc_table(Model *m, const Config *cfg);
int model_alloc_weights(Model *m, int bf16);
/* The float view of parameter-table entry i (NULL: a matrix kept in bf16). */
float *model_float_view(const Model *m, int i);
void model_free(Model *m);
/* y (+)= x W^T for a matrix of the model, given as its float (w) or, with
 * bf16 weights, its bf16 (w16) pointer; layer_bf16 fills H with layer l's
 * bf16 matrices (all NULL for float weights); model_embed looks up token rows. */
void weight_nt(float *out, const float *a, const float *w, const uint16_t *w16, int M, int K, int N, int acc);
void layer_bf16(const Model *m, int l, const uint16_t *H[P_PER_LAYER]);
void model_embed(const Model *m, float *out, const int *ids, int N);
/* Seeded random initialisation: N(0, 0.02) matrices, norms = 1 (HF defaults). */
void model_init_random(Model *m, uint64_t seed);
/* A model folder: config.json + model.safetensors (or sharded with
 * model.safetensors.index.json).  F32/F16/BF16 in; F32 out. */
int model_load(Model *m, const char *dir);
/* The same, keeping the matrices in bf16 (see Model); every matrix of the
 * checkpoint must be stored as BF16. */
int model_load_bf16(Model *m, const char *dir);
/* The loader of the commands that leave the backbone frozen (score, embed,
 * generate, eval, loss, train): a checkpoint whose matrices are all BF16 keeps
 * them in bf16 when their float32 copy would take more than half of this
 * machine's memory (one line on stderr, prefixed by `who`, says so), else
 * model_load.  RECFOUND_WEIGHTS=f32 or bf16 forces either (bf16 only for such
 * a checkpoint); auto is the default. */
int model_load_frozen(Model *m, const char *dir, const char *who);
int model_save(const Model *m, const char *dir);
/* Presets: "tiny", "small", "mistral-7b".  vocab <= 0 keeps the preset's. */
int config_preset(Config *c, const char *name, int vocab);

/* ----------------------------------------------------------- matmul.c */
/* The three products of a linear layer y = x W^T with W in PyTorch [out, in]
 * orientation.  `acc` = 0 overwrites out, 1 adds to it.
 *   matmul_nt: out[M,N] (+)= a[M,K] . b[N,K]^T    forward   y = x W^T
 *   matmul_nn: out[M,N] (+)= a[M,K] . b[K,N]      backward  dx = dy W
 *   matmul_tn: out[M,N] (+)= a[K,M]^T . b[K,N]    backward  dW = dy^T x
 * Each has a plain twin (*_ref) kept beside it and tested equal. */
void matmul_nt(float *out, const float *a, const float *b, int M, int K, int N, int acc);
void matmul_nn(float *out, const float *a, const float *b, int M, int K, int N, int acc);
void matmul_tn(float *out, const float *a, const float *b, int M, int K, int N, int acc);
/* matmul_nt and matmul_nn with b in bfloat16 (a weight of a bf16 model): each
 * value is widened while it is packed, so the result is bit for bit that of
 * matmul_nt / matmul_nn on the widened matrix. */
void matmul_nt_bf16(float *out, const float *a, const uint16_t *b, int M, int K, int N, int acc);
void matmul_nn_bf16(float *out, const float *a, const uint16_t *b, int M, int K, int N, int acc);
void matmul_nt_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc);
void matmul_nn_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc);
void matmul_tn_ref(float *out, const float *a, const float *b, int M, int K, int N, int acc);
/* Any strides: out[i*ldo + j] (+)= sum_k a[i*a_rs + k*a_cs] b[k*b_rs + j*b_cs]; plain twin beside it. */
void matmul_strided(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b, size_t b_rs,
                    size_t b_cs, int M, int K, int N, int acc);
void matmul_strided_ref(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b,
                        size_t b_rs, size_t b_cs, int M, int K, int N, int acc);
/* matmul_strided for attention under a causal mask, where parts of a product
 * are known to be zero or are not wanted.  With d = diag:
 *   TRI_OUT_LOWER  only out(i, j) with j <= i + d is wanted (S = Q K^T): tiles
 *                  wholly above that line are skipped and left as they were;
 *   TRI_A_LOWER    the caller promises a(i, k) = 0 for k > i + d (O = P V):
 *                  row i's sum stops there;
 *   TRI_A_UPPER    the caller promises a(i, k) = 0 for k < i - d (dK = dS^T Q):
 *                  row i's sum starts there.
 * What it computes is what matmul_strided computes: the terms it skips are
 * exact zeros.  The cut is made per micro-tile, so a tile on the line still
 * sums (or writes) its whole width. */
typedef enum { TRI_NONE, TRI_OUT_LOWER, TRI_A_LOWER, TRI_A_UPPER } TriKind;
typedef struct {
    TriKind kind;
    int diag;
} Tri;
void matmul_strided_tri(float *out, size_t ldo, const float *a, size_t a_rs, size_t a_cs, const float *b,
                        size_t b_rs, size_t b_cs, int M, int K, int N, int acc, Tri tri);
/* `recfound bench-matmul`: GFLOP/s of the fast products on the training shapes. */
int bench_matmul_main(int argc, char **argv);

/* ------------------------------------------------------------ model.c */

typedef enum { ATTN_CAUSAL = 0, ATTN_BIDIRECTIONAL = 1 } AttnMode;

/* A batch of B right-padded sequences of length T. */
typedef struct {
    int B, T;
    const int *ids;       /* [B*T] token ids (pad positions hold any valid id) */
    const int *lengths;   /* [B] valid tokens per row */
    const int *tasks;     /* [B] task id of each row (TMoLE routing); NULL without adapters */
    uint64_t dropout_seed; /* adapter dropout stream of this pass; 0 = no dropout (evaluation) */
    const int *row_ids;   /* [B] each row's place in the whole batch, which keys its dropout; NULL = 0..B-1 */
} Batch;

typedef struct Tmole Tmole;  /* tmole.c: the task-routed LoRA experts of §4.2 */

/* Activations of one forward pass, kept for backward; sized once from (B, T)
 * and reused across steps (act_ensure grows them only when needed). */
typedef struct Acts Acts;
Acts *acts_new(const Model *m, int B, int T);
int acts_ensure(Acts **a, const Model *m, int B, int T);
/* The same for a forward with no backward (score, embed, eval): no attention
 * probabilities are kept, only a block scratch of T x T floats per thread. */
int acts_ensure_forward(Acts **a, const Model *m, int B, int T);
void acts_free(Acts *a);
size_t acts_bytes(const Acts *a);
size_t acts_bytes_for(const Config *c, int B, int T);  /* the same, before allocating */
const float *acts_hidden(const Acts *a);  /* [B*T*C] final-norm hidden states */
float *acts_dhidden(Acts *a);             /* gradient w.r.t. them, [B*T*C] */

/* Forward through the decoder to the final-norm hidden states.  With tm, every
 * adapted projection adds its TMoLE term (eq. 2), routed by b->tasks; the
 * causal pass is the generative pass and the bidirectional pass the embedding
 * pass, which decides the expert mask of eq. (1). */
void model_forward(const Model *m, const Tmole *tm, Acts *a, const Batch *b, AttnMode mode);
/* LM head + cross-entropy.  w[B*T] is the weight of the loss of predicting
 * ids[t+1] at position t (0 where nothing is predicted).  Returns
 * sum_t w_t * CE_t; fills tok_loss[B*T] with CE_t (may be NULL); when
 * backward != 0 adds d(loss)/d(hidden) into acts_dhidden and d/d(lm_head). */
double model_lm_loss(const Model *m, Acts *a, const Batch *b, const float *w,
                     float *tok_loss, float *dparams, int backward);
/* Logits for all positions into out[B*T*V] (for tests and generation). */
void model_logits(const Model *m, const Acts *a, float *out, int BT);
/* Backward from acts_dhidden: into dparams (all backbone weights) when not
 * NULL, and into dadapter (tm's parameters) when tm and dadapter are given.
 * The frozen-backbone mode of RecFound passes dparams = NULL.  Clears dhidden. */
void model_backward(const Model *m, const Tmole *tm, Acts *a, const Batch *b, AttnMode mode,
                    float *dparams, float *dadapter);
/* Mean pooling over positions [from, length) and L2 normalisation: emb[B*C]. */
void pool_forward(float *emb, float *norms, const float *hidden, const Batch *b, const int *from, int C);
void pool_backward(float *dhidden, const float *demb, const float *emb, const float *norms,
                   const Batch *b, const int *from, int C);

/* The operations, each a forward/backward pair (backward accumulates). */
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int C);
/* sign = +1 applies RoPE; sign = -1 applies its inverse (= its backward). */
void rope_apply(float *x, const float *cos_t, const float *sin_t, int B, int T, int nh, int hd, int sign);
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const int *lengths, int B, int T, int H, int KV, int hd, AttnMode mode, int window);
/* The same output without keeping the probabilities (a forward with no
 * backward): each block's P lives in `scratch`, T x T floats for each of at
 * most `threads` threads. */
void attention_forward_scratch(float *out, float *scratch, int threads, const float *q, const float *k,
                               const float *v, const int *lengths, int B, int T, int H, int KV, int hd,
                               AttnMode mode, int window);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                        const float *k, const float *v, const int *lengths, int B, int T, int H, int KV, int hd,
                        AttnMode mode, int window);
/* The plain twins of the two above (one query row at a time), tested equal. */
void attention_forward_ref(float *out, float *att, const float *q, const float *k, const float *v,
                           const int *lengths, int B, int T, int H, int KV, int hd, AttnMode mode, int window);
void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                            const float *k, const float *v, int B, int T, int H, int KV, int hd);
void swiglu_forward(float *act, const float *gate, const float *up, size_t n);
void swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n);
void swiglu_forward_ref(float *act, const float *gate, const float *up, size_t n);   /* plain twins */
void swiglu_backward_ref(float *dgate, float *dup, const float *dact, const float *gate, const float *up, size_t n);
/* y = e^x (y may be x): the vector exp of the softmaxes and SiLU (max relative
 * error 7.4e-8 with AVX-512, see model.c) and its plain twin, expf. */
void exp_array(float *y, const float *x, size_t n);
void exp_array_ref(float *y, const float *x, size_t n);
void embedding_forward(float *out, const int *ids, const float *table, int N, int C);
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);
/* RoPE tables of an Acts (for tests of rope_apply): [T * hd/2] each. */
const float *acts_rope_cos(const Acts *a);
const float *acts_rope_sin(const Acts *a);

/* InfoNCE with in-batch negatives (§4.1): query i's target is passage i; the
 * gradients with respect to the unit embeddings are added to dq, dp (may be NULL). */
double infonce(float *dq, float *dp, const float *q, const float *p, int Q, int P, int C, float tau);

/* Per-token weights for "mean next-token CE over all predicted tokens". */
void lm_weights_mean(float *w, const Batch *b);

/* AdamW with decoupled weight decay (Loshchilov & Hutter), bias-corrected. */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float *m, *v;
    size_t n;
    long t;
} AdamW;
int adamw_init(AdamW *o, size_t n, float lr, float beta1, float beta2, float eps, float wd);
void adamw_step(AdamW *o, float *params, const float *grads, float lr);
void adamw_step_ref(AdamW *o, float *params, const float *grads, float lr);  /* plain twin: the same bits */
void adamw_free(AdamW *o);
void sgd_step(float *params, const float *grads, size_t n, float lr);
/* Scale grads so that their global L2 norm is at most max_norm; returns the norm before. */
double clip_grad_norm(float *grads, size_t n, double max_norm);
/* Linear warmup for `warmup` steps, then linear decay to 0 at `total`. */
float lr_schedule(float lr, long step, long warmup, long total);

/* ------------------------------------------------------------ memory */
/* Zeroed memory for large float arrays, released only by free_big: a block of
 * 2 MiB or more starts on a 2 MiB boundary and is advised for transparent huge
 * pages.  NULL when out of memory. */
void *calloc_big(size_t n, size_t size);
void free_big(void *p);

/* ------------------------------------------------------------ rng */
/* xorshift-style 64-bit generator: every random choice of the program flows
 * from a seed given on the command line. */
typedef struct { uint64_t s; } Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
float rng_uniform(Rng *r);     /* [0, 1) */
float rng_normal(Rng *r);      /* N(0, 1) */

/* ------------------------------------------------------------ tmole.c */
/* TMoLE (§4.2): on every adapted projection W0 (q, k, v, o of each layer by
 * default), N LoRA experts A_j [r, in], B_j [out, r] in three groups
 * (embedding | shared | generative) and a task-wise router, an MLP from the
 * task embedding e_i to N logits:
 *   v_i = Softmax(Mask(MLP(e_i)))                                  eq. (1)
 *   o   = W0 x + sum_j v_ij (alpha / r) B_j A_j dropout_j(x)       eq. (2)
 * The mask sets -inf on the generative experts in the embedding pass and on the
 * embedding experts in the generative pass; shared experts are never masked.
 * n_experts = 1 with no router is plain LoRA (the "w/o TMoLE" ablation). */
enum { PROJ_Q, PROJ_K, PROJ_V, PROJ_O, N_PROJ };
#define TMOLE_MAX_EXPERTS 16
#define TMOLE_MAX_HIDDEN 4
#define TMOLE_TASK_ROWS 14   /* the task-embedding table of the authors' code (ids 0..13) */

typedef struct {
    int n_emb, n_shared, n_gen;  /* expert groups, in this order; paper 2/2/2, authors' code 3/0/3 */
    int rank;                    /* r (16) */
    float alpha;                 /* scaling alpha / r (alpha 64) */
    float dropout;               /* per-expert input dropout (0.1) */
    int task_dim;                /* E, the task-embedding size (512) */
    int n_hidden;                /* router MLP hidden layers (0: one Linear with bias, as the authors' code) */
    int hidden[TMOLE_MAX_HIDDEN];
    int router;                  /* 0: no router, every expert weight 1 (plain LoRA when N = 1) */
    int targets;                 /* bit PROJ_x set: that projection is adapted (default q, k, v, o) */
} TmoleConfig;

void tmole_config_default(TmoleConfig *c);  /* the paper's settings */
void tmole_config_lora(TmoleConfig *c);     /* "w/o TMoLE": one LoRA expert, no router */
int tmole_n_experts(const TmoleConfig *c);

/* Where one adapted projection's tensors sit in the flat parameter buffer. */
typedef struct {
    int layer, proj, in, out;
    size_t A[TMOLE_MAX_EXPERTS], B[TMOLE_MAX_EXPERTS];   /* offsets of A_j [r, in], B_j [out, r] */
    size_t hw[TMOLE_MAX_HIDDEN + 1], hb[TMOLE_MAX_HIDDEN + 1]; /* router layers; the last gives N logits */
} TmoleSite;

struct Tmole {
    TmoleConfig cfg;
    int n_layers;
    int n_sites;
    TmoleSite *site;            /* site[layer * N_PROJ + proj]; in = 0 when not adapted */
    ParamSpec *spec;            /* PEFT-style names (weights/README.md) */
    int n_params;
    size_t total;
    float *params;
    size_t task_emb;            /* offset of task_embedding.weight [14, E] */
};

/* The checks of a configuration that need no model (expert split, rank,
 * router sizes, dropout): 0, or one error line.  tmole_alloc runs them too. */
int tmole_config_check(const TmoleConfig *c);
int tmole_alloc(Tmole *t, const TmoleConfig *c, const Config *model);
void tmole_free(Tmole *t);
/* The authors' initialisation: A kaiming-uniform (U(-1/sqrt(in), 1/sqrt(in))),
 * B = 0, router weights N(0, 1), router biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * task embedding xavier-normal. */
void tmole_init(Tmole *t, uint64_t seed);
const TmoleSite *tmole_site(const Tmole *t, int layer, int proj); /* NULL when not adapted */
/* eq. (1): the routing distribution v[N] of one site for a task in a pass. */
void tmole_route(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *v);
/* adapter_model.safetensors + adapter_config.json in a folder. */
int tmole_save(const Tmole *t, const char *dir);
int tmole_load(Tmole *t, const char *dir, const Config *model);

/* Activations of the adapters for one forward (kept for backward). */
typedef struct TmoleActs TmoleActs;
TmoleActs *tmole_acts_new(const Tmole *t, int B, int T);
void tmole_acts_free(TmoleActs *ta);
void tmole_acts_begin(TmoleActs *ta, const Tmole *t, const Batch *b, AttnMode pass);
/* y[BT, out] += the TMoLE term of eq. (2) for input x[BT, in]. */
void tmole_forward(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *y, const float *x,
                   const Batch *b, AttnMode pass);
/* Given dy: dx += d/dx, grads (layout of t->params) += d/d(A, B, router, task embedding). */
void tmole_backward(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *dx, float *grads,
                    const float *dy, const float *x, const Batch *b, AttnMode pass);
/* The router and task-embedding part of backward, once per pass after every site. */
void tmole_backward_router(const Tmole *t, TmoleActs *ta, float *grads, AttnMode pass);
/* The plain twins of tmole_forward / tmole_backward (row by row), tested equal. */
void tmole_forward_ref(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *y, const float *x,
                       const Batch *b, AttnMode pass);
void tmole_backward_ref(const Tmole *t, TmoleActs *ta, const TmoleSite *s, float *dx, float *grads,
                        const float *dy, const float *x, const Batch *b, AttnMode pass);
/* Adapter dropout's keep decisions for elements key .. key+n-1 of expert j at
 * site `site` of a pass seeded `seed`: bit i % 32 of bits[i / 32] = 1 when
 * element key + i is kept (probability 1 - p).  Plain twin tested equal. */
void tmole_dropout_bits(uint32_t *bits, int n, uint64_t seed, int site, int j, size_t key, float p);
void tmole_dropout_bits_ref(uint32_t *bits, int n, uint64_t seed, int site, int j, size_t key, float p);
/* `recfound route --adapter DIR [--out PREFIX]` (argv[0] = "route"). */
int route_main(int argc, char **argv);
/* Fold one task's mixture into W[out, in] += sum_j v_j (alpha/r) B_j A_j (inference). */
void tmole_fold(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *W);
/* The same mixture left unfolded, on n input rows: y[n, out] += sum_j v_j
 * (alpha/r) (x A_j^T) B_j^T, one expert at a time through u[n, rank]. */
void tmole_apply(const Tmole *t, const TmoleSite *s, int task, AttnMode pass, float *y, const float *x, int n,
                 float *u);

/* ------------------------------------------------------------ tokenizer.c */
/* A Hugging Face tokenizer.json of the Llama/Mistral SentencePiece-BPE kind:
 * added tokens split out of the raw text, each other piece normalised
 * (Prepend "▁", Replace " " -> "▁", or the Metaspace pre-tokenizer), BPE by
 * merge rank with byte fallback (<0xXX>), and the decoder chain
 * Replace/ByteFallback/Fuse/Strip.  Encoding and decoding never change the
 * Tokenizer, so one loaded Tokenizer can serve many threads. */
typedef struct TokTables TokTables;    /* hash maps and pipeline steps (tokenizer.c) */
typedef struct {
    int n_vocab;          /* ids are 0 .. n_vocab-1 (model vocab and added tokens) */
    char **piece;         /* piece[id]: UTF-8 token text (NULL for an unused id) */
    int *piece_len;       /* its byte length */
    int n_merges;         /* merge r joins merge_a[r] + merge_b[r] (rank r) */
    int *merge_a, *merge_b;
    int unk_id, bos_id, eos_id;  /* -1 when absent ("<unk>", "<s>", "</s>") */
    int byte_id[256];     /* id of <0xXX>, -1 when absent */
    int byte_fallback, fuse_unk, ignore_merges;
    TokTables *tab;
} Tokenizer;

int tok_load(Tokenizer *t, const char *path);
/* The same from an already parsed tokenizer.json; `name` is used in errors. */
int tok_load_json(Tokenizer *t, const Json *root, const char *name);
void tok_free(Tokenizer *t);
int tok_id(const Tokenizer *t, const char *piece, size_t len); /* -1 when absent */
/* Encode text[0..len) into *ids (malloc'd, caller frees), *n_ids tokens.
 * add_special = 1 applies the post-processor (Mistral: <s> in front). */
int tok_encode(const Tokenizer *t, const char *text, size_t len, int add_special, int **ids, int *n_ids);
/* Decode ids into *out (malloc'd, NUL-terminated, caller frees). */
int tok_decode(const Tokenizer *t, const int *ids, int n_ids, char **out, size_t *out_len);
/* Train a tokenizer of the Mistral kind on n UTF-8 texts (lens may be NULL:
 * NUL-terminated): <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>, characters, then BPE
 * merges learned by the most-frequent-pair rule until vocab_size tokens. */
int tok_train(Tokenizer *t, const char *const *texts, const size_t *lens, int n, int vocab_size);
/* Write a tokenizer.json that tok_load (and Hugging Face tokenizers) read back. */
int tok_save(const Tokenizer *t, const char *path);
/* `recfound tokenizer encode|decode|train ...` (argv[0] = "tokenizer"). */
int tokenizer_main(int argc, char **argv);

/* ------------------------------------------------------------ data.c */
/* The 13 tasks of §3 with the ids, names and metrics of the authors' code. */
enum { TASK_U2I, TASK_Q2I, TASK_I2I, TASK_QR, TASK_SR, TASK_PRP, TASK_SA, TASK_AVE,
       TASK_PM, TASK_UP, TASK_IP, TASK_AP, TASK_AG, N_TASKS };
typedef enum { KIND_EMB = 0, KIND_GEN = 1 } TaskKind;
typedef struct {
    int id;                  /* the code's task id (0..12) */
    const char *name;        /* the `task` string of a record, e.g. "Emb_user" */
    const char *short_name;  /* the paper's abbreviation, e.g. "U2I" */
    TaskKind kind;
    const char *metric;      /* evaluation metric of the code */
    long size[3];            /* paper Table 1: train, validation, test */
} TaskInfo;
extern const TaskInfo TASKS[N_TASKS];
int task_by_name(const char *name);        /* -1 when unknown */
int task_by_short(const char *short_name); /* "U2I", ... (case-insensitive); -1 when unknown */
enum { SPLIT_TRAIN, SPLIT_EVAL, SPLIT_TEST, N_SPLITS };
extern const char *const SPLIT_NAMES[N_SPLITS]; /* "train", "eval", "test" */

/* One passage of an embedding record: [instruction, text].  In
 * item_embedding_test.json the text may be a LIST of texts (is_list = 1). */
typedef struct {
    char *instr;     /* "" when the record has none */
    char **texts;    /* n_texts >= 1 texts */
    int n_texts;
    int is_list;     /* [1] was a JSON list */
    int is_string;   /* the passage was a bare string (no instruction) */
} Passage;

/* One record of the published files (official-code.md §2). */
typedef struct {
    int task;                 /* TASK_* */
    TaskKind kind;
    Passage query;            /* embedding: query, pos[], neg[] */
    Passage *pos, *neg;
    int n_pos, n_neg;
    char **turns;             /* generative: text[0] prompt, text[1] answer, ... */
    int n_turns;
    char *id;                 /* optional "id" (NULL when absent) */
    int id_is_number;         /* the id was a JSON number (kept as its text) */
    char *source;             /* optional "source" (NULL when absent) */
    long line;                /* line (jsonl) or element (json array) it came from */
} Record;
void record_free(Record *r);
int record_copy(Record *dst, const Record *src);
int record_equal(const Record *a, const Record *b); /* 1 when every field is equal */
/* Append the one-line JSON of a record (no newline), fields in the published order. */
void record_to_json(RfBuf *b, const Record *r);

/* Problems of bad input, counted separately when skip_bad is on. */
enum { BAD_JSON, BAD_FIELD, BAD_TASK, BAD_UTF8, BAD_EMPTY, N_BAD };
extern const char *const BAD_NAMES[N_BAD];

/* Streaming reader of a .jsonl file (one record per line) or of a .json array
 * (item_embedding_test.json, parsed whole).  data_next returns 1 and fills r
 * (caller frees with record_free), 0 at the end, -1 on bad input (one rf_error
 * line "FILE: line N: problem").  With skip_bad, bad records are skipped and
 * counted in n_bad[] instead. */
typedef struct {
    char *path;
    FILE *fp;
    char *line;
    size_t cap;
    long lineno;
    int skip_bad;
    long n_bad[N_BAD];
    Json arr;                 /* JSON-array files */
    size_t arr_i;
    int is_array;
} DataReader;
int data_open(DataReader *rd, const char *path, int skip_bad);
int data_next(DataReader *rd, Record *r);
void data_close(DataReader *rd);
/* Parse one record from JSON text; `where` names file and line for errors.
 * Returns 0, or -1 with *bad set to the BAD_* kind. */
int record_parse(Record *r, const char *text, size_t len, const char *where, int *bad);
/* "skipped 3 bad records in FILE: 2 bad JSON, 1 unknown task" (nothing when none). */
void data_report_skipped(const DataReader *rd, FILE *out);

/* Per-task pools of records (the loader of a whole split). */
typedef struct { Record *recs; size_t n, cap; } Pool;
typedef struct { Pool pool[N_TASKS]; long n_bad[N_BAD]; } Dataset;
int dataset_load_file(Dataset *d, const char *path, int skip_bad);           /* appends */
/* Embedding_dataset_SPLIT.jsonl + Generative_dataset_SPLIT.jsonl of a folder. */
int dataset_load_split(Dataset *d, const char *dir, const char *split, int skip_bad);
int pool_push(Pool *p, const Record *r);  /* takes ownership of r's memory */
void dataset_free(Dataset *d);

/* Writers of the same format, atomic (temp file + rename on close). */
typedef struct { FILE *fp; char *path, *tmp; int is_array; long n; } DataWriter;
int data_writer_open(DataWriter *w, const char *path, int is_array);
int data_writer_put(DataWriter *w, const Record *r);
int data_writer_close(DataWriter *w);   /* 0, or -1 (the temp file is removed) */
void data_writer_abort(DataWriter *w);

/* Prompt formats (official-code.md §3); each fills two parts so that the loss
 * mask / pooling range can be found after tokenisation.  See data.c. */
void format_gen(RfBuf *prompt, RfBuf *answer, const char *user, const char *answer_text);
typedef enum { EMB_FMT_TRAIN = 0, EMB_FMT_CODE_TEST = 1 } EmbFormat;
void format_emb(RfBuf *prefix, RfBuf *text, const char *instr, const char *passage, EmbFormat fmt);

/* Bytes of Python whitespace (str.isspace: ASCII and the Unicode spaces) that
 * start at s, or 0; what str.strip() and str.split() cut at. */
int py_space_at(const unsigned char *s, size_t n);
/* Python's s.strip(): [*b, *e) is s[0..n) without leading and trailing whitespace. */
void py_strip(const char *s, size_t n, size_t *b, size_t *e);

/* Seeded Fisher-Yates shuffle and a pool iterator that draws without
 * replacement and reshuffles when exhausted. */
uint64_t rng_below(Rng *r, uint64_t n);   /* uniform in [0, n), unbiased */
void shuffle_idx(size_t *idx, size_t n, Rng *r);
typedef struct { size_t *order; size_t n, pos; long epoch; Rng rng; } PoolIter;
int pool_iter_init(PoolIter *it, size_t n, uint64_t seed);
size_t pool_iter_next(PoolIter *it);
void pool_iter_free(PoolIter *it);

/* Tokenised samples (Tokenizer above).  A generative sample trains on tokens
 * [start, len) (the answer and </s>); an embedding sample pools over them. */
typedef struct { int *ids; int len, start, task; } Sample;
typedef struct { long dropped, truncated, boundary_merges; } SampleStats;
int sample_gen(Sample *s, const Tokenizer *tok, const Record *r, int max_len, SampleStats *st);
int sample_emb(Sample *s, const Tokenizer *tok, const char *instr, const char *text, int task, int max_len,
               EmbFormat fmt, SampleStats *st);
void sample_free(Sample *s);
/* A right-padded batch of samples and its per-row and per-token arrays. */
typedef struct { int cap_rows, cap_len; int *ids, *lengths, *tasks, *start; float *weights; } TokBatch;
int batch_alloc(TokBatch *tb, int rows, int max_len);
void batch_free(TokBatch *tb);
Batch batch_fill(TokBatch *tb, Sample *const *samples, int n, int pad);

/* Every training text of a dataset, formatted as the model sees it. */
int dataset_for_each_text(const Dataset *d, int (*fn)(void *ctx, const char *s, size_t n), void *ctx);

/* `recfound synth` and `recfound build-data` (argv[0] is the sub-command). */
int synth_main(int argc, char **argv);
int build_data_main(int argc, char **argv);

/* ------------------------------------------------------------ s2sched.c */
/* S2Sched (§4.3): one scheduler per task group b ∈ {E, G}.  Per training step
 * t = 0, 1, ...: measure the validation loss of every task on the current
 * model, sched_update(), then sched_counts() for each group gives n_i, the
 * samples of task i in batch t.  See s2sched.c for the reading of eq. (4)/(5). */
enum { SCHED_PAPER = 0, SCHED_CODE = 1 };  /* eq. (3)-(6) as printed / the authors' code */
enum { REM_DROP = 0, REM_LARGEST = 1 };    /* leftover of n_i = ⌊B ω_i⌋: dropped / largest remainder */
typedef struct {
    int window;           /* L (paper: 64) */
    double tau;           /* τ of eq. (5) (paper: 10) */
    long warmup;          /* steps with uniform ω (paper: ς = 10% of the total steps) */
    int variant;          /* SCHED_PAPER or SCHED_CODE */
    int remainder;        /* REM_DROP or REM_LARGEST */
    int batch[2];         /* B^(E), B^(G), indexed by TaskKind */
    const double *prior;  /* SCHED_CODE: dataset-size prior by task id (NULL = none) */
    FILE *log;            /* warnings are printed here when not NULL */
} SchedConfig;
/* Guarded situations of one update (Sched.warn) or since init (Sched.total). */
typedef struct {
    long zero_slopes;   /* groups where Σ|α| = 0 in eq. (3), (4) or (5): ratio taken as 0 */
    long single_task;   /* groups with a single task (ω = 1) */
    long no_loss;       /* tasks without a finite loss in the window: left out, keep ω = 1/m */
    long bad_loss;      /* NaN/Inf (or non-positive first) losses skipped */
    long fallback;      /* non-finite ω replaced by uniform (never expected) */
} SchedWarn;
typedef struct {
    TaskKind kind;
    int m;                       /* tasks in the group */
    int task[N_TASKS];           /* their task ids, ascending */
    double loss0[N_TASKS];       /* L_i(0): first finite positive loss (NaN until seen) */
    long n, cap;                 /* recorded steps */
    long n_sched, cap_sched;     /* post-warmup steps */
    double *nloss;               /* [n][m] ℓ_i(s) = L_i(s)/L_i(0), NaN = skipped */
    double *maxloss;             /* [n] max_i ℓ_i(s) (code variant) */
    double *slope;               /* [n_sched][m] α_i(k), NaN = task absent */
    double *slope_max;           /* [n_sched] max_i α_i(k)   (eq. 5) */
    double *slope_absmax;        /* [n_sched] max_i |α_i(k)| (eq. 5) */
    double *gslope, *gslope_abs; /* [n_sched] code variant: A_k = slope of max_i ℓ_i, |A_k| */
    /* results of the last update, indexed like task[] */
    double alpha[N_TASKS], g_inter[N_TASKS], g_intra[N_TASKS], omega[N_TASKS];
    double beta;                 /* β_b(t) (code variant: d) */
    int active[N_TASKS];         /* 0 = no finite loss in the window (excluded) */
} SchedGroup;
typedef struct {
    SchedConfig cfg;
    SchedGroup group[2];  /* [KIND_EMB], [KIND_GEN] */
    long t;               /* steps recorded so far (index of the next step) */
    int scheduled;        /* the last update was past warmup */
    SchedWarn warn, total;
} Sched;

void sched_config_default(SchedConfig *c, long total_steps); /* L=64, τ=10, ς=10%, B=16, paper, drop */
long sched_warmup_steps(double frac, long total_steps);      /* ⌈frac · total⌉ */
/* tasks[n_tasks]: task ids taking part (NULL = all 13). */
int sched_init(Sched *s, const SchedConfig *cfg, const int *tasks, int n_tasks);
void sched_free(Sched *s);
/* val_loss[N_TASKS] by task id (NaN = not measured, e.g. empty validation set). */
int sched_update(Sched *s, const double *val_loss);
double sched_weight(const Sched *s, int task);  /* ω of a task (0 when not scheduled) */
/* n[N_TASKS] by task id for the tasks of one group; avail[N_TASKS] = samples
 * each task can still give (NULL = unlimited).  Returns Σ n_i. */
int sched_counts(const Sched *s, TaskKind kind, const long *avail, int *n);

/* The pieces, on plain arrays of the m <= N_TASKS tasks of one group. */
double ls_slope(const double *y, int n);  /* OLS slope against x = 0..n-1, NaN skipped */
int sched_gamma_inter(double *g, const double *alpha, int m);                       /* eq. (3) */
int sched_gamma_intra(double *g, const double *alpha, const double *abs_sum,
                      const int *win_len, int m);                                   /* eq. (4) */
double sched_beta(const double *amax, const double *absmax, long t, double tau, int *zero); /* eq. (5) */
void sched_omega(double *w, const double *g_inter, const double *g_intra, double beta, int m); /* eq. (6) */
void sched_code_weights(double *w, const double *g_inter, const double *g_intra, double d, int m);
void sched_code_prior_floor(double *w, const double *prior, int m);
int sched_count_samples(int *n, const double *w, const long *avail, int m, int B, int policy);
/* `recfound sched --losses FILE.csv ...` (argv[0] = "sched"). */
int sched_main(int argc, char **argv);

/* ------------------------------------------------------------ merge.c */
/* TIES merging (Yadav et al. 2023) of adapter checkpoints, tensor by tensor:
 * task vectors tau_k = theta_k - theta_base, each merged entry by entry.
 * Inputs must be finite (merge_main rejects NaN/inf before merging). */
enum { MERGE_TIES = 0, MERGE_MEAN = 1, MERGE_TASK_ARITHMETIC = 2 };
enum { TIES_ORDER_TIES = 0,   /* canonical: trim -> elect -> disjoint mean */
       TIES_ORDER_CODE = 1 }; /* the authors' code: elect -> drop disagreeing -> trim -> mean */
/* Entries kept by trimming: floor(density * n), clamped to [0, n]. */
size_t ties_keep_count(size_t n, double density);
/* Zero all but the ties_keep_count(n, density) entries of largest |tau|; ties
 * at the threshold keep the lower flat index.  scratch: n floats. */
void ties_trim(float *tau, size_t n, double density, float *scratch);
/* sign[i] = sign(sum_k tau[k][i]) in {-1, 0, +1}. */
void ties_elect(signed char *sign, const float *const *tau, int K, size_t n);
/* merged[i] = mean of the non-zero tau[k][i] whose sign is sign[i] (0 if none). */
void ties_disjoint_mean(float *merged, const float *const *tau, const signed char *sign, int K, size_t n);
/* out = base + lambda * TIES(tau_1..tau_K) in the given order (TIES_ORDER_*).
 * Returns 0, or -1 (rf_error) when out of memory.  out may alias base. */
int ties_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n, double density,
               float lambda, int order);
/* out = base + mean_k tau_k (the plain average of the checkpoints). */
void mean_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n);
/* out = base + lambda * sum_k tau_k. */
void task_arithmetic_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n,
                           float lambda);
/* `recfound merge --base RUN/step-0 CKPT... --out DIR [...]` (argv[0] = "merge"). */
int merge_main(int argc, char **argv);
/* `recfound bench-merge`: times a 5-checkpoint merge of small-preset TMoLE adapters. */
int bench_merge_main(int argc, char **argv);

/* ------------------------------------------------------------ plot.c */
/* Dependency-free SVG charts, written atomically.  svg_lines: n_series lines
 * y[s][0..n) over x[0..n) (NaN = gap), with axes, ticks, labels and a legend.
 * svg_heatmap: values[n_rows * n_cols] (row-major) coloured on [vmin, vmax]
 * with a colour scale; NaN cells are grey. */
int svg_lines(const char *path, const char *title, const char *xlabel, const char *ylabel, int n_series,
              const char *const *names, const double *x, const double *const *y, int n);
int svg_heatmap(const char *path, const char *title, int n_rows, int n_cols, const char *const *row_labels,
                const char *const *col_labels, const double *values, double vmin, double vmax);

/* ------------------------------------------------------------ eval.c */
/* §5 evaluation as the authors' code measures it (official-code.md §8, §9):
 * the metrics, greedy generation with a KV cache, embedding inference, and
 * the `eval`, `metrics` and `generate` commands. */

/* One task's score; `score` is the paper's number (F1, Recall@1, ...). */
typedef struct {
    double score, precision, recall, accuracy;
    long n;        /* records scored */
    long invalid;  /* outputs of the wrong form, counted as wrong */
    long skipped;  /* records that could not be scored (unparsable answer) */
} MetricResult;
enum { AVE_PREC_CORRECT = 0, AVE_PREC_CODE = 1 };  /* AVE precision denominator */
/* AP, PM: binary F1 with "yes" positive; output.lower().strip() must be yes/no. */
void metric_binary_yes(MetricResult *r, const char *const *out, const char *const *ans, long n);
/* SA, PRP: macro F1 over the first letter of the stripped output (A-E). */
void metric_letter_f1(MetricResult *r, const char *const *out, const char *const *ans, long n);
/* SR: Recall@1, the stripped output must be exactly one letter A-T. */
void metric_recall1(MetricResult *r, const char *const *out, const char *const *ans, long n);
/* AVE: micro F1 over {attribute, value, source} triples (see eval.c). */
void metric_ave(MetricResult *r, const char *const *out, const char *const *ans, long n, int prec_mode);
/* 1 when a predicted and a gold triple match (the authors' rule). */
int ave_match(const Json *pred, const Json *gold);
/* Python's repr() of a float ("1.0", "0.1", "1e-05"), for ave_match's str(value). */
void py_float_repr(char *buf, size_t n, double x);
/* SQuAD's token F1 of one pair, and its mean over n pairs (QR, AG, UP, IP). */
double token_f1(const char *pred, const char *gold);
void metric_token_f1(MetricResult *r, const char *const *out, const char *const *ans, long n);
/* The metric of the authors' code for a generative task (token F1 for free text). */
void metric_for_task(MetricResult *r, int task, const char *const *out, const char *const *ans, long n,
                     int ave_prec);

/* Ranking of n candidates by score (descending; ties put relevant candidates
 * after irrelevant ones, as the code's reversed argsort does).  k <= 0: no cutoff. */
double rank_mrr(const float *score, const int *rel, int n, int k);
double rank_ndcg(const float *score, const int *rel, int n, int k);
/* The authors' negatives: k distinct indices of [0, n) drawn from r (partial
 * Fisher-Yates).  Returns 0, 1 when n < k (nothing drawn), -1 out of memory. */
int pool_sample(size_t *pick, size_t n, int k, Rng *r);

/* Greedy decoding: the maximum new tokens of the authors' code per task. */
int gen_max_new(int task);
/* A model whose adapted projections hold W0 + sum_j v_j (alpha/r) B_j A_j for
 * one task and pass (tmole_fold); the other tensors are shared with `base`.
 * When the folded float32 projections would not fit in the memory available,
 * fold_task says so on stderr (prefixed by `who`) and leaves the adapters
 * unfolded instead: tm is then set, and the cached decoder made by
 * kv_new_folded adds sum_j v_j (alpha/r) B_j (A_j x) after each adapted
 * projection (the same function, rounded differently).  unfold_task makes
 * such a model whatever the memory. */
typedef struct { Model m; float *own; const Tmole *tm; int task; AttnMode pass; } FoldedModel;
int fold_task(FoldedModel *f, const Model *base, const Tmole *tm, int task, AttnMode pass, const char *who);
int unfold_task(FoldedModel *f, const Model *base, const Tmole *tm, int task, AttnMode pass);
void fold_free(FoldedModel *f);
/* Incremental causal decoder with a KV cache of `cap` positions; kv_new_folded
 * for a FoldedModel (its unfolded adapters included). */
typedef struct KvDecoder KvDecoder;
KvDecoder *kv_new(const Model *m, int cap);
KvDecoder *kv_new_folded(const FoldedModel *f, int cap);
void kv_free(KvDecoder *d);
void kv_reset(KvDecoder *d);
int kv_pos(const KvDecoder *d);
/* Feed ids[0..n) at positions pos .. pos+n-1; logits of every fed position
 * into out[n*V] (all = 1) or of the last one into out[V] (all = 0; out may be NULL). */
int kv_forward(KvDecoder *d, const int *ids, int n, float *out, int all);
/* The residual stream after decoder layer `layer` (1..L; Hugging Face's
 * hidden_states[layer]) of ids[0..n), fed as kv_forward does: hid[n*C]. */
int kv_hidden(KvDecoder *d, const int *ids, int n, int layer, float *hid);
/* A prompt of n ids cut to leave room for *max_new new tokens in a cache of cap
 * positions: ids[0] (<s>) stays and the oldest tokens after it go, as training
 * cuts its prompts; when not even two prompt tokens would be left, *max_new
 * shrinks instead.  Returns the prompt's new length.
 *   Example: ids 1 10 11 12 13 14, cap 5, max_new 2 -> 1 13 14 (3). */
int fit_prompt(int *ids, int n, int cap, int *max_new);
/* Greedy continuation of prompt[0..n) until eos or max_new tokens: gen[0..*n_gen)
 * (eos excluded; caller frees *gen). */
int generate_greedy(KvDecoder *d, const int *prompt, int n, int max_new, int eos, int **gen, int *n_gen);

/* Embeddings of n (instruction, text) pairs of one task: the embedding pass
 * (bidirectional, routed by `task`), mean-pooled over the text tokens, unit
 * length; emb[n*C].  Rows dropped by sample_emb get zeros (counted in *dropped).
 * progress: NULL, or the start of a progress line ("eval: U2I candidates")
 * rewritten after each batch. */
int embed_texts(float *emb, const Model *m, const Tmole *tm, const Tokenizer *tok, const char *const *instr,
                const char *const *text, int n, int task, EmbFormat fmt, int max_len, int batch,
                long *dropped, const char *progress);

/* Table 3's embedding protocols, on vectors from any source: `eval` embeds with
 * the model; the tests give each text a vector written by hand.  embed() fills
 * out[n*dim] with the vectors of n (instruction, text) pairs of a task, in a
 * format (queries: qfmt; candidates: EMB_FMT_TRAIN), counting texts it had to
 * drop in *dropped; `what` names them for progress ("queries"). */
typedef int (*EmbedFn)(void *ctx, float *out, const char *const *instr, const char *const *text, int n, int task,
                       EmbFormat fmt, long *dropped, const char *what);
typedef struct {
    EmbedFn embed;
    void *ctx;
    int dim;
    long limit;        /* records per task at most (0: all) */
    long every;        /* the authors' pools: every N-th test record */
    long negatives;    /* the authors' pools: negatives drawn per query */
    long seed;         /* of those draws */
    EmbFormat qfmt;    /* query format: EMB_FMT_TRAIN, or the authors' test format */
    int code_fmt;      /* candidates without instruction, as the authors' script */
    int sel[N_TASKS];  /* tasks to evaluate */
} EmbEval;
/* The results of one task under both protocols. */
typedef struct {
    double code;              /* MRR (U2I, Q2I) or NDCG (I2I), no cutoff, the authors' pools */
    long code_n, code_skipped;
    double mrr20, ndcg20;     /* full-corpus retrieval */
    long full_n, corpus;
    long dropped;             /* texts the embedder dropped */
} EmbResult;
/* The authors' pools (official-code.md §8) over the I2I records i2i and the
 * U2I and Q2I test records of d, for every selected task; and full-corpus
 * retrieval @20 of task t over the records p.  0, or -1 with rf_error set. */
int emb_code_protocol(const EmbEval *e, const Pool *i2i, const Dataset *d, EmbResult *res);
int emb_full_protocol(const EmbEval *e, int t, const Pool *p, EmbResult *res);

/* `recfound eval | metrics | generate` (argv[0] = the sub-command). */
int eval_main(int argc, char **argv);
int metrics_main(int argc, char **argv);
int generate_main(int argc, char **argv);

/* ------------------------------------------------------------ dist.c */

/* Data-parallel training over MPI (`make MPI=1`, `mpirun -np P recfound train`);
 * without MPI one rank and identity collectives.  Collectives return 0 or -1
 * with rf_error set, and give every rank the same bits. */
int dist_init(int *argc, char ***argv);
void dist_finalize(void);
void dist_abort(int code);            /* stop every rank (an error on one of them) */
int dist_rank(void);
int dist_size(void);
int dist_local_size(void);           /* ranks on this machine, this one included */
int dist_lead(void);                  /* rank 0: the one that writes files and prints progress */
void dist_share(long n, long *begin, long *end);   /* this rank's contiguous block of n items */
int dist_sum_floats(float *x, size_t n, const char *what);
int dist_sum_doubles(double *x, size_t n, const char *what);
int dist_max_int(int *x, const char *what);
/* rows[n][width], this rank's dist_share(n) block filled in place: all rows on every rank after. */
int dist_gather_rows(float *rows, long n, long width, const char *what);

#endif
