#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io and starts dockerd when
# `docker info` fails. Idempotent.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null; then
    :
else
    nohup dockerd >/var/log/sluice-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "the Docker engine did not come up; see /var/log/sluice-dockerd.log" >&2
exit 1
