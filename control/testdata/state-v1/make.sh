set -e
X=/work/main/target/release/xgw
ip netns add xgwfix 2>/dev/null || true
ip -n xgwfix link add ul type veth peer name ulp
ip -n xgwfix link add tap1 type veth peer name tap1p
for i in ul ulp tap1 tap1p lo; do ip -n xgwfix link set $i up; done
ip -n xgwfix addr add 198.51.100.1/24 dev ul
cat > /tmp/v1.toml <<T
[bfd]
min_rx_ms = 300
[[tunnels]]
name = "hvfile"
remote_ip = "198.51.100.3"
vni = 5002
bfd = true
bfd_min_tx_ms = 200
[[bindings]]
vni = 5002
mac = "02:00:5e:20:00:09"
tunnel = "hvfile"
port_key = 9
T
ip netns exec xgwfix bash -c "mkdir -p /tmp/xgwfixbpf && mount -t bpf bpf /tmp/xgwfixbpf; $X run --uplink ul --local-ip 198.51.100.1 --state-dir /tmp/v1state --bpffs /tmp/xgwfixbpf/x --socket /tmp/xgwfix.sock --config /tmp/v1.toml --bfd-rt-priority 0 > /tmp/v1.log 2>&1 & echo \$! > /tmp/v1.pid; sleep 2
S='--socket /tmp/xgwfix.sock'
$X port add vm1 --ifname tap1 --vni 5001 --port-key 17 --mac 02:00:5e:20:00:01 --ip 203.0.113.1 \$S
$X tunnel add hv2 --remote-ip 198.51.100.2 --vni 5001 --ovn-metadata --bfd --bfd-min-tx 150 --bfd-mult 5 --ofport 10 \$S
$X binding add --vni 5001 --mac 02:00:5e:20:00:02 --ip 203.0.113.2 --tunnel hv2 --port-key 34 \$S
$X bfd peer add tor1 --peer-ip 198.51.100.254 --echo --min-tx 50 \$S
$X show \$S
kill \$(cat /tmp/v1.pid); sleep 1; umount /tmp/xgwfixbpf || true"
ip netns del xgwfix
