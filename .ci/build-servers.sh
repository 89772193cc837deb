#!/usr/bin/env bash
# Builds the pinned InfluxDB and Consul servers the integration tests and the
# demo run, into a cache outside the work tree. Skips what is already built.
set -euo pipefail
BIN=${SCRAPEFLUX_BIN:-$HOME/.cache/scrapeflux/bin}
INFLUXDB_VERSION=${INFLUXDB_VERSION:-v1.8.10}
CONSUL_VERSION=${CONSUL_VERSION:-v1.20.2}
mkdir -p "$BIN"

if [ ! -x "$BIN/influxd" ]; then
  echo "building influxd $INFLUXDB_VERSION into $BIN (about a minute)"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "github.com/influxdata/influxdb/cmd/influxd@$INFLUXDB_VERSION"
fi

# The influx CLI: the swarm stack's InfluxDB health check runs it.
if [ ! -x "$BIN/influx" ]; then
  echo "building the influx CLI $INFLUXDB_VERSION into $BIN"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "github.com/influxdata/influxdb/cmd/influx@$INFLUXDB_VERSION"
fi

if [ ! -x "$BIN/consul" ]; then
  echo "building consul $CONSUL_VERSION into $BIN (a few minutes)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (
    cd "$tmp"
    export GONOSUMDB=github.com/hashicorp/consul GOFLAGS=-buildvcs=false
    go mod init consulbuild >/dev/null 2>&1
    :
    go mod edit -require="github.com/hashicorp/consul@$CONSUL_VERSION"
    go get "github.com/hashicorp/consul@$CONSUL_VERSION"
    go build -o "$BIN/consul.tmp" github.com/hashicorp/consul
    mv "$BIN/consul.tmp" "$BIN/consul"
  )
fi
"$BIN/influxd" version
"$BIN/consul" version | head -1
