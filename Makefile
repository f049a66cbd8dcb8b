# Snorky: make test (what CI runs), make lint, make bench, make fuzz.
GO ?= go
PKGS := ./...

.PHONY: test lint bench fuzz build demo

build:
	$(GO) build -o bin/snorky ./cmd/snorky
	$(GO) build -o bin/snorky-bench ./cmd/snorky-bench

# Every test, with the race detector, against a throwaway PostgreSQL that the
# tests start themselves (SNORKY_TEST_DATABASE_URL points them at an
# existing server instead).
test:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); else echo "staticcheck not installed; skipped"; fi

# Micro-benchmarks; the whole-system runner is cmd/snorky-bench (see BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Each fuzz target for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDispatch$$' -fuzztime $(FUZZTIME) ./sync/rpc
	$(GO) test -run '^$$' -fuzz '^FuzzCanonical$$' -fuzztime $(FUZZTIME) ./sync/jsonval
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./sync/token
	$(GO) test -run '^$$' -fuzz '^FuzzParseFilter$$' -fuzztime $(FUZZTIME) ./dealers
	$(GO) test -run '^$$' -fuzz '^FuzzNewRow$$' -fuzztime $(FUZZTIME) ./dealers
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./cdc
	$(GO) test -run '^$$' -fuzz '^FuzzLoadConfig$$' -fuzztime $(FUZZTIME) ./cmd/snorky
