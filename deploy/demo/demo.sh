#!/usr/bin/env bash
# demo.sh up|down|hub-stop|hub-start: a local simulated cluster (make
# dev-cluster), a hub, and two agents: edge-paris-1 manages the local
# cluster, edge-berlin-1 runs link-only. Applies the seed example and waits
# until nginx-web is Deployed with its pods Running. State, logs and pids
# live in .demo/ at the repo root.
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

deployed() {
	"$bin/tether" get services --cluster edge-paris-1 -o json | grep -q '"state": "Deployed"'
}

up() {
	mkdir -p "$state"
	echo "== local cluster (make dev-cluster; the first run builds Kubernetes from source, ~20 min on 2 cores)"
	make -C "$root" --no-print-directory dev-cluster DEV_STATE_DIR="$state/cluster"
	kubeconfig="$state/cluster/kubeconfig"
	echo "== hub"
	hub_start
	echo "== agents"
	start_agent edge-paris-1 --kubeconfig "$kubeconfig"
	start_agent edge-berlin-1 --no-cluster
	wait_for "two agents to connect" 60 connected 2
	"$bin/tether" get clusters -o wide
	echo
	echo "== seed example: push the chart, apply deploy/demo/seed.yaml"
	"$bin/tether" chart push "$root/bundles/services/simple-nginx"
	"$bin/tether" apply -f "$root/deploy/demo/seed.yaml"
	wait_for "nginx-web to be Deployed on edge-paris-1" 300 deployed
	echo
	echo "\$ tether get services"
	"$bin/tether" get services
	echo
	echo "\$ kubectl get pods -n applications-web"
	KUBECONFIG="$kubeconfig" kubectl get pods -n applications-web
	cat <<EOT

The cluster, the hub and two agents run in the background (logs in .demo/). Try:
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
	for n in edge-paris-1 edge-berlin-1 hub; do stop_bg "$n"; done
	make -C "$root" --no-print-directory dev-cluster-down DEV_STATE_DIR="$state/cluster"
	echo "demo stopped (state kept in .demo/; rm -rf .demo to start afresh)"
	;;
hub-stop) stop_bg hub; echo "hub stopped" ;;
hub-start) hub_start; wait_for "agents to reconnect" 120 connected 2; "$bin/tether" get clusters ;;
*) echo "usage: $0 up|down|hub-stop|hub-start" >&2; exit 2 ;;
esac
