#!/usr/bin/env bash
# demo.sh up|down|hub-stop|hub-start: a hub and two agents on this machine.
# State, logs and pids live in .demo/ at the repo root.
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

up() {
	mkdir -p "$state"
	hub_start
	for c in edge-paris-1 edge-berlin-1; do
		if [ ! -f "$state/$c/agent.db" ]; then
			token="$("$bin/tether" token create --cluster "$c" --label site="${c%-1}" 2>/dev/null)"
			start_bg "$c" "$bin/tether-agent" run --data-dir "$state/$c" --hub "$agent_addr" --token "$token" --no-cluster
		else
			start_bg "$c" "$bin/tether-agent" run --data-dir "$state/$c" --no-cluster
		fi
	done
	wait_for "two agents to connect" 60 connected 2
	echo
	echo "\$ tether get clusters -o wide"
	"$bin/tether" get clusters -o wide
	cat <<EOT

The hub and two agents run in the background (logs in .demo/). Try:
  export TETHER_CONFIG=$TETHER_CONFIG PATH=$bin:\$PATH
  tether describe cluster edge-paris-1
  deploy/demo/demo.sh hub-stop; tether-agent status --data-dir .demo/edge-paris-1   # Offline
  deploy/demo/demo.sh hub-start; tether get clusters                                # reconnected, no token
  make demo-down
EOT
}

case "${1:-}" in
up) up ;;
down)
	for n in edge-paris-1 edge-berlin-1 hub; do stop_bg "$n"; done
	echo "demo stopped (state kept in .demo/; rm -rf .demo to start afresh)"
	;;
hub-stop) stop_bg hub; echo "hub stopped" ;;
hub-start) hub_start; wait_for "agents to reconnect" 120 connected 2; "$bin/tether" get clusters ;;
*) echo "usage: $0 up|down|hub-stop|hub-start" >&2; exit 2 ;;
esac
