#!/usr/bin/env bash
# Installs the protobuf toolchain used to generate protocol/fleet/v1 and
# prints the directory holding the Go plugins.
#
#   protoc             from Debian (apt-get install protobuf-compiler libprotobuf-dev), if missing
#   protoc-gen-go      built into $TETHER_CACHE/tools/protoc-gen-go/<version>/
#   protoc-gen-go-grpc built into $TETHER_CACHE/tools/protoc-gen-go-grpc/<version>/
#
# Versions come from the environment (protocol/proto.mk passes them) so that
# one place pins them. The generated files record the protoc version, so a
# different protoc makes `make proto-check` fail: this script refuses one.
set -euo pipefail

: "${PROTOC_VERSION:?PROTOC_VERSION must be set, e.g. 3.21.12}"
: "${PROTOC_GEN_GO_VERSION:?PROTOC_GEN_GO_VERSION must be set, e.g. v1.36.12}"
: "${PROTOC_GEN_GO_GRPC_VERSION:?PROTOC_GEN_GO_GRPC_VERSION must be set, e.g. v1.6.2}"
cache="${TETHER_CACHE:-$HOME/.cache/tether}/tools"

# protoc and the well-known types (timestamp.proto, ...) come from two
# Debian packages; a fresh machine has neither.
if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "install-tools: protoc or its includes not found and apt-get unavailable; install protoc ${PROTOC_VERSION} and its well-known .proto files" >&2
		exit 1
	fi
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	echo "install-tools: installing protobuf-compiler libprotobuf-dev with apt-get" >&2
	$sudo apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev >&2 ||
		{ $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev >&2; }
fi
have="$(protoc --version | awk '{print $2}')"
if [ "$have" != "$PROTOC_VERSION" ]; then
	echo "install-tools: protoc is $have at $(command -v protoc), want $PROTOC_VERSION (Debian bookworm's protobuf-compiler)" >&2
	exit 1
fi
if [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
	echo "install-tools: /usr/include/google/protobuf/timestamp.proto missing; install libprotobuf-dev" >&2
	exit 1
fi

# install_plugin NAME PACKAGE VERSION: go install into a per-version dir,
# then expose it in $cache/bin-<go>-<grpc> so PATH gets exactly the pinned pair.
install_plugin() {
	local name=$1 pkg=$2 version=$3
	local dir="$cache/$name/$version"
	if [ ! -x "$dir/$name" ]; then
		echo "install-tools: building $pkg@$version into $dir" >&2
		mkdir -p "$dir"
		# Outside the main module: its go.mod must not change.
		(cd "$dir" && GOBIN="$dir" GOFLAGS=-mod=mod go install "$pkg@$version") >&2
	fi
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

bin="$cache/bin/go-${PROTOC_GEN_GO_VERSION}_grpc-${PROTOC_GEN_GO_GRPC_VERSION}"
mkdir -p "$bin"
ln -sf "$cache/protoc-gen-go/$PROTOC_GEN_GO_VERSION/protoc-gen-go" "$bin/protoc-gen-go"
ln -sf "$cache/protoc-gen-go-grpc/$PROTOC_GEN_GO_GRPC_VERSION/protoc-gen-go-grpc" "$bin/protoc-gen-go-grpc"
echo "$bin"
