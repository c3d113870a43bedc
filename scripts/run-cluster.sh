#!/usr/bin/env bash
# `make run-cluster`: a local 3-node NATS cluster (client ports 4222-4224) and three vigils on it
# (vigil-a, vigil-b, vigil-c) with every stream kept on all three nodes, over 16 partitions (a new
# deployment's default; `--partitions N` among the arguments for another count, 1 for one log):
# each partition has its owner, and the next instance in its order follows it as a standby. Arguments go to every `vigil serve`. Everything lives under .data/cluster (stores and
# logs); Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

nats_server=${VIGIL_NATS_SERVER:-.tools/nats/bin/nats-server}
vigil=./target/release/vigil
root=.data/cluster
mkdir -p "$root"
urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
routes=nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224
pids=()
vigils=()

stop() {
    trap - EXIT INT TERM
    # vigils first (they give their leases up and drain), then the servers.
    for pid in "${vigils[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${vigils[@]}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

for i in 1 2 3; do
    port=$((4221 + i)) route=$((6221 + i)) http=$((8221 + i))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run-cluster: something already listens on 127.0.0.1:$port; stop it first"; exit 1
    fi
    setsid "$nats_server" --name "n$i" -a 127.0.0.1 -p "$port" -m "$http" -js -sd "$root/n$i" \
        --cluster_name vigil-local --cluster "nats://127.0.0.1:$route" --routes "$routes" \
        > "$root/n$i.log" 2>&1 &
    pids+=($!)
done

# JetStream answers once the cluster has elected its meta leader.
ready() {
    local i
    for i in 1 2 3; do
        exec 3<>"/dev/tcp/127.0.0.1/$((8221 + i))" 2>/dev/null || return 1
        printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3
        grep -q '"status":"ok"' <&3 || { exec 3>&-; return 1; }
        exec 3>&-
    done
}
for _ in $(seq 300); do ready && break; sleep 0.1; done
ready || { echo "run-cluster: the NATS cluster did not become ready; see $root/n*.log"; exit 1; }

metrics=9464
for name in vigil-a vigil-b vigil-c; do
    setsid "$vigil" serve --instance "$name" --nats-url "$urls" --stream-replicas 3 \
        --data-dir "$root/$name" --metrics-addr "127.0.0.1:$metrics" "$@" > "$root/$name.log" 2>&1 &
    vigils+=($!)
    metrics=$((metrics + 1))
    sleep 0.5
done

cat <<HINT

  A 3-node NATS cluster (127.0.0.1:4222-4224) and three vigils (logs in $root/vigil-*.log;
  metrics on 127.0.0.1:9464-9466, vigil_owner{partition} says which partitions each owns). In another terminal:

    $vigil watch --nats-url $urls
    $vigil emit --nats-url $urls probe ws-b --result not_found     # a dead workspace: restarted once
    kill -9 \$(pgrep -f 'instance vigil-a')                          # a standby takes over within the lease
    nats --server 127.0.0.1:4222 request vigil.query.partitions ''   # who owns what (with the nats CLI)

  Ctrl-C stops them all.

HINT

tail -n +1 -F "$root"/vigil-*.log &
pids+=($!)
wait "${vigils[@]}"
