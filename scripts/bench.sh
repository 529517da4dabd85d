#!/usr/bin/env bash
# make bench: what enclaveml's performance claims rest on, each measured
# against a baseline in the same run (this machine is shared and noisy, so
# ratios from one run are what we report).  Record results in
# docs/BENCHMARKS.md with the machine and the command.
#
#   BENCH_QUICK=1 make bench   shorter runs (fewer steps, smaller buffers,
#                              no 100M-parameter mirror state)
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
quick=${BENCH_QUICK:-0}
steps=30; pings=20000; mb=256; epochs=1; mirror_sizes=1,10,100
if [[ $quick == 1 ]]; then steps=8; pings=3000; mb=64; mirror_sizes=1,10; fi
bin=$build/enclaveml
export ENCLAVEML_ENCLAVE=$build/enclaveml-enclave
# The same OpenMP waiting as the enclaveml command sets for itself.
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "== 1. training step, cfg/fmnist-cnn.cfg, batch 128 (issue: engine)"
"$build/bench/bench_train" --cfg cfg/fmnist-cnn.cfg --batch 128 --steps $steps \
  --ref-steps 2 --threads 1,2

echo
echo "== 2. DP-SGD step against a plain step, same cfg and expected batch"
"$build/bench/bench_train" --cfg cfg/fmnist-cnn.cfg --batch 128 --steps $steps \
  --threads 1 --dp-ratio
"$build/bench/bench_train" --cfg cfg/fmnist-tanh.cfg --batch 256 --steps $steps \
  --threads 1 --dp-ratio
# The shipped DP network: fixed scattering features (computed once, as in
# training) and a linear layer, at its own batch.
"$build/bench/bench_train" --cfg cfg/fmnist-dp.cfg --batch 8192 \
  --steps $((steps / 3 + 1)) --threads 1 --dp-ratio

echo
echo "== 3. the enclave boundary and the container (issue: enclave)"
"$build/bench/bench_enclave" --pings $pings --mb $mb
ossl=$(openssl speed -evp aes-256-gcm -seconds 2 -bytes 1048576 2>/dev/null |
  awk '/^AES-256-GCM/ {print $2}' | tr -d 'k')
if [[ -n "$ossl" ]]; then
  awk -v k="$ossl" 'BEGIN { printf "  openssl speed -evp aes-256-gcm, 1 MiB blocks: %.2f GB/s\n", k * 1000 / 1e9 }'
fi

echo
echo "== 4. confidential training: --enclave sim against --enclave none"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ENCLAVEML_HOME=$tmp/home
fm=/usr/share/datasets/fashion-mnist
"$bin" keygen --out "$tmp/owner" 2>/dev/null
"$bin" keygen --out "$tmp/model" 2>/dev/null
mkdir -p "$tmp/data"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  "$bin" encrypt --key "$tmp/owner.key" --in $fm/$f.gz --out "$tmp/data/$f.emlc" 2>/dev/null
done
m=$("$bin" measure)
"$bin" attest --out "$tmp/r.json" 2>/dev/null
"$bin" grant --key "$tmp/owner.key" --report "$tmp/r.json" --measurement "$m" \
  --allow-sim --recipient "$tmp/model.pub" --out "$tmp/owner.grant" 2>/dev/null
# none is another enclave (its own measurement and platform key): its own grant.
mn=$("$bin" measure --enclave none)
"$bin" attest --enclave none --out "$tmp/rn.json" 2>/dev/null
"$bin" grant --key "$tmp/owner.key" --report "$tmp/rn.json" --measurement "$mn" \
  --allow-sim --allow-none --recipient "$tmp/model.pub" \
  --out "$tmp/owner-none.grant" 2>/dev/null
declare -A ips
for backend in none sim none sim; do
  g=$tmp/owner.grant
  [[ $backend == none ]] && g=$tmp/owner-none.grant
  out=$("$bin" train --cfg cfg/fmnist-cnn.cfg --epochs $epochs --threads 1 \
    --data "$tmp/data" --grant "$g" --recipient "$tmp/model.pub" \
    --out "$tmp/model.emlm" --enclave $backend --json --quiet)
  v=$(printf '%s' "$out" | sed -n 's/.*"images_per_second":\([0-9.e+-]*\).*/\1/p')
  echo "  $backend: $v images/s"
  ips[$backend]="${ips[$backend]:-} $v"
done
awk -v s="${ips[sim]}" -v n="${ips[none]}" 'BEGIN {
  split(s, a); split(n, b);
  sa = (a[1] > a[2]) ? a[1] : a[2]; nb = (b[1] > b[2]) ? b[1] : b[2];
  printf "  best of two: sim %.0f, none %.0f images/s: sim costs %.1f%%\n", sa, nb, 100 * (nb - sa) / nb }'

echo
echo "== 5. the sealed mirror against the disk checkpoint (issue: mirror)"
# Pools in /dev/shm and in \$TMPDIR (else the build dir); the files are removed.
"$build/bench/bench_mirror" --sizes $mirror_sizes --reps 5

echo
echo "== 6. training with a mirror after every step against none (issue: mirror)"
# The confidential run of section 4 (sim), with --mirror on /dev/shm.
pool=$(mktemp -u /dev/shm/enclaveml-bench.XXXXXX)
trap 'rm -rf "$tmp" "$pool"' EXIT
declare -A mips
for mode in plain mirror plain mirror; do
  extra=()
  [[ $mode == mirror ]] && extra=(--mirror "$pool" --mirror-every 1)
  rm -f "$pool"
  out=$("$bin" train --cfg cfg/fmnist-cnn.cfg --epochs $epochs --threads 1 \
    --data "$tmp/data" --grant "$tmp/owner.grant" --recipient "$tmp/model.pub" \
    --out "$tmp/model.emlm" --json --quiet "${extra[@]}")
  v=$(printf '%s' "$out" | sed -n 's/.*"images_per_second":\([0-9.e+-]*\).*/\1/p')
  saves=$(printf '%s' "$out" | sed -n 's/.*"mirror_saves":\([0-9]*\).*/\1/p')
  echo "  $mode: $v images/s${saves:+, $saves saves}"
  mips[$mode]="${mips[$mode]:-} $v"
done
rm -f "$pool"
awk -v m="${mips[mirror]}" -v p="${mips[plain]}" 'BEGIN {
  split(m, a); split(p, b);
  ma = (a[1] > a[2]) ? a[1] : a[2]; pb = (b[1] > b[2]) ? b[1] : b[2];
  printf "  best of two: mirror %.0f, plain %.0f images/s: --mirror-every 1 costs %.1f%% (aim <= 10%%)\n", ma, pb, 100 * (pb - ma) / pb }'

echo
echo "== 7. outsourcing the linear layers to a worker (issue 11)"
bash scripts/bench-outsource.sh "$build" "$quick"

echo
echo "== 8. a decentralized node's round inside (issue 12)"
"$build/bench/bench_decentral" --params 1000000 --neighbours 4 --reps $([[ $quick == 1 ]] && echo 5 || echo 15)
scripts/bench-decentral-overhead.sh "$build" "$quick"

echo
echo "== 9. Darknet's ResNet-50 at batch 16, inference on 2 threads: fp32, int8, bf16 (issue 13)"
dk=${EML_DARKNET_CFG:-/usr/local/share/enclaveml/darknet/cfg}
secs=$([[ $quick == 1 ]] && echo 3 || echo 8)
if [[ -f $dk/resnet50.cfg ]]; then
  # Alternated, two rounds: each round's int8 and bf16 over its own fp32.
  for round in 1 2; do
    line=""
    for p in fp32 int8 bf16; do
      ips=$("$bin" bench --cfg "$dk/resnet50.cfg" --batch 16 --mode infer \
        --precision $p --threads 2 --seconds "$secs" --json 2>/dev/null |
        sed 's/.*"images_per_second":\([0-9.]*\).*"peak_share":\([0-9.]*\).*/\1 \2/')
      line="$line $p $ips"
    done
    awk -v r=$round '{ printf "round %d: fp32 %.1f images/s (%.1f%% of peak), int8 %.1f (%.1f%%, %.2fx fp32), bf16 %.1f (%.1f%%, %.2fx)\n", r, $2, 100*$3, $5, 100*$6, $5/$2, $8, 100*$9, $8/$2 }' <<<"$line"
  done
else
  echo "no Darknet cfgs in $dk (scripts/install-deps.sh unpacks them): skipped"
fi

echo
echo "== 10. the attested inference server under load (issue 14)"
bash scripts/bench-serve.sh "$build" "$quick"

echo
echo "== 11. verifiable evaluation and private prediction against plaintext eval and predict (issue 15)"
bash scripts/bench-evaluate.sh "$build"
