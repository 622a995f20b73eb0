# The two commands users need: `make demo` and `make test`. Both set themselves up.
# `make docs` builds the documentation site (docs/, mkdocs.yml) into site/.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facecmp-installed
DOCS_STAMP := $(VENV)/.facecmp-docs-installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

MEDIAPIPE_VENV ?= .venv-mediapipe
RETINAFACE_VENV ?= .venv-retinaface
ANIMEFACE_VENV ?= .venv-animeface

.PHONY: install test demo bench tox clean mediapipe-venv retinaface-venv animeface-venv peer-venvs docs

install: $(STAMP)

# torch/torchvision first, pinned to the versions the local mirror serves; then facecmp with its
# test and onnx extras; then facenet-pytorch WITHOUT its dependencies: it pins torch<2.3, numpy<2 and
# Pillow<10.3, which would downgrade (and break) everything above. We only need its weights and,
# in tests, its MTCNN as the reference implementation.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,onnx,robustness,peers,wider]'
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0 imagecorruptions==1.1.2
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

demo: install
	$(BIN)/facecmp demo --out $(DEMO_OUT)

bench: install
	$(BIN)/python -m pytest benchmarks $(PYTEST_ARGS)

# The tests and a short benchmark on three torch stacks (each env installs its own torch: slow once).
tox: install
	$(BIN)/python -m pip install -q tox
	$(BIN)/tox $(TOX_ARGS)

# The site: mkdocs with the material theme, the API reference read from the docstrings by
# mkdocstrings (statically: neither facecmp nor torch is imported, so this needs only the `docs`
# extra, pinned in pyproject.toml and installed from there). --strict: a broken link, a missing
# anchor or a page left out of the nav fails the build.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

$(DOCS_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $$($(BIN)/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['docs']))")
	touch $@

clean:
	rm -rf $(VENV) .tox .facecmp_cache $(DEMO_OUT) .pytest_cache .benchmarks ci-report site

# BlazeFace's own environment (facecmp.detection.peers.blazeface): mediapipe 0.10.14 is the last
# 0.10.x wheel with the BlazeFace models, and it pins protobuf<5 and brings opencv-contrib-python 5,
# which clash with facecmp's environment. ~2 min, ~1.1 GB.
mediapipe-venv: $(MEDIAPIPE_VENV)/.installed

$(MEDIAPIPE_VENV)/.installed: Makefile
	test -x $(MEDIAPIPE_VENV)/bin/python || $(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q mediapipe==0.10.14
	touch $@

# RetinaFace's own environment (facecmp.detection.peers.retinaface_tf): the retinaface wheel's
# metadata pins tensorflow 2.5, streamlit and opencv 4.6, so it goes in --no-deps beside
# tensorflow-cpu; the worker loads its frozen graph with TensorFlow alone. ~50 s, ~1.6 GB.
retinaface-venv: $(RETINAFACE_VENV)/.installed

$(RETINAFACE_VENV)/.installed: Makefile
	test -x $(RETINAFACE_VENV)/bin/python || $(PYTHON) -m venv $(RETINAFACE_VENV)
	$(RETINAFACE_VENV)/bin/python -m pip install -q tensorflow-cpu==2.21.0
	$(RETINAFACE_VENV)/bin/python -m pip install -q --no-deps retinaface==1.1.1
	touch $@

# The anime face detector's own environment (facecmp.detection.peers.animeface_nvxs): on Pillow 12
# or 13 animeface silently finds nothing, so it keeps Pillow <= 11.3. ~15 s, ~120 MB.
animeface-venv: $(ANIMEFACE_VENV)/.installed

$(ANIMEFACE_VENV)/.installed: Makefile
	test -x $(ANIMEFACE_VENV)/bin/python || $(PYTHON) -m venv $(ANIMEFACE_VENV)
	$(ANIMEFACE_VENV)/bin/python -m pip install -q animeface==2.0.3 'pillow<=11.3' numpy
	touch $@

# Every peer that needs an environment of its own.
peer-venvs: mediapipe-venv retinaface-venv animeface-venv
