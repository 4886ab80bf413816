#!/usr/bin/env bash
# demo.sh up|down|hub-stop|hub-start: two local simulated clusters (make
# dev-cluster), a hub, and three agents: edge-paris-1 and mon-cluster-web
# each manage one cluster, edge-berlin-1 runs link-only. Applies the
# Tether-style example (seed.yaml) and the seed article's k0rdent example
# exactly as written (seed-k0rdent.yaml, with the Flux HelmRepository it
# names served on loopback), and waits until nginx-web is Deployed on both
# clusters with its pods Running. State, logs and pids live in .demo/ at the
# repo root.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$root/.demo"
bin="$root/bin"
agent_addr="127.0.0.1:${TETHER_DEMO_AGENT_PORT:-17070}"
api_addr="127.0.0.1:${TETHER_DEMO_API_PORT:-17443}"
export TETHER_CONFIG="$state/hub/admin.yaml"

start_bg() { # name cmd...
	local name="$1"; shift
	nohup "$@" >"$state/$name.log" 2>&1 &
	echo $! >"$state/$name.pid"
}

stop_bg() { # name
	local pidf="$state/$1.pid"
	[ -f "$pidf" ] || return 0
	local pid; pid="$(cat "$pidf")"
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$pidf"
}

wait_for() { # description seconds cmd...
	local what="$1" secs="$2"; shift 2
	printf 'waiting for %s ' "$what"
	for _ in $(seq $((secs * 5))); do
		if "$@" >/dev/null 2>&1; then echo ok; return 0; fi
		printf '.'; sleep 0.2
	done
	echo " timed out"; return 1
}

hub_start() {
	start_bg hub "$bin/tether" serve --data-dir "$state/hub" --agent-addr "$agent_addr" --api-addr "$api_addr"
	wait_for "the hub" 30 "$bin/tether" version
}

connected() { # n
	[ "$("$bin/tether" get clusters -o json | grep -c '"state": "Connected"')" -ge "$1" ]
}

start_agent() { # cluster extra-args...
	local c="$1"; shift
	if [ ! -f "$state/$c/agent.db" ]; then
		local token
		token="$("$bin/tether" token create --cluster "$c" --label site="${c%-1}" 2>/dev/null)"
		start_bg "$c" "$bin/tether-agent" run --data-dir "$state/$c" --hub "$agent_addr" --token "$token" "$@"
	else
		start_bg "$c" "$bin/tether-agent" run --data-dir "$state/$c" "$@"
	fi
}

deployed() { # cluster
	"$bin/tether" get services --cluster "$1" -o json | grep -q '"state": "Deployed"'
}

up() {
	mkdir -p "$state"
	echo "== local clusters (make dev-cluster; the first run builds Kubernetes from source, ~20 min on 2 cores)"
	make -C "$root" --no-print-directory dev-cluster DEV_STATE_DIR="$state/cluster"
	make -C "$root" --no-print-directory dev-cluster DEV_STATE_DIR="$state/cluster-mon" DEV_NODES=2
	kubeconfig="$state/cluster/kubeconfig"
	echo "== hub"
	hub_start
	echo "== agents"
	start_agent edge-paris-1 --kubeconfig "$kubeconfig"
	start_agent mon-cluster-web --kubeconfig "$state/cluster-mon/kubeconfig"
	start_agent edge-berlin-1 --no-cluster
	wait_for "three agents to connect" 60 connected 3
	"$bin/tether" get clusters -o wide
	echo
	echo "== Tether-style example: push the chart, apply deploy/demo/seed.yaml"
	"$bin/tether" chart push "$root/bundles/services/simple-nginx"
	"$bin/tether" apply -f "$root/deploy/demo/seed.yaml"
	echo
	echo "== the seed article's k0rdent example as written: deploy/demo/seed-k0rdent.yaml"
	rm -f "$state/helm-repo.url"
	start_bg helm-repo "$state/cluster/devcluster" helm-repo -state-dir "$state" "$root/bundles/services/simple-nginx"
	wait_for "the chart repository" 30 test -s "$state/helm-repo.url"
	sed "s|\${CHARTS_URL}|$(cat "$state/helm-repo.url")|" "$root/deploy/demo/k0rdent-public-charts.yaml" | "$bin/tether" apply -f -
	"$bin/tether" apply -f "$root/deploy/demo/seed-k0rdent.yaml"
	wait_for "nginx-web to be Deployed on edge-paris-1" 300 deployed edge-paris-1
	wait_for "nginx-web to be Deployed on mon-cluster-web" 300 deployed mon-cluster-web
	echo
	echo "\$ tether get services"
	"$bin/tether" get services
	echo
	echo "\$ kubectl get pods -n applications-web"
	KUBECONFIG="$kubeconfig" kubectl get pods -n applications-web
	echo "\$ KUBECONFIG=.demo/cluster-mon/kubeconfig kubectl get pods -n applications-web"
	KUBECONFIG="$state/cluster-mon/kubeconfig" kubectl get pods -n applications-web
	cat <<EOT

The clusters, the hub and three agents run in the background (logs in .demo/). Try:
  export TETHER_CONFIG=$TETHER_CONFIG KUBECONFIG=$kubeconfig PATH=$bin:\$PATH
  tether get clusterdeployments -A; tether describe cluster edge-paris-1
  deploy/demo/demo.sh hub-stop; tether-agent status --data-dir .demo/edge-paris-1   # Offline, still reconciling
  kubectl delete deployment -n applications-web --all                               # the agent restores it
  deploy/demo/demo.sh hub-start; tether get clusters                                # reconnected, no token
  make demo-down
EOT
}

case "${1:-}" in
up) up ;;
down)
	for n in edge-paris-1 mon-cluster-web edge-berlin-1 helm-repo hub; do stop_bg "$n"; done
	make -C "$root" --no-print-directory dev-cluster-down DEV_STATE_DIR="$state/cluster"
	make -C "$root" --no-print-directory dev-cluster-down DEV_STATE_DIR="$state/cluster-mon"
	echo "demo stopped (state kept in .demo/; rm -rf .demo to start afresh)"
	;;
hub-stop) stop_bg hub; echo "hub stopped" ;;
hub-start) hub_start; wait_for "agents to reconnect" 120 connected 3; "$bin/tether" get clusters ;;
*) echo "usage: $0 up|down|hub-stop|hub-start" >&2; exit 2 ;;
esac
