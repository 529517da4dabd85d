#!/usr/bin/env bash
# test_evaluate.sh BIN SRCDIR - verifiable evaluation end to end: a model
# owner trains a small MLP and encrypts it with `encrypt --role model`;
# two data owners encrypt their test sets (one holds a canary: a random
# image) under their own keys; each grants its key to the enclave's
# measurement; `enclaveml evaluate` (sim enclave) signs a report whose
# accuracy is `eval`'s on the same plaintext, which `verify` checks and a
# tampered copy of fails.  Wrong grants (another key, another
# measurement), a cfg whose digest is not the grant's and a missing test
# set give one "enclaveml: error:" line and no report.  The canary, and
# the model's weights, never appear in anything the host holds or moved
# (the ENCLAVEML_TRACE of the channel, outputs, the work directory).
# The grants' limits: --max-evaluations 2 (a third evaluation refused, in
# a new enclave process each time; a rolled-back ledger refused; the same
# weights re-encrypted still counted), --min-examples (all test sets
# together); --release-to: the model re-encrypted to an organiser, who
# decrypts it and gets the report's accuracy; a release the model's grant
# does not name refused, no file.
# 2,000 training images, 2 epochs, one thread: seconds.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
fm=/usr/share/datasets/fashion-mnist
cfg=$src/cfg/fmnist-mlp.cfg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ENCLAVEML_HOME=$tmp/home
unset ENCLAVEML_TRACE
export LC_ALL=C
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"

same() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a - b < 1e-9 && b - a < 1e-9) }'; }

# ---- the owners' plaintext lives in $plain, their keys in $keys;
# everything the host (the evaluate process) holds lives in $w.
plain=$tmp/plain
keys=$tmp/keys
w=$tmp/w
mkdir -p "$plain/train" "$plain/a" "$plain/b" "$keys" "$w"
mkidx $fm/train-images-idx3-ubyte.gz "$plain/train/train-images-idx3-ubyte" 2000 784 3
mkidx $fm/train-labels-idx1-ubyte.gz "$plain/train/train-labels-idx1-ubyte" 2000 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/train/t10k-images-idx3-ubyte" 100 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/train/t10k-labels-idx1-ubyte" 100 1 1
# Owner A: 399 test images and the canary (random pixels, label 3);
# owner B: 200 other test images.
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/a/t10k-images-idx3-ubyte" 399 784 3 0
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/a/t10k-labels-idx1-ubyte" 399 1 1 0
head -c 784 /dev/urandom >"$plain/canary.img"
cat "$plain/canary.img" >>"$plain/a/t10k-images-idx3-ubyte"
printf '\x03' >>"$plain/a/t10k-labels-idx1-ubyte"
printf '\x00\x00\x01\x90' | dd of="$plain/a/t10k-images-idx3-ubyte" bs=1 seek=4 conv=notrunc status=none
printf '\x00\x00\x01\x90' | dd of="$plain/a/t10k-labels-idx1-ubyte" bs=1 seek=4 conv=notrunc status=none
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/b/t10k-images-idx3-ubyte" 200 784 3 1000
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/b/t10k-labels-idx1-ubyte" 200 1 1 1000

# ---- the model owner trains; `eval` on the plaintext is the reference
"$bin" train --cfg "$cfg" --data "$plain/train" --epochs 2 --threads 1 \
  --seed 3 --out "$plain/w.safetensors" --quiet 2>/dev/null
"$bin" eval --cfg "$cfg" --weights "$plain/w.safetensors" --data "$plain/a" \
  --threads 1 --json >"$plain/eval_a.json"
"$bin" eval --cfg "$cfg" --weights "$plain/w.safetensors" --data "$plain/b" \
  --threads 1 --json >"$plain/eval_b.json"
acc_a=$(num "$plain/eval_a.json" test_accuracy)
loss_a=$(num "$plain/eval_a.json" test_loss)
acc_b=$(num "$plain/eval_b.json" test_accuracy)
if [[ -s $plain/w.safetensors && -n $acc_a && -n $acc_b &&
      $(wc -c <"$plain/a/t10k-images-idx3-ubyte") -eq $((16 + 400 * 784)) ]]; then
  ok "model trained; eval on A's plaintext: $acc_a, on B's: $acc_b"
else
  bad "set-up: training or eval failed"
fi

# ---- keys, ciphertext and grants: the model owner (mo) and two data
# owners (alice: A, bob: B) each under their own key
cd "$w" || exit 1
for k in mo alice bob other; do "$bin" keygen --out "$keys/$k" --quiet 2>/dev/null; done
"$bin" encrypt --key "$keys/mo.key" --in "$plain/w.safetensors" --role model \
  --out m.emlc --quiet
mkdir -p a b empty
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  # 4 KiB chunks: A's images are 77 chunks.
  "$bin" encrypt --key "$keys/alice.key" --in "$plain/a/$f" --out "a/$f.emlc" \
    --dataset alice-test --chunk-size 4096 --quiet
  "$bin" encrypt --key "$keys/bob.key" --in "$plain/b/$f" --out "b/$f.emlc" \
    --dataset bob-test --chunk-size 4096 --quiet
done
M=$("$bin" measure)
M512=$("$bin" measure --heap-mb 512)
"$bin" attest --out r.json 2>/dev/null
"$bin" attest --heap-mb 512 --out r512.json 2>/dev/null
digest=$(sha256sum "$cfg" | cut -c1-64)
grant() { "$bin" grant --allow-sim --recipient "$keys/mo.pub" "$@" 2>/dev/null; }
grant --key "$keys/mo.key" --report r.json --measurement "$M" \
  --cfg-digest "$digest" --out m.grant
grant --key "$keys/alice.key" --report r.json --measurement "$M" --out a.grant
grant --key "$keys/bob.key" --report r.json --measurement "$M" --out b.grant
grant --key "$keys/alice.key" --report r.json --measurement "$M" --out a2.grant
grant --key "$keys/other.key" --report r.json --measurement "$M" --out other.grant
grant --key "$keys/alice.key" --report r512.json --measurement "$M512" \
  --out a512.grant
if [[ -s m.emlc && -s a/t10k-images-idx3-ubyte.emlc && -s m.grant &&
      -s a.grant && -s b.grant && -s other.grant && -s a512.grant &&
      $M != "$M512" ]]; then
  ok "model and test sets encrypted under three owners' keys, granted to $M"
else
  bad "set-up: encryption or grants missing"
fi

evaluate() { "$bin" evaluate --cfg "$cfg" --model m.emlc --threads 1 "$@"; }

# ==== one test set: the report is eval's figures, signed ====
if ENCLAVEML_TRACE=trace.bin evaluate --model-grant m.grant --data a \
     --grant a.grant --report-out e.json --json >e.out 2>e.err &&
   [[ -s e.json && -s trace.bin ]]; then
  ok "evaluate: one test set ($(wc -c <trace.bin) bytes of trace)"
else
  bad "evaluate: $(cat e.err)"
fi
# without --threads: the enclave gets every online CPU (a 0 passed on to
# the enclave program once kept it from starting)
if "$bin" evaluate --cfg "$cfg" --model m.emlc --model-grant m.grant \
     --data a --grant a.grant --report-out e0.json --quiet 2>e0.err &&
   [[ -s e0.json ]]; then
  ok "evaluate without --threads: accuracy $(num e0.json accuracy)"
else
  bad "evaluate without --threads: $(cat e0.err)"
fi
got=$(num e.json accuracy)
if same "$got" "$acc_a" && same "$(num e.json loss)" "$loss_a" &&
   same "$(num e.out accuracy)" "$acc_a"; then
  ok "the report's accuracy ($got) and loss are eval's on the same data"
else
  bad "accuracy $got (eval: $acc_a), loss $(num e.json loss) (eval: $loss_a)"
fi
conf=$(str e.json confusion)
rows=$(tr ';' '\n' <<<"$conf" | wc -l)
cells=$(tr ';,' '\n\n' <<<"$conf" | awk '{ s += $1 } END { print NR, s }')
diag=$(tr ';' '\n' <<<"$conf" | awk -F, '{ s += $NR } END { print s }')
if [[ $(num e.json examples) == 400 && $(num e.json classes) == 10 &&
      $rows -eq 10 && $cells == "100 400" &&
      $diag == "$(num e.json correct)" &&
      $(str e.json class_accuracy | tr ',' '\n' | wc -l) -eq 10 ]]; then
  ok "400 examples, a 10 x 10 confusion matrix summing to them, its diagonal the correct count"
else
  bad "report figures: $(head -c 1500 e.json)"
fi
ds="$(sha256sum a/t10k-images-idx3-ubyte.emlc | cut -c1-64),$(sha256sum a/t10k-labels-idx1-ubyte.emlc | cut -c1-64)"
if [[ $(str e.json cfg_sha256) == "$digest" &&
      $(str e.json model_file_sha256) == "$(sha256sum m.emlc | cut -c1-64)" &&
      $(str e.json datasets) == "$ds" &&
      $(str e.json measurement) == "$M" ]]; then
  ok "the report names the cfg, the model file, the test files (SHA-256) and the measurement"
else
  bad "report digests: $(head -c 1500 e.json)"
fi

# ---- verify
if "$bin" verify e.json --report r.json --measurement "$M" --allow-sim \
     --model m.emlc >v.out 2>v.err &&
   grep -q 'evaluation report verified' v.out; then
  ok "verify: $(head -c 120 v.out)..."
else
  bad "verify: $(cat v.out v.err)"
fi
sed 's/"accuracy":[0-9.]*/"accuracy":0.99/' e.json >t1.json
sed "s/\"datasets\":\"[0-9a-f]/\"datasets\":\"$( [[ ${ds:0:1} == 0 ]] && echo 1 || echo 0)/" e.json >t2.json
if ! cmp -s e.json t1.json && ! cmp -s e.json t2.json; then
  expect_error "verify: a report with its accuracy changed is refused" \
    "signature" "$bin" verify t1.json --report r.json --measurement "$M" --allow-sim
  expect_error "verify: a report with a test file's digest changed is refused" \
    "signature" "$bin" verify t2.json --report r.json --measurement "$M" --allow-sim
else
  bad "could not tamper with the report"
fi
expect_error "verify: the report against another model file" "another model" \
  "$bin" verify e.json --report r.json --measurement "$M" --allow-sim \
  --model a/t10k-labels-idx1-ubyte.emlc
expect_error "verify: the report against another enclave's attestation" \
  "signed by another enclave" \
  "$bin" verify e.json --report r512.json --measurement "$M512" --allow-sim
expect_error "verify: the report with another expected measurement" \
  "measurement" \
  "$bin" verify e.json --report r.json --measurement "$M512" --allow-sim

# ---- the verifier's nonce, --json, --help
if evaluate --model-grant m.grant --data a --grant a.grant --report-out n.json \
     --report-nonce 00ff --quiet 2>n.err &&
   "$bin" verify n.json --report r.json --measurement "$M" --allow-sim \
     --report-nonce 00ff --json >vn.out &&
   grep -q '"verified":true' vn.out && grep -q '"report_nonce":"00ff"' vn.out; then
  ok "--report-nonce: the report carries it, verify --report-nonce --json checks it"
else
  bad "report nonce: $(cat n.err vn.out)"
fi
expect_error "verify: another nonce is refused" "report_nonce does not match" \
  "$bin" verify n.json --report r.json --measurement "$M" --allow-sim \
  --report-nonce 0011
if "$bin" evaluate --help | grep -q "usage: enclaveml evaluate"; then
  ok "evaluate --help"
else
  bad "evaluate --help"
fi

# ==== two test sets (two owners) ====
if evaluate --model-grant m.grant --data a --grant a.grant --data b \
     --grant b.grant --report-out e2.json --quiet 2>e2.err &&
   "$bin" verify e2.json --report r.json --measurement "$M" --allow-sim \
     >/dev/null; then
  want=$(awk -v a="$acc_a" -v b="$acc_b" 'BEGIN { printf "%d", a * 400 + b * 200 + 0.5 }')
  if [[ $(num e2.json examples) == 600 && $(num e2.json test_sets) == 2 &&
        $(num e2.json correct) == "$want" &&
        $(str e2.json datasets | tr ',' '\n' | wc -l) -eq 4 ]]; then
    ok "two test sets: 600 examples, $want correct (eval's on A and B), four file digests"
  else
    bad "two test sets: $(head -c 1500 e2.json)"
  fi
else
  bad "two test sets: $(cat e2.err)"
fi

# ==== refusals: one error line, no report ====
refused() { # refused NAME NEEDLE ARGS...
  local name=$1 needle=$2
  shift 2
  rm -f bad.json
  expect_error "$name" "$needle" evaluate "$@" --report-out bad.json
  if [[ -e bad.json ]]; then bad "$name: a report was left behind"; fi
}
refused "a test set's grant of another key" "not encrypted under the key" \
  --model-grant m.grant --data a --grant other.grant
refused "a test set's grant for another measurement" "grant" \
  --model-grant m.grant --data a --grant a512.grant
refused "the model's grant of another key" "model" \
  --model-grant a.grant --data a --grant a.grant
sed 's/^momentum=0.9$/momentum=0.8/' "$cfg" >other.cfg
refused "a cfg whose digest is not the model grant's" "cfg digest" \
  --model-grant m.grant --data a --grant a.grant --cfg other.cfg
refused "a missing test set" "no encrypted test set" \
  --model-grant m.grant --data empty --grant a.grant
refused "a data directory without its grant" "one grant per test set" \
  --model-grant m.grant --data a --grant a.grant --data b
refused "the same grant twice" "replays" \
  --model-grant m.grant --data a --grant a.grant --data a --grant a.grant
refused "the same test set twice (under two grants)" "counted twice" \
  --model-grant m.grant --data a --grant a.grant --data a --grant a2.grant

# ==== limits a test set's owner sets in the grant (docs/evaluate.md) ====
grant --key "$keys/alice.key" --report r.json --measurement "$M" \
  --max-evaluations 2 --out al.grant
grant --key "$keys/alice.key" --report r.json --measurement "$M" \
  --min-examples 600 --out amin.grant
ledger=$ENCLAVEML_HOME/ledger-$M.bin
# Each `enclaveml evaluate` is a fresh enclave process: the count lives in
# the sealed spend ledger, under the platform's monotonic counter.
if evaluate --model-grant m.grant --data a --grant al.grant \
     --report-out l1.json --quiet 2>l.err &&
   cp "$ledger" ledger1.bin &&
   evaluate --model-grant m.grant --data a --grant al.grant \
     --report-out l2.json --quiet 2>>l.err &&
   same "$(num l2.json accuracy)" "$acc_a"; then
  ok "--max-evaluations 2: two evaluations, each in its own enclave, counted in the sealed ledger"
else
  bad "max-evaluations: $(cat l.err)"
fi
cp "$ledger" ledger2.bin
cp ledger1.bin "$ledger"
refused "the ledger rolled back to after the first evaluation" \
  "rollback" --model-grant m.grant --data a --grant al.grant
cp ledger2.bin "$ledger"
refused "a third evaluation of the model (max-evaluations 2)" \
  "allows 2 evaluations of this model; 2 spent" \
  --model-grant m.grant --data a --grant al.grant
# The same weights encrypted again (another file, another model grant)
# are the same model: the count is per weights digest.
"$bin" encrypt --key "$keys/mo.key" --in "$plain/w.safetensors" --role model \
  --out m2.emlc --quiet
grant --key "$keys/mo.key" --report r.json --measurement "$M" --out m2.grant
refused "the same weights re-encrypted, a third time" \
  "2 spent" --model m2.emlc --model-grant m2.grant --data a --grant al.grant
rm -f ledger1.bin ledger2.bin
refused "--min-examples 600 on a 400-example test set" \
  "at least 600 examples" --model-grant m.grant --data a --grant amin.grant
if evaluate --model-grant m.grant --data a --grant amin.grant --data b \
     --grant b.grant --report-out mn.json --quiet 2>mn.err &&
   [[ $(num mn.json examples) == 600 ]]; then
  ok "--min-examples 600: accepted with B's 200 examples beside A's 400"
else
  bad "min-examples with two sets: $(cat mn.err)"
fi
if ! "$bin" grant --allow-sim --recipient "$keys/mo.pub" \
     --key "$keys/alice.key" --report r.json --measurement "$M" \
     --max-evaluations 0 --out zero.grant 2>/dev/null && [[ ! -e zero.grant ]]; then
  ok "grant --max-evaluations 0 is refused"
else
  bad "grant --max-evaluations 0 made a grant"
fi

# ==== release: the model owner lets the enclave re-encrypt it to ORG ====
"$bin" keygen --out "$keys/org" --quiet 2>/dev/null
grant --key "$keys/mo.key" --report r.json --measurement "$M" \
  --cfg-digest "$digest" --release-to "$keys/org.pub" --out mr.grant
mkdir -p "$tmp/org"
if evaluate --model-grant mr.grant --data a --grant a.grant \
     --report-out rel.json --release-to "$keys/org.pub" \
     --release-out m-org.emlm --quiet 2>rel.err &&
   [[ -s m-org.emlm && ! -e m-org.emlm.partial ]] &&
   [[ $(str rel.json released_file_sha256) == "$(sha256sum m-org.emlm | cut -c1-64)" ]] &&
   [[ $(str rel.json released_to) == "$(tail -c 32 "$keys/org.pub" | od -An -v -tx1 | tr -d ' \n')" ]] &&
   "$bin" verify rel.json --report r.json --measurement "$M" --allow-sim \
     2>/dev/null | grep -q "model released to $(str rel.json released_to | cut -c1-16)"; then
  ok "--release-to ORG.pub: the model re-encrypted to ORG, named in the verified report"
else
  bad "release: $(cat rel.err)"
fi
if "$bin" decrypt --key "$keys/org.key" --in m-org.emlm \
     --out "$tmp/org/w.safetensors" --quiet 2>/dev/null &&
   cmp -s "$tmp/org/w.safetensors" "$plain/w.safetensors" &&
   "$bin" eval --cfg "$cfg" --weights "$tmp/org/w.safetensors" \
     --data "$plain/a" --threads 1 --json >"$tmp/org/eval.json" &&
   same "$(num "$tmp/org/eval.json" test_accuracy)" "$(num rel.json accuracy)"; then
  ok "the organizer decrypts it with org.key; eval of it gives the report's accuracy"
else
  bad "the released model does not decrypt or evaluate to the report's accuracy"
fi
expect_error "the released model does not open with another key" "" \
  "$bin" decrypt --key "$keys/other.key" --in m-org.emlm --out "$tmp/org/x"
relrefused() { # relrefused NAME NEEDLE ARGS...
  local name=$1 needle=$2
  shift 2
  rm -f bad.json bad.emlm
  expect_error "$name" "$needle" evaluate "$@" --report-out bad.json \
    --release-out bad.emlm
  if [[ -e bad.json || -e bad.emlm || -e bad.emlm.partial ]]; then
    bad "$name: a file was left behind"
  fi
}
relrefused "a release the model's grant does not allow" "allows no release" \
  --model-grant m.grant --data a --grant a.grant --release-to "$keys/org.pub"
relrefused "a release to another key than the grant's" "another key" \
  --model-grant mr.grant --data a --grant a.grant --release-to "$keys/other.pub"

# ==== the canary and the weights: never in the clear on the host's side ====
hexof trace.bin >trace.hex
if grep -q '454d4c4d01000800' trace.hex && grep -q '454d4c4d02003700' trace.hex; then
  ok "the trace holds the FILE_OPEN ocalls and the EVALUATE ecall"
else
  bad "no FILE_OPEN or EVALUATE frame in the trace"
fi
rm -f trace.hex
windows "$plain/canary.img" 0 784 32 1 >"$tmp/canary.pat"
# The weights: windows of the tensors' bytes (after the safetensors header).
hlen=$(od -An -tu8 -N8 "$plain/w.safetensors" | tr -d ' ')
windows "$plain/w.safetensors" $((8 + hlen + 4096)) 4096 32 32 >>"$tmp/canary.pat"
if [[ -n $(leaks "$tmp/canary.pat" "$plain/a") ]] &&
   [[ $(find "$plain" -name w.safetensors -exec bash -c 'od -An -v -tx1 "$0" | tr -d " \n"' {} \; |
        grep -cF -f "$tmp/canary.pat") -eq 1 ]]; then
  ok "control: the search finds the canary in A's plaintext and the weights in the model's ($(wc -l <"$tmp/canary.pat") windows)"
else
  bad "control: the search does not find the canary or the weights in the plaintext"
fi
windows "$w/a/t10k-images-idx3-ubyte.emlc" $((100 + 5 * 4112)) 32 32 1 >"$tmp/ct.pat"
if leaks "$tmp/ct.pat" "$w" | grep -qx "$w/trace.bin"; then
  ok "control: the search sees the test set's ciphertext the host carried in the trace"
else
  bad "ciphertext control: $(leaks "$tmp/ct.pat" "$w")"
fi
found=$(leaks "$tmp/canary.pat" "$w"; leaks "$tmp/canary.pat" "$ENCLAVEML_HOME")
if [[ -z $found ]]; then
  ok "no 32-byte window of the canary image or the weights in the trace, the report, stdout, stderr or any file of the work directory or ENCLAVEML_HOME"
else
  bad "canary or weight bytes found in: $found"
fi

echo "passed $passed, failed $failed"
[[ $failed -eq 0 ]]
