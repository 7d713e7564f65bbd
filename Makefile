# keyward — make demo runs the demo on an embedded Redis; make test runs every check.
GO ?= go
PKGS := ./...

.PHONY: test demo bench lint vet redis-server

## test: lint, then unit and integration tests with the race detector (installs redis-server when missing)
test: redis-server lint
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## demo: the main job on an embedded Redis
demo:
	$(GO) test -count=1 -run '^Example' -v ./lock/

## bench: benchmarks against real redis-server processes
bench: redis-server
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 1 ./lock/

## lint: gofmt check and go vet
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

redis-server:
	@./scripts/ensure-redis-server.sh
