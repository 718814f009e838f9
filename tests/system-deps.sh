#!/usr/bin/env bash
# The Debian packages the test suite needs (tox runs this before the tests, so the README's
# test command installs everything on a fresh machine): Redis and PostgreSQL for the store
# tests, Chromium for the web layer's browser tests (Playwright drives Debian's package:
# it cannot download its own browsers here). Idempotent: nothing is done when the programs are there. Without root or sudo it
# says what is missing, and those tests skip, naming the package.
set -uo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "system-deps: not root and no sudo: install ${missing[*]} (apt-get install -y ${missing[*]}) or those tests skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: no apt-get here: install ${missing[*]} yourself, or those tests skip" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]} (Debian packages)" >&2
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
