#!/bin/sh
# Run the whole test suite, installing what the tests need first:
# tmux and strace (Debian packages, when missing and we may install them),
# pytest and vermin (PyPI).  Usage: sh tests/run.sh [pytest arguments]
set -e
cd "$(dirname "$0")/.."
missing=""
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
command -v strace >/dev/null 2>&1 || missing="$missing strace"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq $missing >/dev/null
    else
        echo "note:$missing not installed; the tests that need them will be skipped" >&2
    fi
fi
python3 -m pip install -q --disable-pip-version-check pytest vermin
exec python3 -m pytest -q "$@"
