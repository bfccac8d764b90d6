#!/usr/bin/env bash
# The project's test command: installs the test servers a fresh machine lacks
# (moto's S3 server from PyPI, Azurite from npm), then runs every test of the
# workspace once, in release mode (the stream tests push gigabytes through).
# The tests start and stop the servers themselves, on free ports of 127.0.0.1.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p etl-cache-fs # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/install-test-servers.sh ]; then
  # Exports the paths of the server binaries for the tests.
  eval "$(scripts/install-test-servers.sh --env)"
fi

cargo test --workspace --release --all-features "$@"
