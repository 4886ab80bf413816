#!/usr/bin/env bash
# Builds the real components the e2e harness runs (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, the Cluster API managers,
# Prometheus and promtool, Mailpit)
# from the tools modules under e2e/tools, and copies the upstream YAML they
# need at run time (kwok stages, CAPI CRDs and webhook manifests, and the
# CRDs of the AWS, Azure, vSphere and OpenStack infrastructure providers
# that the real-provider ClusterTemplates are dry-run against).
#
# Each artifact is cached outside the clone, in
#   ${TETHER_CACHE:-$HOME/.cache/tether}/bins/<name>-<hash>
# where <hash> covers the tools module's go.mod, go.sum and Go files, the
# build flags and the Go version. A fresh clone (CI) therefore rebuilds only
# what changed. The result is hard-linked (or copied) into the output folder,
# ${TETHER_E2E_BIN_DIR:-e2e/.bin}.
#
# Usage: e2e/tools/build.sh [name...]   (no names: everything)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${TETHER_E2E_BIN_DIR:-$repo/e2e/.bin}"
cache="${TETHER_CACHE:-$HOME/.cache/tether}/bins"
mkdir -p "$out" "$cache"

# One build at a time per cache: a second `make e2e-bins` waits, then finds
# the first one's results cached.
exec 9>"$cache/.lock"
if ! flock -n 9; then
	echo "waiting for another e2e-bins build to finish (lock $cache/.lock)…"
	flock 9
fi

export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
gover="$(go env GOVERSION)"

kube_version=v1.37.2
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${kube_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
plain_ldflags="-s -w"
# Prometheus without its service-discovery plugins (AWS, Azure, GCE,
# Kubernetes, ...): the harness configures only the remote-write receiver
# and static targets, and the plugins' SDKs were most of its cold build.
prom_tags="remove_all_sd"

# name | tools module | package | flag set (ldflags, tags) | rough cold time on 2 cores
targets=(
	"etcd|etcd|./cmd/etcd|plain|~1 min"
	"kube-apiserver|kube|./cmd/kube-apiserver|kube|~9 min"
	"kube-controller-manager|kube|./cmd/kube-controller-manager|kube|~3 min"
	"kube-scheduler|kube|./cmd/kube-scheduler|kube|~1 min"
	"kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|plain|~2 min"
	"helm|helm|helm.sh/helm/v3/cmd/helm|plain|~2 min"
	"capi-manager|capi|sigs.k8s.io/cluster-api/core|plain|~3.5 min"
	"kubeadm-bootstrap-manager|capi|sigs.k8s.io/cluster-api/bootstrap/kubeadm|plain|~1 min"
	"kubeadm-control-plane-manager|capi|sigs.k8s.io/cluster-api/controlplane/kubeadm|plain|~1 min"
	"capd-manager|capi|sigs.k8s.io/cluster-api/test/infrastructure/docker|plain|~1.5 min"
	"prometheus|prometheus|github.com/prometheus/prometheus/cmd/prometheus|prom|~2 min"
	"promtool|prometheus|github.com/prometheus/prometheus/cmd/promtool|prom|~1 min"
	"mailpit|mailpit|github.com/axllent/mailpit|plain|~2 min"
	"kwok-stages|kwok|(assets)|-|seconds"
	"capi-manifests|capi|(assets)|-|seconds"
	"provider-crds|providers|(assets)|-|seconds"
)

want=("$@")
selected() {
	[[ ${#want[@]} -eq 0 ]] && return 0
	local w
	for w in "${want[@]}"; do [[ "$w" == "$1" ]] && return 0; done
	return 1
}

# module_hash MODULE EXTRA: hash of the module's inputs plus EXTRA.
module_hash() {
	local dir="$here/$1"
	{
		echo "go=$gover name=$2 flags=$3 script-rev=1"
		(cd "$dir" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -c1-16
}

# moddir MODULE PATH: the module cache folder of a dependency.
moddir() {
	(cd "$here/$1" && go list -m -f '{{.Dir}}' "$2")
}

build_assets() { # name module dest
	local name="$1" mod="$2" dest="$3"
	mkdir -p "$dest"
	case "$name" in
	kwok-stages)
		local k
		k="$(moddir kwok sigs.k8s.io/kwok)"
		local f first=1
		for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
			pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
			[[ $first -eq 1 ]] || echo "---"
			first=0
			cat "$k/kustomize/stage/$f"
		done >"$dest/stages.yaml"
		;;
	capi-manifests)
		local c t
		c="$(moddir capi sigs.k8s.io/cluster-api)"
		t="$(moddir capi sigs.k8s.io/cluster-api/test)"
		local p src
		for p in core:$c/core bootstrap-kubeadm:$c/bootstrap/kubeadm \
			controlplane-kubeadm:$c/controlplane/kubeadm infrastructure-docker:$t/infrastructure/docker; do
			src="${p#*:}"
			mkdir -p "$dest/${p%%:*}/crd"
			cp "$src"/config/crd/bases/*.yaml "$dest/${p%%:*}/crd/"
			cp "$src/config/webhook/manifests.yaml" "$dest/${p%%:*}/webhooks.yaml"
		done
		chmod -R u+w "$dest"
		;;
	provider-crds)
		# Only the module zips are needed (nothing is built), so
		# `go mod download` rather than `go list`, which would load the
		# providers' whole dependency graphs. The OpenStack provider's
		# version is served by the module proxy but unknown to the
		# checksum database; go.sum still pins its hash.
		local m d sub
		for p in aws:sigs.k8s.io/cluster-api-provider-aws/v2:config/crd/bases \
			azure:sigs.k8s.io/cluster-api-provider-azure:config/crd/bases \
			vsphere:sigs.k8s.io/cluster-api-provider-vsphere:config/default/crd/bases \
			openstack:sigs.k8s.io/cluster-api-provider-openstack:config/crd/bases; do
			IFS=: read -r d m sub <<<"$p"
			local dir
			dir="$(cd "$here/$mod" && GONOSUMDB=sigs.k8s.io/cluster-api-provider-openstack go mod download -json "$m" |
				sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
			if [[ -z "$dir" || ! -d "$dir/$sub" ]]; then
				echo "provider-crds: no $sub in module $m" >&2
				return 1
			fi
			mkdir -p "$dest/$d"
			cp "$dir/$sub"/*.yaml "$dest/$d/"
		done
		chmod -R u+w "$dest"
		;;
	esac
}

install_artifact() { # src name
	local src="$1" name="$2"
	rm -rf "${out:?}/$name"
	if [[ -d "$src" ]]; then
		cp -r "$src" "$out/$name"
	else
		ln -f "$src" "$out/$name" 2>/dev/null || cp "$src" "$out/$name"
	fi
}

total=0
for t in "${targets[@]}"; do
	IFS='|' read -r name _ <<<"$t"
	selected "$name" && total=$((total + 1))
done

i=0
start_all=$SECONDS
for t in "${targets[@]}"; do
	IFS='|' read -r name mod pkg flagset eta <<<"$t"
	selected "$name" || continue
	i=$((i + 1))
	tags=""
	case "$flagset" in
	kube) ldflags="$kube_ldflags" ;;
	prom) ldflags="$plain_ldflags" tags="$prom_tags" ;;
	*) ldflags="$plain_ldflags" ;;
	esac
	flags="$pkg $ldflags -trimpath"
	[[ -z "$tags" ]] || flags="$flags -tags=$tags"
	hash="$(module_hash "$mod" "$name" "$flags")"
	cached="$cache/$name-$hash"
	stamp="$out/.$name.hash"

	if [[ -e "$out/$name" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
		echo "[$i/$total] $name: up to date ($hash)"
		continue
	fi
	if [[ -e "$cached" ]]; then
		install_artifact "$cached" "$name"
		echo "$hash" >"$stamp"
		echo "[$i/$total] $name: cached ($hash)"
		continue
	fi

	echo "[$i/$total] building $name (cold, $eta)…"
	t0=$SECONDS
	tmp="$cache/.tmp-$name-$hash-$$"
	rm -rf "$tmp"
	if [[ "$pkg" == "(assets)" ]]; then
		build_assets "$name" "$mod" "$tmp"
	else
		(cd "$here/$mod" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp" "$pkg")
	fi
	mv -T "$tmp" "$cached" 2>/dev/null || rm -rf "$tmp" # lost a race: keep theirs
	install_artifact "$cached" "$name"
	echo "$hash" >"$stamp"
	echo "[$i/$total] $name: built in $((SECONDS - t0))s ($hash)"
done
echo "e2e binaries ready in $out ($((SECONDS - start_all))s)"
