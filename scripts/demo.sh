#!/usr/bin/env bash
# make demo: train cfg/fmnist-cnn.cfg on Fashion-MNIST for a few epochs,
# evaluate the weights it wrote, and print the result.
set -euo pipefail
build=${1:-build}
epochs=${DEMO_EPOCHS:-3}
out=$build/demo
mkdir -p "$out"
bin=$build/enclaveml
echo "== enclaveml demo: train cfg/fmnist-cnn.cfg on Fashion-MNIST ($epochs epochs)"
"$bin" train --cfg cfg/fmnist-cnn.cfg --epochs "$epochs" --seed 1 \
    --out "$out/fmnist-cnn.safetensors"
echo "== evaluate the saved weights on the 10,000 test images"
"$bin" eval --cfg cfg/fmnist-cnn.cfg --weights "$out/fmnist-cnn.safetensors"
echo "== predict the first 8 test images"
"$bin" predict --cfg cfg/fmnist-cnn.cfg --weights "$out/fmnist-cnn.safetensors" \
    --images /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
    --limit 8
