#!/usr/bin/env bash
# README command 2: install everything the tests need on a fresh Debian machine, then run every test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/engine -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Browser tests drive Debian's Chromium; npm fetches Pyodide's core and axe-core.
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium for the browser tests"
  apt_install chromium || echo "!! could not install chromium with apt; the tests will try Playwright's own browser"
fi
if ! command -v npm >/dev/null; then
  echo "== installing node and npm (Pyodide core and axe-core come from the npm registry)"
  apt_install nodejs npm || echo "!! could not install npm; bundle and accessibility tests will say why they skip"
fi
if ! command -v gcc >/dev/null; then
  echo "== installing gcc (the GGML parity tests compile llama.cpp's ggml-quants.c as their oracle)"
  apt_install gcc libc6-dev || echo "!! could not install gcc; the GGML C-parity tests will say why they skip"
fi

if ! command -v pdftoppm >/dev/null; then
  echo "== installing poppler-utils (the PDF report tests draw its pages to PNG with pdftoppm)"
  apt_install poppler-utils || echo "!! could not install poppler-utils; the PDF drawing test will say why it skips"
fi

PY=${PYTHON:-python3}
# QUANTCALC_FRESH_VENV=1 (set by .ci/run) starts from an empty environment, as a newcomer does, so a
# missing or drifting dependency fails here and not only on someone else's machine.
if [ "${QUANTCALC_FRESH_VENV:-0}" = 1 ] && [ -d .venv ]; then
  echo "== removing .venv (QUANTCALC_FRESH_VENV=1)"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# Every version is pinned in constraints.txt (PIP_CONSTRAINT also reaches pip's build environments).
export PIP_CONSTRAINT="$PWD/constraints.txt"
echo "== installing quantcore with its app, build, test and scan extras (versions from constraints.txt)"
.venv/bin/python -m pip install -q --disable-pip-version-check pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[app,build,test,scan]'
if [ ! -x /usr/bin/chromium ]; then
  .venv/bin/python -m playwright install chromium || echo "!! no browser available: browser tests will skip and say why"
fi

echo "== running the test suite"
exec .venv/bin/python -m pytest "$@"
