#!/usr/bin/env bash
# The project's test command: installs the test servers a fresh machine lacks
# (moto's S3 server from PyPI, Azurite from npm), then runs every test of the
# workspace once, in release mode (the stream tests push gigabytes through),
# then builds the Python package (python/, a release wheel) and runs its pytest
# suite, against this package and against the original etl-pycache.
# The tests start and stop the servers themselves, on free ports of 127.0.0.1.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p etl-cache-fs # extra arguments go to `cargo test` (and skip pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/install-test-servers.sh ]; then
  # Exports the paths of the server binaries (and the Python test venv) for the tests.
  eval "$(scripts/install-test-servers.sh --env)"
fi

cargo test --workspace --release --all-features "$@"

if [ "$#" -gt 0 ]; then
  exit 0 # a filtered run: the Python suite runs with the whole workspace only
fi

# The Python package: a wheel built in the workspace's target directory, so the
# engine's crates compiled above are reused; installed into the test venv.
py="${ETL_CACHE_PYTHON:-$HOME/.cache/etl-cache-test-servers/py-venv/bin/python}"
venv_bin="$(dirname "$py")"
target="${CARGO_TARGET_DIR:-$PWD/target}"
wheels="$target/wheels"
rm -rf "$wheels"
"$venv_bin/maturin" build --release --locked --manifest-path python/Cargo.toml --out "$wheels"
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/etl_cache-*.whl
# The interop tests drive the command line built by `cargo test` above.
ETL_CACHE_CLI="$target/release/etl-cache" CI="${CI:-}" \
  "$py" -m pytest -q -p no:cacheprovider --rootdir python python/tests
