# keyward — make demo runs the demo on an embedded Redis; make test runs every check.
GO ?= go
PKGS := ./...

.PHONY: test demo bench bench-go chaos mutants lint vet deps

## test: lint, then unit and integration tests with the race detector, the short fault schedule among them
## (installs redis-server, and iptables for real partitions, when missing)
test: deps lint
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	cd chaos && $(GO) test -race -count=1 -timeout 10m ./...

## demo: the main job on an embedded Redis (nothing to install)
demo:
	$(GO) run ./cmd/keyward demo

## bench: keyward against redsync, bsm/redislock and rueidislock in one run; rewrites docs/BENCHMARKS.md
bench: deps
	cd bench && $(GO) run . -write-docs

## bench-go: the packages' own go test benchmarks against real redis-server processes
bench-go: deps
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 1 ./lock/ ./semaphore/
	$(GO) test -run '^$$' -bench Uncontended -benchtime 2000x -count 1 ./redlock/
	$(GO) test -run '^$$' -bench MajorityDown -benchtime 100x -count 1 ./redlock/  # each try waits out the 50 ms node timeout
	$(GO) test -run '^$$' -bench . -benchtime 50x -count 1 ./election/  # a crash fail-over waits out a 200 ms ttl

## chaos: the full fault schedule, with its verdict table
chaos: deps
	cd chaos && KEYWARD_CHAOS=full $(GO) test -count=1 -v -run '^TestChaos$$' -timeout 10m .

## mutants: inject each bug of scripts/mutants/mutations.go into a copy of the project and report which test
## catches it, and how fast (not part of test: it takes long). MUTANTS_FLAGS='-run fence -j 2' selects and
## parallelises.
mutants: deps
	$(GO) run ./scripts/mutants $(MUTANTS_FLAGS)

## lint: gofmt check and go vet, for the library's module and the modules of the fault harness and the benchmark
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	cd chaos && $(GO) vet ./...
	cd bench && $(GO) vet ./...

deps:
	@./scripts/ensure-test-deps.sh
