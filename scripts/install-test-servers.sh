#!/usr/bin/env bash
# Installs the local servers that the object-store tests talk to:
#   - moto's S3 server   (PyPI `moto[server]`, binary `moto_server`)
#   - Azurite blob server (npm `azurite`,     binary `azurite-blob`)
# and the Python readers the Arrow interop test hands entries to:
#   - pyarrow and polars (PyPI), in a virtual environment of their own
# and what the Python package's tests need (python/tests):
#   - maturin, pytest, boto3, the original etl-pycache, pyarrow and polars
#     (PyPI), in a third
#
# Idempotent: a server that is already installed and runs is left alone.
# Installs into $ETL_CACHE_TEST_SERVERS_DIR (default ~/.cache/etl-cache-test-servers):
#   <dir>/venv/bin/moto_server
#   <dir>/node/node_modules/.bin/azurite-blob
#   <dir>/arrow-venv/bin/python
#   <dir>/py-venv/bin/python
# The tests find them there by default, or through ETL_CACHE_MOTO_SERVER,
# ETL_CACHE_AZURITE and ETL_CACHE_ARROW_PYTHON (full paths), or on PATH.
# Standard output carries only `export` lines for those variables (so `eval "$(… --env)"` works; the
# `--env` flag is accepted for that use and changes nothing); progress goes
# to standard error.
set -euo pipefail

DIR="${ETL_CACHE_TEST_SERVERS_DIR:-$HOME/.cache/etl-cache-test-servers}"
MOTO_SPEC="${ETL_CACHE_MOTO_SPEC:-moto[server]>=5.1,<6}"
AZURITE_SPEC="${ETL_CACHE_AZURITE_SPEC:-azurite@3}"
ARROW_SPEC="${ETL_CACHE_ARROW_SPEC:-pyarrow>=15 polars>=1}"
PY_SPEC="${ETL_CACHE_PY_SPEC:-maturin>=1.9.4,<2 pytest>=8 boto3>=1.34 etl-pycache[s3]==1.0.0 pyarrow>=15 polars>=1}"
mkdir -p "$DIR"

# Makes the virtual environment $DIR/$1, installs the requirements $2 (a
# list) into it, and checks that its python imports the modules $3.
install_venv() {
    local venv="$DIR/$1" spec=$2 imports=$3
    echo "installing $spec into $venv" >&2
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086 # the spec is a list of requirements
    "$venv/bin/pip" install --quiet --disable-pip-version-check $spec >&2
    "$venv/bin/python" -c "import $imports"
}

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

arrow_py="$DIR/arrow-venv/bin/python"
if [ -x "$arrow_py" ] && "$arrow_py" -c 'import pyarrow, polars' >/dev/null 2>&1; then
    echo "pyarrow and polars already installed: $arrow_py" >&2
else
    install_venv arrow-venv "$ARROW_SPEC" 'pyarrow, polars'
fi

py="$DIR/py-venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import pytest, boto3, etl_pycache, pyarrow, polars' >/dev/null 2>&1 \
    && [ -x "$DIR/py-venv/bin/maturin" ]; then
    echo "maturin, pytest, boto3, etl-pycache, pyarrow, polars already installed: $py" >&2
else
    install_venv py-venv "$PY_SPEC" 'pytest, boto3, etl_pycache, pyarrow, polars'
fi

echo "moto_server:  $moto (moto $("$DIR/venv/bin/python" -c 'import moto; print(moto.__version__)'))" >&2
echo "azurite-blob: $azurite ($("$azurite" --version))" >&2
echo "export ETL_CACHE_MOTO_SERVER=$moto"
echo "pyarrow/polars: $arrow_py ($("$arrow_py" -c 'import pyarrow, polars; print("pyarrow", pyarrow.__version__, "polars", polars.__version__)'))" >&2
echo "export ETL_CACHE_AZURITE=$azurite"
echo "export ETL_CACHE_ARROW_PYTHON=$arrow_py"
echo "python tests: $py ($("$DIR/py-venv/bin/maturin" --version), etl-pycache $("$py" -c 'import importlib.metadata as m; print(m.version("etl-pycache"))'))" >&2
echo "export ETL_CACHE_PYTHON=$py"
