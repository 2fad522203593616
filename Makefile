# wagg: make demo runs the whole thing locally; make test runs every test
# against real Kafka and ClickHouse (started by scripts/services.sh).

GO        ?= go
BIN       := bin
# Ports of the local services (scripts/kafka.sh and scripts/clickhouse.sh
# read the same variables).
WAGG_KAFKA_PORT      ?= 9092
WAGG_CLICKHOUSE_PORT ?= 9000
export WAGG_KAFKA_PORT WAGG_CLICKHOUSE_PORT
KAFKA     ?= 127.0.0.1:$(WAGG_KAFKA_PORT)
CLICKHOUSE?= 127.0.0.1:$(WAGG_CLICKHOUSE_PORT)
DEMO_ADDR ?= 127.0.0.1:8080
DEMO_DIR  := .cache/demo
TEST_REPORT := .cache/test-report.txt
TEST_ENV  := WAGG_TEST_KAFKA=$(KAFKA) WAGG_TEST_CLICKHOUSE=$(CLICKHOUSE) WAGG_TEST_REPORT=$(CURDIR)/$(TEST_REPORT) WAGG_TEST_INSTALLED=1
# Debian's Rust (scripts/toolchains.sh), whatever else is on PATH; one
# target directory so guests and tests build once.
CARGO     := CARGO_TARGET_DIR=$(CURDIR)/.cache/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo

.PHONY: all build wasm web services services-down browser-deps toolchains test-sdks test check fuzz bench bench-peers demo demo-stop clean test-peers

all: build

build: wasm
	$(GO) build -o $(BIN)/wagg ./cmd/wagg

# Every example aggregator, built with the standard toolchain.
wasm:
	@mkdir -p $(BIN)
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $(BIN)/votes.wasm ./examples/votes
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $(BIN)/uniquevoters.wasm ./examples/uniquevoters

services:
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

# Chromium (Debian) and the page's npm packages (playwright-core for the
# browser tests, esbuild and uPlot for the bundle).
browser-deps:
	bash scripts/chromium.sh
	cd host/web && npm ci --no-audit --no-fund --loglevel=error

# The dashboard's bundle (host/web/assets/app.js, app.css, worker.js) from
# host/web/src; committed, and a test fails when it is stale.
web:
	cd host/web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

# clang + wasi-libc and Rust with its wasm32 std, from Debian's packages,
# for the C and Rust SDKs; AssemblyScript from npm.
toolchains:
	bash scripts/toolchains.sh

# The C, Rust and AssemblyScript SDKs' local tests (their Wasm builds run
# in go test: sdk/conformance).
test-sdks: toolchains
	@mkdir -p $(BIN)
	cc -O2 -Wall -Wextra -Werror -std=c11 -Isdk/c -o $(BIN)/votes-c-test \
	  examples/votes/c/votes.c examples/votes/c/votes_test.c sdk/c/wagg.c sdk/c/wagg_local.c
	$(BIN)/votes-c-test
	cc -O2 -Wall -Wextra -Werror -std=c11 -Isdk/c -o $(BIN)/uniquevoters-c-test \
	  examples/uniquevoters/c/uniquevoters.c examples/uniquevoters/c/uniquevoters_test.c sdk/c/wagg.c sdk/c/wagg_local.c
	$(BIN)/uniquevoters-c-test
	$(CARGO) test -q --offline --manifest-path sdk/rust/Cargo.toml
	$(CARGO) test -q --offline --manifest-path examples/votes/rust/Cargo.toml
	$(CARGO) test -q --offline --manifest-path examples/uniquevoters/rust/Cargo.toml
	node --test examples/votes/assemblyscript/
	node --test examples/uniquevoters/assemblyscript/

# Unit, fuzz-seed, browser and integration tests against the real services,
# the SDKs' conformance, and the Kafka Streams peer's correctness check.
test: services browser-deps test-peers test-sdks
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/... ./examples/votes
	@mkdir -p .cache && rm -f $(TEST_REPORT)
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m ./...
	@if [ -f $(TEST_REPORT) ]; then echo "== fault suite =="; cat $(TEST_REPORT); fi

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/... ./examples/votes

# A short run of every fuzz target (go test runs one target at a time).
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run XXX -fuzz FuzzDecodeBatch -fuzztime $(FUZZTIME) ./abi
	$(GO) test -run XXX -fuzz FuzzDecodeRows -fuzztime $(FUZZTIME) ./abi
	$(GO) test -run XXX -fuzz FuzzKeyValues -fuzztime $(FUZZTIME) ./abi
	$(GO) test -run XXX -fuzz 'FuzzRestore$$' -fuzztime $(FUZZTIME) ./sdk/go/wagg
	$(GO) test -run XXX -fuzz FuzzRestoreDistinct -fuzztime $(FUZZTIME) ./sdk/go/wagg
	$(GO) test -run XXX -fuzz FuzzMigrateRestore -fuzztime $(FUZZTIME) ./sdk/go/wagg
	$(GO) test -run XXX -fuzz FuzzDecoder -fuzztime $(FUZZTIME) ./host/decode
	$(GO) test -run XXX -fuzz FuzzDecodeClientFrame -fuzztime $(FUZZTIME) ./host/hub
	$(GO) test -run XXX -fuzz FuzzParseSSE -fuzztime $(FUZZTIME) ./host/hub
	$(GO) test -run XXX -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./host/auth
	$(GO) test -run XXX -fuzz FuzzScanCode -fuzztime $(FUZZTIME) ./host/sandbox
	$(GO) test -run XXX -fuzz FuzzInstrument -fuzztime $(FUZZTIME) ./host/sandbox
	$(GO) test -run XXX -fuzz FuzzGuestDecoders -fuzztime $(FUZZTIME) -parallel 1 ./sdk/conformance
	$(GO) test -run XXX -fuzz FuzzStateApply -fuzztime $(FUZZTIME) ./host/catalog
	$(GO) test -run XXX -fuzz FuzzCheckSQL -fuzztime $(FUZZTIME) ./host/server

# The Wasm stage against native Go, the host decoder, the cost of per-call
# deadlines, the memory of idle partitions and the host's decoding of a
# guest's rows (BENCHMARKS.md).
bench: toolchains
	@mkdir -p $(BIN)
	$(GO) test -run XXX -bench . -benchtime 2s -count 3 ./examples/votes ./host/decode | tee $(BIN)/bench.txt
	$(GO) test -run XXX -bench Deadline -benchtime 2s -count 3 ./host/sandbox | tee -a $(BIN)/bench.txt
	$(GO) test -run XXX -bench Memory -benchtime 1x ./host/sandbox | tee -a $(BIN)/bench.txt
	$(GO) test -run XXX -bench DecodeRows -benchtime 2s -count 3 ./abi | tee -a $(BIN)/bench.txt

demo: build services
	bash scripts/demo.sh up $(DEMO_ADDR) $(KAFKA) $(CLICKHOUSE)

demo-stop:
	bash scripts/demo.sh down

clean:
	rm -rf $(BIN)

# wagg against the Kafka Streams peer on the same broker (BENCHMARKS.md).
# EVENTS, ROUNDS, RATE and SECONDS size the run.
EVENTS ?= 2000000
ROUNDS ?= 3
RATE   ?= 20000
SECONDS?= 60
# The peer's correctness check against the real broker: its final window
# counts and totals equal the exact counts of a known input, both guarantees.
test-peers: services
	@mkdir -p $(BIN)
	cd bench/peers/kstreams && WAGG_KAFKA_BOOTSTRAP=$(KAFKA) mvn -q -B test > $(CURDIR)/$(BIN)/test-peers.log 2>&1 \
	  || (tail -n 80 $(CURDIR)/$(BIN)/test-peers.log; echo "test-peers failed: full log in $(BIN)/test-peers.log"; exit 1)
	@grep -q 'skipped="0"' bench/peers/kstreams/target/surefire-reports/TEST-io.wagg.peers.kstreams.BrokerVerifyTest.xml \
	  || (echo "test-peers: the broker check was skipped"; exit 1)
	@echo "test-peers: the Kafka Streams peer's counts equal the exact counts (both guarantees)"

bench-peers: build services
	cd bench/peers/kstreams && (mvn -q -B -o package -DskipTests >/dev/null 2>&1 || mvn -q -B package -DskipTests)
	$(GO) run ./bench/peers/harness -kafka $(KAFKA) -clickhouse $(CLICKHOUSE) -events $(EVENTS) -rounds $(ROUNDS) -rate $(RATE) -seconds $(SECONDS)
