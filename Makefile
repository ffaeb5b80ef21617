# chatdesk — `make run` starts everything on this machine; `make test` runs the whole suite.
# Both set themselves up from a fresh clone: .venv, Python packages, noVNC, the desktop's Debian packages.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
# The desktop: Xvnc, openbox, xdotool, ffmpeg (recordings); what it offers (agents/daemon/backends/panel.py):
# a tint2 panel with launchers for xterm, chromium and pcmanfm, icons from adwaita-icon-theme, the
# wallpaper set by xsetroot.
DEB_PACKAGES := tigervnc-standalone-server tigervnc-tools openbox xdotool xterm x11-utils x11-xserver-utils chromium \
	ffmpeg tint2 pcmanfm adwaita-icon-theme
DESKTOP_BINARIES := Xvnc openbox xdotool xterm xprop xset xsetroot chromium ffmpeg ffprobe tint2 pcmanfm
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatdesk
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# The benchmarks write real rows: they get a database of their own, created when missing.
BENCH_DATABASE ?= chatdesk_bench
# Run as root, the local desktop runs as this unprivileged user, so its programs cannot read the agent's
# token nor the server's files and processes (created by `desktop-user`; tests/support/agent_process.py
# creates the same one for the tests).
CHATDESK_AGENT_DESKTOP_USER ?= chatdesk-desktop
export CHATDESK_AGENT_DESKTOP_USER

.PHONY: run test lint bench setup python-deps system-deps desktop-user assets services migrate clean

setup: system-deps python-deps assets

# Every version comes from constraints.txt (build dependencies too, through PIP_CONSTRAINT).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

python-deps: $(STAMP)

# Debian packages for the desktop (see DEB_PACKAGES) and the browser tests (chromium).
system-deps:
	@missing=""; for b in $(DESKTOP_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	  else \
	    echo "Missing:$$missing. Install as root: apt-get install $(DEB_PACKAGES)"; exit 1; \
	  fi; \
	fi

# The desktop's own account (root only; a non-root run keeps the desktop as the current user, see README).
desktop-user:
	@if [ "$$(id -u)" = 0 ] && ! id -u $(CHATDESK_AGENT_DESKTOP_USER) >/dev/null 2>&1; then \
	  echo "Creating user $(CHATDESK_AGENT_DESKTOP_USER) for the desktop"; \
	  useradd --system --create-home --home-dir /var/lib/$(CHATDESK_AGENT_DESKTOP_USER) --shell /bin/bash \
	    $(CHATDESK_AGENT_DESKTOP_USER); \
	fi

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

assets: node_modules/.installed

# PostgreSQL and Redis for the tests: start them when installed and stopped; say so when absent.
services:
	@if ! command -v pg_ctlcluster >/dev/null; then echo "PostgreSQL is not installed (needed by make test)."; exit 1; fi
	@if ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; fi
	@for i in $$(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done; \
	 pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432."; exit 1; }
	@if ! command -v redis-server >/dev/null; then echo "Redis is not installed (needed by make test)."; exit 1; fi
	@if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null; fi
	@for i in $$(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done; \
	 redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis did not start on 127.0.0.1:6379."; exit 1; }

migrate: python-deps
	$(PY) manage.py migrate --noinput

run: setup desktop-user migrate
	$(PY) manage.py runstack

test: setup desktop-user services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)

lint: python-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: setup services
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$(BENCH_DATABASE)'" | grep -q 1 \
	  || createdb -h 127.0.0.1 -U postgres $(BENCH_DATABASE)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(BENCH_DATABASE) REDIS_URL=$(TEST_REDIS_URL) $(PY) bench/run.py

clean:
	rm -rf $(VENV) node_modules staticfiles .pytest_cache .mypy_cache .ruff_cache
