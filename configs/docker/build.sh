#!/usr/bin/env bash
# Builds the scrapeflux image: a static binary and the host's CA
# certificates staged next to the Dockerfile, then docker build when a
# Docker engine answers, else buildah (no engine needed).
# Usage: configs/docker/build.sh [tag]   (default scrapeflux:latest)
# DOCKER_HOST picks the engine; SCRAPEFLUX_BINARY a static binary to use.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-scrapeflux:latest}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
if [ -n "${SCRAPEFLUX_BINARY:-}" ]; then
  # A static binary built already (CGO_ENABLED=0), as the swarm tests do
  # once for every engine that builds the image.
  cp "$SCRAPEFLUX_BINARY" "$stage/scrapeflux"
else
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
    -o "$stage/scrapeflux" ./cmd/scrapeflux
fi
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "no CA bundle at $ca (install ca-certificates)" >&2; exit 1; }
cp "$ca" "$stage/ca-certificates.crt"
echo 'scrapeflux:x:65532:65532:scrapeflux:/var/lib/scrapeflux:/sbin/nologin' > "$stage/passwd"
echo 'scrapeflux:x:65532:' > "$stage/group"
mkdir "$stage/queue"
cp configs/docker/Dockerfile "$stage/Dockerfile"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker build -t "$TAG" "$stage"
elif command -v buildah >/dev/null 2>&1; then
  buildah bud --storage-driver vfs --isolation chroot --format docker -t "$TAG" "$stage"
else
  echo "neither a Docker engine nor buildah found: install one (Debian: apt-get install buildah)" >&2
  exit 1
fi
echo "built $TAG"
