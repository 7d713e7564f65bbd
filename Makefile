# keyward — make demo runs the demo on an embedded Redis; make test runs every check.
#
# Six modules: the library (this folder), the command (cmd/keyward), the fault harness (chaos), the benchmark
# (bench) and the integrations (contrib/keywardotel: OpenTelemetry metrics and spans; contrib/keywardgocron:
# gocron's Locker and Elector). go.work puts them in one workspace, which the command and the integrations need
# (their go.mods require the library without a replace directive, so that go install …/cmd/keyward@latest and
# go get …/contrib/… work). The library is built, vetted and tested without the workspace (LIB), as its users
# build it: a requirement missing from its go.mod fails here instead of being filled in by another module of the
# workspace. The others run in the workspace (WS), whatever GOWORK the caller's environment sets.
GO ?= go
LIB := GOWORK=off
WS := GOWORK=$(CURDIR)/go.work
PKGS := ./...
CONTRIB := ./contrib/keywardotel/... ./contrib/keywardgocron/...

.PHONY: test demo bench bench-go chaos mutants lint vet tidy deps

## test: lint, then unit and integration tests with the race detector: the library's, the command's, the
## benchmark module's (keyward beside redsync on the same servers), the fault harness's short schedule and the
## integrations' (installs redis-server, and iptables for real partitions, when missing)
test: deps lint
	$(LIB) $(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(WS) $(GO) test -race -count=1 -timeout 10m ./cmd/keyward/... ./bench/...
	cd chaos && $(WS) $(GO) test -race -count=1 -timeout 10m ./...
	$(WS) $(GO) test -race -count=1 -timeout 5m $(CONTRIB)

## demo: the main job on an embedded Redis (nothing to install)
demo:
	$(WS) $(GO) run ./cmd/keyward demo

## bench: keyward against redsync, bsm/redislock and rueidislock, and its rate limiter against redis_rate, in one
## run; rewrites docs/BENCHMARKS.md
bench: deps
	cd bench && $(WS) $(GO) run . -write-docs

## bench-go: the packages' own go test benchmarks against real redis-server processes
bench-go: deps
	$(LIB) $(GO) test -run '^$$' -bench . -benchtime 2000x -count 1 ./lock/ ./semaphore/
	$(LIB) $(GO) test -run '^$$' -bench Uncontended -benchtime 2000x -count 1 ./redlock/
	$(LIB) $(GO) test -run '^$$' -bench MajorityDown -benchtime 100x -count 1 ./redlock/  # each try waits out the 50 ms node timeout
	$(LIB) $(GO) test -run '^$$' -bench . -benchtime 50x -count 1 ./election/  # a crash fail-over waits out a 200 ms ttl

## chaos: the full fault schedule, with its verdict table
chaos: deps
	cd chaos && KEYWARD_CHAOS=full $(WS) $(GO) test -count=1 -v -run '^TestChaos$$' -timeout 10m .

## mutants: inject each bug of scripts/mutants/mutations.go into a copy of the project and report which test
## catches it, and how fast (not part of test: it takes long). MUTANTS_FLAGS='-run fence -j 2' selects and
## parallelises.
mutants: deps
	$(LIB) $(GO) run ./scripts/mutants $(MUTANTS_FLAGS)

## lint: gofmt check and go vet of every module
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(LIB) $(GO) vet $(PKGS)
	$(WS) $(GO) vet ./cmd/keyward/... ./bench/... ./chaos/...
	$(WS) $(GO) vet $(CONTRIB)

## tidy: go mod tidy in every module. The command's go.mod requires a released version of the library, which
## tidy (it ignores the workspace) would try to download: it is tidied with a replace directive to this folder,
## which is dropped again.
tidy:
	$(LIB) $(GO) mod tidy
	cd chaos && $(LIB) $(GO) mod tidy
	cd bench && $(LIB) $(GO) mod tidy
	cd cmd/keyward && $(GO) mod edit -replace github.com/keyward/keyward=../.. && \
	  { $(LIB) $(GO) mod tidy; status=$$?; $(GO) mod edit -dropreplace github.com/keyward/keyward; exit $$status; }
	for m in contrib/keywardotel contrib/keywardgocron; do \
	  (cd $$m && $(GO) mod edit -replace github.com/keyward/keyward=../.. && \
	   { $(LIB) $(GO) mod tidy; status=$$?; $(GO) mod edit -dropreplace github.com/keyward/keyward; exit $$status; }) \
	  || exit 1; \
	done

deps:
	@./scripts/ensure-test-deps.sh
