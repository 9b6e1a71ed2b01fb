#!/usr/bin/env bash
# The xgw demo: a gateway namespace between two hypervisor namespaces, the
# XDP probe attached (native mode) on both of the gateway's links, real
# traffic across, counters printed, everything torn down (also on failure).
#
#   hv1 [198.51.100.1/25, 2001:db8:1::1/64] --veth-- [gw1] gw [gw2] --veth-- [198.51.100.129/25, 2001:db8:2::1/64] hv2
#
# Later issues grow this into the full gateway (Geneve tunnels, BFD, OVS).
set -euo pipefail
XGW=${XGW:-target/release/xgw}
tag="xgwdemo$$"
GW=$tag-gw HV1=$tag-hv1 HV2=$tag-hv2
BPFFS=/run/$tag/bpffs

cleanup() {
    ip netns exec "$GW" "$XGW" probe detach --iface gw1 --bpffs "$BPFFS" >/dev/null 2>&1 || true
    ip netns exec "$GW" "$XGW" probe detach --iface gw2 --bpffs "$BPFFS" >/dev/null 2>&1 || true
    for ns in "$GW" "$HV1" "$HV2"; do ip netns del "$ns" 2>/dev/null || true; done
    umount "$BPFFS" 2>/dev/null || true
    rm -rf "/run/$tag"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "topology: $HV1 <-> $GW <-> $HV2"
for ns in "$GW" "$HV1" "$HV2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add e0 netns "$HV1" type veth peer name gw1 netns "$GW"
ip link add e0 netns "$HV2" type veth peer name gw2 netns "$GW"
ip -n "$HV1" addr add 198.51.100.1/25 dev e0;   ip -n "$HV1" addr add 2001:db8:1::1/64 dev e0 nodad
ip -n "$HV2" addr add 198.51.100.129/25 dev e0; ip -n "$HV2" addr add 2001:db8:2::1/64 dev e0 nodad
ip -n "$GW" addr add 198.51.100.126/25 dev gw1; ip -n "$GW" addr add 2001:db8:1::ff/64 dev gw1 nodad
ip -n "$GW" addr add 198.51.100.254/25 dev gw2; ip -n "$GW" addr add 2001:db8:2::ff/64 dev gw2 nodad
for l in "$HV1 e0" "$HV2 e0" "$GW gw1" "$GW gw2"; do set -- $l; ip -n "$1" link set "$2" up; done
ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip -n "$HV1" route add default via 198.51.100.126; ip -n "$HV1" -6 route add default via 2001:db8:1::ff
ip -n "$HV2" route add default via 198.51.100.254; ip -n "$HV2" -6 route add default via 2001:db8:2::ff

step "attach the XDP probe to gw1 and gw2 (native mode, pinned under $BPFFS)"
mkdir -p "$BPFFS"; mount -t bpf bpf "$BPFFS"
ip netns exec "$GW" "$XGW" probe attach --iface gw1 --bpffs "$BPFFS"
ip netns exec "$GW" "$XGW" probe attach --iface gw2 --bpffs "$BPFFS"
ip netns exec "$GW" bpftool net show

step "traffic: IPv4 and IPv6 ping, a TCP and a UDP stream (iperf3) from hv1 to hv2"
ip netns exec "$HV1" ping -c 5 -i 0.1 -W 2 198.51.100.129 | tail -2
ip netns exec "$HV1" ping -6 -c 5 -i 0.1 -W 2 2001:db8:2::1 | tail -2
ip netns exec "$HV2" iperf3 -s -1 -D -B 198.51.100.129 --pidfile "/run/$tag/iperf3.pid"
sleep 0.3
ip netns exec "$HV1" iperf3 -c 198.51.100.129 -t 1 | grep -E "sender|receiver"
ip netns exec "$HV2" iperf3 -s -1 -D -B 198.51.100.129 --pidfile "/run/$tag/iperf3.pid"
sleep 0.3
ip netns exec "$HV1" iperf3 -u -b 20M -l 64 -c 198.51.100.129 -t 1 | grep -E "sender|receiver"

step "counters on gw1 (traffic from hv1)"
ip netns exec "$GW" "$XGW" probe show --iface gw1 --bpffs "$BPFFS"
step "counters on gw2 (traffic from hv2), as JSON"
ip netns exec "$GW" "$XGW" probe show --iface gw2 --bpffs "$BPFFS" --json
step "the same map through bpftool (per-CPU values: packets, bytes)"
bpftool map dump pinned "$BPFFS/probe-gw1/counters" | head -8

step "tear down"
