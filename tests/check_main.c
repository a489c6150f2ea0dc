/*
 * check_main.c - runs every Check suite; exits non-zero when anything fails.
 *
 * No OpenMP here: Check forks each test, and libgomp used in the parent
 * before a fork makes the children hang.  Set CK_RUN_SUITE=name to run one.
 */
#include <check.h>
#include <stdlib.h>

Suite *io_suite(void);
Suite *matmul_suite(void);
Suite *backbone_suite(void);
Suite *tmole_suite(void);
Suite *tokenizer_suite(void);
Suite *data_suite(void);
Suite *s2sched_suite(void);
Suite *merge_suite(void);
Suite *eval_suite(void);
Suite *fuzz_regressions_suite(void);
Suite *cli_suite(void);
Suite *mpi_suite(void);

int main(void) {
    SRunner *sr = srunner_create(io_suite());
    srunner_add_suite(sr, matmul_suite());
    srunner_add_suite(sr, backbone_suite());
    srunner_add_suite(sr, tmole_suite());
    srunner_add_suite(sr, tokenizer_suite());
    srunner_add_suite(sr, data_suite());
    srunner_add_suite(sr, s2sched_suite());
    srunner_add_suite(sr, merge_suite());
    srunner_add_suite(sr, eval_suite());
    srunner_add_suite(sr, fuzz_regressions_suite());
    srunner_add_suite(sr, cli_suite());
    srunner_add_suite(sr, mpi_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
