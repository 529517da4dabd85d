#!/usr/bin/env bash
# test_enclave.sh BIN SRCDIR - end-to-end checks of confidential training
# through the sandboxed `sim` enclave: what must never leave it (a canary
# record planted in an owner's data, the trained weights), and every kind of
# tampering with data, grants and reports, each refused with one
# "enclaveml: error:" line, a non-zero exit and no output file left behind.
#
# Small data (300/100 and 200/50 images), one epoch, one thread: well under
# a minute.  Binary searches are done on hex dumps (od), so nothing beyond
# coreutils, grep and gzip is needed.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
fm=/usr/share/datasets/fashion-mnist
cfg=$src/cfg/fmnist-tanh.cfg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ENCLAVEML_HOME=$tmp/home
unset ENCLAVEML_TRACE
export LC_ALL=C
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"


# ---- data: owner A (300 train with a canary record, 100 test), owner B
# (200 train, 50 test, other images).  The owners' plaintext lives in
# $plain; everything the untrusted side ever touches lives in $w.

plain=$tmp/plain
w=$tmp/w
o=$tmp/o
mkdir -p "$plain/a" "$plain/b" "$w" "$o"
head -c 784 /dev/urandom >"$plain/canary.img"
mkidx $fm/train-images-idx3-ubyte.gz "$plain/a/train-images-idx3-ubyte" 299 784 3 0
mkidx $fm/train-labels-idx1-ubyte.gz "$plain/a/train-labels-idx1-ubyte" 299 1 1 0
# The canary: the 300th record, random pixels and label 7.
cat "$plain/canary.img" >>"$plain/a/train-images-idx3-ubyte"
printf '\x07' >>"$plain/a/train-labels-idx1-ubyte"
printf '\x00\x00\x01\x2c' | dd of="$plain/a/train-images-idx3-ubyte" bs=1 seek=4 conv=notrunc status=none
printf '\x00\x00\x01\x2c' | dd of="$plain/a/train-labels-idx1-ubyte" bs=1 seek=4 conv=notrunc status=none
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/a/t10k-images-idx3-ubyte" 100 784 3 0
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/a/t10k-labels-idx1-ubyte" 100 1 1 0
mkidx $fm/train-images-idx3-ubyte.gz "$plain/b/train-images-idx3-ubyte" 200 784 3 1000
mkidx $fm/train-labels-idx1-ubyte.gz "$plain/b/train-labels-idx1-ubyte" 200 1 1 1000
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/b/t10k-images-idx3-ubyte" 50 784 3 500
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/b/t10k-labels-idx1-ubyte" 50 1 1 500
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
if [[ $(wc -c <"$plain/a/train-images-idx3-ubyte") -eq $((16 + 300 * 784)) &&
      $(wc -c <"$plain/b/t10k-labels-idx1-ubyte") -eq $((8 + 50)) ]]; then
  ok "tiny owner datasets built (A: 300+100 with a canary, B: 200+50)"
else
  bad "could not build the datasets from $fm"
fi

cd "$w" || exit 1
"$bin" keygen --out alice --quiet 2>/dev/null
"$bin" keygen --out bob --quiet 2>/dev/null
"$bin" keygen --out model --quiet 2>/dev/null
mkdir -p a b
for f in $files; do
  # 4 KiB chunks: the training images are 58 chunks, the tests cut them.
  "$bin" encrypt --key alice.key --in "$plain/a/$f" --out "a/$f.emlc" \
    --chunk-size 4096 --quiet
  "$bin" encrypt --key bob.key --in "$plain/b/$f" --out "b/$f.emlc" \
    --chunk-size 4096 --quiet
done

M=$("$bin" measure)
M512=$("$bin" measure --heap-mb 512)
if [[ ${#M} -eq 64 && ${#M512} -eq 64 && $M != "$M512" ]]; then
  ok "measure: $M (another heap budget, another measurement)"
else
  bad "measure: '$M' '$M512'"
fi
if "$bin" attest --nonce 0011 --out r.json 2>attest.err &&
   "$bin" verify r.json --measurement "$M" --nonce 0011 --allow-sim >verify.out &&
   grep -q '"sim":true' r.json; then
  ok "attest + verify (simulated platform)"
else
  bad "attest/verify: $(cat attest.err verify.out)"
fi
# grant ARGS...: a grant for the default enclave naming the model owner.
grant() { "$bin" grant --report r.json --measurement "$M" --allow-sim \
  --recipient model.pub "$@" 2>/dev/null; }
grant --key alice.key --out a.grant
grant --key bob.key --out b.grant
if [[ $(wc -c <a.grant) -eq 264 && $(wc -c <b.grant) -eq 264 ]]; then
  ok "grants for owners A and B"
else
  bad "grant files missing or of the wrong size"
fi

train() { # train ARGS... (common options of every confidential run)
  "$bin" train --cfg "$cfg" --recipient "$w/model.pub" --epochs 1 --batch 32 \
    --threads 1 --seed 5 "$@"
}

# ==== the canary and the weights never leave the enclave in clear ====
if ENCLAVEML_TRACE=trace.bin train --data a --grant a.grant --out model.emlm \
     --report-out t.json --json >train.out 2>train.err &&
   [[ -s model.emlm && -s t.json && -s trace.bin ]]; then
  ok "confidential training, one owner ($(wc -c <trace.bin) bytes of trace)"
else
  bad "confidential training: $(cat train.err)"
fi
if "$bin" verify t.json --report r.json --measurement "$M" --allow-sim \
     >tv.out 2>tv.err && grep -q 'training report verified' tv.out &&
   grep -q '"train_images":300' t.json && grep -q '"owners":1' t.json &&
   grep -q "\"measurement\":\"$M\"" t.json &&
   grep -q '"train_images":300' train.out; then
  ok "training report verifies against the attestation"
else
  bad "training report: $(cat tv.out tv.err t.json)"
fi
# The report names the cfg that was trained, by its SHA-256.
cfg_sha=$(sha256sum "$cfg" | cut -c1-64)
if grep -q "\"cfg_sha256\":\"$cfg_sha\"" t.json; then
  ok "the signed report's cfg_sha256 is the cfg's SHA-256"
else
  bad "cfg_sha256 in the report is not sha256($cfg) = $cfg_sha: $(grep -o '"cfg_sha256":"[0-9a-f]*"' t.json)"
fi
# The trace must hold FILE_OPEN ocalls (type 8: "EMLM" 01 00 08 00) for
# the later check that a refused grant opens no file to mean anything.
if hexof trace.bin | grep -q '454d4c4d01000800'; then
  ok "trace holds the FILE_OPEN ocalls"
else
  bad "no FILE_OPEN frame in the trace"
fi
windows "$plain/canary.img" 0 784 32 1 >"$tmp/canary.pat"
# The canary's label in context: the last 32 labels of A's training set.
windows "$plain/a/train-labels-idx1-ubyte" $((8 + 268)) 32 32 1 >>"$tmp/canary.pat"
# Control: the search finds the canary where it is.
if [[ -n $(leaks "$tmp/canary.pat" "$plain/a") ]]; then
  ok "canary search finds the canary in A's plaintext ($(wc -l <"$tmp/canary.pat") windows)"
else
  bad "canary search does not find the canary in A's own plaintext"
fi
# Control: the same search sees the ciphertext the host moved in the trace.
windows "$w/a/train-images-idx3-ubyte.emlc" $((84 + 5 * 4112)) 32 32 1 >"$tmp/ct.pat"
if [[ $(leaks "$tmp/ct.pat" "$w") == "$w/a/train-images-idx3-ubyte.emlc"$'\n'"$w/trace.bin" ]]; then
  ok "the search sees the ciphertext the host carried in the trace"
else
  bad "ciphertext control: $(leaks "$tmp/ct.pat" "$w")"
fi
found=$(leaks "$tmp/canary.pat" "$w"; leaks "$tmp/canary.pat" "$ENCLAVEML_HOME")
if [[ -z $found ]]; then
  ok "no 32-byte window of the canary record (or its labels) in the trace, stdout, stderr or any file of the work directory or ENCLAVEML_HOME"
else
  bad "canary bytes found in: $found"
fi
if "$bin" decrypt --key model.key --in model.emlm --out model.safetensors \
     --quiet && [[ -s model.safetensors ]]; then
  ok "the model owner decrypts the model"
else
  bad "decrypt model.emlm"
fi
# Data section of the safetensors: after the u64 header length and header.
hl=$(od -An -tu8 -N8 model.safetensors | tr -d ' ')
size=$(wc -c <model.safetensors)
dlen=$((size - 8 - hl))
: >"$tmp/model.pat"
for frac in 0 1 2 3; do
  windows model.safetensors $((8 + hl + frac * dlen / 4)) 64 64 64 >>"$tmp/model.pat"
done
windows model.safetensors $((size - 64)) 64 64 64 >>"$tmp/model.pat"
if [[ $dlen -gt 1000 && $(wc -l <"$tmp/model.pat") -eq 5 &&
      -n $(leaks "$tmp/model.pat" "$w") ]]; then
  found=$(leaks "$tmp/model.pat" "$w" "$w/model.safetensors"
          leaks "$tmp/model.pat" "$ENCLAVEML_HOME")
  if [[ -z $found ]]; then
    ok "no 64-byte window of the weights anywhere but the decrypted model ($dlen bytes of data)"
  else
    bad "plaintext weights found in: $found"
  fi
else
  bad "could not cut windows out of model.safetensors (header $hl, data $dlen)"
fi

# ==== two owners ====
if train --data a --grant a.grant --data b --grant b.grant --out m2.emlm \
     --report-out t2.json --quiet >/dev/null 2>t2.err &&
   "$bin" verify t2.json --report r.json --measurement "$M" --allow-sim \
     >/dev/null 2>>t2.err &&
   grep -q '"owners":2' t2.json && grep -q '"train_images":500' t2.json &&
   grep -q '"test_images":150' t2.json; then
  ok "two owners: train_images 300+200=500, test_images 100+50=150 in the signed report"
else
  bad "two owners: $(cat t2.err t2.json 2>/dev/null)"
fi

# ==== tampering with the data ====
H=84          # header bytes of a data container
C=$((4096 + 16)) # ciphertext bytes of a full chunk
tamper_dir() { # a fresh copy of A's encrypted dir in $w/x
  rm -rf "$w/x"
  cp -r "$w/a" "$w/x"
}
img=$w/x/train-images-idx3-ubyte.emlc
flip() { # flip FILE OFFSET: xor one bit
  local v
  v=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\$(printf '%03o' $((v ^ 4)))" |
    dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
chunk() { tail -c +$((H + $2 * C + 1)) "$1" | head -c $C; } # chunk FILE I
# expect_run_error NAME NEEDLE RUNNER ARGS...: the run (RUNNER: train or
# dpt) fails cleanly and leaves no model, report or temporary file behind.
expect_run_error() {
  local name=$1 needle=$2 runner=$3
  shift 3
  rm -rf "$o"
  mkdir -p "$o"
  expect_error "$name" "$needle" "$runner" "$@" --out "$o/m.emlm" \
    --report-out "$o/t.json" --quiet
  if [[ -n $(ls -A "$o") ]]; then
    bad "$name: left behind: $(ls -A "$o")"
  fi
}
expect_train_error() { expect_run_error "$1" "$2" train "${@:3}"; }
tamper_dir
flip "$img" 40
expect_train_error "flipped bit in a data file's header" "train-images" \
  --data x --grant a.grant
tamper_dir
flip "$img" $((H + 10 * C + 100))
expect_train_error "flipped bit in a middle chunk" "train-images" \
  --data x --grant a.grant
tamper_dir
flip "$img" $((H + C - 3))
expect_train_error "flipped bit in a chunk's tag" "train-images" \
  --data x --grant a.grant
tamper_dir
head -c $((H + 20 * C)) "$w/a/train-images-idx3-ubyte.emlc" >"$img"
expect_train_error "data file truncated at a chunk boundary" "train-images" \
  --data x --grant a.grant
tamper_dir
head -c $((H + 20 * C + 1000)) "$w/a/train-images-idx3-ubyte.emlc" >"$img"
expect_train_error "data file truncated mid-chunk" "train-images" \
  --data x --grant a.grant
tamper_dir
s=$w/a/train-images-idx3-ubyte.emlc
{ head -c $((H + 2 * C)) "$s"; chunk "$s" 3; chunk "$s" 2
  tail -c +$((H + 4 * C + 1)) "$s"; } >"$img"
expect_train_error "two chunks reordered" "train-images" --data x --grant a.grant
tamper_dir
{ head -c $((H + 3 * C)) "$s"; chunk "$s" 2; tail -c +$((H + 4 * C + 1)) "$s"; } >"$img"
expect_train_error "a chunk duplicated over the next" "train-images" \
  --data x --grant a.grant
tamper_dir
{ head -c $((H + 5 * C)) "$s"; tail -c +$((H + 6 * C + 1)) "$s"; } >"$img"
expect_train_error "a chunk dropped" "train-images" --data x --grant a.grant
tamper_dir
cp "$w/a/t10k-images-idx3-ubyte.emlc" "$img"
expect_train_error "owner's own test images in place of its train images" \
  "owner 1 train-images: the file is encrypted as test-images" --data x --grant a.grant
if [[ $(wc -c <"$s") -eq $((H + 57 * C + 1744 + 16)) ]]; then
  ok "the tampered file has the expected layout (header + 57 full chunks + 1)"
else
  bad "unexpected container size $(wc -c <"$s")"
fi
tamper_dir
cp "$w/b/train-labels-idx1-ubyte.emlc" "$w/x/train-labels-idx1-ubyte.emlc"
expect_train_error "owner B's train-labels swapped into A's directory" \
  "train-labels" --data x --grant a.grant
# The attack of issue 9: the owner's training files served as its test
# files, to raise the signed test accuracy.  Refused before decryption.
tamper_dir
cp "$w/a/train-images-idx3-ubyte.emlc" "$w/x/t10k-images-idx3-ubyte.emlc"
cp "$w/a/train-labels-idx1-ubyte.emlc" "$w/x/t10k-labels-idx1-ubyte.emlc"
expect_train_error "owner's train files served as its test files" \
  "owner 1 test-images: the file is encrypted as train-images (a file served in the wrong role)" \
  --data x --grant a.grant
# The four files of one owner must name one data set.
tamper_dir
"$bin" encrypt --key alice.key --in "$plain/a/t10k-labels-idx1-ubyte" \
  --out x/t10k-labels-idx1-ubyte.emlc --dataset alice-other --quiet
expect_train_error "one owner's files from two data sets (--dataset)" \
  "owner 1 test-labels: the file belongs to another data set" --data x --grant a.grant
# Another file of the owner in a data slot, with the right role so that it
# passes the role check: the enclave's error names the problem and echoes
# none of the file's bytes.
tamper_dir
printf 'Hi there CANARY-5e1f0c9a is secret text, not IDX at all\n' >"$plain/canary.txt"
"$bin" encrypt --key alice.key --in "$plain/canary.txt" \
  --out x/train-labels-idx1-ubyte.emlc --role train-labels --quiet
expect_train_error "a non-IDX file in a data slot" "not an IDX file (bad magic)" \
  --data x --grant a.grant
chex=$(head -c 8 "$plain/canary.txt" | od -An -tx1 | tr -s ' ' | sed 's/^ //;s/ $//')
chex2=$(printf '%s' "$chex" | tr -d ' ')
if grep -qiF -e "CANARY" -e "Hi there" -e "5e1f0c9a" -e "${chex:0:5}" -e "${chex2:0:4}" "$tmp/err"; then
  bad "the enclave's error echoes the file: $(cat "$tmp/err")"
else
  ok "the enclave's error holds neither the canary nor its hex ($chex)"
fi
rm -rf "$w/x"

# ==== tampering with grants ====
expect_train_error "a grant replayed for a second directory" "replays" \
  --data a --grant a.grant --data b --grant a.grant
# A foreign enclave identity: attest in another home (another platform and
# another sealed identity), grant against that report there.
other=$tmp/home2
ENCLAVEML_HOME=$other "$bin" attest --nonce 0011 --out r2.json 2>/dev/null
ENCLAVEML_HOME=$other "$bin" grant --key alice.key --report r2.json \
  --measurement "$M" --allow-sim --recipient model.pub --out foreign.grant \
  2>/dev/null
if [[ -s foreign.grant ]]; then
  ok "grant made against the other home's enclave"
else
  bad "could not make the foreign grant"
fi
expect_train_error "a grant for another enclave's key" "another enclave key" \
  --data a --grant foreign.grant
rm -f wrong.grant
expect_error "grant: the report's measurement is not the one asked for" \
  "not the expected one" "$bin" grant --key alice.key --report r.json \
  --measurement "$M512" --allow-sim --recipient model.pub --out wrong.grant
if [[ ! -e wrong.grant ]]; then ok "grant refused: no grant file"; else bad "wrong.grant written"; fi
"$bin" attest --nonce 0011 --heap-mb 512 --out r512.json 2>/dev/null
"$bin" grant --key alice.key --report r512.json --measurement "$M512" \
  --allow-sim --recipient model.pub --out g512.grant 2>/dev/null
expect_train_error "a grant for the 512 MiB enclave used with the default one" \
  "another enclave measurement" --data a --grant g512.grant
# A forged grant: one bit of the wrapped key.
cp a.grant forged.grant
flip forged.grant 220
expect_train_error "a grant with a flipped bit" "grant 1" --data a --grant forged.grant
# A privacy budget refuses non-DP training before any data file is opened.
grant --key alice.key --max-epsilon 3 --out eps.grant
rm -f eps.trace
ENCLAVEML_TRACE=eps.trace expect_train_error \
  "a grant with --max-epsilon refuses non-private training" "epsilon" \
  --data a --grant eps.grant
if [[ -s eps.trace ]] && ! hexof eps.trace | grep -q '454d4c4d01000800'; then
  ok "refused before any data: no FILE_OPEN in the trace"
else
  bad "the epsilon-bound run opened data files (or left no trace)"
fi
rm -f eps.trace
expect_train_error "a budget refuses a host-seeded DP run" "insecure-seed" \
  --data a --grant eps.grant --dp --clip 1 --noise 1 --seed 3 --insecure-seed
# The shipped DP network (fixed scattering features, computed once per image
# inside the sandbox, and a linear layer) within the owner's budget.
if "$bin" train --cfg "$src/cfg/fmnist-dp.cfg" --recipient "$w/model.pub" \
     --batch 64 --epochs 3 --threads 2 --data a --grant eps.grant --dp \
     --clip 0.1 --target-epsilon 3 --out dp.emlm --report-out dp.json \
     --quiet 2>dp.err &&
   grep -q '"dp":true' dp.json && grep -q '"parameters":39700' dp.json &&
   "$bin" verify dp.json --report r.json --measurement "$M" --allow-sim \
     >/dev/null 2>>dp.err; then
  ok "cfg/fmnist-dp.cfg (scattering + linear) trains privately in the enclave ($(grep -o '"test_accuracy":[0-9.]*' dp.json))"
else
  bad "fmnist-dp.cfg in the enclave: $(cat dp.err)"
fi

# ==== what a grant binds: recipients, network, budget across runs ====
"$bin" keygen --out eve --quiet 2>/dev/null
"$bin" keygen --out model2 --quiet 2>/dev/null
expect_error "grant: no --recipient is refused" "--recipient" "$bin" grant \
  --key alice.key --report r.json --measurement "$M" --allow-sim \
  --out norcpt.grant
if [[ ! -e norcpt.grant ]]; then ok "no grant without a recipient"; else bad "norcpt.grant written"; fi
rm -f rcpt.trace
ENCLAVEML_TRACE=rcpt.trace expect_error \
  "the host names its own key as the recipient" "does not name this run's recipient" \
  "$bin" train --cfg "$cfg" --recipient "$w/eve.pub" --epochs 1 --batch 32 \
  --threads 1 --data a --grant a.grant --out "$o/eve.emlm" --quiet
if [[ -s rcpt.trace ]] && ! hexof rcpt.trace | grep -q '454d4c4d01000800' &&
   [[ ! -e "$o/eve.emlm" ]]; then
  ok "refused before any data: no FILE_OPEN, no model"
else
  bad "a run for a recipient no grant names opened data or left a model"
fi
grant --key alice.key --recipient model2.pub --out two.grant
if [[ $(wc -c <two.grant) -eq 296 ]] &&
   "$bin" train --cfg "$cfg" --recipient "$w/model2.pub" --epochs 1 \
     --batch 32 --threads 1 --data a --grant two.grant --out two.emlm \
     --quiet 2>two.err &&
   "$bin" decrypt --key model2.key --in two.emlm --out two.safetensors --quiet; then
  ok "a grant naming two recipients: the second one gets a model it can decrypt"
else
  bad "two recipients: $(cat two.err)"
fi
other_sha=$(sha256sum "$src/cfg/fmnist-mlp.cfg" | cut -c1-64)
grant --key alice.key --cfg-digest "$other_sha" --out pin-other.grant
grant --key alice.key --cfg-digest "$cfg_sha" --out pin.grant
expect_train_error "a grant pinned to another network" "another network" \
  --data a --grant pin-other.grant
if train --data a --grant pin.grant --out pin.emlm --quiet 2>pin.err; then
  ok "a grant pinned to this cfg's SHA-256 trains it"
else
  bad "pinned grant: $(cat pin.err)"
fi
# dpt ARGS...: a DP run (no --seed: the enclave's CSPRNG draws the noise).
dpt() { "$bin" train --cfg "$cfg" --recipient "$w/model.pub" --batch 32 \
  --threads 1 --dp --clip 1 "$@"; }
expect_dp_error() { expect_run_error "$1" "$2" dpt "${@:3}"; }
expect_dp_error "--dp-fixed-batches under a budget is refused" \
  "dp-fixed-batches" --data a --grant eps.grant --noise 1 --dp-fixed-batches
# The budget of a grant bounds every run that uses it: 2.5 in all, each run
# plans 1.  Run 1 has a mirror and is killed once it committed a state;
# its resume is the same run (not charged again); run 2 spends the second
# unit; run 3 would pass 2.5 and is refused.
grant --key alice.key --max-epsilon 2.5 --out b25.grant
dptrain() { dpt --data a --grant b25.grant --epochs 3 --target-epsilon 1 "$@"; }
bpool=$(mktemp -u /dev/shm/enclaveml-budget.XXXXXX)
trap 'rm -rf "$tmp" "$bpool"' EXIT
# The mirrored run: 30 epochs of about 10 steps, a save after each, so
# that the kill lands well before its end; it comes as soon as the pool's
# commit word shows a committed state.
bkrun=("$bin" train --cfg "$cfg" --recipient "$w/model.pub" --batch 32
  --threads 1 --data a --grant b25.grant --epochs 30 --dp --clip 1
  --target-epsilon 1 --mirror "$bpool" --out bk.emlm)
(exec "${bkrun[@]}") 2>bk.err >/dev/null &
pid=$!
for _ in $(seq 3000); do
  [[ -s $bpool && $(od -An -tu8 -j64 -N8 "$bpool" 2>/dev/null | tr -d ' ') -gt 0 ]] && break
  sleep 0.01
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
if [[ -e bk.emlm.partial && ! -e bk.emlm ]]; then
  ok "the killed run left its partial model (bk.emlm.partial), no model"
else
  bad "after the kill: $(ls bk.emlm* 2>&1)"
fi
if "${bkrun[@]}" --resume --report-out bk.json \
     2>bk2.err && grep -q '"budget_charged":false' bk.json &&
   grep -q '^resume: continuing from step' bk2.err &&
   [[ -s bk.emlm && ! -e bk.emlm.partial ]] &&
   [[ -z $(ls | grep -E '\.tmp\.|\.partial$') ]]; then
  ok "the killed run resumes under its budget, is not charged twice, and leaves no stray file ($(grep -o '"epsilon":[0-9.]*' bk.json))"
else
  bad "resume under a budget: $(tail -2 bk2.err) $(ls | grep -E '\.tmp\.|\.partial$')"
fi
if dptrain --out b2.emlm --report-out b2.json --quiet 2>b2.err &&
   grep -q '"budget_charged":true' b2.json; then
  ok "a second run with the same grant spends the second unit"
else
  bad "second budgeted run: $(cat b2.err)"
fi
ledger=$(ls "$ENCLAVEML_HOME"/ledger-*.bin 2>/dev/null | head -1)
cp "$ledger" "$tmp/ledger.old"
expect_dp_error "a third run would pass the grant's total budget" \
  "2.5 in all" --data a --grant b25.grant --epochs 3 --target-epsilon 1
grant --key alice.key --max-epsilon 10 --out b10.grant
if dpt --data a --grant b10.grant --epochs 1 --target-epsilon 1 \
     --out b10.emlm --quiet 2>b10.err; then
  ok "another grant's budget is its own"
else
  bad "b10: $(cat b10.err)"
fi
cp "$tmp/ledger.old" "$ledger"
expect_dp_error "an old copy of the spend ledger (a rollback) is refused" \
  "rollback" --data a --grant b10.grant --epochs 1 --target-epsilon 1
rm -f "$ledger"
expect_dp_error "a withheld spend ledger is refused" "withheld" \
  --data a --grant b10.grant --epochs 1 --target-epsilon 1
rm -f "$bpool"

# ==== the report binds the model, the grants and the owner's nonce ====
if train --data a --grant a.grant --out nm.emlm --report-out nm.json \
     --report-nonce c0ffee --quiet 2>nm.err &&
   "$bin" verify nm.json --report r.json --measurement "$M" --allow-sim \
     --model nm.emlm --report-nonce c0ffee --recipient model.pub \
     >nm.out 2>>nm.err && grep -q 'describes the model file' nm.out &&
   grep -q "\"grants\":\"$(od -An -v -tx1 -j100 -N16 a.grant | tr -d ' \n')\"" nm.json; then
  ok "verify --model --report-nonce --recipient: the report describes this model, names its grant"
else
  bad "report binding: $(cat nm.err nm.out)"
fi
expect_error "verify: another run's model with this report" "does not describe this model" \
  "$bin" verify nm.json --report r.json --measurement "$M" --allow-sim \
  --model model.emlm
expect_error "verify: another report nonce" "report_nonce" \
  "$bin" verify nm.json --report r.json --measurement "$M" --allow-sim \
  --report-nonce c0ffef
expect_error "verify: another recipient" "another recipient" \
  "$bin" verify nm.json --report r.json --measurement "$M" --allow-sim \
  --recipient eve.pub
# A version-1 grant (the format before recipients) is refused by name.
cp a.grant v1.grant
printf '\x01' | dd of=v1.grant bs=1 seek=8 conv=notrunc status=none
expect_train_error "a version-1 grant" "version 1 is no longer supported" \
  --data a --grant v1.grant

# ==== tampering with reports ====
expect_error "verify: wrong nonce" "nonce" "$bin" verify r.json \
  --measurement "$M" --nonce 0022 --allow-sim
expect_error "verify: a sim report without --allow-sim" "allow-sim" \
  "$bin" verify r.json --measurement "$M" --nonce 0011
expect_error "verify: a report from another platform" "platform" \
  "$bin" verify r2.json --measurement "$M" --allow-sim
# flip_member FILE KEY: change the first hex digit of a string member.
flip_member() {
  sed "s/\"$2\":\"0/\"$2\":\"1/;t;s/\"$2\":\"./\"$2\":\"0/" "$1"
}
flip_member r.json signature >rs.json
sed 's/heap_mb=2048"/heap_mb=2049"/' r.json >rb.json
if [[ -s rs.json && -s rb.json ]] && ! cmp -s r.json rs.json &&
   ! cmp -s r.json rb.json; then
  ok "forged reports made (signature digit, body byte)"
else
  bad "could not alter r.json"
fi
expect_error "verify: attestation with a forged signature" "signature" \
  "$bin" verify rs.json --measurement "$M" --allow-sim
expect_error "verify: attestation with an altered body" "signature" \
  "$bin" verify rb.json --measurement "$M" --allow-sim
flip_member t.json signature >ts.json
sed 's/"train_images":300/"train_images":301/' t.json >tb.json
if [[ -s ts.json && -s tb.json ]] && ! cmp -s t.json ts.json &&
   ! cmp -s t.json tb.json; then
  ok "forged training reports made"
else
  bad "could not alter t.json"
fi
expect_error "verify: training report with a forged signature" "signature" \
  "$bin" verify ts.json --report r.json --measurement "$M" --allow-sim
expect_error "verify: training report with an altered body" "signature" \
  "$bin" verify tb.json --report r.json --measurement "$M" --allow-sim
expect_error "verify: training report against another enclave's attestation" \
  "signature" "$bin" verify t.json --report r512.json --measurement "$M512" \
  --allow-sim
expect_error "grant: a forged attestation" "signature" "$bin" grant \
  --key alice.key --report rb.json --measurement "$M" --allow-sim \
  --recipient model.pub --out never.grant
if [[ ! -e never.grant ]]; then ok "no grant from a forged report"; else bad "never.grant written"; fi

# ==== tampering with the model ====
cp model.emlm mt.emlm
flip mt.emlm $(( $(wc -c <mt.emlm) / 2 ))
rm -f mt.safetensors
expect_error "decrypt: a tampered model" "mt.emlm" "$bin" decrypt \
  --key model.key --in mt.emlm --out mt.safetensors
if [[ -z $(ls -A | grep '^mt\.safetensors') ]]; then
  ok "no plaintext left from the tampered model"
else
  bad "plaintext left: $(ls -A | grep '^mt\.safetensors')"
fi
expect_error "decrypt: the model with the wrong key" "model.emlm" "$bin" \
  decrypt --key alice.key --in model.emlm --out wk.safetensors
if [[ -z $(ls -A | grep '^wk\.safetensors') ]]; then
  ok "no output from the wrong key"
else
  bad "output left by the wrong key"
fi

# ==== backends and plaintext ====
expect_error "plaintext training with --enclave sim is refused" "grant" \
  "$bin" train --cfg "$cfg" --data "$plain/a" --enclave sim --epochs 1 \
  --batch 32 --threads 1 --quiet
if "$bin" train --cfg "$cfg" --data "$plain/a" --enclave none --epochs 1 \
     --batch 32 --threads 1 --out plain.safetensors --json \
     >plain.out 2>plain.err && grep -q '"test_accuracy":' plain.out &&
   [[ -s plain.safetensors ]]; then
  ok "plaintext training with --enclave none"
else
  bad "plain training: $(cat plain.err)"
fi
# Backend none is another enclave: its own measurement (the host process's
# code, policy backend=none) and its own platform key, so its reports never
# verify as the sim platform's.
MN=$("$bin" measure --enclave none)
if [[ ${#MN} -eq 64 && $MN != "$M" ]] &&
   "$bin" measure --json | grep -q '"policy":"backend=sim;heap_mb=2048"' &&
   "$bin" measure --enclave none --json |
     grep -q '"policy":"backend=none;heap_mb=2048"'; then
  ok "measure: backends none and sim differ ($MN)"
else
  bad "measure --enclave none: '$MN' (sim '$M')"
fi
"$bin" attest --enclave none --nonce 0033 --out rn.json 2>/dev/null
expect_error "verify: a none report does not verify as the sim platform" \
  "platform signature does not verify" \
  "$bin" verify rn.json --measurement "$MN" --allow-sim
expect_error "verify: a none report under the sim measurement" \
  "not the expected one" \
  "$bin" verify rn.json --measurement "$M" --allow-sim --allow-none
expect_error "verify: a sim report is not taken for a none one" \
  "not the expected one" \
  "$bin" verify r.json --measurement "$MN" --allow-sim --allow-none
"$bin" grant --key alice.key --report rn.json --measurement "$MN" --allow-sim \
  --allow-none --recipient model.pub --out an.grant 2>/dev/null
if train --data a --grant an.grant --enclave none --out mn.emlm \
     --report-out tn.json --quiet >/dev/null 2>tn.err &&
   grep -q "\"measurement\":\"$MN\"" tn.json &&
   "$bin" verify tn.json --report rn.json --measurement "$MN" --allow-sim \
     --allow-none >/dev/null 2>>tn.err &&
   "$bin" decrypt --key model.key --in mn.emlm --out mn.safetensors --quiet; then
  ok "confidential training with --enclave none: its own measurement, report verifies with --allow-none"
else
  bad "--enclave none: $(cat tn.err)"
fi
expect_error "the sim enclave's grant does not open in the none enclave" \
  "another enclave measurement" \
  train --data a --grant a.grant --enclave none --out never.emlm --quiet
if [[ -s "$ENCLAVEML_HOME/platform-none.key" &&
      $(stat -c %a "$ENCLAVEML_HOME/host-mirror.key" 2>/dev/null || echo 600) == 600 ]] &&
   ls "$ENCLAVEML_HOME"/counter-"$M".bin "$ENCLAVEML_HOME"/counter-"$MN".bin \
     >/dev/null 2>&1; then
  ok "the none platform has its own key file; a counter file per measurement"
else
  bad "platform files: $(ls "$ENCLAVEML_HOME")"
fi

# ==== the training-state mirror, through the enclave ====
# Owner A's run with a mirror on /dev/shm (emulated persistent memory): the
# host only ever holds the sealed state.  --epochs 3 so a kill can land in
# the middle; the resumed run must end with the weights of an uninterrupted
# one.
pool=$(mktemp -u /dev/shm/enclaveml-test.XXXXXX)
trap 'rm -rf "$tmp" "$pool" "$pool.2"' EXIT
mtrain() { train --data a --grant a.grant --epochs 3 --kernels ref "$@"; }
if mtrain --out ref3.emlm --quiet 2>m0.err &&
   "$bin" decrypt --key model.key --in ref3.emlm --out ref3.safetensors --quiet &&
   mtrain --out m1.emlm --mirror "$pool" --report-out m1.json 2>m1.err &&
   grep -q "mirror: $pool: emulated persistent memory" m1.err &&
   grep -q '"mirror":true' m1.json && grep -q '"resumed_step":-1' m1.json &&
   "$bin" decrypt --key model.key --in m1.emlm --out m1.safetensors --quiet &&
   cmp -s ref3.safetensors m1.safetensors; then
  ok "a mirrored confidential run ends with the unmirrored run's weights"
else
  bad "mirrored confidential run: $(cat m0.err m1.err | tail -5)"
fi
# The pool holds the final state: no window of the final weights in it.
wpat=$(windows m1.safetensors 200 4096 16 64)
if [[ -n $wpat ]] && ! hexof "$pool" | grep -qF -f <(printf '%s\n' "$wpat"); then
  ok "no 16-byte window of the trained weights appears in the pool"
else
  bad "the pool holds plaintext weights"
fi
expect_error "a pool that holds a state is not overwritten without --resume" \
  "--resume" mtrain --out m2.emlm --mirror "$pool" --quiet
# Kill the host at a random moment, resume until done.
rm -f "$pool"
steps=""
for k in 1 2; do
  (exec "$bin" train --cfg "$cfg" --recipient "$w/model.pub" --batch 32 \
     --threads 1 --seed 5 --data a --grant a.grant --epochs 3 --kernels ref \
     --mirror "$pool" --resume --out mk.emlm) 2>mk.err >/dev/null &
  pid=$!
  sleep "0.$((3 + RANDOM % 6))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  steps="$steps $(sed -n 's/^resume: continuing from step \([0-9]*\) .*/\1/p' mk.err)"
done
if mtrain --out mk.emlm --mirror "$pool" --resume --report-out mk.json \
     2>mk.err && grep -q '^resume: ' mk.err &&
   "$bin" decrypt --key model.key --in mk.emlm --out mk.safetensors --quiet &&
   cmp -s ref3.safetensors mk.safetensors; then
  ok "killed twice and resumed (at:$steps $(sed -n 's/.*"resumed_step":\([-0-9]*\).*/\1/p' mk.json)): the same weights"
else
  bad "kill and resume through the enclave: $(tail -3 mk.err)"
fi
# Tampering with the pool, and a pool used with other data, are refused.
cp "$pool" "$pool.2"
size=$(wc -c <"$pool")
# In the committed slot (the low bit of the commit word at offset 64); the
# other slot is not read, so a torn write there never matters.
cslot=$(($(od -An -tu1 -j64 -N1 "$pool") & 1))
cap=$(od -An -tu8 -j32 -N8 "$pool" | tr -d ' ')
# A bit is flipped (flip), not a byte overwritten: the ciphertext is new
# each run, and a fixed value was already there once in 256 runs, when
# nothing changed and the resume rightly went on.
flip "$pool" $((4096 + cslot * cap + 300))
expect_error "a flipped byte in the pool is refused" "authentication" \
  mtrain --out m3.emlm --mirror "$pool" --resume --quiet
cp "$pool.2" "$pool"
expect_error "the pool of owner A's run is refused for owner B's data" \
  "other data" train --data b --grant b.grant --epochs 3 --kernels ref \
  --out m4.emlm --mirror "$pool" --resume --quiet
expect_error "a pool resumed with other options is refused" "options" \
  mtrain --out m5.emlm --lr 0.5 --mirror "$pool" --resume --quiet
head -c $((size - 4096)) "$pool.2" >"$pool"
expect_error "a truncated pool is refused" "truncated" \
  mtrain --out m6.emlm --mirror "$pool" --resume --quiet
if [[ ! -e m3.emlm && ! -e m4.emlm && ! -e m5.emlm && ! -e m6.emlm ]]; then
  ok "no model left by a refused resume"
else
  bad "a refused resume left a model"
fi
rm -f "$pool" "$pool.2"
# The disk-checkpoint baseline goes through the same ocalls.
if mtrain --out c1.emlm --checkpoint ck.bin --checkpoint-every 7 2>c1.err &&
   [[ -s ck.bin ]]; then
  if mtrain --out c2.emlm --checkpoint ck.bin --resume 2>c2.err &&
     grep -q '^resume: continuing from step 28 of ' c2.err &&
     "$bin" decrypt --key model.key --in c2.emlm --out c2.safetensors --quiet &&
     cmp -s ref3.safetensors c2.safetensors && [[ ! -e ck.bin.tmp ]]; then
    ok "a checkpoint every 7 steps through the enclave resumes at step 28 with the same weights"
  else
    bad "checkpoint resume: $(tail -2 c2.err)"
  fi
else
  bad "checkpoint through the enclave: $(tail -2 c1.err)"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
