# Thin wrapper over CMake/CTest.  `make demo` and `make test` are the whole
# set-up on a fresh Debian machine: they install missing packages first.
NPROC := $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release -DEML_WERROR=ON
FUZZ_SECONDS ?= 20

.PHONY: all deps build demo test test-fast test-asan bench fuzz crashtest clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(NPROC)

demo: build
	@bash scripts/demo.sh $(BUILD)

# Every test: the release build, then the AddressSanitizer + UBSan build.
test: test-fast test-asan

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j2

test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DEML_WERROR=ON \
	    -DEML_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j$(NPROC)
	@cd build-asan && \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --output-on-failure -j2 -LE slow

bench: build
	@bash scripts/bench.sh $(BUILD)

# 300 SIGKILL-and-resume trials of the training-state mirror.
CRASH_TRIALS ?= 300
crashtest: build
	@bash tests/test_crash.sh $(BUILD)/enclaveml . $(CRASH_TRIALS)

fuzz:
	@bash scripts/install-deps.sh --fuzz
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DEML_FUZZ=ON \
	    -DEML_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-fuzz -j$(NPROC)
	@for f in build-fuzz/fuzz/fuzz_*; do \
	    name=$$(basename $$f); corpus=fuzz/corpus/$${name#fuzz_}; \
	    mkdir -p build-fuzz/corpus-$$name; \
	    echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 -artifact_prefix=build-fuzz/ \
	        build-fuzz/corpus-$$name $$( [ -d $$corpus ] && echo $$corpus ) \
	        >build-fuzz/$$name.log 2>&1 || { tail -n 40 build-fuzz/$$name.log; exit 1; }; \
	    tail -n 1 build-fuzz/$$name.log; \
	done

clean:
	rm -rf build build-asan build-fuzz
