#!/usr/bin/env bash
# make bench: training speed against the machine's GEMM peak, per-layer
# times, ref vs fast.  Results go to stdout; record them in
# docs/BENCHMARKS.md with the machine and the command.
set -euo pipefail
build=${1:-build}
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== training step, cfg/fmnist-cnn.cfg, batch 128"
"$build/bench/bench_train" --cfg cfg/fmnist-cnn.cfg --batch 128 --steps 30 --threads 1,2
