# A real single-node Kubernetes cluster for Tusk's pod tests, sourced by scripts/kube-testenv
# (`start --node DIR`, `stop DIR`, `push DIR ...`). Everything comes from Debian: the control
# plane, kubelet, kube-scheduler and kube-proxy built from the `kubernetes` source package (the
# same cache as the API server tier), containerd + runc, the CNI plugins, dnsmasq and the
# docker-registry.
#
# Isolation: the whole node lives in a network namespace of its own, `tusk-node-N`, joined to
# the host by one veth pair. Every server listens inside it; kube-proxy's iptables rules,
# ip_forward and the pod bridge exist only there, and vanish with it. The host gets two routes
# (pods and Services, through the veth) so tests can reach ClusterIPs and pod IPs. The
# namespace has no default route, so nothing in it can reach beyond this machine.
#
#   node netns tusk-node-N
#     eth0 10.202.N.2/30  node IP: apiserver :6443, kubelet :10250, registry :5000, DNS :53
#     cni0 10.200.N.1/24  pod bridge (the CNI bridge plugin makes it)
#     Services 10.201.N.0/24 (kube-proxy, iptables mode); `kubernetes` is 10.201.N.1
#   host: tusk-hN 10.202.N.1/30, routes 10.200.N.0/24 and 10.201.N.0/24 via 10.202.N.2
#
# Processes run with only their network namespace switched (`nsenter --net`), never in a mount
# namespace of their own: kubelet's volume mounts must be visible to containerd.
#
# Everything a node makes is recorded in DIR and undone by `stop`: processes by recorded pid
# (checked against DIR in their command line), pods' processes through the node's own cgroup
# root (`/tusk-node-N` in every hierarchy), mounts under DIR, the pods' log directories in
# /var/log/pods, and the namespace with its veth.

NODE_NAME=tusk-node
# Patroni's `kubernetes` Service address is the first of the Service range.
node_vars() { # dir -> NODE_INDEX NETNS NODE_IP HOST_IP POD_CIDR SERVICE_CIDR ...
    local dir="$1"
    NODE_INDEX="$(cat "$dir/node-index")"
    NETNS="tusk-node-$NODE_INDEX"
    HOST_VETH="tusk-h$NODE_INDEX"
    HOST_IP="10.202.$NODE_INDEX.1"
    NODE_IP="10.202.$NODE_INDEX.2"
    POD_CIDR="10.200.$NODE_INDEX.0/24"
    POD_GATEWAY="10.200.$NODE_INDEX.1"
    SERVICE_CIDR="10.201.$NODE_INDEX.0/24"
    KUBERNETES_SERVICE_IP="10.201.$NODE_INDEX.1"
    REGISTRY="$NODE_IP:5000"
    CGROUP_ROOT="tusk-node-$NODE_INDEX"
}

in_netns() { nsenter --net="/var/run/netns/$NETNS" -- "$@"; }

# Picks the first index whose namespace and addresses are unused, under a lock so two starts
# cannot take the same one.
allocate_node_index() {
    local dir="$1" n
    exec {lock}>/run/tusk-kube-node.lock
    flock "$lock"
    for n in $(seq 1 250); do
        [ -e "/var/run/netns/tusk-node-$n" ] && continue
        ip -4 -o addr show | grep -qE " 10\.20[0-2]\.$n\." && continue
        ip -4 route show | grep -qE "^10\.20[0-2]\.$n\." && continue
        echo "$n" >"$dir/node-index"
        node_vars "$dir"
        ip netns add "$NETNS"
        flock -u "$lock"
        return 0
    done
    flock -u "$lock"
    die "no free node index (namespaces tusk-node-1..250 all exist)"
}

setup_network() {
    local dir="$1"
    ip link add "$HOST_VETH" type veth peer name eth0 netns "$NETNS"
    ip addr add "$HOST_IP/30" dev "$HOST_VETH"
    ip link set "$HOST_VETH" up
    in_netns ip link set lo up
    in_netns ip addr add "$NODE_IP/30" dev eth0
    in_netns ip link set eth0 up
    # Only inside the namespace: pods are routed between the bridge and the node's addresses.
    in_netns sysctl -qw net.ipv4.ip_forward=1
    # Bridged pod-to-pod traffic must pass iptables, or a reply from a Service's endpoint on
    # the same bridge skips kube-proxy's reverse NAT (per namespace since Linux 5.3).
    in_netns sysctl -qw net.bridge.bridge-nf-call-iptables=1
    ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH"
    ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_VETH"
}

make_node_certs() {
    local pki="$1"
    mkdir -p "$pki"
    (
        cd "$pki" || exit 1
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tusk-testenv-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        leaf() { # name subject extensions
            openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
            printf '%s\n' "$3" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                -extfile "$1.ext" -out "$1.crt" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        leaf apiserver "/CN=kube-apiserver" \
            "subjectAltName=IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
        leaf kubelet-serving "/CN=$NODE_NAME" \
            "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
        # The kubelet as the Node authorizer expects it: only its own pods' Secrets and volumes.
        leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
        # Bound to the system:node-proxier ClusterRole by default.
        leaf kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
        # The API server's client identity towards kubelets (logs, exec, port-forward).
        leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            "extendedKeyUsage=clientAuth"
        leaf admin "/O=system:masters/CN=tusk-testenv-admin" "extendedKeyUsage=clientAuth"
        openssl genrsa -out service-account.key 2048 2>/dev/null
        openssl rsa -in service-account.key -pubout -out service-account.pub 2>/dev/null
    )
}

write_client_kubeconfig() { # file server pki identity
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 <"$3/ca.crt")
users:
- name: $4
  user:
    client-certificate-data: $(base64 -w0 <"$3/$4.crt")
    client-key-data: $(base64 -w0 <"$3/$4.key")
contexts:
- name: testenv
  context: {cluster: testenv, user: $4, namespace: default}
current-context: testenv
EOF
    chmod 600 "$1"
}

# Like `spawn`, inside the node's network namespace.
spawn_in_node() {
    local dir="$1" name="$2"
    shift 2
    spawn "$dir" "$name" nsenter --net="/var/run/netns/$NETNS" -- "$@"
}

wait_for() { # dir name seconds description command...
    local dir="$1" name="$2" deadline=$((SECONDS + $3)) what="$4"
    shift 4
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ] ||
            { [ -f "$dir/pids/$name.pid" ] && ! kill -0 "$(cat "$dir/pids/$name.pid")" 2>/dev/null; }; then
            tail -n 30 "$dir/logs/$name.log" >&2 || true
            cmd_stop "$dir"
            die "$what did not happen within $3s (log: $dir/logs/$name.log)"
        fi
        sleep 0.3
    done
}

start_node_control_plane() {
    local dir="$1" bin="$2"
    spawn_in_node "$dir" etcd etcd --name testenv --data-dir "$dir/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster testenv=http://127.0.0.1:2380
    # Node,RBAC + NodeRestriction: the kubelet gets what a production kubelet gets.
    spawn_in_node "$dir" kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers http://127.0.0.1:2379 \
        --bind-address 0.0.0.0 --advertise-address "$NODE_IP" \
        --secure-port 6443 --insecure-port 0 \
        --cert-dir "$dir/pki" \
        --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
        --client-ca-file "$dir/pki/ca.crt" \
        --kubelet-client-certificate "$dir/pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$dir/pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$dir/pki/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$dir/pki/service-account.pub" \
        --service-account-signing-key-file "$dir/pki/service-account.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --profiling=false
    local server="https://$NODE_IP:6443"
    write_kubeconfig "$dir/kubeconfig" "$server" "$dir/pki"
    wait_ready "$dir" "$server/readyz" kube-apiserver 120

    # Every default controller: Deployments, StatefulSets, Jobs, Endpoints, the PV binder,
    # ServiceAccount tokens (1.20 mounts Secret-based tokens), garbage collection.
    spawn_in_node "$dir" kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig "$dir/kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 10257 --port 0 \
        --cert-dir "$dir/pki/kcm" \
        --service-account-private-key-file "$dir/pki/service-account.key" \
        --root-ca-file "$dir/pki/ca.crt" \
        --authentication-skip-lookup \
        --leader-elect=false --use-service-account-credentials=false \
        --profiling=false
    spawn_in_node "$dir" kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig "$dir/kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 10259 --port 0 \
        --cert-dir "$dir/pki/scheduler" \
        --authentication-skip-lookup --leader-elect=false --profiling=false
    printf '%s\n' "$server" >"$dir/server"
}

start_registry() {
    local dir="$1"
    mkdir -p "$dir/registry/data"
    cat >"$dir/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/registry/data}
  delete: {enabled: true}
http:
  addr: $REGISTRY
EOF
    spawn_in_node "$dir" registry docker-registry serve "$dir/registry/config.yml"
    wait_for "$dir" registry 30 "the registry answering on $REGISTRY" curl -sf "http://$REGISTRY/v2/"
}

# Cluster DNS: dnsmasq answers from a hosts file the node agent keeps in step with Services
# and Endpoints (re-read on SIGHUP). Unknown names under cluster.local are NXDOMAIN at once,
# and nothing is forwarded anywhere.
start_dns() {
    local dir="$1"
    mkdir -p "$dir/dns"
    : >"$dir/dns/hosts"
    spawn_in_node "$dir" dns dnsmasq --keep-in-foreground --no-daemon --conf-file=/dev/null \
        --no-resolv --no-hosts --addn-hosts="$dir/dns/hosts" \
        --listen-address="$NODE_IP" --bind-interfaces --port=53 \
        --local=/cluster.local/ --local=/svc/ --domain-needed --local-ttl=1 \
        --pid-file= --user=root --log-facility=-
}

start_agent() {
    local dir="$1"
    spawn "$dir" node-agent python3 "$(script_dir)/lib/kube-node-agent" run "$dir/"
}

start_containerd() {
    local dir="$1"
    local c="$dir/containerd"
    mkdir -p "$c/root" "$c/state" "$c/certs.d/$REGISTRY" "$dir/cni/net.d" "$dir/cni/ipam"
    # The node's registry speaks plain HTTP on the node's own address.
    cat >"$c/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF
    cat >"$dir/cni/net.d/10-tusk.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tusk-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    # restrict_oom_score_adj: without it runc cannot lower a container's OOM score below the
    # containerd's own here, and every pod fails to start. netns_mounts_under_state_dir: the
    # pods' network namespaces are mounted under DIR, where `stop` finds them.
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/pause:3.2"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
EOF
    spawn_in_node "$dir" containerd containerd --config "$c/config.toml"
    wait_for "$dir" containerd 30 "containerd's socket" test -S "$c/containerd.sock"
}

# The pause image, made from the static binary of the same Kubernetes source, pushed to the
# node's registry so the sandbox is pulled like any other image.
push_pause_image() {
    local dir="$1" bin="$2"
    python3 "$(script_dir)/lib/kube-node-agent" pause-archive "$bin/pause" "$dir/pause.tar"
    skopeo copy --quiet --dest-tls-verify=false "docker-archive:$dir/pause.tar" \
        "docker://$REGISTRY/pause:3.2" >/dev/null
    rm -f "$dir/pause.tar"
}

# The node's own cgroup root in every v1 hierarchy, so `stop` can find every pod process.
make_cgroup_root() {
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -e "$h/cgroup.procs" ] || continue
        [ "$(basename "$h")" = unified ] && continue
        mkdir -p "$h$CGROUP_ROOT"
        if [ -e "$h/cpuset.cpus" ]; then
            cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
        fi
    done
}

start_kubelet() {
    local dir="$1" bin="$2"
    local k="$dir/kubelet"
    mkdir -p "$k/root" "$k/pki"
    : >"$k/resolv.conf"
    write_client_kubeconfig "$k/kubeconfig" "$(cat "$dir/server")" "$dir/pki" kubelet
    cat >"$k/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $dir/pki/kubelet-serving.crt
tlsPrivateKeyFile: $dir/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
# Pods get only the cluster's resolver and search path, nothing of the host's.
resolvConf: $k/resolv.conf
failSwapOn: false
serializeImagePulls: false
# A test machine's disk is shared with everything else: never evict test pods for it, and never
# collect the images the tests pushed.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Mounted Secrets and ConfigMaps are refreshed every minute, as in a default kubelet.
syncFrequency: 1m
EOF
    spawn_in_node "$dir" kubelet "$bin/kubelet" \
        --config "$k/config.yaml" --kubeconfig "$k/kubeconfig" \
        --root-dir "$k/root" --cert-dir "$k/pki" \
        --container-runtime remote --container-runtime-endpoint "unix://$dir/containerd/containerd.sock" \
        --runtime-request-timeout 10m \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --pod-infra-container-image "$REGISTRY/pause:3.2"
}

start_kube_proxy() {
    local dir="$1" bin="$2"
    local p="$dir/kube-proxy"
    mkdir -p "$p"
    write_client_kubeconfig "$p/kubeconfig" "$(cat "$dir/server")" "$dir/pki" kube-proxy
    # conntrack: 0 leaves the kernel's (machine-wide) conntrack table size and timeouts alone.
    cat >"$p/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $p/kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
    spawn_in_node "$dir" kube-proxy "$bin/kube-proxy" --config "$p/config.yaml"
}

node_ready() {
    kubectl --kubeconfig "$1/kubeconfig" get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

default_service_account() {
    kubectl --kubeconfig "$1/kubeconfig" get serviceaccount default -n default >/dev/null 2>&1
}

cmd_start_node() {
    local dir="$1" bin started=$SECONDS
    bin="$(cmd_bin_dir)"
    [ "$(id -u)" -eq 0 ] || die "a node needs root (network namespaces, cgroups, mounts)"
    for tool in nsenter containerd runc dnsmasq docker-registry skopeo iptables ip; do
        command -v "$tool" >/dev/null || die "$tool is missing: see scripts/kube-testenv's header"
    done
    [ -x /usr/lib/cni/bridge ] || die "the CNI plugins are missing: apt-get install containernetworking-plugins"
    mkdir -p "$dir/pids" "$dir/logs" "$dir/etcd" "$dir/volumes"
    allocate_node_index "$dir"
    if [ -n "${KUBE_TESTENV_OWNER_PID:-}" ]; then
        start_watchdog "$dir" "$KUBE_TESTENV_OWNER_PID"
    fi
    setup_network "$dir"
    make_node_certs "$dir/pki"
    start_node_control_plane "$dir" "$bin"
    start_registry "$dir"
    start_dns "$dir"
    start_agent "$dir"
    start_containerd "$dir"
    push_pause_image "$dir" "$bin"
    make_cgroup_root
    start_kubelet "$dir" "$bin"
    start_kube_proxy "$dir" "$bin"
    wait_for "$dir" kubelet 120 "node $NODE_NAME Ready" node_ready "$dir"
    wait_for "$dir" kube-controller-manager 60 "the default ServiceAccount" default_service_account "$dir"
    cat >"$dir/node.env" <<EOF
TUSK_NODE_NAME=$NODE_NAME
TUSK_NODE_IP=$NODE_IP
TUSK_NODE_NETNS=$NETNS
TUSK_NODE_REGISTRY=$REGISTRY
TUSK_NODE_POD_CIDR=$POD_CIDR
TUSK_NODE_SERVICE_CIDR=$SERVICE_CIDR
EOF
    log "node ready in $((SECONDS - started))s: $(cat "$dir/server") (KUBECONFIG=$dir/kubeconfig, registry $REGISTRY)"
}

# --- stop --------------------------------------------------------------------------------------

# Every process in the node's cgroup tree (pods' containers, pause processes), from the pids
# hierarchy (present on every v1 host; the memory one as a fallback).
pod_processes() {
    local h
    for h in /sys/fs/cgroup/pids /sys/fs/cgroup/memory; do
        if [ -d "$h/$CGROUP_ROOT" ]; then
            find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
            return
        fi
    done
}

kill_pod_processes() {
    local pids
    for _ in $(seq 1 50); do
        pids="$(pod_processes | tr '\n' ' ')"
        [ -n "${pids// /}" ] || return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    log "warning: processes left in cgroup $CGROUP_ROOT: $(pod_processes | tr '\n' ' ')"
}

remove_cgroup_root() {
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$CGROUP_ROOT" ] || continue
        find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

# containerd-shim processes of this node (their command line names its socket).
kill_shims() {
    local pid
    for pid in $(pgrep -f "containerd-shim.*-address $1/containerd/containerd.sock" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

unmount_under() { # dir: every mount below it, deepest first
    local mnt
    awk '{print $5}' /proc/self/mountinfo | grep -F -- "$1/" | sort -r | while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
}

remove_pod_logs() { # kubelet 1.20 writes container logs to /var/log/pods, named by pod UID
    local dir="$1" pod uid
    for pod in "$dir/kubelet/root/pods"/*/; do
        [ -d "$pod" ] || continue
        uid="$(basename "$pod")"
        rm -rf /var/log/pods/*_"$uid"
    done
    find /var/log/containers -xtype l -delete 2>/dev/null || true
}

cmd_stop_node() {
    local dir="$1" name pid
    node_vars "$dir"
    # The agent and kubelet first, so nothing restarts what is being stopped.
    for name in node-agent kube-proxy kubelet kube-scheduler kube-controller-manager; do
        stop_recorded "$dir" "$name"
    done
    kill_pod_processes
    kill_shims "$dir"
    for name in containerd registry dns kube-apiserver etcd; do
        stop_recorded "$dir" "$name"
    done
    unmount_under "$dir"
    remove_cgroup_root
    remove_pod_logs "$dir"
    if [ -e "/var/run/netns/$NETNS" ]; then
        # Deleting the namespace deletes eth0 inside, so its peer and the host routes go too.
        ip netns del "$NETNS" 2>/dev/null || true
    fi
    ip link del "$HOST_VETH" 2>/dev/null || true
    rmdir "$dir/pids" 2>/dev/null || true
}

# --- push --------------------------------------------------------------------------------------

# Copies an OCI archive into the node's registry as NAME:TAG; prints the reference pods use.
cmd_push() {
    local dir archive="$2" ref="$3"
    dir="$(cd "$1" && pwd)"
    node_vars "$dir"
    [ -f "$archive" ] || die "no such archive: $archive"
    skopeo copy --quiet --dest-tls-verify=false "oci-archive:$archive" "docker://$REGISTRY/$ref" >/dev/null
    echo "$REGISTRY/$ref"
}

# --- install -----------------------------------------------------------------------------------

# Tusk on the node, as a user installs it: the images built from images/ (scripts/build-images,
# cached by content) pushed to the node's registry, then `kubectl apply --server-side -k` of an
# overlay of the install for this server's version (deploy/kustomize-without-cel: the node is
# 1.20) that changes nothing but the images; waits for the operator's rollout. Prints
# `<image> <reference>` for the database and operator images. Re-running with the same inputs
# changes nothing.
cmd_install() {
    local dir binary="$REPO_ROOT/target/release/tusk" built name archive ref tag
    dir="$(cd "$1" && pwd)"
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --binary) binary="${2:?--binary needs a path}" && shift ;;
        *) die "install: unknown argument $1" ;;
        esac
        shift
    done
    node_vars "$dir"
    built="$("$REPO_ROOT/scripts/build-images" postgres operator --binary "$binary")" ||
        die "scripts/build-images failed"
    local database="" operator=""
    while read -r name archive ref; do
        tag="${ref##*:}"
        case "$name" in
        postgres) database="$(cmd_push "$dir" "$archive" "tusk/postgres:$tag")" ;;
        operator) operator="$(cmd_push "$dir" "$archive" "tusk/operator:$tag")" ;;
        esac
    done <<<"$built"
    [ -n "$database" ] && [ -n "$operator" ] || die "scripts/build-images printed no image: $built"
    local overlay="$dir/install" base
    mkdir -p "$overlay"
    # kustomize refuses absolute resource paths.
    base="$(realpath --relative-to="$overlay" "$REPO_ROOT/deploy/kustomize-without-cel")"
    cat >"$overlay/kustomization.yaml" <<YAML
# Written by scripts/kube-testenv install: the install with the images built from this tree.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
images:
  - name: ghcr.io/tusk-rs/tusk-operator
    newName: ${operator%:*}
    newTag: "${operator##*:}"
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: tusk-operator, namespace: tusk-system}
      spec:
        template:
          spec:
            containers:
              - name: operator
                env:
                  - {name: RELATED_IMAGE_POSTGRES_15, value: "$database"}
                  - {name: RELATED_IMAGE_FENCER, value: "$operator"}
YAML
    kubectl --kubeconfig "$dir/kubeconfig" apply --server-side --force-conflicts -k "$overlay" >&2 ||
        die "kubectl apply -k $overlay failed"
    kubectl --kubeconfig "$dir/kubeconfig" rollout status -n tusk-system deployment/tusk-operator \
        --timeout=300s >&2 || die "the operator did not roll out"
    echo "postgres $database"
    echo "operator $operator"
}
