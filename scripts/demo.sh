#!/usr/bin/env bash
# Start `pointillist serve` (the built-in demo model on the CPU), generate one image through it
# with a live progress bar, then stop the server with SIGTERM (a graceful drain).
set -euo pipefail
address="${POINTILLIST_ADDRESS:-127.0.0.1:50051}"
output="${1:-lighthouse.png}"

pointillist serve --address "$address" &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true' EXIT

pointillist generate "a lighthouse at dusk" --server "$address" --wait-ready 300 \
  --steps 20 --seed 7 -o "$output"
echo "demo: wrote $output"
