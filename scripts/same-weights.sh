#!/usr/bin/env bash
# same-weights.sh BIN OUTDIR - seeded runs of every training path (plain SGD,
# momentum/Adam cfgs, DP with a fixed seed, ref and fast kernels, in process
# and through the sim enclave) on a 2,000-image slice; prints one sha256
# per run.  Run it with the binary before and after a change to the
# trainer: the lists must be identical (issue 10's byte-identical proof).
set -eu
bin=$(realpath "$1"); out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"; out=$(realpath "$out")
src=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
source "$here/tests/lib.sh"
d=$tmp/data; mkdir -p "$d"
mkidx $src/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte 2000 784 3
mkidx $src/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte 2000 1 1
mkidx $src/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte 500 784 3
mkidx $src/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte 500 1 1
run() { # name args...
  local name=$1; shift
  "$bin" train --data "$d" --seed 7 --threads 1 --quiet \
    --out "$out/$name.safetensors" "$@" >/dev/null
  echo "$(sha256sum <"$out/$name.safetensors" | cut -c1-64)  $name"
}
cat >"$tmp/adam.cfg" <<'CFG'
[net]
batch=64
height=28
width=28
channels=1
learning_rate=0.002
adam=1
decay=0.0001
policy=steps
steps=10,20
scales=0.5,0.5
ema=0.99
epochs=2
[connected]
output=64
activation=relu
[dropout]
probability=0.2
[connected]
output=10
activation=linear
[softmax]
CFG
run adam-ref  --cfg "$tmp/adam.cfg" --kernels ref
run mlp-ref   --cfg "$here/cfg/fmnist-mlp.cfg" --epochs 2 --kernels ref
run mlp-fast  --cfg "$here/cfg/fmnist-mlp.cfg" --epochs 2 --kernels fast
run tanh-ref  --cfg "$here/cfg/fmnist-tanh.cfg" --epochs 1 --kernels ref
run cnn-ref   --cfg "$here/cfg/fmnist-cnn.cfg" --epochs 1 --kernels ref
run dp-ref    --cfg "$here/cfg/fmnist-dp.cfg" --epochs 2 --kernels ref \
              --dp --clip 1 --noise 1.1 --insecure-seed
run dpfix-ref --cfg "$here/cfg/fmnist-dp.cfg" --epochs 1 --kernels ref \
              --dp --clip 1 --noise 1.1 --insecure-seed --dp-fixed-batches
run dpcnn-ref --cfg "$here/cfg/fmnist-dp-cnn.cfg" --epochs 1 --kernels ref \
              --dp --clip 1 --noise 1.1 --insecure-seed
