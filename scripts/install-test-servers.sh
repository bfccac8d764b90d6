#!/usr/bin/env bash
# Installs the local servers that the object-store tests talk to:
#   - moto's S3 server   (PyPI `moto[server]`, binary `moto_server`)
#   - Azurite blob server (npm `azurite`,     binary `azurite-blob`)
#
# Idempotent: a server that is already installed and runs is left alone.
# Installs into $ETL_CACHE_TEST_SERVERS_DIR (default ~/.cache/etl-cache-test-servers):
#   <dir>/venv/bin/moto_server
#   <dir>/node/node_modules/.bin/azurite-blob
# The tests find them there by default, or through ETL_CACHE_MOTO_SERVER and
# ETL_CACHE_AZURITE (full paths), or on PATH. Standard output carries only
# `export` lines for those two variables (so `eval "$(… --env)"` works; the
# `--env` flag is accepted for that use and changes nothing); progress goes
# to standard error.
set -euo pipefail

DIR="${ETL_CACHE_TEST_SERVERS_DIR:-$HOME/.cache/etl-cache-test-servers}"
MOTO_SPEC="${ETL_CACHE_MOTO_SPEC:-moto[server]>=5.1,<6}"
AZURITE_SPEC="${ETL_CACHE_AZURITE_SPEC:-azurite@3}"
mkdir -p "$DIR"

moto="$DIR/venv/bin/moto_server"
if [ -x "$moto" ] && "$moto" --help >/dev/null 2>&1; then
    echo "moto_server already installed: $moto" >&2
else
    echo "installing $MOTO_SPEC into $DIR/venv" >&2
    python3 -m venv "$DIR/venv" >&2
    "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC" >&2
    "$moto" --help >/dev/null
fi

azurite="$DIR/node/node_modules/.bin/azurite-blob"
if [ -x "$azurite" ] && "$azurite" --version >/dev/null 2>&1; then
    echo "azurite-blob already installed: $azurite" >&2
else
    echo "installing $AZURITE_SPEC into $DIR/node" >&2
    mkdir -p "$DIR/node"
    npm install --prefix "$DIR/node" --no-audit --no-fund --loglevel=error "$AZURITE_SPEC" >&2
    "$azurite" --version >/dev/null
fi

echo "moto_server:  $moto (moto $("$DIR/venv/bin/python" -c 'import moto; print(moto.__version__)'))" >&2
echo "azurite-blob: $azurite ($("$azurite" --version))" >&2
echo "export ETL_CACHE_MOTO_SERVER=$moto"
echo "export ETL_CACHE_AZURITE=$azurite"
