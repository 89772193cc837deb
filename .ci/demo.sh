#!/usr/bin/env bash
# The demo: real InfluxDB and Consul on loopback with temporary data dirs,
# simulated Docker engines, and scrapeflux run against them for a bounded
# time; then what arrived in InfluxDB is printed. Everything it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCRAPEFLUX_BIN:-$HOME/.cache/scrapeflux/bin}
SF=./bin/scrapeflux
ENGINES=${ENGINES:-3}
SECONDS_TO_RUN=${DEMO_SECONDS:-20}
INTERVAL=${INTERVAL:-5s}
INFLUX_PORT=${INFLUX_PORT:-18086}
CONSUL_PORT=${CONSUL_PORT:-18500}
ENGINE_PORT=${ENGINE_PORT:-19323}
LISTEN=${LISTEN:-127.0.0.1:19273}
DB=docker

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

wait_http() { # url what
  for _ in $(seq 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "$2 did not come up at $1" >&2; exit 1
}

echo "== starting InfluxDB 1.8 on 127.0.0.1:$INFLUX_PORT (data in $work/influxdb)"
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((INFLUX_PORT + 1))"
[meta]
  dir = "$work/influxdb/meta"
[data]
  dir = "$work/influxdb/data"
  wal-dir = "$work/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
  flux-enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
CONF
"$BIN/influxd" run -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$INFLUX_PORT/ping" InfluxDB
curl -fsS -XPOST "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode "q=CREATE DATABASE $DB" >/dev/null

echo "== starting Consul (dev agent) on 127.0.0.1:$CONSUL_PORT"
"$BIN/consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$CONSUL_PORT" \
  -dns-port -1 -grpc-port -1 -grpc-tls-port -1 -serf-lan-port $((CONSUL_PORT + 1)) \
  -serf-wan-port $((CONSUL_PORT + 2)) -server-port $((CONSUL_PORT + 3)) \
  -data-dir "$work/consul" >"$work/consul.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$CONSUL_PORT/v1/status/leader" Consul

echo "== starting $ENGINES simulated Docker engines from port $ENGINE_PORT"
$SF simulate --targets "$ENGINES" --base-port "$ENGINE_PORT" --list "$work/targets.txt" >/dev/null & pids+=($!)
for _ in $(seq 100); do [ -s "$work/targets.txt" ] && break; sleep 0.1; done
echo "== registering them in Consul with scrapeflux register (TCP health check each)"
port=$ENGINE_PORT
while read -r u; do
  $SF register --consul-addr "127.0.0.1:$CONSUL_PORT" --address 127.0.0.1 --port "$port" \
    --check-interval 1s --meta "node_role=worker" | sed 's/^/   /'
  port=$((port + 1))
done <"$work/targets.txt"
dead="http://127.0.0.1:$((ENGINE_PORT + ENGINES))/metrics"
echo "   plus one static --target with nothing behind it ($dead) to show up=0"

echo "== running scrapeflux for ${SECONDS_TO_RUN}s, discovering through Consul, interval $INTERVAL"
echo "   (while it runs: targets page http://$LISTEN/targets, self-metrics http://$LISTEN/metrics)"
$SF run --consul --consul-addr "127.0.0.1:$CONSUL_PORT" --consul-meta-tags node_role \
  --target "$dead" --job static --interval "$INTERVAL" --timeout 2s \
  --influx-url "http://127.0.0.1:$INFLUX_PORT" --influx-bucket "$DB" --listen "$LISTEN" --queue-dir "$work/queue" \
  >"$work/scrapeflux.log" 2>&1 & sf=$!
pids+=($sf)
sleep "$SECONDS_TO_RUN"
echo "   targets page says:"
curl -fsS "http://$LISTEN/targets?format=json" | sed 's/},{"url"/}\n{"url"/g' | sed -E 's/.*"instance":"([^"]*)".*"health":"([^"]*)".*"samples":([0-9]+).*/     \1  \2  samples=\3/'
kill -TERM $sf; wait $sf || true
echo "   scrapeflux log:"; sed 's/^/     /' "$work/scrapeflux.log"

q() { curl -fsS -G "http://127.0.0.1:$INFLUX_PORT/query" -H "Accept: application/csv" \
  --data-urlencode "db=$DB" --data-urlencode "q=$1" | cut -d, -f1,2,4- | sed 's/^/     /'; }
qs() { curl -fsS -G "http://127.0.0.1:$INFLUX_PORT/query" -H "Accept: application/csv" \
  --data-urlencode "db=$DB" --data-urlencode "q=$1" | cut -d, -f3- | sed 's/^/     /'; }
echo
echo "== what arrived in InfluxDB (database $DB)"
echo "-- number of measurements:"
q "SHOW MEASUREMENTS" | tail -n +2 | wc -l | sed 's/^/     /'
echo "-- scrapes per target (points of up) and up values:"
q "SELECT count(gauge) AS scrapes, min(gauge) AS min_up, max(gauge) AS max_up FROM up GROUP BY instance"
echo "-- Consul identity tags on the points (node, datacenter, service meta):"
qs "SHOW TAG VALUES FROM up WITH KEY IN (\"job\", \"node\", \"datacenter\", \"node_role\")"
echo "-- samples scraped per target over the run (sum of scrape_samples_scraped):"
q "SELECT sum(gauge) AS samples FROM scrape_samples_scraped GROUP BY instance"
echo "-- a histogram (container actions, action=start) as written:"
q "SELECT \"count\", \"sum\", \"0.005\", \"+Inf\" FROM engine_daemon_container_actions_seconds WHERE action='start' GROUP BY instance LIMIT 2"
echo "-- a gauge:"
q "SELECT last(gauge) FROM engine_daemon_engine_memory_bytes GROUP BY instance"
