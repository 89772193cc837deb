# scrapeflux: `make demo` runs it end to end, `make test` tests it.
# The servers the demo and the integration tests need (InfluxDB 1.8.10 and
# Consul 1.20.2) are built from pinned Go modules into $(BIN), outside the
# work tree, once.

GO       ?= go
BIN      ?= $(HOME)/.cache/scrapeflux/bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Fuzzing budgets are counts, not durations: with a duration, Go 1.26's
# fuzzing coordinator can report "context deadline exceeded" when the time
# runs out mid-run (golang/go#75804), failing a run that found nothing.
FUZZ_CONVERT ?= 30000x
FUZZ_QUEUE   ?= 20000x
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
export SCRAPEFLUX_BIN := $(BIN)
export SCRAPEFLUX_ARTIFACTS := $(CURDIR)/test-artifacts
export GOFLAGS := -buildvcs=false

PREFIX   ?= /usr/local
IMAGE    ?= scrapeflux:latest

.PHONY: all build install image servers chromium buildah docker test vet unit fuzz bench demo demo-swarm clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/scrapeflux ./cmd/scrapeflux

# Installs the binary into $(PREFIX)/bin (`go install
# github.com/scrapeflux/scrapeflux/cmd/scrapeflux@latest` does the same
# from the module).
install: build
	install -D -m 0755 bin/scrapeflux $(DESTDIR)$(PREFIX)/bin/scrapeflux

# The container image (configs/docker/Dockerfile): docker build when a
# Docker engine runs, else buildah, which needs no engine.
image:
	bash configs/docker/build.sh $(IMAGE)

servers: $(BIN)/influxd $(BIN)/influx $(BIN)/consul

$(BIN)/influxd $(BIN)/influx $(BIN)/consul:
	bash .ci/build-servers.sh

# The image test builds and runs the image with buildah.
buildah:
	@command -v buildah >/dev/null 2>&1 || { \
	  echo "installing Debian's buildah for the container image test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah; }

# Headless Chromium loads the /targets page in an integration test.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the /targets page test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The real-swarm tests run Docker engines (Debian's docker.io, 20.10) in
# network namespaces they make; they need root, which CI has.
docker:
	@command -v dockerd >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || { \
	  echo "installing Debian's docker.io and iproute2 for the real-swarm tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iproute2 util-linux; }

STATICCHECK_VERSION ?= v0.8.2

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

vet: $(BIN)/staticcheck
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Unit and integration tests (real InfluxDB and Consul on loopback, headless
# Chromium, the container image built and run with buildah, a real Docker
# Swarm of engines in network namespaces), with the race detector, then
# every fuzz target for a fixed number of runs.
# The /targets screenshot lands in test-artifacts/. Packages run one at a
# time (-p 1): the integration tests time real schedules on two cores.
test: servers chromium buildah docker vet unit fuzz

unit:
	@mkdir -p $(SCRAPEFLUX_ARTIFACTS)
	$(GO) test -race -count=1 -p 1 -timeout 20m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime $(FUZZ_CONVERT) -fuzzminimizetime 1000x ./sink/
	$(GO) test -run '^$$' -fuzz '^FuzzDiskQueueOpen$$' -fuzztime $(FUZZ_QUEUE) -fuzzminimizetime 1000x ./sink/queue/

# Benchmarks: parse + convert per capture and layout (ns/sample, B/sample,
# allocs/sample), the sink after conversion (CPU-ns/sample, gzip on and
# off), a fetch over each target's own connection against the shared
# transport (CPU-us/scrape, back to back and paced) and the end-to-end
# pipeline (samples per CPU-second).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./sink/
	$(GO) test -run '^$$' -bench Fetch -benchtime 800x -count 1 ./scrape/
	$(GO) test -run '^$$' -bench Pipeline -benchtime 300000x -count 1 ./cmd/scrapeflux/

demo: build servers
	bash .ci/demo.sh

# The seed's scene on a real swarm (root): three Docker engines, each in a
# network namespace of its own, form a swarm; configs/swarm/stack.yml is
# deployed on it (Consul, InfluxDB, scrapeflux register on every node, two
# central replicas); it prints what arrived in the stack's InfluxDB per
# node, kills a replica and shows no slot was missed, then stops it all.
demo-swarm: servers docker
	$(GO) test -count=1 -run '^TestSwarmStackDeployed$$' -v ./cmd/scrapeflux/

clean:
	rm -rf bin test-artifacts
