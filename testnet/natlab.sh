#!/usr/bin/env bash
# NAT lab: Linux network namespaces, veth pairs and nftables NAT routers, never
# joined to the host's interfaces. Runs the hole-punching matrix of `cirrus call
# --peer --rendezvous` (every client NAT type x every node NAT type, UDP and TCP)
# and prints, per cell, how many trials went direct or through the relay, the
# success rate and the wall time of each call (p50, p95). Needs root.
#
#   testnet/natlab.sh [--smoke] [--trials K] [--transports udp,tcp] [--nodes LIST]
#                     [--clients LIST] [--wan-input MODE] [--port-mapping] [--flat]
#                     [--ipv6] [--latency MS] [--hold]
#
#   --smoke        an eim-pdf and a symmetric node and client over UDP: every pair
#                  must go direct (the mixed pairs by port guessing) except
#                  symmetric to symmetric, which must fall back to the relay (K
#                  defaults to 3)
#   --trials K     trials per cell (default 5)
#   --transports   which of udp,tcp to run (default both; --smoke: udp)
#   --nodes LIST, --clients LIST
#                  NAT types to run (comma-separated; default all four each:
#                  none,eim-pdf,full-cone,symmetric)
#   --wan-input drop|accept|reject
#                  what a NAT router does with unsolicited packets to its own public
#                  address: drop (default; a stealth firewall, as RFC 5382 REQ-4 asks
#                  of a NAT for unsolicited SYNs), accept (plain masquerade: its own
#                  stack answers with RST or port unreachable) or reject
#   --port-mapping every node's NAT router also runs miniupnpd (UPnP IGD, NAT-PMP
#                  and PCP; nftables backend), so that nodes map a port for their
#                  UDP and WebSocket API: every cell must then go direct, symmetric
#                  x symmetric and TCP included
#   --flat         every node and client (or its NAT router) on one shared segment,
#                  a bridge, with no router between them (one carrier-grade NAT's
#                  inside, one data-centre subnet); the rendezvous node and the
#                  witness stay behind the core router
#   --ipv6         the IPv6 matrix: every host also gets an IPv6 address in
#                  2001:2::/48 (RFC 5180's benchmarking range), routed with no NAT;
#                  type `firewall` is a router with a stateful IPv6 firewall
#                  (nftables: forwarded packets dropped unless outbound, established
#                  or related), type `none` a host on the public side. Nodes join
#                  the rendezvous node and the witness over IPv6 and clients call
#                  through http://[2001:2:0:1::2]:38081; every cell must go direct
#                  over IPv6 (types: none,firewall; --smoke: 3 calls a cell, UDP
#                  and TCP)
#   --latency MS   every link between the core router and a participant (or its
#                  NAT router), the rendezvous node, the witness and the STUN
#                  namespace (--port-mapping) delays each packet by MS
#                  milliseconds each way, so a client and a node are 4 x MS apart
#                  in round trip (a userspace TUN link, testnet/delaylink.py, as
#                  this kernel has no sch_netem); not with --flat
#   --hold         keep the lab up after the run until Ctrl-C (for tcpdump, conntrack)
#
# Exits non-zero when any call failed (reachability counts the relay), when a
# call sent more than the packet budget, when a guessed cell's symmetric side
# punched plainly first, with --ipv6 when a direct path was not IPv6, or in
# --smoke when a cell did not take the expected path. The lab is torn down on exit,
# on failure and on Ctrl-C. Logs are kept (and their folder printed) on failure.
#
# Environment: CIRRUS_BIN (default target/release/cirrus, built when missing or
# older than the sources),
# NATLAB_RUST_LOG (the nodes' RUST_LOG, default info; e.g. cirrus_node=debug).
#
# Topology ("the Internet" is one router namespace, so there is a hop between NATs;
# with --flat, the nodes and clients share one bridged segment 198.18.50.0/24 in
# the core namespace instead, at 198.18.50.<i>, and only rv and the witness are
# behind the core router):
#
#   core  198.18.<i>.1/24 on link p<i>      (ip_forward, no NAT)
#     rv              198.18.1.2   the rendezvous node (no NAT)
#     witness         198.18.2.2   a second public node, so that every node has two
#                                  STUN servers and can tell its NAT type (RFC 5780)
#     node/client T   198.18.<i>.2 either the host itself (T = none) or a NAT
#                                  router whose LAN is 10.<i>.0.0/24, host 10.<i>.0.2
#   nodes: i = 11..14, clients: i = 21..24 (none, eim-pdf, full-cone, symmetric)
#
# NAT types (nftables on the router; forward policy drop but for established,
# related and outbound):
#   none       the host is on the public segment
#   eim-pdf    masquerade: endpoint-independent mapping (Linux keeps the source port
#              per socket), address-and-port-dependent filtering ("port-restricted cone")
#   full-cone  masquerade, plus inbound UDP/TCP to any port the host has sent from
#              (a dynamic set, 120 s) is DNATed to the host: endpoint-independent
#              filtering
#   symmetric  masquerade fully-random: a new external port per destination
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^# Topology/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

SMOKE=0 TRIALS="" HOLD=0 TRANSPORTS="" NODES="" CLIENTS="" WAN_INPUT=drop PORTMAP=0 FLAT=0 IPV6=0
LATENCY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --trials) TRIALS=${2:-}; shift ;;
    --trials=*) TRIALS=${1#*=} ;;
    --transports) TRANSPORTS=${2:-}; shift ;;
    --transports=*) TRANSPORTS=${1#*=} ;;
    --nodes) NODES=${2:-}; shift ;;
    --nodes=*) NODES=${1#*=} ;;
    --clients) CLIENTS=${2:-}; shift ;;
    --clients=*) CLIENTS=${1#*=} ;;
    --wan-input) WAN_INPUT=${2:-}; shift ;;
    --wan-input=*) WAN_INPUT=${1#*=} ;;
    --port-mapping) PORTMAP=1 ;;
    --flat) FLAT=1 ;;
    --ipv6) IPV6=1 ;;
    --latency) LATENCY=${2:-}; shift ;;
    --latency=*) LATENCY=${1#*=} ;;
    --hold) HOLD=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$IPV6" = 1 ]; then
  TRIALS=${TRIALS:-$([ "$SMOKE" = 1 ] && echo 3 || echo 5)}; TRANSPORTS=${TRANSPORTS:-udp,tcp}
  NODE_TYPES=(none firewall); CLIENT_TYPES=(none firewall)
  { [ "$PORTMAP" = 1 ] || [ "$FLAT" = 1 ]; } && { echo "--ipv6 goes with neither --port-mapping nor --flat" >&2; exit 2; }
elif [ "$SMOKE" = 1 ]; then
  TRIALS=${TRIALS:-3}; TRANSPORTS=${TRANSPORTS:-udp}
  NODE_TYPES=(eim-pdf symmetric); CLIENT_TYPES=(eim-pdf symmetric)
else
  TRIALS=${TRIALS:-5}; TRANSPORTS=${TRANSPORTS:-udp,tcp}
  NODE_TYPES=(none eim-pdf full-cone symmetric); CLIENT_TYPES=(none eim-pdf full-cone symmetric)
fi
[[ "$TRIALS" =~ ^[1-9][0-9]*$ ]] || { echo "--trials needs a positive integer" >&2; exit 2; }
[[ "$LATENCY" =~ ^[0-9]{1,4}$ ]] || { echo "--latency needs milliseconds (0 to 9999)" >&2; exit 2; }
{ [ "$LATENCY" != 0 ] && [ "$FLAT" = 1 ]; } && { echo "--latency does not go with --flat" >&2; exit 2; }
IFS=, read -r -a TRANSPORTS <<< "$TRANSPORTS"
[ -n "$NODES" ] && IFS=, read -r -a NODE_TYPES <<< "$NODES"
[ -n "$CLIENTS" ] && IFS=, read -r -a CLIENT_TYPES <<< "$CLIENTS"
[[ "$WAN_INPUT" =~ ^(accept|drop|reject)$ ]] || { echo "--wan-input: accept, drop or reject" >&2; exit 2; }
for t in "${NODE_TYPES[@]}" "${CLIENT_TYPES[@]}"; do
  if [ "$IPV6" = 1 ]; then
    [[ "$t" =~ ^(none|firewall)$ ]] || { echo "--ipv6 types are none and firewall, not $t" >&2; exit 2; }
  else
    [[ "$t" =~ ^(none|eim-pdf|full-cone|symmetric)$ ]] || { echo "unknown NAT type: $t" >&2; exit 2; }
  fi
done
for t in "${TRANSPORTS[@]}"; do
  [[ "$t" == udp || "$t" == tcp ]] || { echo "--transports: udp and/or tcp, not $t" >&2; exit 2; }
done

[ "$(id -u)" = 0 ] || { echo "natlab needs root (network namespaces, nftables)" >&2; exit 2; }
command -v ip > /dev/null && ip netns list > /dev/null 2>&1 \
  || { echo "natlab needs iproute2 with 'ip netns' (apt-get install -y iproute2)" >&2; exit 2; }
command -v nft > /dev/null || { echo "natlab needs nftables (apt-get install -y nftables)" >&2; exit 2; }
command -v python3 > /dev/null || { echo "natlab needs python3" >&2; exit 2; }
if [ "$PORTMAP" = 1 ]; then
  [ -x /usr/sbin/miniupnpd ] \
    || { echo "--port-mapping needs miniupnpd (apt-get install -y miniupnpd-nftables)" >&2; exit 2; }
  command -v turnserver > /dev/null || { echo "--port-mapping needs coturn (apt-get install -y coturn)" >&2; exit 2; }
fi

BIN=${CIRRUS_BIN:-target/release/cirrus}
if [ -z "${CIRRUS_BIN:-}" ] && { [ ! -x "$BIN" ] || [ -n "$(find node/src proto/src -newer "$BIN" -name '*.rs' 2>/dev/null | head -1)" ]; }; then
  echo "building $BIN ..." >&2
  cargo build --release -q -p cirrus-node
fi
[ -x "$BIN" ] || { echo "no cirrus binary at $BIN" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# Names: a per-run tag, so two labs (or a stale one) never collide.
TAG="nl$$"
CORE="$TAG-core"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/natlab.XXXXXX")
NSS=()   # namespaces we created
PIDS=()  # node processes we started
LINK_PIDS=()  # delayed links (--latency), stopped after the nodes

cleanup() {
  local rc=$? pid ns p
  # Finish the teardown even when a second Ctrl-C or TERM comes, or a step fails.
  trap '' INT TERM
  trap - EXIT
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${LINK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Anything else still running inside our namespaces (a `cirrus call` cut short by
  # Ctrl-C) was started by us too.
  for ns in "${NSS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    echo "natlab: exit $rc; logs kept in $WORK/" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[natlab %s] %s\n' "$(date +%T)" "$*" >&2; }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

mkns() {
  ip netns add "$1"
  NSS+=("$1")
  ip -n "$1" link set lo up
}

# The public address of participant link $1: its own /24, or on the shared segment.
pub_ip() {
  if [ "$FLAT" = 1 ]; then echo "198.18.50.$1"; else echo "198.18.$1.2"; fi
}

# Namespace $1 on the shared segment (a bridge in the core namespace) at
# 198.18.50.$2/24; the core is 198.18.50.1 on it.
segment_link() {
  local ns=$1 i=$2
  ip -n "$CORE" link add "s$i" type veth peer name pub netns "$ns"
  ip -n "$CORE" link set "s$i" master seg up
  ip -n "$ns" addr add "198.18.50.$i/24" dev pub
  ip -n "$ns" link set pub up
  ip -n "$ns" route add default via 198.18.50.1
}

# A participant's public link: its own, or the shared segment.
participant_link() {
  if [ "$FLAT" = 1 ]; then segment_link "$1" "$2"; else public_link "$1" "$2"; fi
}

# A link from the core router to namespace $1, public subnet 198.18.$2.0/24 (and
# with --ipv6, 2001:2:0:$2::/64).
public_link() {
  local ns=$1 i=$2
  if [ "$LATENCY" = 0 ]; then
    ip -n "$CORE" link add "p$i" type veth peer name pub netns "$ns"
  else
    delay_link "$ns" "$i"
  fi
  ip -n "$CORE" addr add "198.18.$i.1/24" dev "p$i"
  ip -n "$CORE" link set "p$i" up
  ip -n "$ns" addr add "198.18.$i.2/24" dev pub
  ip -n "$ns" link set pub up
  ip -n "$ns" route add default via "198.18.$i.1"
  if [ "$IPV6" = 1 ]; then
    ip -n "$CORE" -6 addr add "2001:2:0:$i::1/64" dev "p$i" nodad
    ip -n "$ns" -6 addr add "2001:2:0:$i::2/64" dev pub nodad
    ip -n "$ns" -6 route add default via "2001:2:0:$i::1"
  fi
}

# With --latency: the link p<i> (core) to pub ($1) as two TUN devices with
# testnet/delaylink.py between them; it runs until cleanup stops it.
delay_link() {
  local ns=$1 i=$2 out="$WORK/link$2.out"
  python3 testnet/delaylink.py "$CORE" "p$i" "$ns" pub "$LATENCY" > "$out" 2>&1 &
  LINK_PIDS+=($!)
  for _ in $(seq 1 50); do grep -q '^ready' "$out" 2>/dev/null && return 0; sleep 0.1; done
  echo "natlab: the delayed link p$i did not come up: $(cat "$out")" >&2
  return 1
}

# With --ipv6: the IPv6 address of participant $1 of type $2 (its LAN host behind a
# router, or itself on the public link).
host_ip6() {
  if [ "$2" = none ]; then echo "2001:2:0:$1::2"; else echo "2001:2:1:$1::2"; fi
}

# The nftables ruleset of a NAT router of type $1 whose LAN host is $2.
nat_rules() {
  local type=$1 host=$2
  local input="" forwarded="" stun_test=""
  if [ "$PORTMAP" = 1 ]; then
    forwarded='iifname "pub" ct status dnat accept'
    # miniupnpd checks with an RFC 5780 STUN server that inbound packets reach
    # it before it enables forwarding (its address is in 198.18.0.0/15, which it
    # counts as reserved); let the answers from the other address and port in.
    stun_test="iifname \"pub\" ip saddr { $STUN5780_A, $STUN5780_B } udp sport { 3478, 3479 } accept"
  fi
  case "$WAN_INPUT" in
    drop) input='iifname "pub" ct state new drop' ;;
    reject) input='iifname "pub" ct state new meta l4proto tcp reject with tcp reset
    iifname "pub" ct state new reject' ;;
  esac
  case "$type" in
    eim-pdf|symmetric)
      local masq="masquerade"
      [ "$type" = symmetric ] && masq="masquerade fully-random"
      cat <<EOF
table ip natlab {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "lan" oifname "pub" $masq
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "pub" accept
    $forwarded
  }
  chain input {
    type filter hook input priority filter; policy accept;
    $stun_test
    $input
  }
}
EOF
      ;;
    full-cone)
      cat <<EOF
table ip natlab {
  set udp_mapped { type inet_service; flags dynamic,timeout; timeout 120s; }
  set tcp_mapped { type inet_service; flags dynamic,timeout; timeout 120s; }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "pub" udp dport @udp_mapped dnat to $host
    iifname "pub" tcp dport @tcp_mapped dnat to $host
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "lan" oifname "pub" masquerade
  }
  chain remember {
    type filter hook postrouting priority 200; policy accept;
    iifname "lan" oifname "pub" meta l4proto udp update @udp_mapped { udp sport }
    iifname "lan" oifname "pub" meta l4proto tcp update @tcp_mapped { tcp sport }
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "pub" accept
    iifname "pub" ct status dnat accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    $stun_test
    $input
  }
}
EOF
      ;;
  esac
  [ "$PORTMAP" = 1 ] || return 0
  # miniupnpd's own chains (as its nft_init.sh makes them); its DNAT rules go in
  # prerouting_miniupnpd, and the forward chain above lets DNATed flows through.
  cat <<EOF
table inet miniupnpd {
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 1; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
EOF
}

# A participant of NAT type $2 at index $3; sets HOST_NS and HOST_IP.
# $1 is its short name (n-eim-pdf, c-symmetric, ...).
add_participant() {
  local name=$1 type=$2 i=$3
  HOST_NS="$TAG-$name"
  if [ "$type" = none ]; then
    mkns "$HOST_NS"
    participant_link "$HOST_NS" "$i"
    HOST_IP=$(pub_ip "$i")
    return
  fi
  local r="$TAG-$name-nat"
  mkns "$r"
  participant_link "$r" "$i"
  inns "$r" sysctl -qw net.ipv4.ip_forward=1
  mkns "$HOST_NS"
  ip -n "$r" link add lan type veth peer name eth0 netns "$HOST_NS"
  ip -n "$r" addr add "10.$i.0.1/24" dev lan
  ip -n "$r" link set lan up
  ip -n "$HOST_NS" addr add "10.$i.0.2/24" dev eth0
  ip -n "$HOST_NS" link set eth0 up
  ip -n "$HOST_NS" route add default via "10.$i.0.1"
  HOST_IP="10.$i.0.2"
  local v4type=$type
  [ "$type" = firewall ] && v4type=eim-pdf
  nat_rules "$v4type" "$HOST_IP" > "$WORK/$name.nft"
  inns "$r" nft -f "$WORK/$name.nft"
  if [ "$IPV6" = 1 ]; then
    # Routed, no NAT; a stateful firewall lets in only what answers the host.
    inns "$r" sysctl -qw net.ipv6.conf.all.forwarding=1
    ip -n "$r" -6 addr add "2001:2:1:$i::1/64" dev lan nodad
    ip -n "$HOST_NS" -6 addr add "2001:2:1:$i::2/64" dev eth0 nodad
    ip -n "$HOST_NS" -6 route add default via "2001:2:1:$i::1"
    ip -n "$CORE" -6 route add "2001:2:1:$i::/64" via "2001:2:0:$i::2"
    cat > "$WORK/$name.nft6" <<EOF6
table ip6 natlab6 {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "pub" accept
  }
}
EOF6
    inns "$r" nft -f "$WORK/$name.nft6"
  fi
  if [ "$PORTMAP" = 1 ] && [ "${name#n-}" != "$name" ]; then
    start_miniupnpd "$name" "$r" "$i"
  fi
}

# miniupnpd on router namespace $2 of node $1, LAN 10.$3.0.0/24.
start_miniupnpd() {
  local name=$1 r=$2 i=$3
  local d="$WORK/$name-upnp"
  mkdir -p "$d"
  cat > "$d/miniupnpd.conf" <<EOF
ext_ifname=pub
listening_ip=lan
http_port=5000
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
ext_perform_stun=yes
ext_stun_host=$STUN5780_A
ext_stun_port=3478
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
lease_file=$d/leases
uuid=00000000-0000-4000-8000-0000000000$i
allow 1024-65535 10.$i.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
  inns "$r" /usr/sbin/miniupnpd -f "$d/miniupnpd.conf" -d -P "$d/pid" > "$d/log" 2>&1 < /dev/null &
  PIDS+=($!)
  UPNP_LOGS+=("$d/log")
}

idx_of() {
  case "$1" in none) echo 1 ;; eim-pdf|firewall) echo 2 ;; full-cone) echo 3 ;; symmetric) echo 4 ;; esac
}

# Start a node in namespace $2 bound to $3; its folder is $WORK/$1.
start_node() {
  local name=$1 ns=$2 ip=$3 boot
  local d="$WORK/$name"
  mkdir -p "$d"
  local args=(run --data-dir "$d/data" --bind "$ip" --stun-keepalive-secs 2)
  for boot in "${@:4}"; do args+=(--bootstrap "$boot"); done
  RUST_LOG=${NATLAB_RUST_LOG:-info} ip netns exec "$ns" "$BIN" "${args[@]}" \
    > "$d/stdout" 2> "$d/log" < /dev/null &
  PIDS+=($!)
  echo $! > "$d/pid"
}

# Wait for node $1's ready line; print it.
wait_ready() {
  local d="$WORK/$1"
  for _ in $(seq 1 300); do
    if [ -s "$d/stdout" ]; then head -n1 "$d/stdout"; return 0; fi
    kill -0 "$(cat "$d/pid")" 2>/dev/null || { echo "node $1 exited; see $d/log" >&2; tail -n 20 "$d/log" >&2; return 1; }
    sleep 0.1
  done
  echo "node $1 not ready after 30 s; see $d/log" >&2
  return 1
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# ---------------------------------------------------------------------------
log "building the lab (tag $TAG, logs in $WORK; NAT routers' WAN input: $WAN_INPUT; port mapping: $([ "$PORTMAP" = 1 ] && echo on || echo off); $([ "$FLAT" = 1 ] && echo "one shared segment" || echo "a router between the NATs")$([ "$IPV6" = 1 ] && echo "; the IPv6 matrix, no NAT, stateful firewalls")$([ "$LATENCY" != 0 ] && echo "; every core link delayed $LATENCY ms each way"))"
mkns "$CORE"
inns "$CORE" sysctl -qw net.ipv4.ip_forward=1
[ "$IPV6" = 1 ] && inns "$CORE" sysctl -qw net.ipv6.conf.all.forwarding=1
if [ "$FLAT" = 1 ]; then
  ip -n "$CORE" link add seg type bridge
  ip -n "$CORE" addr add 198.18.50.1/24 dev seg
  ip -n "$CORE" link set seg up
fi
UPNP_LOGS=()
STUN5780_A=198.18.3.2 STUN5780_B=198.18.3.3
if [ "$PORTMAP" = 1 ]; then
  # Stock coturn with two addresses answers RFC 5780 CHANGE-REQUESTs, which
  # miniupnpd's STUN check sends.
  STUN_NS="$TAG-stun"
  mkns "$STUN_NS"
  public_link "$STUN_NS" 3
  ip -n "$STUN_NS" addr add "$STUN5780_B/24" dev pub
  inns "$STUN_NS" turnserver --stun-only -n --no-cli --no-tls --no-dtls \
    -L "$STUN5780_A" -L "$STUN5780_B" --listening-port 3478 --alt-listening-port 3479 \
    --log-file "$WORK/coturn.log" --simple-log > /dev/null 2>&1 < /dev/null &
  PIDS+=($!)
  for _ in $(seq 1 50); do
    inns "$STUN_NS" ss -lun | grep -q "$STUN5780_B:3479" && break
    sleep 0.1
  done
fi
# UDP packets between public addresses, per (source, destination): what one call
# makes each side send toward the other (the punch and port-guessing budgets),
# counted by the kernel rather than by the software under test. Routed packets are
# counted in the core's forward hook; on the shared segment they are bridged, not
# routed, so they are counted on the bridge, in a set of the same name.
COUNT_FAMILY=ip COUNT_TYPE=ipv4_addr COUNT_L3=ip
[ "$FLAT" = 1 ] && COUNT_FAMILY=bridge
[ "$IPV6" = 1 ] && COUNT_FAMILY=ip6 COUNT_TYPE=ipv6_addr COUNT_L3=ip6
inns "$CORE" nft -f - <<EOF
table $COUNT_FAMILY natcount {
  set flows {
    type $COUNT_TYPE . $COUNT_TYPE
    flags dynamic
    counter
    size 65536
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    meta l4proto udp add @flows { $COUNT_L3 saddr . $COUNT_L3 daddr }
  }
}
EOF

RV_NS="$TAG-rv"
mkns "$RV_NS"
public_link "$RV_NS" 1
RV_IP=198.18.1.2
RV_URL="http://$RV_IP:38081"
# With --ipv6 the nodes join over IPv6 and the clients call through this URL.
RV_IP6=2001:2:0:1::2
CALL_URL=$RV_URL
[ "$IPV6" = 1 ] && CALL_URL="http://[$RV_IP6]:38081"

declare -A NODE_NS NODE_IP NODE_ID CLIENT_NS
for t in "${NODE_TYPES[@]}"; do
  add_participant "n-$t" "$t" "1$(idx_of "$t")"
  NODE_NS[$t]=$HOST_NS NODE_IP[$t]=$HOST_IP
  [ "$IPV6" = 1 ] && NODE_IP[$t]="$HOST_IP,$(host_ip6 "1$(idx_of "$t")" "$t")"
done
for t in "${CLIENT_TYPES[@]}"; do
  add_participant "c-$t" "$t" "2$(idx_of "$t")"
  CLIENT_NS[$t]=$HOST_NS
done

log "starting the rendezvous node at $RV_IP"
start_node rv "$RV_NS" "$RV_IP$([ "$IPV6" = 1 ] && echo ",$RV_IP6")"
ready=$(wait_ready rv)
RV_ID=$(json_field "$ready" peerId)
BOOT="/ip4/$RV_IP/tcp/38080/p2p/$RV_ID"
[ "$IPV6" = 1 ] && BOOT="/ip6/$RV_IP6/tcp/38080/p2p/$RV_ID"

WITNESS_NS="$TAG-witness"
mkns "$WITNESS_NS"
public_link "$WITNESS_NS" 2
log "starting the witness node at 198.18.2.2"
start_node witness "$WITNESS_NS" "198.18.2.2$([ "$IPV6" = 1 ] && echo ",2001:2:0:2::2")" "$BOOT"
ready=$(wait_ready witness)
WITNESS_BOOT="/ip4/198.18.2.2/tcp/38080/p2p/$(json_field "$ready" peerId)"
[ "$IPV6" = 1 ] && WITNESS_BOOT="/ip6/2001:2:0:2::2/tcp/38080/p2p/$(json_field "$ready" peerId)"

for t in "${NODE_TYPES[@]}"; do
  start_node "n-$t" "${NODE_NS[$t]}" "${NODE_IP[$t]}" "$BOOT" "$WITNESS_BOOT"
done
for t in "${NODE_TYPES[@]}"; do
  ready=$(wait_ready "n-$t")
  NODE_ID[$t]=$(json_field "$ready" peerId)
  log "node $t: ${NODE_ID[$t]} at ${NODE_IP[$t]}"
done

# Every node must be connected to the rendezvous node and have announced its UDP and
# TCP mappings as seen by it.
# Each node's announced NAT type must be the one its router makes (docs/nat.md).
want=()
for t in "${NODE_TYPES[@]}"; do
  case "$t" in
    none|firewall) nat=none ;; symmetric) nat=endpoint-dependent ;; *) nat=endpoint-independent ;;
  esac
  up=0
  [ "$PORTMAP" = 1 ] && [ "$t" != none ] && up=1
  want+=("${NODE_ID[$t]}=$nat=$up")
done
for f in "${UPNP_LOGS[@]}"; do
  ok=0
  for _ in $(seq 1 100); do
    grep -q "Port forwarding is now enabled" "$f" && { ok=1; break; }
    sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "miniupnpd did not enable port forwarding; see $f" >&2; tail -n 20 "$f" >&2; exit 1; }
done
log "waiting for every node's STUN mappings$([ "$PORTMAP" = 1 ] && echo ', port mappings') and NAT type at the rendezvous node"
ok=0
for _ in $(seq 1 90); do
  if inns "$RV_NS" "$BIN" call getpeerinfo --node "$RV_URL" > "$WORK/peers.json" 2>/dev/null \
    && python3 - "$WORK/peers.json" "$RV_ID" "${want[@]}" <<'EOF'
import json, sys
peers = {p["peerId"]: p for p in json.load(open(sys.argv[1]))}
rv = sys.argv[2]
for w in sys.argv[3:]:
    peer, nat, mapped = w.split("=")
    s = (peers.get(peer) or {}).get("stun") or {}
    for t in ("udp", "tcp"):
        if not any(m.get("via") == rv for m in s.get(t) or []):
            sys.exit(1)
        if mapped == "1" and not any(m.get("via") == "upnp" for m in s.get(t) or []):
            sys.exit(1)
    if s.get("nat") != nat:
        sys.exit(1)
EOF
  then ok=1; break; fi
  sleep 1
done
[ "$ok" = 1 ] || { echo "nodes did not show their STUN mappings and NAT type (${want[*]}) at the rendezvous node in 90 s" >&2; cat "$WORK/peers.json" >&2 || true; exit 1; }
python3 - "$WORK/peers.json" <<'EOF' >&2
import json, sys
for p in json.load(open(sys.argv[1])):
    s = p.get("stun") or {}
    eps = lambda t: " ".join(f'{m["address"]}:{m["port"]}' for m in s.get(t) or [])
    print(f'  {p["peerId"][-8:]}  nat={s.get("nat")}  udp=[{eps("udp")}]  tcp=[{eps("tcp")}]')
EOF

# The IPv6 firewalls must really keep out what nobody asked for: the rendezvous
# node reaches a public node's HTTP API over IPv6 and not a firewalled one's.
if [ "$IPV6" = 1 ]; then
  for t in "${NODE_TYPES[@]}"; do
    url="http://[$(host_ip6 "1$(idx_of "$t")" "$t")]:38081"
    if inns "$RV_NS" timeout 3 "$BIN" call getnodeinfo --node "$url" > /dev/null 2>&1; then
      reached=yes
    else
      reached=no
    fi
    expect=yes
    [ "$t" = firewall ] && expect=no
    [ "$reached" = "$expect" ] || { echo "node $t at $url: reached unasked: $reached (expected $expect)" >&2; exit 1; }
  done
  log "IPv6 firewalls checked: the firewalled node cannot be reached unasked, the public one can"
fi

# ---------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
n=0
total=$(( ${#CLIENT_TYPES[@]} * ${#NODE_TYPES[@]} * ${#TRANSPORTS[@]} * TRIALS ))
# The address that a participant of type $1 (1: node, 2: client) has on the core:
# its public IPv4 address, or with --ipv6 its host's IPv6 address.
counted_ip() {
  local i="$2$(idx_of "$1")"
  if [ "$IPV6" = 1 ]; then host_ip6 "$i" "$1"; else pub_ip "$i"; fi
}

# Whether a UDP call of client type $1 to node type $2 opens its path by port
# guessing: one side symmetric, the other behind a NAT that keeps its port.
guessed_cell() {
  case "$1:$2" in
    symmetric:eim-pdf|symmetric:full-cone|eim-pdf:symmetric|full-cone:symmetric) return 0 ;;
  esac
  return 1
}

log "running $total calls (${#CLIENT_TYPES[@]} clients x ${#NODE_TYPES[@]} nodes x ${TRANSPORTS[*]} x $TRIALS)"
started=$(date +%s)
if [ -t 2 ]; then CR=$'\r' NL=""; else CR="" NL=$'\n'; fi
for tr in "${TRANSPORTS[@]}"; do
  for c in "${CLIENT_TYPES[@]}"; do
    for nt in "${NODE_TYPES[@]}"; do
      id=${NODE_ID[$nt]}
      for k in $(seq 1 "$TRIALS"); do
        n=$((n + 1))
        f="$WORK/call-$tr-$c-$nt-$k"
        # A node lets one address start four port guesses at once, then one every
        # 5 s (docs/security.md); a guessed cell's calls come faster than that, so
        # from the fourth on each waits for its guess.
        if [ "$k" -ge 4 ] && [ "$tr" = udp ] && [ "$PORTMAP" = 0 ] && guessed_cell "$c" "$nt"; then
          sleep 5
        fi
        inns "$CORE" nft flush set "$COUNT_FAMILY" natcount flows
        set +e
        inns "${CLIENT_NS[$c]}" timeout 60 "$BIN" call getnodeinfo '{}' --peer "$id" \
          --rendezvous "$CALL_URL" --transport "$tr" > "$f.out" 2> "$f.err"
        rc=$?
        set -e
        # Packets node -> client and client -> node (public addresses) in this call,
        # once a port guess's probes (sent in bursts over some 50 ms) are all out.
        sleep 0.3
        pkts=$(inns "$CORE" nft -j list set "$COUNT_FAMILY" natcount flows | python3 -c '
import json, sys
n, c = sys.argv[1], sys.argv[2]
sets = [x["set"] for x in json.load(sys.stdin)["nftables"] if "set" in x]
count = {tuple(e["elem"]["val"]["concat"]): e["elem"]["counter"]["packets"] for e in sets[0].get("elem", [])}
print(count.get((n, c), 0), count.get((c, n), 0))' "$(counted_ip "$nt" 1)" "$(counted_ip "$c" 2)")
        # The punch's outcome (`path: direct|relay ... after N ms`), and how soon
        # the first answer came (`answer 1: ... after N ms`, relayed or direct).
        path=$(grep -oE '^path: (direct|relay)' "$f.err" | tail -n1 | cut -d' ' -f2 || true)
        settled=$(grep -E '^path: (direct|relay)' "$f.err" | tail -n1 | sed -n 's/.* after \([0-9]*\) ms$/\1/p')
        first=$(grep '^answer 1:' "$f.err" | sed -n 's/.* after \([0-9]*\)\(\.[0-9]*\)\? ms$/\1/p')
        ok=0
        if [ "$rc" = 0 ] && python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["peerId"] != sys.argv[2])' "$f.out" "$id" 2>/dev/null; then
          ok=1
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tr" "$c" "$nt" "$k" "$ok" "${path:-none}" \
          "${first:-0}" "${settled:-0}" "${pkts% *}" "${pkts#* }" >> "$RESULTS"
        printf '%s[natlab] %d/%d  %s  client %-9s node %-9s  first answer %s ms, %s after %s ms   %s' \
          "$CR" "$n" "$total" "$tr" "$c" "$nt" "${first:-?}" "${path:-FAILED}" "${settled:-?}" "$NL" >&2
      done
    done
  done
done
[ -t 2 ] && printf '\n' >&2
log "matrix done in $(( $(date +%s) - started )) s"

# ---------------------------------------------------------------------------
set +e
python3 - "$RESULTS" "$SMOKE" "$TRIALS" "$WAN_INPUT" "$WORK" "$PORTMAP" "$FLAT" "$IPV6" <<'EOF'
import os
import sys
from collections import defaultdict

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
smoke = sys.argv[2] == "1"
trials = int(sys.argv[3])
wan_input = sys.argv[4]
work = sys.argv[5]
portmap = sys.argv[6] == "1"
flat = sys.argv[7] == "1"
ipv6 = sys.argv[8] == "1"

def why(tr, c, n, k):
    """The client's own account of its path (`path: ...` on stderr)."""
    try:
        lines = open(os.path.join(work, f"call-{tr}-{c}-{n}-{k}.err")).read().splitlines()
    except OSError as e:
        return str(e)
    return next((l for l in lines if l.startswith("path:")), (lines or ["(nothing on stderr)"])[-1])
cells = defaultdict(list)
order = []
trial = defaultdict(list)
firsts = []
pkts = defaultdict(lambda: [0, 0])
for tr, c, n, k, ok, path, first, settled, to_client, to_node in rows:
    key = (tr, c, n)
    if key not in cells:
        order.append(key)
    cells[key].append((ok == "1", path, int(first), int(settled)))
    pkts[key][0] = max(pkts[key][0], int(to_client))
    pkts[key][1] = max(pkts[key][1], int(to_node))
    if ok == "1":
        firsts.append(int(first))
    trial[key].append(k)

def theory(tr, c, n):
    """A plain punch goes direct unless one side is symmetric and the other
    filters by port (eim-pdf or symmetric). Over UDP, port guessing then opens
    the pairs where only one side is symmetric; two symmetric NATs stay on the
    relay. Over TCP, two port-filtering NATs need each SYN to be dropped, not
    answered, by the other NAT (RFC 5382 REQ-4): a router that answers with RST
    kills the simultaneous open. With --port-mapping, a node behind NAT has a
    port its router forwards to it, which any client reaches. With --flat and
    answering routers, no UDP pair of port-filtering NATs goes direct. See
    docs/nat.md."""
    if portmap and n != "none":
        return "direct (mapped)"
    # No NAT: a punch opens both stateful firewalls (both sides send; a SYN the
    # other firewall drops is sent again and crosses the other's).
    if ipv6:
        return "direct"
    pdf = {"eim-pdf", "symmetric"}
    # On one segment with answering routers, the first packet of either side on
    # a port pair reaches the other NAT, whose stack takes the pair; the TTL-2
    # opening cannot stop short of it (proto/tests/punch.rs).
    if tr == "udp" and flat and wan_input != "drop" and c in pdf and n in pdf:
        return "relay (flat)"
    pdf = {"eim-pdf", "symmetric"}
    # Where the client knows that exactly one side is symmetric (from the
    # target's stun.nat and two ports of the rendezvous node), it guesses at once
    # (full-cone included, where a plain punch would also have worked).
    keeps = {"eim-pdf", "full-cone"}
    if tr == "udp" and ((c == "symmetric" and n in keeps) or (n == "symmetric" and c in keeps)):
        return "direct (guess)"
    if (c == "symmetric" and n in pdf) or (n == "symmetric" and c in pdf):
        return "relay"
    if tr == "tcp" and wan_input != "drop" and c in pdf and n in pdf:
        return "relay (RST)"
    return "direct"

def pct(xs, p):
    xs = sorted(xs)
    i = max(0, min(len(xs) - 1, -(-p * len(xs) // 100) - 1))  # nearest rank
    return xs[i]

fail = False
print()
print(f"{trials} trial(s) per cell of `cirrus call getnodeinfo --peer`; first = ms to the first")
print("answer (relayed while the punch runs), settled = ms until the punch opened the direct")
print("path or gave up (the link then stays on the relay); node->client, client->node = most UDP")
print("packets one call sent that way across the core (TCP: STUN and keepalives only)")
print()
print("| transport | client NAT | node NAT | reached | direct | relay | first p50 | first p95 | settled p50 | settled p95 | node->client | client->node | theory |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
grid = defaultdict(dict)
for key in order:
    tr, c, n = key
    xs = cells[key]
    ok = sum(1 for o, _, _, _ in xs if o)
    d = sum(1 for o, p, _, _ in xs if o and p == "direct")
    r = sum(1 for o, p, _, _ in xs if o and p == "relay")
    t = [f for o, _, f, _ in xs if o] or [0]
    st = [s for o, _, _, s in xs if o] or [0]
    th = theory(tr, c, n)
    got = "direct" if d == len(xs) else "relay" if r == len(xs) else "mixed"
    mark = "" if th.startswith(got) else " (differs)"
    if mark:
        for k, (o, p, _, _) in zip(trial[key], xs):
            if not (o and th.startswith(p)):
                print(f"  {tr} {c} -> {n} trial {k}: {why(tr, c, n, k)}", file=sys.stderr)
    print(f"| {tr} | {c} | {n} | {ok}/{len(xs)} | {d} | {r} | {pct(t, 50)} | {pct(t, 95)} | {pct(st, 50)} | {pct(st, 95)} | {pkts[key][0]} | {pkts[key][1]} | {th}{mark} |")
    grid[tr][(c, n)] = f"{d}D {r}R" + ("" if ok == len(xs) else f" {len(xs) - ok}F")
    if ok < len(xs):
        fail = True
        print(f"FAIL: {tr} {c} -> {n}: only {ok}/{len(xs)} calls answered", file=sys.stderr)
    # Budget: a plain punch (2 sockets x 8 rounds), then at most two guesses of
    # 1,024 probes each, and the probes' retransmissions.
    if max(pkts[key]) > 2 * 1024 + 250:
        fail = True
        print(f"FAIL: {tr} {c} -> {n}: one call sent {pkts[key]} packets (node->client, client->node), over the budget of {2 * 1024 + 250}", file=sys.stderr)
    # A round that starts with the guess sends no plain punch: the hard side's
    # packets toward the easy side stay under one plain punch (2 x 8). On one
    # segment its TTL-2 openings cross too.
    if th == "direct (guess)" and not flat:
        hard = pkts[key][0] if n == "symmetric" else pkts[key][1]
        if hard >= 16:
            fail = True
            print(f"FAIL: {tr} {c} -> {n}: the symmetric side sent {hard} packets toward the other, as if it had punched plainly before guessing", file=sys.stderr)
    if ipv6:
        for k, (o, p, _, _) in zip(trial[key], xs):
            if o and p == "direct" and " to [2001:2:" not in why(tr, c, n, k):
                fail = True
                print(f"FAIL: {tr} {c} -> {n} trial {k}: direct, but not over IPv6: {why(tr, c, n, k)}", file=sys.stderr)
    if smoke:
        want = "relay" if th.startswith("relay") else "direct"
        got_n = r if want == "relay" else d
        # Port guessing is a birthday search: a call misses with a small
        # probability (1 of about 100 guessed calls on 2026-12-01), so a guessed
        # cell must go direct in all but one of its calls; every other cell in all.
        need = len(xs) - 1 if th == "direct (guess)" and len(xs) >= 3 else len(xs)
        if got_n < need:
            fail = True
            print(f"FAIL: smoke expects {c} -> {n} over {tr} to go {want} in {need} of {len(xs)} calls; got {got_n}", file=sys.stderr)

if firsts:
    print()
    print(f"first answer over all {len(firsts)} answered calls: p50 {pct(firsts, 50)} ms, p95 {pct(firsts, 95)} ms, max {max(firsts)} ms")

for tr in grid:
    cs = list(dict.fromkeys(c for c, _ in grid[tr]))
    ns = list(dict.fromkeys(n for _, n in grid[tr]))
    print()
    print(f"{tr}: direct (D) / relay (R) / failed (F) per cell; rows: client NAT, columns: node NAT")
    print()
    print("| client \\ node | " + " | ".join(ns) + " |")
    print("|---" * (len(ns) + 1) + "|")
    for c in cs:
        print(f"| {c} | " + " | ".join(grid[tr].get((c, n), "") for n in ns) + " |")
sys.exit(1 if fail else 0)
EOF
verdict=$?
set -e

if [ "$HOLD" = 1 ]; then
  log "holding the lab; namespaces: ${NSS[*]}"
  log "e.g. ip netns exec $TAG-n-eim-pdf-nat conntrack -L; Ctrl-C or kill -TERM $$ tears it down"
  while true; do sleep 3600 & wait $! || true; done
fi
exit "$verdict"
