#!/usr/bin/env bash
# test_worker.sh BIN CLIENT PROXY SRCDIR - the outsourcing worker end to
# end: real `enclaveml worker` processes on a unix socket in a scratch
# directory and on 127.0.0.1 (port 0: the port is read from its stdout),
# driven by tests/worker_client.c over the host's link, directly and
# through tests/worker_proxy.c's faults; refusals, SIGTERM, --max-requests,
# a stalled worker (timeout), a killed one (connection closed), and the
# command's errors.  Every server is killed at the end (trap) and every
# client run is bounded by `timeout`.
set -u
bin=$1
client=$2
proxy=$3
src=$4
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"

# start NAME CMD...: runs a server in the background (stdout in
# $tmp/NAME.out, stderr in $tmp/NAME.err) and waits at most 10 s for the
# address it prints; sets $pid and $addr ("" if none came).
start() {
  local name=$1 i
  shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
  for i in $(seq 100); do
    [[ -s "$tmp/$name.out" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  addr=$(head -n 1 "$tmp/$name.out")
}

# stopped PID SECONDS: waits for PID to exit; sets $rc (124 if it did not).
stopped() {
  local i
  for i in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$1" 2>/dev/null; then rc=124; else wait "$1"; rc=$?; fi
}

# run NAME CLIENT-ARGS...: a client run, at most 60 s, all "ok:" or a FAIL.
run() {
  local name=$1
  shift
  if timeout 60 "$client" "$@" >"$tmp/c.out" 2>&1; then
    ok "$name: $(grep -c '^ok:' "$tmp/c.out") checks"
  else
    bad "$name (rc $?): $(grep -v '^ok:' "$tmp/c.out" | head -c 800)"
  fi
}

# ---- a worker on a unix socket
sock=$tmp/w.sock
start w "$bin" worker --listen "unix:$sock" --threads 2
waddr=$addr
wpid=$pid
if [[ $waddr == "unix:$sock" && $(wc -l <"$tmp/w.out") -eq 1 ]] &&
   grep -qx "worker: listening on unix:$sock (CPU)" "$tmp/w.err"; then
  ok "worker prints its address: $waddr"
else
  bad "worker unix: stdout '$(cat "$tmp/w.out")', stderr $(cat "$tmp/w.err")"
fi
run "unix: products checked against the local field GEMM" check "$waddr"
run "unix: malformed requests refused" malformed "$waddr"

# ---- the same worker behind the fault proxy: every 2nd reply faulted
for kind in none flip scale-row swap replay truncate; do
  start "p-$kind" "$proxy" --listen "unix:$tmp/p-$kind.sock" --to "$waddr" \
    --fault "$kind" --every 2 --seed 7
  if [[ $addr == "unix:$tmp/p-$kind.sock" ]]; then
    run "proxy --fault $kind --every 2" fault "$addr" "$kind" 2
  else
    bad "proxy $kind did not start: $(cat "$tmp/p-$kind.err")"
  fi
  kill "$pid" 2>/dev/null
  stopped "$pid" 10
done

# ---- a stalled worker: the link times out (and stays broken)
kill -STOP "$wpid"
run "a stopped worker: the link times out after 0.3 s" timeout "$waddr" 300
kill -CONT "$wpid"

# ---- a worker on loopback TCP, port 0
start t "$bin" worker --listen tcp:127.0.0.1:0 --quiet
taddr=$addr
tpid=$pid
port=${taddr##*:}
if [[ $taddr =~ ^tcp:127\.0\.0\.1:[0-9]+$ && $port -gt 0 &&
      $(wc -l <"$tmp/t.out") -eq 1 && ! -s "$tmp/t.err" ]]; then
  ok "tcp port 0: listening on $taddr (--quiet: nothing on stderr)"
else
  bad "worker tcp: stdout '$(cat "$tmp/t.out")', stderr $(cat "$tmp/t.err")"
fi
run "tcp: products checked against the local field GEMM" check "$taddr"
run "tcp: malformed requests refused" malformed "$taddr"
expect_error "bind failure names the address" \
  "cannot listen on tcp:127.0.0.1:$port: Address already in use" \
  "$bin" worker --listen "tcp:127.0.0.1:$port"

# ---- SIGTERM: a clean stop, exit 0, the socket file removed
kill -TERM "$tpid"
stopped "$tpid" 10
if [[ $rc -eq 0 ]]; then ok "tcp worker: SIGTERM, exit 0"
else bad "tcp worker after SIGTERM: rc $rc"; fi
timeout 60 "$client" ask "$taddr" 1 >"$tmp/c.out" 2>&1
if grep -qF "worker $taddr: cannot connect: Connection refused" "$tmp/c.out"
then ok "nobody listening: $(grep -o 'worker tcp.*' "$tmp/c.out")"
else bad "connect to a closed port: $(cat "$tmp/c.out")"; fi
kill -TERM "$wpid"
stopped "$wpid" 10
if [[ $rc -eq 0 && ! -e $sock ]] &&
   grep -q '^worker: stopped after [0-9]* requests\?$' "$tmp/w.err"; then
  ok "unix worker: SIGTERM, exit 0, socket file removed"
else
  bad "unix worker after SIGTERM: rc $rc, $(ls "$tmp"), $(tail -n 3 "$tmp/w.err")"
fi

# ---- --max-requests
start m "$bin" worker --listen "unix:$tmp/m.sock" --max-requests 3
run "--max-requests 3: three products" ask "$addr" 3
stopped "$pid" 10
if [[ $rc -eq 0 ]]; then ok "--max-requests 3: the worker stopped by itself"
else bad "--max-requests 3: rc $rc"; fi

# ---- a worker killed while it computes: "connection closed"
start k "$bin" worker --listen "unix:$tmp/k.sock" --threads 1
kpid=$pid
timeout 60 "$client" closed "$addr" >"$tmp/k.cl" 2>&1 &
cpid=$!
pids+=("$cpid")
for i in $(seq 300); do
  grep -q '^sent$' "$tmp/k.cl" && break
  sleep 0.05
done
kill -9 "$kpid"
wait "$cpid"
crc=$?
if [[ $crc -eq 0 ]] && grep -q '^ok: .*connection closed' "$tmp/k.cl"; then
  ok "killed worker: $(grep '^ok:' "$tmp/k.cl")"
else
  bad "killed worker: rc $crc, $(cat "$tmp/k.cl")"
fi
# its socket file is left behind: the next worker unlinks the stale file
start s "$bin" worker --listen "unix:$tmp/k.sock" --max-requests 1
run "a stale socket file is replaced" ask "$addr" 1
stopped "$pid" 10

# ---- errors: one line, non-zero exit, nothing on stdout
# ---- the CUDA backend: products checked where a GPU answers, else one
# clear line saying why not (no toolkit at build time, no libraries, no
# device).
start gpu "$bin" worker --listen "unix:$tmp/gpu.sock" --device cuda
if [[ -n $addr ]]; then
  ok "CUDA worker: $(grep listening "$tmp/gpu.err")"
  run "CUDA: products checked against the local field GEMM" check "$addr"
  kill "$pid" 2>/dev/null
else
  stopped "$pid" 10
  if [[ $rc -ne 0 && $(wc -l <"$tmp/gpu.err") -eq 1 ]] &&
     grep -Eq '^enclaveml: error: worker: --device cuda: (this build has no CUDA backend|cannot load|no CUDA device)' "$tmp/gpu.err"; then
    ok "no GPU here, the CUDA worker says so: $(cat "$tmp/gpu.err") (skipped)"
  else
    bad "--device cuda without a GPU: rc $rc, $(cat "$tmp/gpu.err")"
  fi
fi
expect_error "--device tpu" "'tpu' is not one of: cpu, cuda" \
  "$bin" worker --listen "unix:$tmp/x.sock" --device tpu
expect_error "no --listen" "--listen ADDR is required" "$bin" worker
expect_error "no scheme" "expected tcp:HOST:PORT or unix:PATH" \
  "$bin" worker --listen 127.0.0.1:5555
expect_error "no port" "expected tcp:HOST:PORT" \
  "$bin" worker --listen tcp:127.0.0.1
expect_error "port 65536" "PORT must be a number in 0..65535" \
  "$bin" worker --listen tcp:127.0.0.1:65536
expect_error "port +80" "PORT must be a number in 0..65535" \
  "$bin" worker --listen tcp:127.0.0.1:+80
expect_error "IPv6" "HOST must be an IPv4 address or a host name" \
  "$bin" worker --listen tcp:::1:5555
expect_error "unknown host" "cannot resolve the host" \
  timeout 30 "$bin" worker --listen tcp:no-such-host.invalid:5555
expect_error "unix: without a path" "unix: needs a path" \
  "$bin" worker --listen unix:
expect_error "unix path too long" "the path is too long" \
  "$bin" worker --listen "unix:$tmp/$(printf 'x%.0s' $(seq 120))"
expect_error "unix path in a missing folder" \
  "cannot listen on unix:$tmp/none/w.sock: No such file or directory" \
  "$bin" worker --listen "unix:$tmp/none/w.sock"
: >"$tmp/plain"
expect_error "a regular file in the way" "exists and is not a socket" \
  "$bin" worker --listen "unix:$tmp/plain"
start l "$bin" worker --listen "unix:$tmp/live.sock"
expect_error "a live worker's socket" "a server is already listening there" \
  "$bin" worker --listen "unix:$tmp/live.sock"
kill "$pid"
expect_error "--threads 0" "--threads" \
  "$bin" worker --listen "unix:$tmp/x.sock" --threads 0
expect_error "stray argument" "unexpected argument 'extra'" \
  "$bin" worker --listen "unix:$tmp/x.sock" extra

echo "passed $passed, failed $failed"
[[ $failed -eq 0 ]]
