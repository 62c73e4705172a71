#!/usr/bin/env bash
# down.sh: stop the local cluster that deploy/local/up.sh DIR started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)

usage() {
	cat <<EOF
Usage: deploy/local/down.sh [--purge] [DIR]

Stops the processes that deploy/local/up.sh DIR started, by the pids in
DIR/cluster.env: the telapi-nodes and telkeys instances first, the
nats-servers last (SIGTERM, then SIGKILL after 10 s). Any nats-server,
"telkeys serve" or telapi-node still running on DIR's files (a node restarted
with NATS_CMD_i has a new pid) is stopped too. Processes already gone are fine.

DIR (default: $ROOT/cluster) stays, with its data and logs, unless --purge
is given: then it is removed.
EOF
}

DIR=""
PURGE=0
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--purge) PURGE=1 ;;
	--)
		shift
		(($# <= 1)) || { usage >&2; exit 2; }
		DIR=${1:-}
		break
		;;
	-*)
		echo "down.sh: unknown option $1" >&2
		usage >&2
		exit 2
		;;
	*)
		[[ -z $DIR ]] || { echo "down.sh: give one DIR" >&2; usage >&2; exit 2; }
		DIR=$1
		;;
	esac
	shift
done
DIR=${DIR:-$ROOT/cluster}

say() { printf 'down.sh: %s\n' "$*"; }
die() {
	printf 'down.sh: %s\n' "$*" >&2
	exit 1
}

[[ -d $DIR ]] || {
	say "no directory $DIR: nothing to stop"
	exit 0
}
DIR_ABS=$(cd "$DIR" && pwd -P)
MARKER=$DIR_ABS/.telkeys-local-cluster
[[ -e $MARKER || -e $DIR_ABS/cluster.env ]] || die "$DIR_ABS was not made by up.sh; not touching it"

alive() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[[ -n $st && $st != Z ]]
}

# is_ours pid kind: the process runs program kind (nats-server, telkeys
# serve, telapi-node) on one of DIR's files. Guards against killing a
# process that merely reuses an old pid.
is_ours() {
	local pid=$1 kind=$2 a args own=0
	alive "$pid" || return 1
	args=()
	mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
	((${#args[@]})) || return 1
	[[ ${args[0]##*/} == "$kind" ]] || return 1
	if [[ $kind == telkeys ]]; then [[ " ${args[*]} " == *" serve "* ]] || return 1; fi
	for a in "${args[@]:1}"; do
		a=${a#--*=}
		case $a in
		"$DIR_ABS"/n[123].conf | "$DIR_ABS"/telkeys-[12] | "$DIR_ABS"/telkeys-[12]/ | "$DIR_ABS"/node.creds | "$DIR_ABS"/service.creds) own=1 ;;
		esac
	done
	((own))
}

# all_of kind: every running process of that kind on DIR's files.
all_of() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ $pid != "$$" ]] || continue
		is_ours "$pid" "$1" && echo "$pid"
	done
	return 0
}

# Pids from cluster.env, read without sourcing it (no code runs).
env_val() {
	[[ -r $DIR_ABS/cluster.env ]] || return 0
	sed -n "s/^$1=//p" "$DIR_ABS/cluster.env" | tail -n 1 | tr -d "'\""
}

# stop kind label pid...: TERM, wait up to 10 s, then KILL.
stop() {
	local kind=$1 label=$2 p n left
	shift 2
	local -a pids=()
	for p in "$@"; do
		[[ $p =~ ^[0-9]+$ ]] || continue
		is_ours "$p" "$kind" || continue
		[[ " ${pids[*]} " == *" $p "* ]] || pids+=("$p")
	done
	if ((${#pids[@]} == 0)); then
		say "$label: none running"
		return 0
	fi
	say "$label: stopping ${pids[*]}"
	local t0=$SECONDS
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for n in $(seq 100); do
		left=0
		for p in "${pids[@]}"; do alive "$p" && left=1; done
		if ((!left)); then
			say "$label: stopped in $((SECONDS - t0))s"
			return 0
		fi
		sleep 0.1
	done
	for p in "${pids[@]}"; do
		if alive "$p"; then
			say "$label: pid $p still running after 10s: SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	for n in $(seq 50); do
		left=0
		for p in "${pids[@]}"; do alive "$p" && left=1; done
		((left)) || return 0
		sleep 0.1
	done
	say "$label: could not stop ${pids[*]}" >&2
	return 1
}

rc=0
# shellcheck disable=SC2046
stop telapi-node "telapi-node" $(env_val NODE_PID_1) $(env_val NODE_PID_2) $(all_of telapi-node) || rc=1
# shellcheck disable=SC2046
stop telkeys "telkeys" $(env_val TELKEYS_PID_1) $(env_val TELKEYS_PID_2) $(all_of telkeys) || rc=1
# nats-servers restarted by hand have new pids: pid_file and the command line
# (-c DIR/nN.conf) find them.
nats=()
for i in 1 2 3; do
	nats+=($(env_val "NATS_PID_$i"))
	[[ -r $DIR_ABS/n$i.pid ]] && nats+=($(tr -dc '0-9' <"$DIR_ABS/n$i.pid"))
done
# shellcheck disable=SC2046
stop nats-server "nats-server" "${nats[@]}" $(all_of nats-server) || rc=1
((rc == 0)) || die "some processes did not stop"

rm -f "$DIR_ABS"/n[123].pid
if ((PURGE)); then
	rm -rf -- "$DIR_ABS"
	say "removed $DIR_ABS"
else
	say "stopped; data and logs kept in $DIR_ABS (--purge removes them)"
fi
