#!/usr/bin/env bash
# test_decentral_cli.sh BIN SRCDIR [RELAY] - decentralized learning end to end,
# with real `enclaveml node` processes on loopback over ZeroMQ
# (--enclave none, the baseline, and --enclave sim): `decentral` with 4
# nodes on a ring, shards:2, full sharing: every node reports every
# round, nothing missed or refused, the model learns; the same run in sim
# enclaves gives the same accuracy every round; DP per node within each
# owner's budget, and a plan over it refused; sparse sharing sends less
# and --pad sends as much as full; nodes started by hand from a peers
# file, one of which never comes and one of which is SIGKILLed after its
# first round: the others finish every round within their deadlines and
# name the missing neighbour; a node whose enclave has another
# measurement is refused by its neighbours and gets no model; a node in
# its enclave SIGKILLed and resumed from its sealed checkpoint rejoins;
# the canary: an onlooker on the loopback (tests/node_relay.c) sees none
# of the parameters' 16-byte windows in an enclave run that it sees in
# the same run in the clear; bad input is one error line each.  Every node is bounded by
# its deadline and every command by `timeout`.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
relay=${3:-}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"
cfg=$src/cfg/fmnist-mlp.cfg
export TMPDIR=$tmp

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2"; }

common=(--cfg "$cfg" --nodes 4 --partition shards:2 --rounds 3 --local-steps 10
        --train-limit 2000 --test-limit 300 --deadline-ms 20000 --seed 3)

# ---- four nodes on a ring, full sharing
if timeout 300 "$bin" decentral "${common[@]}" --topology ring --json \
     >"$tmp/full.json" 2>"$tmp/full.err"; then
  rounds=$(grep -c '^round [0-9]*: test accuracy mean' "$tmp/full.err")
  nodes3=$(grep -o '"rounds":3' "$tmp/full.json" | wc -l)
  missed=$(grep -o '"missed":[1-9]' "$tmp/full.json" | wc -l)
  refused=$(grep -o '"refused":[1-9]' "$tmp/full.json" | wc -l)
  last=$(grep -o '"mean_accuracy":[0-9.]*' "$tmp/full.json" | tail -1 | cut -d: -f2)
  if [[ $rounds -eq 3 && $nodes3 -eq 4 && $missed -eq 0 && $refused -eq 0 ]] &&
     awk -v a="$last" 'BEGIN { exit !(a > 0.3) }'; then
    ok "4 nodes, ring, shards:2: 3 rounds, every node every round, mean accuracy $last"
  else
    bad "ring run: rounds $rounds, nodes with 3 rounds $nodes3, missed $missed, refused $refused, accuracy $last: $(cat "$tmp/full.err")"
  fi
else
  bad "decentral ring run failed: $(cat "$tmp/full.err")"
fi
full_bytes=$(grep -o '"bytes_sent":[0-9]*' "$tmp/full.json" | head -1 | cut -d: -f2)

# ---- the same run with every node in its own sim enclave: each node's
# data encrypted under its own owner's key and granted, channels keyed
# from attested hellos, frames sealed.  The algorithm is the same, so the
# accuracies are the baseline's, round for round.
export ENCLAVEML_HOME=$tmp/home
if timeout 300 "$bin" decentral "${common[@]}" --topology ring --json \
     --enclave sim >"$tmp/sim.json" 2>"$tmp/sim.err"; then
  a=$(grep -o '"mean_accuracy":[0-9.]*' "$tmp/full.json" | tr '\n' ' ')
  b=$(grep -o '"mean_accuracy":[0-9.]*' "$tmp/sim.json" | tr '\n' ' ')
  if [[ -n $a && $a == "$b" ]] && grep -q '"enclave":"sim"' "$tmp/sim.json" &&
     ! grep -q '"refused":[1-9]' "$tmp/sim.json" &&
     grep -q 'granted to enclave' "$tmp/sim.err"; then
    ok "4 nodes in sim enclaves: the baseline's accuracy every round ($b)"
  else
    bad "sim run: '$b' against '$a': $(cat "$tmp/sim.err")"
  fi
  # Memory per node: host and enclave resident sets, the network and the
  # message buffers (at least one frame of 8 bytes a parameter per
  # neighbour and one of its own) broken out.
  params=$(grep -o '"parameters":[0-9]*' "$tmp/sim.json" | head -1 | cut -d: -f2)
  enc=$(grep -o '"enclave_max_rss_kib":[0-9]*' "$tmp/sim.json" | head -1 | cut -d: -f2)
  net=$(grep -o '"net_bytes":[0-9]*' "$tmp/sim.json" | head -1 | cut -d: -f2)
  buf=$(grep -o '"buffer_bytes":[0-9]*' "$tmp/sim.json" | head -1 | cut -d: -f2)
  if [[ -n $params && -n $enc && -n $net && -n $buf ]] &&
     ((enc * 1024 > net + buf && net >= 8 * params && buf >= 24 * params)) &&
     grep -q 'largest node .* (host .*, enclave .*); of it the network' \
       "$tmp/sim.err"; then
    ok "memory per node: enclave ${enc} KiB, network $net B, buffers $buf B"
  else
    bad "memory per node: params=$params enclave=$enc net=$net buf=$buf"
  fi
else
  bad "decentral --enclave sim failed: $(cat "$tmp/sim.err")"
fi

# ---- DP-SGD on every node, each within its owner's budget (the grant's
# --max-epsilon, enforced in each node's enclave); a plan over it is
# refused by every node before its data is decrypted
dp=(--dp --clip 1 --delta 1e-5 --enclave sim)
if timeout 300 "$bin" decentral "${common[@]}" --topology ring "${dp[@]}" \
     --target-epsilon 2 --max-epsilon 3 --json >"$tmp/dp.json" 2>"$tmp/dp.err" &&
   [[ $(grep -o '"rounds":3' "$tmp/dp.json" | wc -l) -eq 4 ]]; then
  ok "DP on 4 nodes in enclaves, epsilon 2 each within budgets of 3: $(grep '^round 3' "$tmp/dp.err")"
else
  bad "DP run: $(cat "$tmp/dp.err")"
fi
timeout 300 "$bin" decentral "${common[@]}" --topology ring "${dp[@]}" \
  --target-epsilon 5 --max-epsilon 3 >"$tmp/dp2.json" 2>"$tmp/dp2.err"
rc=$?
if [[ $rc -ne 0 ]] &&
   [[ $(grep -c 'a grant allows at most 3: refused before any data was decrypted' "$tmp/dp2.err") -eq 4 ]]; then
  ok "a DP plan over the owners' budgets: refused by all 4 enclaves"
else
  bad "over budget: rc $rc, $(cat "$tmp/dp2.err")"
fi

# ---- sparse sharing sends less; padded, as much as full (the amount
# shared does not show)
for s in "random:0.1" "topk:0.1" "topk:0.1 --pad"; do
  read -r share pad <<<"$s"
  if timeout 300 "$bin" decentral "${common[@]}" --topology regular:2 \
       --share "$share" $pad --json >"$tmp/s.json" 2>"$tmp/s.err"; then
    b=$(grep -o '"bytes_sent":[0-9]*' "$tmp/s.json" | head -1 | cut -d: -f2)
    if [[ -z $pad && $b -lt $((full_bytes / 4)) ]] ||
       [[ -n $pad && $b -ge $((full_bytes * 19 / 10)) ]]; then
      ok "share $s: $b bytes in round 1 (full: $full_bytes)"
    else
      bad "share $s: $b bytes in round 1 (full: $full_bytes)"
    fi
  else
    bad "decentral --share $s failed: $(cat "$tmp/s.err")"
  fi
done

# ---- nodes by hand: node 2 is killed after round 1; a node whose
# neighbour never comes stops at start with one line naming it
d=$tmp/data
mkdir -p "$d"
fm=/usr/share/datasets/fashion-mnist
mkidx $fm/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte 600 784 3
mkidx $fm/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte 600 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte 200 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte 200 1 1
base=$(port_base)
ports="$base $((base + 1)) $((base + 2))"
i=0
for p in $ports; do echo "$i tcp:127.0.0.1:$p" >>"$tmp/peers"; i=$((i + 1)); done
cp "$tmp/peers" "$tmp/peers4"
echo "3 tcp:127.0.0.1:$((base + 3))" >>"$tmp/peers4"
expect_error "a neighbour nobody listens for, at start" \
  "node 3 at tcp:127.0.0.1:$((base + 3)) accepted no connection within 1 s" \
  timeout 60 "$bin" node --id 2 --peers "$tmp/peers4" --cfg "$cfg" \
  --data "$d" --topology ring --rounds 1 --start-timeout-ms 1000 \
  --enclave none
# (no `timeout` wrapper: SIGKILL must reach the node itself; the nodes'
# deadlines bound them, and the trap kills what is left)
for id in 0 1 2; do
  "$bin" node --id $id --peers "$tmp/peers" --cfg "$cfg" \
    --data "$d" --topology full --rounds 4 --local-steps 300 --deadline-ms 1500 \
    --threads 1 --enclave none >"$tmp/n$id.out" 2>"$tmp/n$id.err" &
  pids+=($!)
  eval "pid$id=\$!"
done
for _ in $(seq 300); do
  grep -q '"round":1' "$tmp/n2.out" 2>/dev/null && break
  sleep 0.1
done
kill -9 "$pid2" 2>/dev/null
start=$(date +%s)
wait "$pid0"; rc0=$?
wait "$pid1"; rc1=$?
took=$(($(date +%s) - start))
r0=$(grep -c '"round"' "$tmp/n0.out")
r1=$(grep -c '"round"' "$tmp/n1.out")
if [[ $rc0 -eq 0 && $rc1 -eq 0 && $r0 -eq 4 && $r1 -eq 4 && $took -lt 90 ]] &&
   grep -q 'node 2 missed the deadline' "$tmp/n0.err" &&
   grep -q 'node 2 missed the deadline' "$tmp/n1.err"; then
  ok "a node killed after round 1: the others ran 4 rounds in ${took} s, naming it"
else
  bad "faults: rc $rc0 $rc1, rounds $r0 $r1, ${took} s: $(cat "$tmp/n0.err" "$tmp/n1.err" "$tmp/n2.err" | head -c 1200)"
fi

# ---- a node running another enclave (its program differs by a byte, so
# its measurement does): its neighbours refuse its hello and send it no
# model; the others go on between themselves.
enc=$(dirname "$bin")/enclaveml-enclave
cp "$enc" "$tmp/other-enclave"
printf 'x' >>"$tmp/other-enclave"
mkdir -p "$tmp/e"
base=$(port_base)
for i in 0 1 2; do echo "$i tcp:127.0.0.1:$((base + i))" >>"$tmp/epeers"; done
"$bin" keygen --out "$tmp/e/model" --quiet
for i in 0 1 2; do
  home=$tmp/home # one platform; each measurement seals its own identity
  encv=$enc
  [[ $i -eq 2 ]] && encv=$tmp/other-enclave
  mkdir -p "$tmp/e/d$i"
  "$bin" keygen --out "$tmp/e/d$i/owner" --quiet
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    "$bin" encrypt --key "$tmp/e/d$i/owner.key" --in "$d/$f" \
      --out "$tmp/e/d$i/$f.emlc" --quiet
  done
  m=$(ENCLAVEML_HOME=$home ENCLAVEML_ENCLAVE=$encv "$bin" measure)
  ENCLAVEML_HOME=$home ENCLAVEML_ENCLAVE=$encv "$bin" attest \
    --out "$tmp/e/r$i.json" 2>/dev/null
  "$bin" grant --key "$tmp/e/d$i/owner.key" --report "$tmp/e/r$i.json" \
    --measurement "$m" --allow-sim --recipient "$tmp/e/model.pub" \
    --out "$tmp/e/d$i/g.grant" 2>/dev/null
done
for i in 0 1 2; do
  home=$tmp/home # one platform; each measurement seals its own identity
  encv=$enc
  [[ $i -eq 2 ]] && encv=$tmp/other-enclave
  ENCLAVEML_HOME=$home ENCLAVEML_ENCLAVE=$encv timeout 120 "$bin" node \
    --id $i --peers "$tmp/epeers" --cfg "$cfg" --data "$tmp/e/d$i" \
    --topology full --rounds 3 --local-steps 3 --deadline-ms 3000 \
    --threads 1 --enclave sim --grant "$tmp/e/d$i/g.grant" \
    --recipient "$tmp/e/model.pub" --out "$tmp/e/d$i/m.emlm" --examples 600 \
    >"$tmp/e$i.out" 2>"$tmp/e$i.err" &
  pids+=($!)
  eval "epid$i=\$!"
done
wait "$epid0"; r0=$?
wait "$epid1"; r1=$?
wait "$epid2"
if [[ $r0 -eq 0 && $r1 -eq 0 ]] &&
   grep -q 'node 2 runs another enclave' "$tmp/e0.err" &&
   grep -q 'node 2 runs another enclave' "$tmp/e1.err" &&
   [[ $(grep -c '"received":1' "$tmp/e0.out") -eq 3 ]] &&
   ! grep -q '"received":[1-9]' "$tmp/e2.out"; then
  ok "a node with a foreign measurement: refused by both neighbours (no channel, no model sent), the others ran 3 rounds"
else
  bad "foreign node: rc $r0 $r1: $(cat "$tmp/e0.err" "$tmp/e2.err" | head -c 900) $(cat "$tmp/e0.out" "$tmp/e2.out" | head -c 600)"
fi

# ---- a node in its enclave whose neighbours never come: the enclave
# accepts the run, and before a frame moves the host stops it with one
# line naming them
base=$(port_base)
for i in 0 1 2; do echo "$i tcp:127.0.0.1:$((base + i))" >>"$tmp/upeers"; done
expect_error "a node in its enclave, its neighbours never reached" \
  "node 1 at tcp:127.0.0.1:$((base + 1)), node 2 at tcp:127.0.0.1:$((base + 2)) accepted no connection within 1 s" \
  env ENCLAVEML_HOME="$tmp/home" timeout 60 "$bin" node --id 0 \
  --peers "$tmp/upeers" --cfg "$cfg" --data "$tmp/e/d0" --topology full \
  --rounds 3 --local-steps 3 --start-timeout-ms 1000 --threads 1 \
  --enclave sim --grant "$tmp/e/d0/g.grant" --recipient "$tmp/e/model.pub" \
  --out "$tmp/e/d0/u.emlm" --examples 600
[[ -e $tmp/e/d0/u.emlm ]] && bad "a model file was left behind"

# ---- the same three with a run policy that names both measurements
# (another build of the same code): now they all exchange
m0=$(ENCLAVEML_HOME=$tmp/home "$bin" measure)
m2=$(ENCLAVEML_HOME=$tmp/home ENCLAVEML_ENCLAVE=$tmp/other-enclave "$bin" measure)
base=$(port_base)
for i in 0 1 2; do echo "$i tcp:127.0.0.1:$((base + i))" >>"$tmp/apeers"; done
for i in 0 1 2; do
  encv=$enc
  other=$m2
  [[ $i -eq 2 ]] && encv=$tmp/other-enclave && other=$m0
  ENCLAVEML_ENCLAVE=$encv timeout 120 "$bin" node \
    --id $i --peers "$tmp/apeers" --cfg "$cfg" --data "$tmp/e/d$i" \
    --topology full --rounds 2 --local-steps 3 --deadline-ms 3000 \
    --threads 1 --enclave sim --grant "$tmp/e/d$i/g.grant" \
    --recipient "$tmp/e/model.pub" --out "$tmp/e/d$i/a.emlm" --examples 600 \
    --accept-measurement "$other" >"$tmp/a$i.out" 2>"$tmp/a$i.err" &
  pids+=($!)
  eval "apid$i=\$!"
done
wait "$apid0"; a0=$?
wait "$apid1"; a1=$?
wait "$apid2"; a2=$?
if [[ $a0 -eq 0 && $a1 -eq 0 && $a2 -eq 0 ]] &&
   [[ $(grep -c '"received":2' "$tmp/a2.out") -eq 2 &&
      $(grep -c '"received":2' "$tmp/a0.out") -eq 2 ]]; then
  ok "with a run policy naming the other measurement, all three exchange every round"
else
  bad "policy: rc $a0 $a1 $a2: $(cat "$tmp/a0.err" "$tmp/a2.err" "$tmp/a2.out" | head -c 800)"
fi

# ---- a node in an enclave SIGKILLed and started again with --resume: it
# comes back from its sealed checkpoint, sends a new hello, and the three
# finish together (the others kept their deadlines meanwhile)
m=$("$bin" measure)
"$bin" grant --key "$tmp/e/d2/owner.key" --report "$tmp/e/r0.json" \
  --measurement "$m" --allow-sim --recipient "$tmp/e/model.pub" \
  --out "$tmp/e/d2/same.grant" 2>/dev/null
base=$(port_base)
for i in 0 1 2; do echo "$i tcp:127.0.0.1:$((base + i))" >>"$tmp/rpeers"; done
rnode() { # id grant extra...
  local id=$1 g=$2
  shift 2
  "$bin" node --id "$id" --peers "$tmp/rpeers" --cfg "$cfg" \
    --data "$tmp/e/d$id" --topology full --rounds 6 --local-steps 3 \
    --deadline-ms 3000 --threads 1 --enclave sim --grant "$g" \
    --recipient "$tmp/e/model.pub" --out "$tmp/e/d$id/r.emlm" \
    --examples 600 --checkpoint "$tmp/e/d$id/state.ck" "$@" \
    >>"$tmp/r$id.out" 2>>"$tmp/r$id.err" &
  pids+=($!)
  last=$!
}
rnode 0 "$tmp/e/d0/g.grant"; rpid0=$last
rnode 1 "$tmp/e/d1/g.grant"; rpid1=$last
rnode 2 "$tmp/e/d2/same.grant"; rpid2=$last
for _ in $(seq 600); do
  grep -q '"round":2' "$tmp/r2.out" 2>/dev/null && break
  sleep 0.05
done
kill -9 "$rpid2"
before=$(grep -c '"round"' "$tmp/r2.out")
sleep 0.5
rnode 2 "$tmp/e/d2/same.grant" --resume; rpid2=$last
wait "$rpid0"; q0=$?
wait "$rpid1"; q1=$?
wait "$rpid2"; q2=$?
last2=$(tail -1 "$tmp/r2.out")
if [[ $q0 -eq 0 && $q1 -eq 0 && $q2 -eq 0 ]] &&
   [[ $(grep -c '"round"' "$tmp/r0.out") -eq 6 ]] &&
   [[ $last2 == *'"round":6'* && $last2 == *'"received":2'* ]] &&
   [[ $(tail -1 "$tmp/r0.out") == *'"received":2'* ]]; then
  ok "a node in its enclave SIGKILLed after round $before and resumed from its sealed checkpoint: rejoined, all three finished round 6 together"
else
  bad "resume: rc $q0 $q1 $q2, $last2: $(cat "$tmp/r2.err" "$tmp/r0.err" "$tmp/r1.err" | head -c 1500) node 0: $(cut -c1-90 "$tmp/r0.out") node 2: $(cut -c1-90 "$tmp/r2.out")"
fi

# ---- the canary: an onlooker records the frames sent to node 0, first in
# the clear (the baseline), then with every node in its enclave.  The two
# runs compute the same parameters; none of the baseline's 16-byte
# windows of them may appear on the wire of the enclave run (and the same
# search finds them in a second baseline run, the control).
if [[ -x $relay ]]; then
  base=$(port_base)
  for i in 0 1 2; do echo "$i tcp:127.0.0.1:$((base + i))" >>"$tmp/c0peers"; done
  sed "s/^0 .*/0 tcp:127.0.0.1:$((base + 3))/" "$tmp/c0peers" >"$tmp/cpeers"
  rid=$(printf '%064d' 7)
  crun() { # dump mode...
    local dump=$1
    shift
    "$relay" relay "tcp:127.0.0.1:$((base + 3))" "tcp:127.0.0.1:$base" \
      "$dump" 120 &
    local rp=$!
    pids+=($rp)
    local cp=()
    for i in 0 1 2; do
      local peers=$tmp/cpeers
      [[ $i -eq 0 ]] && peers=$tmp/c0peers
      local extra=(--enclave none --data "$d")
      [[ $1 == sim ]] && extra=(--enclave sim --data "$tmp/e/d$i" \
        --grant "$tmp/e/d$i/${2:-g}.grant" --recipient "$tmp/e/model.pub" \
        --out "$tmp/e/d$i/c.emlm" --run-id "$rid")
      [[ $1 == sim && $i -eq 2 ]] && extra[5]=$tmp/e/d2/same.grant
      "$bin" node --id $i --peers "$peers" --cfg "$cfg" --topology full \
        --rounds 3 --local-steps 3 --deadline-ms 3000 --threads 1 \
        --examples 600 "${extra[@]}" >"$tmp/c$i.out" 2>"$tmp/c$i.err" &
      cp+=($!)
      pids+=($!)
    done
    for p in "${cp[@]}"; do wait "$p"; done
    kill "$rp" 2>/dev/null
    wait "$rp" 2>/dev/null
  }
  crun "$tmp/plain1.dump" none
  crun "$tmp/plain2.dump" none
  crun "$tmp/sealed.dump" sim g
  control=$("$relay" compare "$tmp/plain1.dump" "$tmp/plain2.dump")
  canary=$("$relay" compare "$tmp/plain1.dump" "$tmp/sealed.dump")
  if [[ $control =~ ^([0-9]+)\ windows\ of\ ([0-9]+) ]] &&
     [[ ${BASH_REMATCH[1]} -gt 1000 && ${BASH_REMATCH[1]} -eq ${BASH_REMATCH[2]} ]] &&
     [[ $canary == "0 windows of "* ]] && [[ -s $tmp/sealed.dump ]] &&
     [[ $(grep -c '"received":2' "$tmp/c0.out") -eq 3 ]]; then
    ok "canary: none of the baseline's parameter windows on the enclave run's wire ($canary; control: $control)"
  else
    bad "canary: '$canary', control '$control', $(cat "$tmp/c0.err" "$tmp/c1.err" | head -c 600)"
  fi
fi

# ---- bad input
expect_error "a node id not in the peers file" "not one of the 3 nodes" \
  "$bin" node --id 7 --peers "$tmp/peers" --cfg "$cfg" --data "$d" \
  --topology ring --rounds 1
printf '0 tcp:127.0.0.1:1\n2 tcp:127.0.0.1:2\n' >"$tmp/gappy"
expect_error "a peers file with a gap" "0..N-1" \
  "$bin" node --id 0 --peers "$tmp/gappy" --cfg "$cfg" --data "$d" \
  --topology ring --rounds 1
printf '0 1\n2 3\n' >"$tmp/split.txt"
expect_error "a disconnected graph" "not connected" \
  "$bin" decentral --cfg "$cfg" --nodes 4 --topology "$tmp/split.txt" \
  --partition iid --rounds 1
expect_error "regular:3 on 5 nodes" "nodes * D even" \
  "$bin" decentral --cfg "$cfg" --nodes 5 --topology regular:3 \
  --partition iid --rounds 1
expect_error "an unknown partition" "is not one of: iid" \
  "$bin" decentral --cfg "$cfg" --nodes 4 --topology ring --partition zipf \
  --rounds 1
expect_error "an unknown enclave backend" "is not one of: sim, none" \
  "$bin" decentral --cfg "$cfg" --nodes 4 --topology ring --partition iid \
  --rounds 1 --enclave sgx
expect_error "a node in an enclave without a grant" "needs --grant" \
  "$bin" node --id 0 --peers "$tmp/peers" --cfg "$cfg" --data "$d" \
  --topology ring --rounds 1 --enclave sim
[[ -z $(ls "$tmp" | grep eml-decentral) ]] && ok "no scratch directory left behind" ||
  bad "scratch left: $(ls "$tmp")"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
