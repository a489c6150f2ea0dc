# RecFound in C.  `make` builds ./recfound; `make check` runs the Check suites;
# `make bench` measures against PyTorch; `make fixtures` regenerates the
# PyTorch reference fixtures (never part of `make check`).
#   NATIVE=0    build without -march=native
#   SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer build (separate objects)
#   MPI=1       data-parallel training over MPI: mpicc, objects in build-mpi, binary build-mpi/recfound
CC      ?= gcc
PYTHON  ?= /usr/bin/python3
NATIVE  ?= 1
SANITIZE ?= 0
MPI     ?= 0

CFLAGS  = -std=c99 -O3 -fopenmp -Wall -Wextra -D_POSIX_C_SOURCE=200809L -D_FILE_OFFSET_BITS=64
ifeq ($(NATIVE),1)
CFLAGS += -march=native
endif
LDLIBS  = -lm
BUILD   = build
# -O2, not -O1: the sanitizer checks are the same, but at -O1 the matmul
# micro-kernel's accumulator arrays stay on the instrumented stack and the cli
# suite's training tests run about twice as long (CI runs this build too).
ifeq ($(SANITIZE),1)
CFLAGS := $(filter-out -O3,$(CFLAGS)) -O2 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
BUILD   = build-san
endif
ifeq ($(MPI),1)
CC      = mpicc
CFLAGS += -DRF_MPI
BUILD   = build-mpi
endif

CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -lpthread)

# The library: every top-level .c except the entry point.
LIB_SRC  = io.c matmul.c model.c tokenizer.c data.c tmole.c s2sched.c merge.c eval.c plot.c dist.c
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC = $(wildcard tests/*.c)
TEST_OBJ = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%.o)
BIN      = $(if $(filter 1,$(SANITIZE) $(MPI)),$(BUILD)/recfound,recfound)

.PHONY: all check bench demo real-demo ablation fixtures fuzz clean
all: $(BIN)

$(BUILD)/%.o: %.c recfound.h | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/tests/test_fuzz_regressions.o: $(wildcard fuzz/*.c) fuzz/fuzz_util.h
$(BUILD)/tests/%.o: tests/%.c recfound.h tests/check_util.h | $(BUILD)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -I. -c $< -o $@
$(BUILD):
	mkdir -p $(BUILD)/tests

$(BIN): $(BUILD)/recfound.o $(LIB_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/run_tests: $(TEST_OBJ) $(LIB_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

# The suites run the binary too (cli tests), so both are built first.
# OMP_PROC_BIND: keep OpenMP threads on separate cores (see main() in recfound.c).
# With mpicc installed, the MPI build is made too and the mpi suite runs it
# (it skips with a message otherwise).
MPICC := $(if $(filter 00,$(SANITIZE)$(MPI)),$(shell command -v mpicc 2>/dev/null))
check: $(BIN) $(BUILD)/run_tests $(if $(MPICC),build-mpi/recfound)
	OMP_PROC_BIND=true RECFOUND_BIN=./$(BIN) $(if $(MPICC),RECFOUND_MPI_BIN=./build-mpi/recfound) ./$(BUILD)/run_tests

ifneq ($(MPI),1)
build-mpi/recfound: $(wildcard *.c) recfound.h
	$(MAKE) MPI=1 BUILD=build-mpi BIN=build-mpi/recfound build-mpi/recfound
endif

bench: recfound
	./scripts/bench.sh

# The main job: a whole RecFound run on the synthetic world, nothing downloaded.
demo: recfound
	./scripts/demo.sh

# The same pipeline on the dataset built from the real raw sources (../shared/data/raw).
real-demo: recfound
	./scripts/real_demo.sh

fixtures:
	$(PYTHON) tests/reference/make_fixtures.py tests/fixtures
	$(PYTHON) tests/reference/make_tmole_fixtures.py tests/fixtures/tmole
	$(PYTHON) tests/reference/make_gz_fixtures.py tests/fixtures/gz
	$(PYTHON) tests/reference/make_metric_fixtures.py tests/fixtures/metrics
	cd tests/reference && npm ci && node tokenizer_cases.mjs ../fixtures/tokenizer

# The paper's Table 4 at small scale (several trainings per seed: up to an hour).
ablation: recfound
	./scripts/ablation.sh

# libFuzzer targets for every reader of outside input (needs clang; see fuzz/README.md).
fuzz:
	$(MAKE) -C fuzz run SECONDS=$(or $(SECONDS),20) SEED=$(or $(SEED),1)

clean:
	rm -rf build build-san build-mpi recfound
	-$(MAKE) -C fuzz clean
