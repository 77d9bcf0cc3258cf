#!/usr/bin/env bash
# Makes the base image debian:bookworm-slim locally, for machines that reach no registry:
# a minimal debootstrap of Debian bookworm, imported with `docker import`. The managed user
# image (images/managed-user) builds FROM it as it would anywhere.
#
# Usage: scripts/base-image.sh [image-name]     (default debian:bookworm-slim)
# Set DEBIAN_MIRROR to use another mirror. Does nothing when the image exists.
set -euo pipefail
IMAGE=${1:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is present"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
ROOT=$(mktemp -d /tmp/sluice-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap of bookworm (minbase) from $MIRROR ..."
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >/tmp/sluice-debootstrap.log 2>&1 || {
    tail -n 20 /tmp/sluice-debootstrap.log >&2
    exit 1
}
# Trim what a slim image leaves out.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
echo "importing as $IMAGE ..."
tar -C "$ROOT" --numeric-owner -c . | docker import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE is ready"
