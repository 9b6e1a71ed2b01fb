#!/usr/bin/env bash
# An Open vSwitch "hypervisor" for xgw's demo and by-hand experiments: the
# shell twin of tests/src/ovs.rs (read that file's header for why each step
# is there). OVS 3.1, userspace datapath, inside an existing network
# namespace, with private run/db/log/etc directories; daemons are stopped by
# the PIDs in their pidfiles.
#
#   ovs-hv.sh up NAME --netns NS --underlay IF [--ip4 A/P] [--ip6 A/P] [--mac BR_PHY_MAC]
#                     [--vm-mac MAC] [--vm-ip4 A/P] [--vm-ip6 A/P]
#       starts OVS in NS (which must exist and hold IF), br-phy with IF and the
#       underlay addresses, br-int, and with --vm-* a VM namespace NAME-vm
#       whose vm0 is plugged into br-int as vm0p
#   ovs-hv.sh tunnel NAME PORT --remote IP --key VNI [--local-ip IP]
#                     [--bfd MIN_RX,MIN_TX,MULT] [--ovn-keys INGRESS,EGRESS]
#       adds a Geneve port; --ovn-keys maps OVN's option to tun_metadata0 and
#       sends the VM's traffic into PORT carrying those keys
#   ovs-hv.sh status NAME          bridges, BFD, tunnel neighbours, port counters
#   ovs-hv.sh ctl NAME TOOL ARGS   runs ovs-vsctl/ovs-ofctl/ovs-appctl for NAME
#   ovs-hv.sh down NAME            stops OVS, deletes NAME-vm and the state dir
#                                  (NS itself belongs to the caller)
#
# State lives in ${XGW_OVS_DIR:-/tmp/xgw-ovs}/NAME.
set -Eeuo pipefail

BASE=${XGW_OVS_DIR:-/tmp/xgw-ovs}
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
OVN_TLV_MAP='{class=0x102,type=0x80,len=4}->tun_metadata0'

die() { echo "ovs-hv: $*" >&2; exit 1; }
usage() { sed -n "2,/^set -Eeuo/p" "$0" | sed -e "/^set -Eeuo/d" -e 's/^# \{0,1\}//' >&2; exit 2; }

load() {   # NAME -> D, NS, VM_NS, UNDERLAY from the instance's state file
    NAME=$1 D=$BASE/$1
    [ -f "$D/state" ] || die "no instance $1 (no $D/state)"
    # shellcheck disable=SC1091
    . "$D/state"
}

# An OVS tool inside the namespace with this instance's directories.
ovs() {
    ip netns exec "$NS" env OVS_RUNDIR="$D/run" OVS_DBDIR="$D/db" OVS_LOGDIR="$D/log" \
        OVS_SYSCONFDIR="$D/etc" "$@"
}
vsctl() { ovs ovs-vsctl --timeout=10 "$@"; }

stop_pidfile() {   # stops a daemon we started, only if the PID still runs our command line
    local f=$1 p
    [ -f "$f" ] || return 0
    p=$(cat "$f" 2>/dev/null || true)
    if [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$f"; then
        kill "$p" 2>/dev/null || true
        for _ in $(seq 50); do
            tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$f" || break
            sleep 0.1
        done
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$f" && kill -9 "$p" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    [ $# -eq 1 ] || usage
    NAME=$1 D=$BASE/$1
    if [ -f "$D/state" ]; then
        # shellcheck disable=SC1091
        . "$D/state"
    fi
    stop_pidfile "$D/run/ovs-vswitchd.pid"
    stop_pidfile "$D/run/ovsdb-server.pid"
    if [ -n "${VM_NS:-}" ]; then ip netns del "$VM_NS" 2>/dev/null || true; fi
    rm -rf "$D"
}

up() {
    [ $# -ge 1 ] || usage
    NAME=$1; shift
    D=$BASE/$NAME NS= UNDERLAY= IP4= IP6= VM_MAC= VM_IP4= VM_IP6= VM_NS=
    # Two instances on one wire must not share br-phy's MAC: a random
    # locally administered one unless told.
    MAC=$(printf '02:00:5e:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))
    while [ $# -gt 0 ]; do
        case $1 in
            --netns) NS=$2 ;; --underlay) UNDERLAY=$2 ;; --ip4) IP4=$2 ;; --ip6) IP6=$2 ;;
            --mac) MAC=$2 ;; --vm-mac) VM_MAC=$2 ;; --vm-ip4) VM_IP4=$2 ;; --vm-ip6) VM_IP6=$2 ;;
            *) usage ;;
        esac
        shift 2
    done
    [ -n "$NS" ] && [ -n "$UNDERLAY" ] || usage
    [ -e "/var/run/netns/$NS" ] || die "namespace $NS does not exist"
    [ ! -e "$D" ] || die "instance $NAME exists ($D); run: $0 down $NAME"
    if [ -n "$VM_MAC$VM_IP4$VM_IP6" ]; then VM_NS=$NAME-vm; fi

    mkdir -p "$D/run" "$D/db" "$D/log" "$D/etc"
    printf 'NS=%q\nVM_NS=%q\nUNDERLAY=%q\n' "$NS" "$VM_NS" "$UNDERLAY" >"$D/state"
    # Half an instance is worse than none.
    trap 'echo "ovs-hv: up $NAME failed; cleaning up" >&2; down "$NAME"' ERR

    ip netns exec "$NS" sysctl -qw net.ipv4.conf.all.arp_ignore=1 "net.ipv6.conf.$UNDERLAY.disable_ipv6=1"
    ip netns exec "$NS" ethtool -K "$UNDERLAY" tx off >/dev/null
    ip -n "$NS" link set "$UNDERLAY" up

    ovsdb-tool create "$D/db/conf.db" "$SCHEMA"
    ovs ovsdb-server "$D/db/conf.db" --remote="punix:$D/run/db.sock" \
        --pidfile="$D/run/ovsdb-server.pid" --detach --log-file="$D/log/ovsdb-server.log" -vconsole:off
    vsctl --no-wait init
    vsctl --no-wait set Open_vSwitch . other_config:hw-offload=false
    ovs ovs-vswitchd "unix:$D/run/db.sock" \
        --pidfile="$D/run/ovs-vswitchd.pid" --detach --log-file="$D/log/ovs-vswitchd.log" -vconsole:off

    vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev "other_config:hwaddr=$MAC"
    vsctl add-port br-phy "$UNDERLAY"
    vsctl add-br br-int -- set bridge br-int datapath_type=netdev
    if [ -n "$IP4" ]; then ip -n "$NS" addr add "$IP4" dev br-phy; fi
    if [ -n "$IP6" ]; then ip -n "$NS" addr add "$IP6" dev br-phy nodad; fi
    ip -n "$NS" link set br-phy up

    if [ -n "$VM_NS" ]; then
        ip netns add "$VM_NS"
        ip -n "$VM_NS" link set lo up
        if [ -z "$VM_IP6" ]; then
            ip netns exec "$VM_NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        fi
        ip link add vm0 netns "$VM_NS" type veth peer name vm0p netns "$NS"
        ip netns exec "$NS" sysctl -qw net.ipv6.conf.vm0p.disable_ipv6=1
        if [ -n "$VM_MAC" ]; then ip -n "$VM_NS" link set vm0 address "$VM_MAC"; fi
        ip -n "$VM_NS" link set vm0 mtu 1400
        if [ -n "$VM_IP4" ]; then ip -n "$VM_NS" addr add "$VM_IP4" dev vm0; fi
        if [ -n "$VM_IP6" ]; then ip -n "$VM_NS" addr add "$VM_IP6" dev vm0 nodad; fi
        ip netns exec "$VM_NS" ethtool -K vm0 tx off >/dev/null
        ip netns exec "$NS" ethtool -K vm0p tx off >/dev/null
        ip -n "$VM_NS" link set vm0 up
        ip -n "$NS" link set vm0p up
        vsctl add-port br-int vm0p
    fi
    trap - ERR
    echo "ovs-hv: $NAME up in $NS (ovs-vswitchd $(cat "$D/run/ovs-vswitchd.pid"), ovsdb-server $(cat "$D/run/ovsdb-server.pid"))${VM_NS:+, VM in $VM_NS}"
}

tunnel() {
    [ $# -ge 2 ] || usage
    load "$1"; local port=$2; shift 2
    local remote= key= local_ip= bfd= ovn=
    while [ $# -gt 0 ]; do
        case $1 in
            --remote) remote=$2 ;; --key) key=$2 ;; --local-ip) local_ip=$2 ;;
            --bfd) bfd=$2 ;; --ovn-keys) ovn=$2 ;; *) usage ;;
        esac
        shift 2
    done
    [ -n "$remote" ] && [ -n "$key" ] || usage
    local set=(type=geneve "options:remote_ip=$remote" "options:key=$key")
    if [ -n "$local_ip" ]; then set+=("options:local_ip=$local_ip"); fi
    if [ -n "$bfd" ]; then
        IFS=, read -r rx tx mult <<<"$bfd"
        set+=(bfd:enable=true "bfd:min_rx=$rx" "bfd:min_tx=$tx" "bfd:mult=$mult")
    fi
    vsctl add-port br-int "$port" -- set interface "$port" "${set[@]}"
    if [ -n "$ovn" ]; then
        IFS=, read -r ingress egress <<<"$ovn"
        ovs ovs-ofctl dump-tlv-map br-int | grep -q tun_metadata0 || ovs ovs-ofctl add-tlv-map br-int "$OVN_TLV_MAP"
        ovs ovs-ofctl add-flow br-int \
            "priority=100,in_port=vm0p,actions=set_field:$(printf '%#x' $(((ingress & 0x7fff) << 16 | egress)))->tun_metadata0,output:$port"
        ovs ovs-ofctl add-flow br-int "priority=100,in_port=$port,actions=output:vm0p"
    fi
    echo "ovs-hv: $NAME: $port ofport $(vsctl get interface "$port" ofport)"
}

status() {
    [ $# -eq 1 ] || usage
    load "$1"
    echo "=== $NAME: namespace $NS, VM ${VM_NS:-none}, state $D"
    vsctl show
    ovs ovs-appctl -t ovs-vswitchd bfd/show
    echo "-- tunnel neighbours:"
    ovs ovs-appctl -t ovs-vswitchd tnl/neigh/show
    echo "-- br-int ports:"
    ovs ovs-ofctl dump-ports br-int
}

ctl() {
    [ $# -ge 2 ] || usage
    load "$1"; shift
    case $1 in
        ovs-vsctl | ovs-ofctl | ovs-appctl | ovs-dpctl) ovs "$@" ;;
        *) die "ctl runs ovs-vsctl, ovs-ofctl or ovs-appctl, not $1" ;;
    esac
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case $cmd in
    up | down | tunnel | status | ctl) "$cmd" "$@" ;;
    *) usage ;;
esac
