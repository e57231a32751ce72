# Two commands for a new user: `make demo` (the main job) and `make test`.
# Each creates .venv and installs xfer into it on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xfer-installed
# The local CPU build, installed before xfer so its `torch>=2.1` range is met without a multi-GB CUDA download.
TORCH ?= torch==2.13.0
# The editable install maps the package's modules when it is made: adding or removing a module reinstalls.
MODULES := $(VENV)/.xfer-modules
$(shell mkdir -p $(VENV) && find xfer -name '*.py' | sort > $(MODULES).new && (cmp -s $(MODULES).new $(MODULES) || mv $(MODULES).new $(MODULES)); rm -f $(MODULES).new)
SOURCES := pyproject.toml CMakeLists.txt $(MODULES) $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.inc csrc/cuda/*.cu)

.PHONY: demo test lint install bench clean asan onnx-oldest

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/xfer demo

# The suite on one worker per core (pytest-xdist), at most TEST_JOBS: on 2 cores it takes ~10 min instead of ~14.
TEST_JOBS ?= 4
test: lint
	$(BIN)/python -m pytest -n auto --maxprocesses $(TEST_JOBS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check xfer tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_test_pass.py

clean:
	rm -rf build $(VENV) $(OLD) .pytest_cache

# The kernel fuzz test under AddressSanitizer: a separate build of xfer._C, loaded through XFER_C_LIBRARY.
# libstdc++ is preloaded too, or ASan's __cxa_throw interceptor finds nothing to wrap in a Python process.
ASAN_PRELOAD := $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libstdc++.so)
asan: $(STAMP)
	$(BIN)/python -m pip install -q "pybind11>=2.12"
	cmake -S . -B build/asan -DXFER_ASAN=ON -DXFER_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython_EXECUTABLE=$(abspath $(BIN)/python) -Dpybind11_DIR=$$($(BIN)/python -m pybind11 --cmakedir) >/dev/null
	cmake --build build/asan -j2 >/dev/null
	XFER_C_LIBRARY=$$(ls build/asan/_C*.so) LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  $(BIN)/python -c "from xfer.preprocess import _C; print('kernel under AddressSanitizer:', _C.__file__)"
	XFER_C_LIBRARY=$$(ls build/asan/_C*.so) LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  $(BIN)/python -m pytest -p no:cacheprovider tests/test_preprocess.py tests/test_front.py \
	  -k "fuzz or hostile or threads or reference or read_only or bad_layers or from_images or from_a_list or box_by_eight or preprocess_file or from_file"

# The hostile-ONNX tests under the oldest onnx the package allows (its own external-data checks are weaker):
# xfer's checks must hold there too. A small venv of its own; xfer comes from the source tree and the built kernel.
ONNX_OLDEST ?= onnx==1.17.0
OLD := .venv-onnx-oldest
onnx-oldest: $(STAMP)
	test -x $(OLD)/bin/python || $(PYTHON) -m venv $(OLD)
	$(OLD)/bin/python -m pip install -q "$(ONNX_OLDEST)" "numpy<2.3" pytest
	XFER_C_LIBRARY=$$($(BIN)/python -c "import sys, xfer; print(sys.modules['xfer._C'].__file__)") PYTHONPATH=$(CURDIR) \
	  $(OLD)/bin/python -m pytest -q -p no:cacheprovider --noconftest -c /dev/null tests/test_hostile_onnx.py
