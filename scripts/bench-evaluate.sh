#!/usr/bin/env bash
# bench-evaluate.sh BUILD - make bench section 11 (docs/BENCHMARKS.md,
# issue 15): what judging a model inside the enclave costs.  fmnist-cnn
# (one epoch) on Fashion-MNIST's 10,000 test images, 2 threads:
#   `enclaveml eval` on the plaintext files against `enclaveml evaluate`
#   on the encrypted model and test set under two owners' grants (sim
#   enclave: start, attestation keys, decryption, the evaluation, the
#   signed report), and `enclaveml predict` against the private predict
#   (the images decrypted inside, the predictions sealed to the user),
#   alternated, three rounds; wall-clock seconds and their ratio.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
bin=$build/enclaveml
src=$(cd "$(dirname "$0")/.." && pwd)
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ENCLAVEML_HOME=$tmp/home
export ENCLAVEML_ENCLAVE=$build/enclaveml-enclave
cfg=$src/cfg/fmnist-cnn.cfg
cd "$tmp"
mkdir -p plain test
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -dc $fm/$f.gz >plain/$f
done
"$bin" train --cfg "$cfg" --epochs 1 --threads 2 --out w.safetensors --quiet 2>/dev/null
for who in provider owner user; do "$bin" keygen --out $who --quiet 2>/dev/null; done
"$bin" encrypt --key provider.key --in w.safetensors --role model --out m.emlc --quiet
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  "$bin" encrypt --key owner.key --in plain/$f --out test/$f.emlc --quiet
done
"$bin" encrypt --key user.key --in plain/t10k-images-idx3-ubyte --role test-images \
  --out x.emlc --quiet
M=$("$bin" measure)
"$bin" attest --out r.json 2>/dev/null
digest=$(sha256sum "$cfg" | cut -c1-64)
g() { # KEY RECIPIENT OUT
  "$bin" grant --key "$1" --report r.json --measurement "$M" --allow-sim \
    --recipient "$2" --cfg-digest "$digest" --out "$3" 2>/dev/null
}
g provider.key provider.pub gm
g owner.key owner.pub gd
g user.key user.pub gx
secs() { # COMMAND...: its wall-clock seconds; a failure stops the script
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>err.txt || { echo "failed: $* ($(tail -1 err.txt))" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
echo "fmnist-cnn, 10,000 test images, 2 threads, wall-clock seconds (sim enclave):"
for round in 1 2 3; do
  e0=$(secs "$bin" eval --cfg "$cfg" --weights w.safetensors --data plain --threads 2)
  e1=$(secs "$bin" evaluate --cfg "$cfg" --model m.emlc --model-grant gm \
    --data test --grant gd --report-out rep.json --threads 2)
  p0=$(secs "$bin" predict --cfg "$cfg" --weights w.safetensors \
    --images plain/t10k-images-idx3-ubyte --json)
  p1=$(secs "$bin" predict --cfg "$cfg" --model m.emlc --model-grant gm \
    --images x.emlc --grant gx --recipient user.pub --out p.emlc --threads 2)
  rm -f p.emlc
  awk -v r=$round -v a="$e0" -v b="$e1" -v c="$p0" -v d="$p1" 'BEGIN {
    printf "  round %d: eval %.2f s, evaluate %.2f s (%.2fx); predict %.2f s, private predict %.2f s (%.2fx)\n",
      r, a, b, b / a, c, d, d / c }'
done
