# Tether: `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/tetherfleet/tether/protocol/version.Version=$(VERSION)
BIN       := bin
TOOLS     := $(or $(TETHER_CACHE),$(HOME)/.cache/tether)/tools
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)
# Packages under test; the e2e harness tests need `make e2e-bins` first.
TEST_PKGS ?= ./...
# -count=1: the e2e tests build and run the binaries themselves, which go
# test cannot see, so a cached result could hide a change to them.
TEST_FLAGS ?= -race -count=1 -timeout 40m

include protocol/proto.mk
include e2e/e2e.mk

.PHONY: help build test test-short check fmt vet lint tidy-check deps-check bench fuzz demo demo-down clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/tether, bin/tether-agent and its Helm worker bin/tether-agent-helm
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tether ./hub/cmd/tether
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tether-agent ./agent/cmd/tether-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tether-agent-helm ./agent/cmd/tether-agent-helm

test: e2e-bins ## Run every test with -race, real components included (builds e2e binaries once, cached)
	TETHER_E2E_BIN_DIR=$(CURDIR)/e2e/.bin $(GO) test $(TEST_FLAGS) $(TEST_PKGS)

test-short: ## Run the tests that need no cluster (everything but e2e/ and the Helm engine)
	$(GO) test -race $$($(GO) list ./hub/... ./agent/... ./protocol/... | grep -v -e /agent/internal/apply -e /hub/internal/provision/dryrun)

check: fmt vet lint proto-check tidy-check deps-check ## fmt, vet, staticcheck, generated code and go.mod up to date, agent dependency check

fmt: ## Fail if gofmt would change a file
	@out="$$(gofmt -l $$(git ls-files '*.go' | grep -v '^e2e/tools/'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet
	$(GO) vet ./...

$(STATICCHECK):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS)/.sc-tmp $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(TOOLS)/.sc-tmp/staticcheck $@ && rmdir $(TOOLS)/.sc-tmp

lint: $(STATICCHECK) ## staticcheck
	$(STATICCHECK) ./...

tidy-check: ## Fail if go.mod/go.sum are not tidy
	@cp go.mod /tmp/tether-go.mod.bak; cp go.sum /tmp/tether-go.sum.bak; \
	$(GO) mod tidy; \
	if ! diff -q go.mod /tmp/tether-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/tether-go.sum.bak >/dev/null; then \
		diff -u /tmp/tether-go.mod.bak go.mod || true; cp /tmp/tether-go.mod.bak go.mod; cp /tmp/tether-go.sum.bak go.sum; \
		echo "go.mod/go.sum not tidy: run 'go mod tidy'"; exit 1; fi

deps-check: ## Fail if the agent binary depends on hub code, CAPI, the Prometheus TSDB or Helm's SDK
	$(GO) test -run 'TestAgentDependencies|TestLongRunningAgentLinksNoHelm' ./agent/

bench: ## Run the benchmarks recorded in docs/BENCHMARKS.md
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./protocol/... ./hub/... ./agent/...

fuzz: ## Run each fuzz target for FUZZTIME (default 20s)
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg; \
		done; done

demo: build ## Start a local cluster, a hub and two agents; deploy the seed example and show it Running
	deploy/demo/demo.sh up

demo-down: ## Stop what `make demo` started
	deploy/demo/demo.sh down

clean: ## Remove build outputs
	rm -rf $(BIN)
