#!/usr/bin/env bash
# make demo: the confidential flow on Fashion-MNIST.
#
# Two data owners (a hospital and a bank, say) each hold half of
# Fashion-MNIST; a model owner wants a model trained on both.  Nobody hands
# plaintext to the host: the owners encrypt their shards, check the
# enclave's attestation and grant it their keys; the enclave trains and
# sends the model out encrypted to the model owner with a signed report.
# Then a competition: two contestants' models judged inside the enclave on
# an organizer's hidden test set, each with a signed accuracy report.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
epochs=${DEMO_EPOCHS:-4}
fm=/usr/share/datasets/fashion-mnist
bin=$build/enclaveml
work=$build/demo
rm -rf "$work"
mkdir -p "$work"/{alice,bob,model-owner,host}
export ENCLAVEML_HOME=$work/platform   # the simulated platform's keys
cfg=$(pwd)/cfg/fmnist-cnn.cfg
dpcfg=$(pwd)/cfg/fmnist-dp.cfg
mlp=$(pwd)/cfg/fmnist-mlp.cfg
dp_epochs=${DEMO_DP_EPOCHS:-20}
kill_after=${DEMO_KILL_AFTER:-30}
cd "$work"

step() { printf '\n== %s\n' "$*"; }

# Writes the records [first, first+count) of a raw IDX file as a new IDX
# file: the same header with the new count, then the records.
idx_slice() { # SRC DST FIRST COUNT RECORD_BYTES
  local src=$1 dst=$2 first=$3 count=$4 rec=$5
  local ndims count_bytes
  ndims=$(od -An -tu1 -j3 -N1 "$src" | tr -d ' ')
  count_bytes=$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((count >> 24 & 255)) \
    $((count >> 16 & 255)) $((count >> 8 & 255)) $((count & 255)))
  {
    dd if="$src" bs=4 count=1 status=none
    printf "$count_bytes"
    dd if="$src" iflag=skip_bytes,count_bytes skip=8 count=$((4 * ndims - 4)) status=none
    dd if="$src" iflag=skip_bytes,count_bytes bs=1M skip=$((4 + 4 * ndims + first * rec)) \
      count=$((count * rec)) status=none
  } >"$dst"
}

step "1. Alice, Bob and the model owner each make a key pair"
"$bin" keygen --out alice/alice
"$bin" keygen --out bob/bob
"$bin" keygen --out model-owner/model

step "2. Alice and Bob split Fashion-MNIST: each keeps half (30,000 training and 5,000 test images)"
mkdir -p full
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -dc $fm/$f.gz >full/$f
done
for who in alice:0 bob:1; do
  name=${who%:*}; half=${who#*:}
  idx_slice full/train-images-idx3-ubyte $name/train-images-idx3-ubyte $((half * 30000)) 30000 784
  idx_slice full/train-labels-idx1-ubyte $name/train-labels-idx1-ubyte $((half * 30000)) 30000 1
  idx_slice full/t10k-images-idx3-ubyte $name/t10k-images-idx3-ubyte $((half * 5000)) 5000 784
  idx_slice full/t10k-labels-idx1-ubyte $name/t10k-labels-idx1-ubyte $((half * 5000)) 5000 1
done
rm -rf full

step "3. Each owner encrypts its shard; only the ciphertext goes to the host"
for name in alice bob; do
  mkdir -p host/$name
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    # The role follows from the file name; the data set is named so that
    # the enclave can tell one owner's files from another data set's.
    "$bin" encrypt --key $name/$name.key --in $name/$f --out host/$name/$f.emlc \
      --dataset $name-fmnist 2>/dev/null
  done
  echo "$name: $(ls host/$name | wc -l) encrypted files in host/$name (role from each name, dataset $name-fmnist)"
done

step "4. The host starts the enclave and publishes its attestation report"
measurement=$("$bin" measure)
echo "expected enclave measurement (published with the enclave's source): $measurement"
"$bin" attest --nonce 0a11ce0b0b --out host/report.json

step "5. Alice and Bob verify the report and grant the enclave their keys"
for name in alice bob; do
  "$bin" verify host/report.json --measurement "$measurement" --nonce 0a11ce0b0b --allow-sim
  "$bin" grant --key $name/$name.key --report host/report.json --measurement "$measurement" \
    --nonce 0a11ce0b0b --allow-sim --recipient model-owner/model.pub \
    --cfg-digest "$(sha256sum "$cfg" | cut -c1-64)" --out host/$name.grant
done
echo "each grant names the model owner as the only recipient and pins cfg/fmnist-cnn.cfg"
echo "a host that serves Alice's training files in her test slots (to inflate the"
echo "signed test accuracy) is refused before anything is decrypted:"
mkdir -p host/swapped
cp host/alice/train-*.emlc host/swapped/
cp host/alice/train-images-idx3-ubyte.emlc host/swapped/t10k-images-idx3-ubyte.emlc
cp host/alice/train-labels-idx1-ubyte.emlc host/swapped/t10k-labels-idx1-ubyte.emlc
if "$bin" train --cfg "$cfg" --epochs 1 --data host/swapped --grant host/alice.grant \
     --recipient model-owner/model.pub --out host/refused.emlm --quiet; then
  echo "demo: the enclave accepted training files in the test slots" >&2
  exit 1
fi
rm -rf host/swapped

step "6. The enclave trains cfg/fmnist-cnn.cfg on both shards ($epochs epochs); the host sees only ciphertext"
echo "The enclave mirrors its whole training state, sealed, into a persistent-memory"
echo "pool after every step (here /dev/shm, emulated PM).  The host is killed with"
echo "SIGKILL ${kill_after} s into the run, and the run resumes from the pool."
pool=$(mktemp -u /dev/shm/enclaveml-demo.XXXXXX)
trap 'rm -f "$pool"' EXIT
train6=("$bin" train --cfg "$cfg" --epochs "$epochs" --seed 1
  --data host/alice --grant host/alice.grant
  --data host/bob --grant host/bob.grant
  --recipient model-owner/model.pub --out host/model.emlm
  --report-out host/training-report.json --report-nonce 5eed0f0e
  --mirror "$pool")
"${train6[@]}" &
pid=$!
sleep "$kill_after"
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
echo
echo "-- host killed; $(ls host/model.emlm 2>/dev/null || echo 'no model was written'); resuming:"
"${train6[@]}" --resume
rm -f "$pool"
if ls host | grep -qE '\.partial$|\.tmp\.'; then
  echo "demo: the killed run left a stray file: $(ls host | grep -E '\.partial$|\.tmp\.')" >&2
  exit 1
fi

step "7. The model owner verifies the signed training report and decrypts the model"
"$bin" verify host/training-report.json --report host/report.json \
  --measurement "$measurement" --allow-sim --model host/model.emlm \
  --report-nonce 5eed0f0e --recipient model-owner/model.pub
"$bin" decrypt --key model-owner/model.key --in host/model.emlm \
  --out model-owner/fmnist-cnn.safetensors
"$bin" eval --cfg "$cfg" --weights model-owner/fmnist-cnn.safetensors

step "8. The owners now set a privacy budget: epsilon <= 3 (delta 1e-5) in new grants"
for name in alice bob; do
  "$bin" grant --key $name/$name.key --report host/report.json --measurement "$measurement" \
    --nonce 0a11ce0b0b --allow-sim --max-epsilon 3 \
    --recipient model-owner/model.pub --out host/$name-dp.grant
done
echo "a run that is not differentially private is refused by the enclave:"
if "$bin" train --cfg "$dpcfg" --epochs 1 --data host/alice --grant host/alice-dp.grant \
     --data host/bob --grant host/bob-dp.grant --recipient model-owner/model.pub \
     --out host/refused.emlm --quiet; then
  echo "demo: the enclave accepted a non-private run against a budget" >&2
  exit 1
fi
echo "so the enclave trains cfg/fmnist-dp.cfg with DP-SGD, never past epsilon 3 ($dp_epochs epochs):"
"$bin" train --cfg "$dpcfg" --epochs "$dp_epochs" \
  --dp --clip 0.1 --target-epsilon 3 --delta 1e-5 \
  --data host/alice --grant host/alice-dp.grant \
  --data host/bob --grant host/bob-dp.grant \
  --recipient model-owner/model.pub --out host/model-dp.emlm \
  --report-out host/training-report-dp.json
"$bin" verify host/training-report-dp.json --report host/report.json \
  --measurement "$measurement" --allow-sim --model host/model-dp.emlm --json |
  tr ',' '\n' | grep -E '"(epsilon|delta|noise|clip|sampling_rate|dp_steps|test_accuracy)"' |
  sed 's/^/  /'

echo "the budget is spent for good: a second private run with the same grants is refused:"
if "$bin" train --cfg "$dpcfg" --epochs 1 --dp --clip 0.1 --target-epsilon 1 \
     --data host/alice --grant host/alice-dp.grant \
     --data host/bob --grant host/bob-dp.grant \
     --recipient model-owner/model.pub --out host/refused-dp.emlm --quiet; then
  echo "demo: the enclave spent the owners' budget twice" >&2
  exit 1
fi

step "9. A competition judged in the enclave: two contestants, one hidden test set"
echo "Carol and Dave each train a model on the public training set and encrypt it;"
echo "the organizer encrypts the 10,000 hidden test images.  Each grants its key to"
echo "the enclave; the enclave evaluates each model and signs its accuracy."
mkdir -p carol dave organizer host/contest
"$bin" keygen --out carol/carol --quiet
"$bin" keygen --out dave/dave --quiet
"$bin" keygen --out organizer/organizer --quiet
"$bin" train --cfg "$mlp" --epochs 1 --seed 2 --out carol/w.safetensors --quiet
"$bin" train --cfg "$cfg" --epochs 1 --seed 3 --out dave/w.safetensors --quiet
declare -A ccfg=([carol]=$mlp [dave]=$cfg)
for who in carol dave; do
  "$bin" encrypt --key $who/$who.key --in $who/w.safetensors --role model \
    --out host/contest/$who.emlc --quiet
  "$bin" grant --key $who/$who.key --report host/report.json --measurement "$measurement" \
    --nonce 0a11ce0b0b --allow-sim --recipient $who/$who.pub \
    --cfg-digest "$(sha256sum "${ccfg[$who]}" | cut -c1-64)" \
    --release-to organizer/organizer.pub --out host/contest/$who.grant
done
mkdir -p host/contest/test
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -dc $fm/$f.gz >organizer/$f
  "$bin" encrypt --key organizer/organizer.key --in organizer/$f \
    --out host/contest/test/$f.emlc --dataset contest-test --quiet
done
"$bin" grant --key organizer/organizer.key --report host/report.json --measurement "$measurement" \
  --nonce 0a11ce0b0b --allow-sim --recipient organizer/organizer.pub \
  --max-evaluations 2 --min-examples 1000 --out host/contest/organizer.grant
echo "the contestants' grants let the enclave release their model to the organizer"
echo "after an evaluation, and to nobody else; the organizer's allows two evaluations"
echo "of any one model, each on at least 1,000 examples"
declare -A acc
for who in carol dave; do
  "$bin" evaluate --cfg "${ccfg[$who]}" --model host/contest/$who.emlc \
    --model-grant host/contest/$who.grant --data host/contest/test \
    --grant host/contest/organizer.grant --report-out host/contest/$who-report.json --quiet
  v=$("$bin" verify host/contest/$who-report.json --report host/report.json \
    --measurement "$measurement" --allow-sim --model host/contest/$who.emlc)
  acc[$who]=$(sed -n 's/.*"accuracy": *"\{0,1\}\([0-9.]*\).*/\1/p' host/contest/$who-report.json | head -1)
  echo "$who ($(basename "${ccfg[$who]}")): $v"
done
best=$(awk -v c="${acc[carol]}" -v d="${acc[dave]}" 'BEGIN { print (c >= d ? "carol" : "dave") }')
echo "the organizer, holding two signed reports, buys $best's model: a second"
echo "evaluation releases it, encrypted to the organizer's key"
"$bin" evaluate --cfg "${ccfg[$best]}" --model host/contest/$best.emlc \
  --model-grant host/contest/$best.grant --data host/contest/test \
  --grant host/contest/organizer.grant --report-out host/contest/release-report.json \
  --release-to organizer/organizer.pub --release-out host/contest/bought.emlm --quiet
"$bin" decrypt --key organizer/organizer.key --in host/contest/bought.emlm \
  --out organizer/bought.safetensors
"$bin" eval --cfg "${ccfg[$best]}" --weights organizer/bought.safetensors
echo "a third evaluation of that model is refused (the organizer's limit):"
if "$bin" evaluate --cfg "${ccfg[$best]}" --model host/contest/$best.emlc \
     --model-grant host/contest/$best.grant --data host/contest/test \
     --grant host/contest/organizer.grant --report-out host/contest/third.json --quiet; then
  echo "demo: the enclave evaluated a model past the test owner's limit" >&2
  exit 1
fi
echo "neither contestant saw a test image; the organizer saw only the model it bought"

step "10. What the host holds: ciphertext, grants, signed reports"
ls -l host host/alice | sed 's/^/  /'
echo
echo "demo finished: the files are in $work"
