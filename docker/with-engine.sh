#!/usr/bin/env bash
# Run a command with a Docker engine: the running one, else Debian's docker.io started here
# (installed when missing, as on a fresh CI machine) and stopped when the command ends.
# Then makes sure the base image exists (standin-base-image.sh) and runs the command.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info > /dev/null 2>&1; then
    if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null \
        || ! { docker compose version > /dev/null 2>&1 || command -v docker-compose > /dev/null; }; then
        echo "installing docker.io, docker-compose and debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap > /dev/null
    fi
    mkdir -p build
    dockerd > build/dockerd.log 2>&1 &
    DOCKERD_PID=$!
    trap 'kill "$DOCKERD_PID"; wait "$DOCKERD_PID" || true' EXIT
    for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 0.5; done
    docker info > /dev/null || { tail -20 build/dockerd.log; exit 1; }
fi
docker/standin-base-image.sh
"$@"
