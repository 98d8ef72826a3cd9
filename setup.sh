#!/usr/bin/env bash
# Installs what Highwater needs on a Debian machine with Python 3.11:
#   ./setup.sh          the tool (pip install -e .)
#   ./setup.sh --test   the tool, its test extras and the Debian packages the tests use
# Safe to run again; skips apt-get when everything is already there.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

debs=(kcat fuse3 iptables iproute2 openssh-server faketime procps chromium strace)
missing=()
for d in "${debs[@]}"; do
    dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d")
done
if [ "${1:-}" = "--test" ] && [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 2
    fi
fi

if [ "${1:-}" = "--test" ]; then
    "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
else
    "$PY" -m pip install -q --disable-pip-version-check -e .
fi
# pyenv installs console scripts behind shims; make `highwater` callable at once.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
# Compile the checkers' kernels now rather than during the first check.
"$PY" -m checkers.warmup
