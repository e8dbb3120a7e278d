# go-ldm developer targets. `make test` is the one command that runs every test.
SHELL := /bin/bash
GO    ?= go
BUF   := web/node_modules/.bin/buf
# staticcheck is pinned in tools/go.mod (a module of its own, so its
# dependencies stay out of the main go.mod); its checks are in staticcheck.conf.
STATICCHECK := $(GO) tool -modfile=tools/go.mod staticcheck
# The viewer's browser tests (cmd/ldm) drive Debian's Chromium at this path.
CHROMIUM := /usr/bin/chromium

.PHONY: all build image test chromium python deps generate check-generated check-bundle lint breaking bench perf soak load ci

all: build

build:
	$(GO) build -o bin/ldm ./cmd/ldm

# image builds the container image without a Docker daemon or registry
# (deploy/image, a module of its own so go-containerregistry stays out of
# the main go.mod): bin/ldm-image/ (an OCI image layout) and
# bin/ldm-image.tar (for docker load, podman load, kind load image-archive,
# ctr images import). Reproducible: the same commit gives the same digest.
IMAGE_TAG ?= go-ldm/ldm:dev
image:
	cd deploy/image && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) \
		$(GO) run . -src ../.. -out ../../bin -tag $(IMAGE_TAG) \
		-revision "$$(git rev-parse HEAD 2>/dev/null)"

# deps installs what the tests need that go.mod does not fetch: the npm
# packages of the viewer (buf, protoc-gen-es, esbuild, playwright-core).
deps:
	cd web && npm ci --no-audit --no-fund
	cd web/test/formats && npm ci --no-audit --no-fund

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# The third-party clients of the open-format views (zarrita, Neuroglancer),
# which the server tests drive; test-only, never bundled into the viewer.
web/test/formats/node_modules/.installed: web/test/formats/package.json web/test/formats/package-lock.json
	cd web/test/formats && npm ci --no-audit --no-fund
	touch $@

# chromium makes sure the browser the viewer tests drive is installed: as
# root it installs Debian's chromium with apt-get; otherwise it stops and
# prints the command to run.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (apt-get install chromium)"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null || exit 1; \
		else \
			echo "the browser tests need Chromium at $(CHROMIUM); install it with:"; \
			echo "  sudo apt-get update && sudo apt-get install -y chromium"; \
			exit 1; \
		fi; \
	fi

# python makes sure Debian's Python has numpy and zarr-python (with aiohttp
# for fsspec's HTTP), the real clients of the region-read and OME-Zarr export
# tests (cmd/ldm), of the OME-Zarr views (server) and of the README's Python
# snippet; as root it installs them with apt-get.
PYTHON := /usr/bin/python3
python:
	@if ! $(PYTHON) -c 'import numpy, zarr, fsspec, aiohttp' >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing python3-numpy, python3-zarr and python3-aiohttp (apt-get)"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq python3-numpy python3-zarr python3-fsspec python3-aiohttp >/dev/null || exit 1; \
		else \
			echo "the export tests need numpy and zarr for $(PYTHON); install them with:"; \
			echo "  sudo apt-get update && sudo apt-get install -y python3-numpy python3-zarr python3-fsspec python3-aiohttp"; \
			exit 1; \
		fi; \
	fi

# test runs every test: the viewer's unit tests (node:test), vet, the Go
# tests with the race detector (storage crash rounds, every RPC over real
# sockets, the browser end-to-end test).
# It installs what the tests need first (the viewer's npm packages, Chromium).
test: web/node_modules/.installed web/test/formats/node_modules/.installed chromium python
	cd web && npm test --silent
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	cd deploy/image && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

generate: web/node_modules/.installed
	$(BUF) generate

# check-generated regenerates code and fails if it differs from what is committed.
check-generated: generate
	@git add -N gen web/src/gen >/dev/null 2>&1 || true
	@git diff --exit-code --stat -- gen web/src/gen || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }

# check-bundle type-checks and rebuilds the viewer bundle (web/dist, embedded
# by cmd/ldm) and fails if it differs from what is committed.
check-bundle: web/node_modules/.installed
	cd web && npm run --silent build
	@git add -N web/dist >/dev/null 2>&1 || true
	@git diff --exit-code --stat -- web/dist || { echo "viewer bundle is stale: run 'cd web && npm run build' and commit web/dist"; exit 1; }

# lint checks the API (buf), formatting (gofmt) and the Go code (staticcheck,
# with the checks in staticcheck.conf; the first run builds it, about a minute).
lint: web/node_modules/.installed
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@files=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$files" ]; then echo "gofmt would change: $$files (run gofmt -w)"; exit 1; fi
	$(STATICCHECK) ./...

# breaking compares the API with the previous commit (skipped on the first).
breaking: web/node_modules/.installed
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "breaking: no previous commit with buf.yaml; skipped"; fi

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./...

# perf measures serving throughput against grpc-go baselines in the same
# run (alternating rounds, medians) and prints the ratios (several minutes):
# one that marshals per call, and one that answers ReadTile with pre-encoded
# responses, each server in its own process, with server CPU per GB.
perf:
	LDM_PERF=1 $(GO) test -count=1 -timeout 60m -run '^TestService_(PerformanceReport|PreencodedReport)$$' -v ./service/

# load runs the attacks of the hardening work at once against `ldm serve`
# (compressed bodies from unauthenticated callers, clients that never read,
# a stream of 64 MiB tiles, wrong Basic passwords) for LDM_LOAD_SECONDS
# (default 20) and reports the server's peak resident memory and a
# legitimate reader's latency against idle.
load:
	LDM_LOAD=1 $(GO) test -count=1 -timeout 10m -run '^TestLoad_attacks_report$$' -v ./service/

# soak runs the storage crash test for 500 SIGKILL rounds (the default suite
# runs about 3 s of rounds), the storage power-loss test for 2000 cut points
# (the default suite: up to 60) and kills the cluster leader 200 times during
# writes (the default suite: 2).
soak:
	LDM_CRASH_ROUNDS=500 $(GO) test -count=1 -timeout 30m -run 'CrashRecovery' ./storage/
	LDM_POWERLOSS_ROUNDS=2000 $(GO) test -count=1 -timeout 30m -run 'PowerLoss' ./storage/
	LDM_SOAK_ROUNDS=200 $(GO) test -race -count=1 -timeout 30m -run 'RepeatedLeaderKills' ./cluster/

ci: lint breaking check-generated check-bundle test
