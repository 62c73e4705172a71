# telkeys: `make run` starts the service with its embedded NATS; `make test` runs every test.
GO      ?= go
BIN     := bin/telkeys
# make run honours the TELKEYS_* variables of telkeys serve (README,
# Configuration); DATA= is TELKEYS_DATA_DIR's short form.
DATA    ?= $(or $(TELKEYS_DATA_DIR),./data)

.PHONY: run build test test-short fuzz bench bench-go clean cluster cluster-down

# -buildvcs=auto: --version names the commit, even where GOFLAGS turns it off.
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/telkeys
	$(GO) build -buildvcs=auto -o bin/telapi-node ./cmd/telapi-node

run: build
	$(BIN) serve --data-dir $(DATA) --log-format $(or $(TELKEYS_LOG_FORMAT),text) --dev-login

# A local cluster on loopback (3 nats-server, 2 telkeys --replicas 3, 2
# telapi-node); DIR/cluster.env says where everything is.
CLUSTER ?= ./cluster
cluster:
	deploy/local/up.sh $(CLUSTER)

cluster-down:
	deploy/local/down.sh $(CLUSTER)

# Every test, with the race detector. Fuzz targets run their seed corpora.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

# Explore with the fuzzers (FUZZTIME=1m make fuzz).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./apikey
	$(GO) test -run '^$$' -fuzz FuzzUnmarshal -fuzztime $(FUZZTIME) ./events
	$(GO) test -run '^$$' -fuzz FuzzCheck -fuzztime $(FUZZTIME) ./events
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./keyauth

# The performance report (README, Performance): every figure next to its floor.
bench: build
	$(BIN) bench

# The package micro-benchmarks (Verify, Parse, key-index warm-up, quota overshoot).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
