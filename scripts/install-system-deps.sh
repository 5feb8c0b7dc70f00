#!/bin/sh
# Install the Debian packages the test suite uses when they are missing:
#   prometheus -> promtool  (tests/test_monitoring.py: `promtool check rules` / `promtool test rules`)
#   chromium   -> chromium  (headless browser tests)
# and with --bench also:
#   wrk        -> wrk       (bench/health.py; its fallback Python client saturates before the server does)
#
# Idempotent and quiet: when both commands are already on PATH it does nothing (no apt-get call at all).
# As root it runs apt-get directly (DEBIAN_FRONTEND=noninteractive, no TTY needed). Otherwise it uses
# `sudo -n` when sudo is available without a password prompt; if not, it prints what is missing and exits 0,
# and the tests that need these tools skip with an explicit reason.
#
# Usage: scripts/install-system-deps.sh            (install what is missing)
#        scripts/install-system-deps.sh --bench    (the same, plus what the benchmarks use)
#        scripts/install-system-deps.sh --check    (only report what is missing; exit 0)
set -eu

tools="promtool chromium"
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
if [ "${1:-}" = "--bench" ]; then
    tools="$tools wrk"
    command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
fi
missing="${missing# }"

if [ -z "$missing" ]; then
    exit 0
fi

if [ "${1:-}" = "--check" ]; then
    echo "install-system-deps: missing Debian packages: $missing" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: apt-get not found; install these yourself: $missing (tests needing them will skip)" >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root="sudo -n"
else
    echo "install-system-deps: not root and no passwordless sudo; missing Debian packages: $missing" >&2
    echo "install-system-deps: run as root: apt-get install -y --no-install-recommends $missing" >&2
    echo "install-system-deps: the tests needing them will be skipped." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts="-q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"

# Refresh the package lists only when they are absent or older than a day.
lists=/var/lib/apt/lists
if [ -z "$(find "$lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
    # shellcheck disable=SC2086
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null 2>&1 || true
fi

echo "install-system-deps: installing $missing" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Word splitting of $missing and $apt_opts is intended. Output is shown only when apt-get fails.
# shellcheck disable=SC2086
if ! $as_root env DEBIAN_FRONTEND=noninteractive apt-get install $apt_opts --no-install-recommends $missing \
        >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-system-deps: apt-get install $missing failed" >&2
    exit 1
fi

# The prometheus package would start a Prometheus server under an init system; the tests only want promtool.
# (In containers there is no init system and nothing is started, so there is nothing to stop.)

for tool in $tools; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-system-deps: $tool is still missing after installation" >&2
    fi
done
exit 0
