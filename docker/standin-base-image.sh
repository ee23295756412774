#!/usr/bin/env bash
# Provide the base image (python:3.11-slim) where no container registry is reachable:
# build a stand-in from Debian bookworm packages (its python3 is 3.11), as CI does.
# Does nothing when the image is already present. Needs root and debootstrap.
set -euo pipefail
IMAGE="${1:-python:3.11-slim}"
if docker image inspect "$IMAGE" > /dev/null 2>&1; then
    echo "base image $IMAGE is present"
    exit 0
fi
if docker pull "$IMAGE" > /dev/null 2>&1; then
    echo "pulled base image $IMAGE"
    exit 0
fi
echo "no registry answered: building a stand-in for $IMAGE from Debian bookworm packages"
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,passwd,ca-certificates \
    bookworm "$ROOTFS" > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import --change 'CMD ["python3"]' - "$IMAGE"
echo "stand-in $IMAGE built"
