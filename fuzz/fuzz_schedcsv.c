/*
 * fuzz_schedcsv.c - libFuzzer target of the S2Sched loss-table reader
 * (s2sched.c, read_loss_csv) through `recfound sched`, standard output sent
 * to /dev/null.
 *
 * Input: one byte of options, then the CSV.  Option bits: 0 variant code,
 * 1 largest remainder, 2 --prior, 3-4 window {2, 3, 8, 64}, 5-6 warmup
 * {default, 0, 1, 5}, 7 also draw --plot (plot.c's svg_lines).
 */
#include "fuzz_util.h"

static int fuzz_schedcsv_one(const uint8_t *data, size_t size) {
    unsigned opt = size ? data[0] : 0;
    char path[600], svg[600];
    fuzz_write(fuzz_path(path, sizeof path, "losses.csv"), data + (size != 0), size ? size - 1 : 0);
    fuzz_path(svg, sizeof svg, "omega.svg");
    static const char *const windows[4] = {"2", "3", "8", "64"}, *const warmups[4] = {NULL, "0", "1", "5"};
    char *argv[16];
    int argc = 0;
    argv[argc++] = "sched";
    argv[argc++] = "--losses", argv[argc++] = path;
    argv[argc++] = "--variant", argv[argc++] = opt & 1 ? "code" : "paper";
    argv[argc++] = "--remainder", argv[argc++] = opt & 2 ? "largest" : "drop";
    if (opt & 4) argv[argc++] = "--prior";
    argv[argc++] = "--window", argv[argc++] = (char *)windows[opt >> 3 & 3];
    if (warmups[opt >> 5 & 3]) argv[argc++] = "--warmup", argv[argc++] = (char *)warmups[opt >> 5 & 3];
    if (opt & 128) argv[argc++] = "--plot", argv[argc++] = svg;
    argv[argc] = NULL;
    rf_clear_error();
    return fuzz_check_rc(fuzz_quiet(sched_main, argc, argv), "sched_main");
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_schedcsv_one(data, size);
    return 0;
}
#endif
