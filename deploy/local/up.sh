#!/usr/bin/env bash
# up.sh: run a whole telkeys deployment on this machine, on loopback only:
# three nats-server nodes (the configs of deploy/nats), two "telkeys serve"
# instances and two telapi-node processes, each in the background, detached,
# logging to DIR/logs/<name>.log. It writes DIR/cluster.env for other tools
# and prints a summary. deploy/local/down.sh DIR stops everything again.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)
BIN=${LOCAL_CLUSTER_BIN:-$ROOT/bin}

usage() {
	cat <<EOF
Usage: deploy/local/up.sh [DIR]

Starts a local telkeys cluster on 127.0.0.1, on free ports:
  3 nats-server  (deploy/nats/n1..n3.conf rewritten into DIR; no TLS, loopback only)
  2 telkeys serve (--replicas 3, one shared auth secret and event-signing key)
  2 telapi-node
and waits until every one is ready (UP_TIMEOUT seconds, default 60). The
binaries (bin/nats-server at go.mod's version, bin/telkeys, bin/telapi-node)
are built from this checkout first; LOCAL_CLUSTER_BIN=/other/dir takes them
from another directory instead.

DIR (default: $ROOT/cluster) keeps the configs, credentials, keys, data and
logs (DIR/logs/<name>.log); DIR/cluster.env lists URLs, pids and files, for
"source DIR/cluster.env". Running up.sh again on a stopped DIR reuses its NATS
authority, secret, signing key and data. Stop with: deploy/local/down.sh DIR
EOF
}

DIR=""
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--)
		shift
		(($# <= 1)) || { usage >&2; exit 2; }
		DIR=${1:-}
		break
		;;
	-*)
		echo "up.sh: unknown option $1" >&2
		usage >&2
		exit 2
		;;
	*)
		[[ -z $DIR ]] || { echo "up.sh: give one DIR" >&2; usage >&2; exit 2; }
		DIR=$1
		;;
	esac
	shift
done
DIR=${DIR:-$ROOT/cluster}
TIMEOUT=${UP_TIMEOUT:-60}

say() { printf 'up.sh: %s\n' "$*"; }
die() {
	printf 'up.sh: %s\n' "$*" >&2
	exit 1
}

# Paths go into NATS configs and into the commands of cluster.env, which
# checkers run with plain word splitting: keep them free of blanks and quotes.
safe_path() {
	[[ $1 =~ ^[A-Za-z0-9_./+@:,%=~-]+$ ]] || die "$2 \"$1\" has blanks, quotes or other special characters; choose another path"
}

# Our own settings only: an exported TELKEYS_AUTH_SECRET, TELAPI_NODE_NATS_CA
# and the like would otherwise change what the processes below do.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(TELKEYS|TELAPI_NODE)_' || true)

umask 077
mkdir -p "$DIR"
DIR_ABS=$(cd "$DIR" && pwd -P)
safe_path "$DIR_ABS" DIR
safe_path "$ROOT" "the repository path"
mkdir -p "$BIN"
BIN=$(cd "$BIN" && pwd -P)
safe_path "$BIN" "the binaries' directory"
[[ $DIR_ABS != / && $DIR_ABS != "$ROOT" ]] || die "DIR must be a directory of its own, not $DIR_ABS"
MARKER=$DIR_ABS/.telkeys-local-cluster
if [[ ! -e $MARKER ]] && [[ -n $(ls -A "$DIR_ABS") ]]; then
	die "$DIR_ABS is not empty and was not made by up.sh; give a new or empty DIR"
fi

# ---------------------------------------------------------------------------
# Processes of this DIR: nats-server, "telkeys serve" and telapi-node whose
# command line names one of DIR's files, whatever their pid (a checker may
# have restarted a node with NATS_CMD_i).
cluster_pids() {
	local d pid a args name own
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ $pid != "$$" ]] || continue
		args=()
		mapfile -d '' -t args <"$d/cmdline" 2>/dev/null || continue
		((${#args[@]})) || continue
		name=${args[0]##*/}
		case $name in
		nats-server | telapi-node) ;;
		telkeys) [[ " ${args[*]} " == *" serve "* ]] || continue ;;
		*) continue ;;
		esac
		own=0
		for a in "${args[@]:1}"; do
			a=${a#--*=}
			case $a in
			"$DIR_ABS"/n[123].conf | "$DIR_ABS"/telkeys-[12] | "$DIR_ABS"/telkeys-[12]/ | "$DIR_ABS"/node.creds | "$DIR_ABS"/service.creds) own=1 ;;
			esac
		done
		((own)) && alive "$pid" && echo "$pid"
	done
	return 0
}

alive() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[[ -n $st && $st != Z ]]
}

running=$(cluster_pids | tr '\n' ' ')
if [[ -n $running ]]; then
	die "a cluster of $DIR_ABS is still running (pids: ${running% }); stop it first: $HERE/down.sh $DIR_ABS"
fi
rm -f "$DIR_ABS/cluster.env"
: >"$MARKER"
# Nothing of DIR belongs in git (the default DIR is inside the repository).
printf '*\n' >"$DIR_ABS/.gitignore"

# ---------------------------------------------------------------------------
# Binaries: built from this checkout every time (go build's cache makes an
# unchanged build take a second), so the cluster never runs stale code;
# with LOCAL_CLUSTER_BIN, taken as they are.
build() {
	if [[ -n ${LOCAL_CLUSTER_BIN:-} ]]; then
		[[ -x $BIN/$1 ]] || die "LOCAL_CLUSTER_BIN has no $1"
		return 0
	fi
	say "building $BIN/$1"
	mkdir -p "$BIN"
	(cd "$ROOT" && go build -o "$BIN/$1" "$2") || die "could not build $BIN/$1"
}
build nats-server github.com/nats-io/nats-server/v2
build telkeys ./cmd/telkeys
build telapi-node ./cmd/telapi-node
START=$SECONDS
DEADLINE=$((SECONDS + TIMEOUT))

# ---------------------------------------------------------------------------
# Keys and credentials. Kept when DIR already has them (a restarted cluster
# keeps its data, so it must keep trusting the same authority and keys).
cd "$DIR_ABS"
mkdir -p logs authority telkeys-1 telkeys-2
TK=$BIN/telkeys
"$TK" credentials --data-dir "$DIR_ABS/authority" --nats-config "$DIR_ABS/auth.conf" ||
	die "telkeys credentials --nats-config failed"
for role in service node auditor; do
	"$TK" credentials --data-dir "$DIR_ABS/authority" --role "$role" --out "$DIR_ABS/$role.creds" ||
		die "telkeys credentials --role $role failed"
done

# One HS256 secret for both instances. "telkeys serve" and "telkeys token"
# read it from <data-dir>/auth-secret when --auth-secret is not given
# (auth.ResolveSecret), so each data dir gets a copy: tokens minted with
# either data dir work on both instances, and the secret is not on a
# command line for ps to show.
if [[ ! -s $DIR_ABS/auth-secret ]]; then
	openssl rand -hex 32 >"$DIR_ABS/auth-secret.tmp" || die "openssl rand failed"
	mv "$DIR_ABS/auth-secret.tmp" "$DIR_ABS/auth-secret"
fi
for i in 1 2; do
	cp "$DIR_ABS/auth-secret" "$DIR_ABS/telkeys-$i/auth-secret"
done

# One event-signing key for both instances: events.LoadSigningKey takes an
# Ed25519 key as a PEM "PRIVATE KEY" (PKCS #8) block, which is what
# "openssl genpkey -algorithm ed25519" writes.
if [[ ! -s $DIR_ABS/events-signing.key ]]; then
	openssl genpkey -algorithm ed25519 -out "$DIR_ABS/events-signing.key.tmp" 2>/dev/null ||
		die "openssl genpkey -algorithm ed25519 failed (OpenSSL 1.1.1 or later is needed)"
	mv "$DIR_ABS/events-signing.key.tmp" "$DIR_ABS/events-signing.key"
fi
"$TK" events-key --signing-key "$DIR_ABS/events-signing.key" --out "$DIR_ABS/events-public.pem" ||
	die "telkeys events-key failed"
chmod 644 "$DIR_ABS/events-public.pem" # public: auditors may run as anyone

# ---------------------------------------------------------------------------
# Free loopback ports, all different: 3 client, 3 route, 3 monitoring,
# 3 leafnode, 2 telkeys, 2 telapi-node. The sockets stay bound until all
# are picked.
read -r -a PORTS < <(python3 -c '
import socket
socks = []
for _ in range(16):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
') || die "could not pick free ports (python3)"
((${#PORTS[@]} == 16)) || die "could not pick free ports"
CLIENT=("${PORTS[@]:0:3}")
ROUTE=("${PORTS[@]:3:3}")
MON=("${PORTS[@]:6:3}")
LEAF=("${PORTS[@]:9:3}")
TKP=("${PORTS[@]:12:2}")
NODEP=("${PORTS[@]:14:2}")

# ---------------------------------------------------------------------------
# NATS configs: the same textual replacements as newCluster in
# deploy/deploy_test.go, for loopback. The tls { ... } blocks are REMOVED:
# this cluster never leaves 127.0.0.1, and external checks connect with plain
# nats:// URLs. Everything else stays: include ./auth.conf, sync_interval:
# always, the cluster block and its three routes, the leafnodes block (on a
# free loopback port, no TLS either) for edge-site leaf nodes. log_file and
# pid_file are
# added so that a node restarted with NATS_CMD_i logs to the same file.
for i in 1 2 3; do
	src=$ROOT/deploy/nats/n$i.conf
	dst=$DIR_ABS/n$i.conf
	[[ -r $src ]] || die "missing $src"
	{
		echo "# Generated by deploy/local/up.sh from deploy/nats/n$i.conf for a loopback-only"
		echo "# cluster: free ports on 127.0.0.1, store under $DIR_ABS, and the tls { } blocks"
		echo "# removed (nothing leaves this machine; checks connect with plain nats:// URLs)."
		awk '
			# drop every "tls { ... }" block, nested braces included
			skip == 0 && /^[ \t]*tls[ \t]*[:=]?[ \t]*\{/ {
				skip = 1; depth = 0
			}
			skip {
				line = $0; sub(/#.*/, "", line)
				depth += gsub(/\{/, "{", line) - gsub(/\}/, "}", line)
				if (depth <= 0) skip = 0
				next
			}
			{ print }
		' "$src" | sed \
			-e "s|listen: 0\.0\.0\.0:4222|listen: 127.0.0.1:${CLIENT[i - 1]}|" \
			-e "s|^\([ \t]*\)http: 127\.0\.0\.1:8222|\1http: 127.0.0.1:${MON[i - 1]}|" \
			-e "s|listen: 0\.0\.0\.0:6222|listen: 127.0.0.1:${ROUTE[i - 1]}|" \
			-e "s|listen: 0\.0\.0\.0:7422|listen: 127.0.0.1:${LEAF[i - 1]}|" \
			-e "s|store_dir: /data/jetstream|store_dir: \"$DIR_ABS/jetstream-$i\"|" \
			-e "s|nats-route://n1:6222|nats-route://127.0.0.1:${ROUTE[0]}|" \
			-e "s|nats-route://n2:6222|nats-route://127.0.0.1:${ROUTE[1]}|" \
			-e "s|nats-route://n3:6222|nats-route://127.0.0.1:${ROUTE[2]}|"
		echo
		echo "# Added by up.sh: the log and pid of this node, whoever starts it."
		echo "log_file: \"$DIR_ABS/logs/n$i.log\""
		echo "pid_file: \"$DIR_ABS/n$i.pid\""
	} >"$dst.tmp"
	# Every replacement must have happened: refuse a config that still
	# points at the production layout (or kept TLS).
	body=$(sed 's/#.*//' "$dst.tmp")
	for want in "listen: 127.0.0.1:${CLIENT[i - 1]}" "listen: 127.0.0.1:${ROUTE[i - 1]}" \
		"http: 127.0.0.1:${MON[i - 1]}" "store_dir: \"$DIR_ABS/jetstream-$i\"" "include ./auth.conf" \
		"sync_interval: always" "nats-route://127.0.0.1:${ROUTE[0]}" "nats-route://127.0.0.1:${ROUTE[1]}" \
		"nats-route://127.0.0.1:${ROUTE[2]}"; do
		grep -qF -- "$want" <<<"$body" || die "$src changed: could not rewrite it for loopback (no \"$want\")"
	done
	if grep -qE '0\.0\.0\.0|:(4222|6222|7422|8222)([^0-9]|$)|/etc/nats|/data/jetstream|nats-route://n[0-9]|(^|[^a-z_])tls[ \t]*[:=]?[ \t]*\{' <<<"$body"; then
		die "$src changed: could not rewrite it for loopback; see $dst.tmp"
	fi
	mv "$dst.tmp" "$dst"
	"$BIN/nats-server" -t -c "$dst" >/dev/null 2>"$DIR_ABS/logs/n$i.check" ||
		die "nats-server refuses $dst: $(cat "$DIR_ABS/logs/n$i.check")"
	rm -f "$DIR_ABS/logs/n$i.check"
done

# ---------------------------------------------------------------------------
# Starting and stopping. Each process is exec'd by setsid in the background
# (no subshell in between): $! is the server's own pid, it has its own
# session, and it outlives this script.
declare -a STARTED=()
declare -A NAME=() LOG=()
OK=0

start() { # name command...
	local name=$1 log=$DIR_ABS/logs/$1.log
	shift
	printf '=== %s up.sh started: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
	setsid "$@" >>"$log" 2>&1 </dev/null &
	PID=$!
	STARTED+=("$PID")
	NAME[$PID]=$name
	LOG[$PID]=$log
}

stop_started() {
	local p n
	((${#STARTED[@]})) || return 0
	say "stopping what was started: ${STARTED[*]}" >&2
	for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for n in $(seq 100); do
		local left=0
		for p in "${STARTED[@]}"; do alive "$p" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}

on_exit() {
	local rc=$?
	rm -f "$DIR_ABS/.probe"
	if ((!OK)); then
		stop_started
		rm -f "$DIR_ABS/cluster.env"
		((rc)) || rc=1
	fi
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_proc() { # pid message
	local p=$1
	shift
	printf 'up.sh: %s (pid %s): %s\n' "${NAME[$p]}" "$p" "$*" >&2
	printf 'up.sh: last lines of %s:\n' "${LOG[$p]}" >&2
	tail -n 25 "${LOG[$p]}" | sed 's/^/    /' >&2
	exit 1
}

# Probes: a TCP connection, or an HTTP 200 (the body is kept for errors).
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
LAST=""
http_ok() {
	local code
	rm -f "$DIR_ABS/.probe"
	code=$(curl -sS --max-time 2 -o "$DIR_ABS/.probe" -w '%{http_code}' "$1" 2>/dev/null) || code=000
	if [[ $code == 000 ]]; then
		LAST="(no HTTP answer)"
	else
		LAST="HTTP $code $(head -c 300 "$DIR_ABS/.probe" 2>/dev/null | tr '\n' ' ')"
	fi
	[[ $code == 200 ]]
}

# wait_ready pid probe...: until the probe passes; fail if any started
# process has died, or at the deadline.
wait_ready() {
	local p=$1 q
	shift
	LAST=""
	until "$@"; do
		for q in "${STARTED[@]}"; do
			alive "$q" || fail_proc "$q" "exited before the cluster was ready"
		done
		((SECONDS < DEADLINE)) || fail_proc "$p" "not ready after ${TIMEOUT}s (${*}) ${LAST}"
		sleep 0.2
	done
}

# ---------------------------------------------------------------------------
NATS_URLS=""
declare -a NATS_PID=() NATS_CMD=()
say "starting nats-server n1 n2 n3 (client ports ${CLIENT[*]})"
for i in 1 2 3; do
	rm -f "$DIR_ABS/n$i.pid"
	start "n$i" "$BIN/nats-server" -c "$DIR_ABS/n$i.conf"
	NATS_PID[i]=$PID
	NATS_CMD[i]="$BIN/nats-server -c $DIR_ABS/n$i.conf"
	NATS_URLS+="${NATS_URLS:+,}nats://127.0.0.1:${CLIENT[i - 1]}"
done
# Ready: the client port accepts connections, and /healthz is 200, which
# nats-server answers once JetStream runs and the cluster has a meta leader.
for i in 1 2 3; do
	wait_ready "${NATS_PID[i]}" tcp_open "${CLIENT[i - 1]}"
done
for i in 1 2 3; do
	wait_ready "${NATS_PID[i]}" http_ok "http://127.0.0.1:${MON[i - 1]}/healthz"
done
say "NATS cluster ready after $((SECONDS - START))s"

# One instance at a time: the first creates the streams and buckets, the
# second finds them. Started together on a fresh cluster, both instances'
# creates of each new stream time out (10 s each, ~55 s in all, close to
# telkeys' 60 s setup deadline); one after the other takes about a second.
declare -a TK_PID=() TK_URL=()
for i in 1 2; do
	say "starting telkeys-$i (port ${TKP[i - 1]})"
	start "telkeys-$i" "$TK" serve --nats-url "$NATS_URLS" --replicas 3 \
		--nats-creds "$DIR_ABS/service.creds" --signing-key "$DIR_ABS/events-signing.key" \
		--data-dir "$DIR_ABS/telkeys-$i" --http-addr "127.0.0.1:${TKP[i - 1]}" --log-format json
	TK_PID[i]=$PID
	TK_URL[i]="http://127.0.0.1:${TKP[i - 1]}"
	wait_ready "${TK_PID[i]}" http_ok "${TK_URL[i]}/readyz"
done
say "telkeys ready after $((SECONDS - START))s"

declare -a NODE_PID=() NODE_URL=()
say "starting node-1 node-2 (ports ${NODEP[*]})"
for i in 1 2; do
	start "node-$i" "$BIN/telapi-node" --nats-url "$NATS_URLS" --nats-creds "$DIR_ABS/node.creds" \
		--events-public-key "$DIR_ABS/events-public.pem" --http-addr "127.0.0.1:${NODEP[i - 1]}" \
		--name "node-$i" --log-format json
	NODE_PID[i]=$PID
	NODE_URL[i]="http://127.0.0.1:${NODEP[i - 1]}"
done
# /readyz is 200 once the node has heard telkeys' signed heartbeat and key
# index (503 "stale" before); /healthz only says the process answers.
for i in 1 2; do
	wait_ready "${NODE_PID[i]}" http_ok "${NODE_URL[i]}/readyz"
done
rm -f "$DIR_ABS/.probe"

# Every pid must be the program itself, not a wrapper.
for p in "${STARTED[@]}"; do
	comm=$(ps -p "$p" -o comm= 2>/dev/null || true)
	case $comm in nats-server | telkeys | telapi-node) ;; *) fail_proc "$p" "pid is \"$comm\", not the program" ;; esac
done

# ---------------------------------------------------------------------------
q() { # a value for a shell-sourceable KEY=value line
	if [[ $1 =~ ^[A-Za-z0-9_./:,@+%=-]*$ ]]; then
		printf '%s' "$1"
	else
		printf "'%s'" "${1//\'/\'\\\'\'}"
	fi
}
{
	echo "# Written by deploy/local/up.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); stop with: $HERE/down.sh $DIR_ABS"
	echo "CLUSTER_DIR=$(q "$DIR_ABS")"
	echo "NATS_URLS=$(q "$NATS_URLS")"
	for i in 1 2 3; do echo "NATS_PID_$i=${NATS_PID[i]}"; done
	for i in 1 2 3; do echo "NATS_CMD_$i=$(q "${NATS_CMD[i]}")"; done
	for i in 1 2 3; do echo "NATS_MONITOR_$i=$(q "http://127.0.0.1:${MON[i - 1]}")"; done
	if grep -q "listen: 127.0.0.1:${LEAF[0]}" "$DIR_ABS/n1.conf"; then
		for i in 1 2 3; do echo "NATS_LEAF_$i=$(q "127.0.0.1:${LEAF[i - 1]}")"; done
	fi
	for i in 1 2 3; do echo "NATS_LOG_$i=$(q "$DIR_ABS/logs/n$i.log")"; done
	for i in 1 2; do echo "TELKEYS_URL_$i=$(q "${TK_URL[i]}")"; done
	for i in 1 2; do echo "TELKEYS_DATA_$i=$(q "$DIR_ABS/telkeys-$i")"; done
	for i in 1 2; do echo "TELKEYS_PID_$i=${TK_PID[i]}"; done
	for i in 1 2; do echo "NODE_URL_$i=$(q "${NODE_URL[i]}")"; done
	for i in 1 2; do echo "NODE_PID_$i=${NODE_PID[i]}"; done
	echo "SERVICE_CREDS=$(q "$DIR_ABS/service.creds")"
	echo "NODE_CREDS=$(q "$DIR_ABS/node.creds")"
	echo "AUDITOR_CREDS=$(q "$DIR_ABS/auditor.creds")"
	echo "EVENTS_PUBLIC_KEY=$(q "$DIR_ABS/events-public.pem")"
	echo "EVENTS_SIGNING_KEY=$(q "$DIR_ABS/events-signing.key")"
	echo "TELKEYS_BIN=$(q "$TK")"
} >"$DIR_ABS/cluster.env.tmp"
mv "$DIR_ABS/cluster.env.tmp" "$DIR_ABS/cluster.env"
OK=1

cat <<EOF

telkeys cluster up in $((SECONDS - START))s, in $DIR_ABS (logs in $DIR_ABS/logs)
  NATS       $NATS_URLS  (pids ${NATS_PID[1]} ${NATS_PID[2]} ${NATS_PID[3]})
  telkeys    ${TK_URL[1]}  ${TK_URL[2]}  (pids ${TK_PID[1]} ${TK_PID[2]})
  telapi     ${NODE_URL[1]}  ${NODE_URL[2]}  (pids ${NODE_PID[1]} ${NODE_PID[2]})

  source $DIR_ABS/cluster.env
  TOKEN=\$($TK token --data-dir \$TELKEYS_DATA_1 --role superadmin)   # accepted by both instances
  curl -H "Authorization: Bearer \$TOKEN" \$TELKEYS_URL_1/v1/...
  (members: --role member --team T; "telkeys token --help" has the flags)

  stop: $HERE/down.sh $DIR_ABS   (--purge also removes the directory)
EOF
