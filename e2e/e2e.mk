# e2e harness targets, included from the top Makefile.
# Binaries are cached outside the clone in $(TETHER_CACHE)/bins, keyed by
# the hash of each tools module's inputs; e2e/.bin holds links to them.

E2E_BIN_DIR   ?= $(CURDIR)/e2e/.bin
DEV_STATE_DIR ?= $(CURDIR)/.cache/dev-cluster
DEV_NODES     ?= 3

DEV_MGMT_DIR  ?= $(CURDIR)/.cache/dev-mgmt

.PHONY: e2e-bins dev-cluster dev-cluster-down dev-mgmt dev-mgmt-down

e2e-bins: ## Build etcd, kube-*, kwok and the CAPI managers into e2e/.bin (cached by input hash)
	@TETHER_E2E_BIN_DIR=$(E2E_BIN_DIR) e2e/tools/build.sh

dev-cluster: e2e-bins ## Start a simulated cluster (kwok nodes) in the background; prints export KUBECONFIG=...
	@mkdir -p $(DEV_STATE_DIR)
	@$(GO) build -o $(DEV_STATE_DIR)/devcluster ./e2e/cmd/devcluster
	@$(DEV_STATE_DIR)/devcluster up -state-dir $(DEV_STATE_DIR) -bin-dir $(E2E_BIN_DIR) -nodes $(DEV_NODES)

dev-cluster-down: ## Stop the cluster `make dev-cluster` started
	@if [ -x $(DEV_STATE_DIR)/devcluster ]; then $(DEV_STATE_DIR)/devcluster down -state-dir $(DEV_STATE_DIR); \
	else echo "no dev cluster state in $(DEV_STATE_DIR)"; fi

dev-mgmt: e2e-bins ## Start a local Cluster API management cluster (CAPD in-memory) in the background; prints export KUBECONFIG=...
	@mkdir -p $(DEV_MGMT_DIR)
	@$(GO) build -o $(DEV_MGMT_DIR)/devcluster ./e2e/cmd/devcluster
	@$(DEV_MGMT_DIR)/devcluster up -state-dir $(DEV_MGMT_DIR) -bin-dir $(E2E_BIN_DIR) -nodes 0 -management

dev-mgmt-down: ## Stop the management cluster `make dev-mgmt` started
	@if [ -x $(DEV_MGMT_DIR)/devcluster ]; then $(DEV_MGMT_DIR)/devcluster down -state-dir $(DEV_MGMT_DIR); \
	else echo "no dev management cluster state in $(DEV_MGMT_DIR)"; fi
