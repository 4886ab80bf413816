# protocol/proto.mk: protobuf generation for protocol/fleet/v1 and
# protocol/worker/v1.
# Included from the top-level Makefile; paths are relative to the repo root.

PROTOC_VERSION             ?= 3.21.12
PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2

PROTO_DIRS  := protocol/fleet/v1 protocol/worker/v1 protocol/telemetry/v1
PROTO_FILES := $(foreach d,$(PROTO_DIRS),$(wildcard $(d)/*.proto))
PROTO_TOOLS := PROTOC_VERSION=$(PROTOC_VERSION) \
	PROTOC_GEN_GO_VERSION=$(PROTOC_GEN_GO_VERSION) \
	PROTOC_GEN_GO_GRPC_VERSION=$(PROTOC_GEN_GO_GRPC_VERSION) \
	protocol/fleet/install-tools.sh

# $(call proto_flags,OUTDIR): module= strips the module path, so files land
# in OUTDIR/protocol/<name>/v1.
proto_flags = -I . -I /usr/include \
	--go_out=$(1) --go_opt=module=github.com/tetherfleet/tether \
	--go-grpc_out=$(1) --go-grpc_opt=module=github.com/tetherfleet/tether

.PHONY: proto proto-check proto-tools

proto-tools: ## Install protoc (apt) and the pinned protoc-gen-go/-grpc plugins into $TETHER_CACHE
	@$(PROTO_TOOLS)

proto: ## Regenerate Go code from protocol/*/v1/*.proto
	@bin="$$($(PROTO_TOOLS))" && PATH="$$bin:$$PATH" protoc $(call proto_flags,.) $(PROTO_FILES)

proto-check: ## Fail if the generated protobuf code is stale
	@bin="$$($(PROTO_TOOLS))" && tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp"' EXIT && \
	PATH="$$bin:$$PATH" protoc $(call proto_flags,"$$tmp") $(PROTO_FILES) && \
	status=0 && \
	for f in $(foreach d,$(PROTO_DIRS),$(d)/*.pb.go); do \
		[ -f "$$tmp/$$f" ] || { echo "proto-check: $$f is committed but no longer generated"; status=1; continue; }; \
		diff -u "$$f" "$$tmp/$$f" || status=1; \
	done && \
	for f in $$(cd "$$tmp" && ls $(foreach d,$(PROTO_DIRS),$(d)/*.pb.go)); do \
		[ -f "$$f" ] || { echo "proto-check: $$f is generated but not committed"; status=1; }; \
	done && \
	if [ $$status != 0 ]; then echo "proto-check: generated code in $(PROTO_DIRS) is stale; run 'make proto'"; exit 1; fi
