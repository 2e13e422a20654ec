# The developer's checks, with the tools of ./.venv (made by `sudo bash scripts/setup.sh --test`).
#   make check   before every commit: lint + the quick tests (no podman, no other users)
#   make lint    ruff check, ruff format --check, the import contracts, mypy
#   make test    the whole suite (real podman, rootless users, the demo image; as root)
#   make format  rewrite the tree as `make lint` wants it (ruff format, ruff's safe fixes)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_FLAGS ?= -q -p no:cacheprovider
QUICK := not podman and not rootless and not demo

.PHONY: check lint test quick format

check: lint quick

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

quick:
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m "$(QUICK)"

test:
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
