# guichet — the README's two commands are `make run` and `make test`.
SHELL := bash
CARGO ?= cargo

.PHONY: run test bench bench-appointment fmt lint check-deploy clean-data

## Build and run every role in one process (starts a local NATS if needed).
run:
	@scripts/ensure-services.sh run
	$(CARGO) run -p guichet -- up

## Run the whole test suite against real NATS and databases.
test:
	@scripts/ensure-services.sh test
	@# The end-to-end tests also run the `guichet` binary as separate processes.
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "guichet: cargo-nextest not installed (cargo install --locked cargo-nextest); using cargo test" >&2; \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## Benchmarks (release builds; figures printed, never asserted): first
## this machine's raw limits and footprint (`bench-limits`, written to
## target/bench-limits.json for the others' ratios), then the routing
## rules' accuracy on the labelled corpus (confusion table), routing
## end to end on SQLite and PostgreSQL (BENCH_ARGS, e.g.
## `--events 5000 --backends sqlite`), the portal's pages and live updates
## (2,000 pending requests, 200 SSE clients), the indicators (a year of a
## town of 50,000 ingested, then queried), then appointments.
bench:
	@scripts/ensure-services.sh test
	$(CARGO) run --release -p guichet -- bench-limits
	$(CARGO) run --release -p guichet -- classify
	$(CARGO) run --release -p guichet -- bench $(BENCH_ARGS)
	$(CARGO) run --release -p guichet -- bench-portal
	$(CARGO) run --release -p guichet -- bench-public
	$(CARGO) run --release -p guichet -- bench-indicators
	$(CARGO) bench -p guichet-appointment --bench rush

## Appointments only: availability queries/s, booking rush throughput and p99.
bench-appointment:
	@scripts/ensure-services.sh test
	$(CARGO) bench -p guichet-appointment --bench rush

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Validate Dockerfile, docker-compose.yml and k8s/ offline.
check-deploy:
	scripts/validate-deploy.sh

clean-data:
	rm -rf data
