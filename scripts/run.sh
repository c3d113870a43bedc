#!/usr/bin/env bash
# `make run`: vigil serve against the NATS at $VIGIL_NATS_URL (default nats://127.0.0.1:4222),
# starting a local nats-server with JetStream there first if nothing answers.
set -euo pipefail
cd "$(dirname "$0")/.."

url=${VIGIL_NATS_URL:-nats://127.0.0.1:4222}
hostport=${url#*://}
host=${hostport%:*}
port=${hostport##*:}
nats_server=${VIGIL_NATS_SERVER:-.tools/nats/bin/nats-server}
mkdir -p .data

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if answers; then
    echo "vigil: using the NATS server at $url"
else
    echo "vigil: nothing answers at $url; starting $nats_server with JetStream (store in .data/nats, log in .data/nats.log)"
    # Its own session, so Ctrl-C reaches vigil first and vigil can drain before NATS goes away.
    setsid "$nats_server" -a "$host" -p "$port" -js -sd .data/nats > .data/nats.log 2>&1 &
    nats_pid=$!
    trap 'kill "$nats_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    answers || { echo "vigil: nats-server did not start; see .data/nats.log"; exit 1; }
fi

cat <<HINT

  vigil is starting. In another terminal:

    ./target/release/vigil watch                                   # see every decision as it is made
    ./target/release/vigil emit heartbeat ws-a --interval_s 30 --incarnation c1
    ./target/release/vigil emit probe ws-b --result not_found       # a dead workspace: restarted at once
    ./target/release/vigil emit upstream_error ws-a --status 502    # a failed request: vigil asks for a probe

  State queries: request/reply on vigil.query.state.<workspace> and vigil.query.fleet.
  Metrics: http://127.0.0.1:9464/metrics. Stop with Ctrl-C (vigil drains and checkpoints).

HINT

./target/release/vigil serve --nats-url "$url" --data-dir "${VIGIL_DATA_DIR:-.data/vigil}" "$@"
