#!/usr/bin/env bash
# The xgw demo: a gateway run by the `xgw` daemon, and two hypervisors on one
# underlay segment — hv1 is real Open vSwitch (userspace datapath), hv2 runs
# xgw too. Geneve tunnels with BFD from the gateway to both, a VM behind
# each, real traffic across, then `xgw show`, `xgw bfd show`, `xgw stats`
# and OVS's own view. Everything is torn down on exit, on failure too.
#
#        gw-vm 203.0.113.1            hv1-vm 203.0.113.2          hv2-vm 203.0.113.3
#            |                             |                          |
#   [gw: xgw daemon]               [hv1: Open vSwitch]         [hv2: xgw daemon]
#    198.51.100.1                    198.51.100.2                198.51.100.3
#            \______________ ul: Linux bridge br0 _______________/
set -Eeuo pipefail
XGW=${XGW:-target/release/xgw}
XGW=$(readlink -f "$XGW")
HERE=$(cd "$(dirname "$0")" && pwd)
tag="xd$$"
RUN=/run/$tag
UL=$tag-ul GW=$tag-gw HV2=$tag-hv2 HV1=$tag-hv1
GWVM=$tag-gwvm HV2VM=$tag-hv2vm
VNI=5001
export XGW_OVS_DIR=$RUN/ovs
PIDS=()

step() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

cleanup() {
    set +e
    trap - ERR
    # Our daemons, by the PIDs we started (SIGTERM: they remove what they attached).
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    "$HERE/ovs-hv.sh" down hv1 >/dev/null 2>&1
    for ns in "$GWVM" "$HV2VM" "$GW" "$HV2" "$HV1" "$UL"; do ip netns del "$ns" 2>/dev/null; done
    umount "$RUN/bpffs" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'echo "demo: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# xgw CLI against one of our daemons.
gw() { ip netns exec "$GW" "$XGW" "$@" --socket "$RUN/gw.sock"; }
hv2() { ip netns exec "$HV2" "$XGW" "$@" --socket "$RUN/hv2.sock"; }

# A VM namespace behind a gateway: vm0 in VMNS, its peer PORT in NS.
vm() {
    local ns=$1 port=$2 vmns=$3 mac=$4 ip=$5
    ip netns add "$vmns"; ip -n "$vmns" link set lo up
    ip link add vm0 netns "$vmns" type veth peer name "$port" netns "$ns"
    ip -n "$vmns" link set vm0 address "$mac" mtu 1400
    ip -n "$vmns" addr add "$ip/24" dev vm0
    # XDP sees frames before a partial checksum is completed: no TX offload.
    ip netns exec "$vmns" ethtool -K vm0 tx off >/dev/null
    ip -n "$vmns" link set vm0 up; ip -n "$ns" link set "$port" up
    # veth delivers XDP-redirected frames only to a peer running XDP: the
    # probe (counts, then passes) makes the VM's end such a peer.
    mkdir -p "$RUN/bpffs/$vmns"
    ip netns exec "$vmns" "$XGW" probe attach --iface vm0 --bpffs "$RUN/bpffs/$vmns" >/dev/null
}

# `xgw run` in NS on uplink ul0; waits for its API socket.
daemon() {
    local ns=$1 name=$2 ip=$3 metrics=$4
    ip netns exec "$ns" "$XGW" run --uplink ul0 --local-ip "$ip" --state-dir "$RUN/$name/state" \
        --bpffs "$RUN/bpffs/$name" --socket "$RUN/$name.sock" --metrics "$metrics" \
        >"$RUN/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$RUN/$name.sock" ] && return 0; sleep 0.1; done
    cat "$RUN/$name.log" >&2; die "the $name daemon did not start"
}

wait_bfd_up() {   # CLI-FUNCTION NAME
    for _ in $(seq 100); do
        "$1" bfd show "$2" --json 2>/dev/null | grep -Eq '"forwarding": ?true' && return 0
        sleep 0.1
    done
    "$1" bfd show "$2"; die "BFD on $2 did not come up"
}

mkdir -p "$RUN/bpffs"; mount -t bpf bpf "$RUN/bpffs"

step "underlay: bridge br0 in $UL; gateway $GW, hypervisors $HV1 (Open vSwitch) and $HV2 (xgw)"
for ns in "$UL" "$GW" "$HV1" "$HV2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$UL" link add br0 type bridge; ip -n "$UL" link set br0 up
for ns in "$GW" "$HV1" "$HV2"; do
    port=${ns#"$tag-"}
    ip link add ul0 netns "$ns" type veth peer name "$port" netns "$UL"
    ip -n "$UL" link set "$port" master br0 up
    ip netns exec "$UL" ethtool -K "$port" tx off >/dev/null
done
for x in "$GW 198.51.100.1" "$HV2 198.51.100.3"; do
    set -- $x
    ip -n "$1" addr add "$2/24" dev ul0; ip -n "$1" link set ul0 up
    # The bridge end of an xgw uplink receives XDP-redirected frames.
    mkdir -p "$RUN/bpffs/ul"
    ip netns exec "$UL" "$XGW" probe attach --iface "${1#"$tag-"}" --bpffs "$RUN/bpffs/ul" >/dev/null
done

step "hv1: Open vSwitch $(ovs-vswitchd --version | head -1 | awk '{print $NF}'), userspace datapath, a VM on br-int"
"$HERE/ovs-hv.sh" up hv1 --netns "$HV1" --underlay ul0 --ip4 198.51.100.2/24 \
    --vm-mac 02:00:5e:20:00:02 --vm-ip4 203.0.113.2/24
# OVN's metadata option: ingress key 0x21 (hv1's VM), egress 0x11 (gw's VM).
"$HERE/ovs-hv.sh" tunnel hv1 gnv-gw --remote 198.51.100.1 --key $VNI --bfd 100,100,3 --ovn-keys 0x21,0x11
HV1VM=hv1-vm

step "gw and hv2: xgw daemons (XDP native mode on ul0), a VM behind each"
vm "$GW" vmp0 "$GWVM" 02:00:5e:20:00:01 203.0.113.1
vm "$HV2" vmp0 "$HV2VM" 02:00:5e:20:00:03 203.0.113.3
daemon "$GW" gw 198.51.100.1 127.0.0.1:9477
daemon "$HV2" hv2 198.51.100.3 127.0.0.1:9477

step "configure gw through its API: a local port, two tunnels with BFD, two remote bindings"
gw port add gw-vm --ifname vmp0 --vni $VNI --port-key 17 --mac 02:00:5e:20:00:01 --ip 203.0.113.1
gw tunnel add hv1 --remote-ip 198.51.100.2 --vni $VNI --bfd --ovn-metadata
gw tunnel add hv2 --remote-ip 198.51.100.3 --vni $VNI --bfd --ovn-metadata
gw binding add --vni $VNI --mac 02:00:5e:20:00:02 --ip 203.0.113.2 --tunnel hv1 --port-key 33
gw binding add --vni $VNI --mac 02:00:5e:20:00:03 --ip 203.0.113.3 --tunnel hv2 --port-key 49
hv2 port add hv2-vm --ifname vmp0 --vni $VNI --port-key 49 --mac 02:00:5e:20:00:03 --ip 203.0.113.3
hv2 tunnel add gw --remote-ip 198.51.100.1 --vni $VNI --bfd --ovn-metadata
hv2 binding add --vni $VNI --mac 02:00:5e:20:00:01 --ip 203.0.113.1 --tunnel gw --port-key 17

step "BFD comes up on both tunnels"
wait_bfd_up gw hv1
wait_bfd_up gw hv2
gw bfd show

step "traffic: ping from the gateway's VM to both hypervisors' VMs, and back from OVS"
ip netns exec "$GWVM" ping -c 5 -i 0.2 -W 2 203.0.113.2 | tail -2
ip netns exec "$GWVM" ping -c 5 -i 0.2 -W 2 203.0.113.3 | tail -2
ip netns exec "$HV1VM" ping -c 5 -i 0.2 -W 2 203.0.113.1 | tail -2
step "a TCP stream (iperf3, 2 s) from the OVS VM through the tunnel to the gateway's VM"
ip netns exec "$GWVM" iperf3 -s -1 -D -B 203.0.113.1 --pidfile "$RUN/iperf3.pid"
sleep 0.3
ip netns exec "$HV1VM" iperf3 -c 203.0.113.1 -t 2 | grep -E "sender|receiver"

step "xgw show (the gateway)"
gw show
step "xgw stats"
gw stats
step "metrics (Prometheus text format, a few lines)"
ip netns exec "$GW" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9477; printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3' \
    | grep -E '^xgw_(port_packets|bfd|ofport)' | sed -n 1,12p
step "Open vSwitch's view on hv1: ovs-appctl bfd/show"
"$HERE/ovs-hv.sh" ctl hv1 ovs-appctl bfd/show | grep -E "State|Forwarding|Interface|Flap" | sed -n 1,8p
step "the maps behind it, through bpftool: TUNNELS (OpenFlow number -> remote, next hop, flags, VNI)"
bpftool map dump pinned "$RUN/bpffs/gw/TUNNELS" | sed -n 1,12p

step "tear down"
