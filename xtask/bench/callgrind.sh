#!/usr/bin/env bash
# Instructions per request of one server configuration, counted by callgrind
# (repeatable on a noisy VM, unlike wall-clock figures): docs/performance.md.
#
# usage: xtask/bench/callgrind.sh NAME [wsgi-server arguments...]
#   xtask/bench/callgrind.sh py -H target/bench-venv xtask/bench/apps/hello.py:application
#   xtask/bench/callgrind.sh rust --rust-app hello
# Runs target/release/wsgi-server --no-master under valgrind on CPU 0,
# warms up 2 s with wrk -c16 on CPU 1 with instrumentation off, then counts
# 8 s; prints total user-space instructions / requests wrk counted, and
# leaves target/bench/callgrind.NAME.out.1 for callgrind_annotate.
set -euo pipefail
name=$1
shift
cd "$(dirname "$0")/../.."
out=target/bench
port=${CALLGRIND_PORT:-18080}
mkdir -p "$out"
binary=$(mktemp /tmp/wsgi-server-callgrind.XXXXXX)
cp target/release/wsgi-server "$binary"
chmod +x "$binary"
rm -f "$out/callgrind.$name".*
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --separate-threads=no \
    --callgrind-out-file="$out/callgrind.$name.out" \
    "$binary" --no-master --bind "127.0.0.1:$port" "$@" 2>"$out/callgrind.$name.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$binary"' EXIT
for _ in $(seq 100); do  # valgrind starts slowly
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.3
done
taskset -c 1 wrk -t1 -c16 -d2s "http://127.0.0.1:$port/" >/dev/null
callgrind_control -i on "$server" >/dev/null
taskset -c 1 wrk -t1 -c16 -d8s "http://127.0.0.1:$port/" >"$out/callgrind.$name.wrk"
callgrind_control -i off "$server" >/dev/null
callgrind_control -d "$server" >/dev/null
kill "$server"
wait "$server" || true
requests=$(grep -oE '^ *[0-9]+ requests' "$out/callgrind.$name.wrk" | grep -oE '[0-9]+')
total=$(callgrind_annotate "$out/callgrind.$name.out.1" 2>/dev/null | grep 'PROGRAM TOTALS' | grep -oE '^[0-9,]+' | tr -d ,)
echo "$name: $((total / requests)) instructions/request ($requests requests)"
