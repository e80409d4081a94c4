# Two commands do everything on a fresh machine:  make demo  and  make test.
# Each creates (or reuses) .venv, installs the package with its extras, and fetches missing data.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# On machines whose pip is capped to the torch wheels on local disk (/etc/xdg/pip), use those;
# anywhere else any recent release will do. Override with: make TORCH_SPEC="torch==X torchvision==Y"
TORCH_SPEC ?= $(shell test -f /etc/xdg/pip/constraints.txt && echo "torch==2.14.1 torchvision==0.29.1" || echo "torch torchvision")
EXTRAS ?= dev,notebooks,faiss
FMNIST_SYSTEM := /usr/share/datasets/fashion-mnist

export PYTHONHASHSEED ?= 0
# Headless matplotlib for test and benchmark runs only: `make lab` leaves the students' backend
# alone (the notebooks also say %matplotlib inline, so their figures show under agg too).
HEADLESS := MPLBACKEND=agg

.PHONY: help venv data test test-fast test-notebooks test-browser book demo course test-course-full lab lint bench clean-venv

help:
	@echo "make demo          the main job: CE vs MOIT vs MOIT+ on a Fashion-MNIST subset (CPU, minutes)"
	@echo "make test          every test, notebooks included (smoke mode)"
	@echo "make course        train every run the notebooks use in full mode (2 at a time)"
	@echo "make test-course-full  the six notebooks in full mode from an empty run cache (COURSE_SEED, COURSE_THREADS)"
	@echo "make lab           JupyterLab on notebooks/"
	@echo "make book          the six notebooks executed into a static site, build/book/index.html"
	@echo "make test-browser  every notebook and book page in headless Chromium (needs Debian's chromium)"
	@echo "make lint          ruff"
	@echo "make bench         benchmarks/ scripts (print figures; long on a CPU: bench_accuracy trains 45 runs)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST: data/fashion-mnist, else Debian's package (installed here when apt is usable),
# else torchvision's download (python -m moit_explore fetch fashion-mnist).
data: $(STAMP)
	@if [ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST_SYSTEM)/train-images-idx3-ubyte.gz ]; then \
	  echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || $(PY) -m moit_explore fetch fashion-mnist; \
	else \
	  $(PY) -m moit_explore fetch fashion-mnist; \
	fi

test: $(STAMP) data
	$(HEADLESS) MOIT_SMOKE=1 $(PY) -m pytest -q tests notebooks --nbmake --nbmake-timeout=300 -p no:cacheprovider

test-fast: $(STAMP)
	$(HEADLESS) $(PY) -m pytest -q tests -x

test-notebooks: $(STAMP) data
	$(HEADLESS) MOIT_SMOKE=1 $(PY) -m pytest -q --nbmake --nbmake-timeout=300 notebooks

# Debian's chromium (never a downloaded Playwright build); installed here when apt is usable.
test-browser: $(STAMP) data
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || [ -n "$$MOIT_CHROMIUM" ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { apt-get install -y -q chromium >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || \
	  { echo "test-browser needs Chromium: apt-get install chromium (as root), or set MOIT_CHROMIUM"; exit 1; }
	$(HEADLESS) MOIT_SMOKE=1 $(PY) -m pytest -q -m browser tests/test_browser.py -p no:cacheprovider

# every run the six notebooks train in full mode, two one-thread trainings at a time (both
# cores busy, none oversubscribed), one progress bar; the notebooks then open in seconds
course: $(STAMP) data
	$(HEADLESS) env -u MOIT_SMOKE $(PY) -m moit_explore.course.notebook_runs --jobs 2

# the six notebooks in full mode from an empty run cache (a new runs/course-full-* folder),
# every takeaway assert included: make test-course-full COURSE_SEED=2 COURSE_THREADS=1
COURSE_SEED ?= 1
COURSE_THREADS ?= 2
test-course-full: $(STAMP) data
	mkdir -p runs && cache=$$(mktemp -d "$(CURDIR)/runs/course-full-seed$(COURSE_SEED)-threads$(COURSE_THREADS)-XXXX") && \
	echo "run cache: $$cache" && \
	$(HEADLESS) env -u MOIT_SMOKE MOIT_SEED=$(COURSE_SEED) OMP_NUM_THREADS=$(COURSE_THREADS) \
	  MKL_NUM_THREADS=$(COURSE_THREADS) MOIT_COURSE_RUNS=$$cache \
	  $(PY) -m pytest -q --nbmake --nbmake-timeout=7200 notebooks -p no:cacheprovider

# the course to read without a kernel: full mode when `make course` has filled the run cache,
# else smoke mode (each page says which, and its execution time); build/ is not tracked
book: $(STAMP) data
	$(PY) -m moit_explore.course.book --out build/book

demo: $(STAMP) data
	$(HEADLESS) $(PY) -m moit_explore demo

lab: $(STAMP) data
	$(PY) -m jupyter lab notebooks/

lint: $(STAMP)
	$(PY) -m ruff check moit_explore tests benchmarks notebooks

bench: $(STAMP) data
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(HEADLESS) $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
