# scrapeflux: `make demo` runs it end to end, `make test` tests it.
# The servers the demo and the integration tests need (InfluxDB 1.8.10 and
# Consul 1.20.2) are built from pinned Go modules into $(BIN), outside the
# work tree, once.

GO       ?= go
BIN      ?= $(HOME)/.cache/scrapeflux/bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 15s
export SCRAPEFLUX_BIN := $(BIN)
export GOFLAGS := -buildvcs=false

.PHONY: all build servers test vet unit fuzz bench demo clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/scrapeflux ./cmd/scrapeflux

servers: $(BIN)/influxd $(BIN)/consul

$(BIN)/influxd $(BIN)/consul:
	bash .ci/build-servers.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Unit and integration tests (real InfluxDB and Consul on loopback), with the
# race detector, then every fuzz target for $(FUZZTIME).
test: servers vet unit fuzz

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s ./sink/

# Benchmarks: parse + convert per capture and layout (ns/sample, B/sample,
# allocs/sample) and the end-to-end pipeline (samples per CPU-second).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./sink/
	$(GO) test -run '^$$' -bench Pipeline -benchtime 300000x -count 1 ./cmd/scrapeflux/

demo: build servers
	bash .ci/demo.sh

clean:
	rm -rf bin
