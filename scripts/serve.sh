#!/usr/bin/env bash
# README command 1: install what is needed, build the static (Pyodide) bundle, serve it on localhost.
#
#   scripts/serve.sh            build build/site/ from app.py and serve it at http://127.0.0.1:$PORT/ (PORT=8000)
#   scripts/serve.sh --native   skip the bundle; serve app.py with `panel serve` (native speed, huge tensors)
#   scripts/serve.sh [--native] path/to/app.py
#
# Needs Debian (or similar) with python3; python3-venv and npm are apt-installed when missing (npm fetches
# Pyodide's core once; it is cached in build/cache/). If Pyodide's compiled packages (numpy, ...) cannot be
# vendored because their CDN is unreachable, the script says which, and also starts `panel serve` on
# NATIVE_PORT (5006) so there is a working calculator either way. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${PORT:-8000}"
NATIVE_PORT="${NATIVE_PORT:-5006}"
native=0
app="app.py"
for arg in "$@"; do
  case "$arg" in
    --native) native=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "serve.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    *) app="$arg" ;;
  esac
done
if [ ! -f "$app" ]; then
  echo "serve.sh: $app does not exist (run from a checkout that has it, or pass the app file)" >&2
  exit 1
fi

# --- system packages (Debian) ----------------------------------------------------------------------
apt_pkgs=()
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3)
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_pkgs+=(python3-venv); fi
if [ "$native" = 0 ] && [ ! -f build/cache/pyodide-0.29.3.tgz ] && ! command -v npm >/dev/null 2>&1; then apt_pkgs+=(npm); fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  echo "serve.sh: installing ${apt_pkgs[*]} with apt-get"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_pkgs[@]}"
fi

# --- Python environment -----------------------------------------------------------------------------
[ -x .venv/bin/python ] || python3 -m venv .venv
PIP_CONSTRAINT="$PWD/constraints.txt" .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[app,build]'

pids=()
cleanup() { for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

start_native() {
  echo "serve.sh: native app (panel serve $app): http://127.0.0.1:$NATIVE_PORT/$(basename "${app%.py}")"
  .venv/bin/panel serve "$app" --address 127.0.0.1 --port "$NATIVE_PORT" \
    --allow-websocket-origin "127.0.0.1:$NATIVE_PORT" --allow-websocket-origin "localhost:$NATIVE_PORT" &
  pids+=($!)
}

if [ "$native" = 1 ]; then
  start_native
  wait
  exit 0
fi

# --- static bundle ----------------------------------------------------------------------------------
.venv/bin/python build/build_site.py "$app" --out build/site
missing=$(.venv/bin/python -c 'import json; i = json.load(open("build/site/build-info.json")); print(" ".join(p for p in i["cdn_only_packages"] if p in i["startup_packages"]))')
later=$(.venv/bin/python -c 'import json; i = json.load(open("build/site/build-info.json")); print(" ".join(p for p in i["cdn_only_packages"] if p not in i["startup_packages"]))')
page="$(basename "${app%.py}").html"
echo
if [ -n "$missing" ]; then
  echo "serve.sh: NOT VENDORED: $missing (Pyodide's compiled packages; the Pyodide CDN was unreachable at build time)."
  echo "          The browser fetches them from the Pyodide CDN; without internet the page says it cannot start."
  echo "          Starting the native app as well, so a working calculator is available either way."
  start_native
fi
[ -n "$later" ] && echo "serve.sh: loaded from the Pyodide CDN only when needed: $later"
echo "serve.sh: static bundle: http://127.0.0.1:$PORT/$page   (folder: build/site/, Ctrl-C to stop)"
.venv/bin/python -m http.server "$PORT" --bind 127.0.0.1 --directory build/site &
pids+=($!)
wait
