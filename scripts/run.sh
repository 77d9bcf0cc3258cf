#!/usr/bin/env bash
# Runs Sluice on this machine with its defaults (SQLite in ./data, the local Docker engine):
# makes sure Docker answers and the base image exists (made locally when no registry is
# reachable), then builds and starts `sluice serve`, which builds the managed user image on its
# first start with a progress display. Extra arguments go to `sluice serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
    || docker pull debian:bookworm-slim 2>/dev/null \
    || scripts/base-image.sh
exec cargo run --release -- serve "$@"
