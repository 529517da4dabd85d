#!/usr/bin/env bash
# test_cli.sh BIN SRCDIR - end-to-end tests of the enclaveml command line.
# Builds a tiny IDX dataset from Debian's Fashion-MNIST, trains, evaluates,
# predicts, checks reproducibility, and feeds bad input of every kind.
set -u
bin=$1
src=$2
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"

# ---- a tiny dataset: the first 300 training and 100 test images
d=$tmp/data
mkdir -p "$d"
mkidx $fm/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte 300 784 3
mkidx $fm/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte 300 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte 100 784 3
gzip -c $d/t10k-images-idx3-ubyte >$d/t10k-images-idx3-ubyte.gz
rm $d/t10k-images-idx3-ubyte    # one gzipped file in the mix
mkidx $fm/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte 100 1 1
cfg=$src/cfg/fmnist-tanh.cfg

# ---- happy paths
if "$bin" train --cfg "$cfg" --data "$d" --epochs 2 --batch 32 --seed 3 \
     --threads 1 --kernels ref --out "$tmp/a.safetensors" --json \
     >"$tmp/train.json" 2>"$tmp/train.err"; then
  if grep -q '"test_accuracy":' "$tmp/train.json" &&
     grep -q '"train_loss":' "$tmp/train.json" &&
     grep -q '"epochs":2' "$tmp/train.json" &&
     grep -q '"images_per_second":' "$tmp/train.json" &&
     grep -q '"parameters":26010' "$tmp/train.json" &&
     grep -q '"seconds":' "$tmp/train.json" &&
     [[ $(wc -l <"$tmp/train.json") -eq 1 ]] &&
     grep -q '^epoch 2/2' "$tmp/train.err"; then
    ok "train --json (26010 parameters, a line per epoch on stderr)"
  else
    bad "train --json output: $(cat "$tmp/train.json" "$tmp/train.err")"
  fi
else
  bad "train failed: $(cat "$tmp/train.err")"
fi
"$bin" train --cfg "$cfg" --data "$d" --epochs 2 --batch 32 --seed 3 \
  --threads 1 --kernels ref --out "$tmp/b.safetensors" --quiet
if cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors"; then
  ok "--kernels ref --threads 1 --seed 3 twice: byte-identical weights"
else
  bad "weights differ between two identical seeded runs"
fi
if "$bin" eval --cfg "$cfg" --weights "$tmp/a.safetensors" --data "$d" \
     --json >"$tmp/eval.json" && grep -q '"count":100' "$tmp/eval.json" &&
   grep -q '"test_accuracy":' "$tmp/eval.json" &&
   grep -q '"test_loss":' "$tmp/eval.json"; then
  ok "eval --json"
else
  bad "eval --json: $(cat "$tmp/eval.json")"
fi
# int8: calibrated on 200 training images, within 2 points of fp32 on
# these 100 test images (the measured gap is in docs/BENCHMARKS.md)
if "$bin" eval --cfg "$cfg" --weights "$tmp/a.safetensors" --data "$d" \
     --precision int8 --calibrate 200 --json >"$tmp/eval8.json" &&
   grep -q '"precision":"int8"' "$tmp/eval8.json"; then
  a32=$(grep -o '"test_accuracy":[0-9.]*' "$tmp/eval.json" | cut -d: -f2)
  a8=$(grep -o '"test_accuracy":[0-9.]*' "$tmp/eval8.json" | cut -d: -f2)
  if awk -v a="$a32" -v b="$a8" 'BEGIN { d = a - b; exit !(d < 0.02 && d > -0.02) }'; then
    ok "eval --precision int8: accuracy $a8 (fp32 $a32)"
  else
    bad "eval int8: accuracy $a8 against fp32 $a32"
  fi
else
  bad "eval --precision int8: $(cat "$tmp/eval8.json")"
fi
if "$bin" predict --cfg "$cfg" --weights "$tmp/a.safetensors" --data "$d" \
     --images $d/t10k-images-idx3-ubyte.gz --limit 20 --precision int8 \
     --calibrate 100 --json >"$tmp/pred8.json" &&
   "$bin" predict --cfg "$cfg" --weights "$tmp/a.safetensors" \
     --images $d/t10k-images-idx3-ubyte.gz --limit 20 --json >"$tmp/pred32.json"; then
  p8=$(grep -o '"predictions":\[[0-9,]*\]' "$tmp/pred8.json")
  p32=$(grep -o '"predictions":\[[0-9,]*\]' "$tmp/pred32.json")
  same=0
  IFS=, read -ra A <<<"${p8//[^0-9,]/}"
  IFS=, read -ra B <<<"${p32//[^0-9,]/}"
  for i in "${!A[@]}"; do [[ ${A[$i]} == "${B[$i]:-x}" ]] && same=$((same + 1)); done
  if [[ ${#A[@]} -eq 20 && $same -ge 18 ]]; then
    ok "predict --precision int8: $same of 20 predictions as in fp32"
  else
    bad "predict int8: $p8 against $p32"
  fi
else
  bad "predict --precision int8 failed"
fi
if "$bin" eval --cfg "$cfg" --weights "$tmp/a.safetensors" --data "$d" \
     --precision bf16 --json >"$tmp/evalb.json" &&
   grep -q '"precision":"bf16"' "$tmp/evalb.json"; then
  ok "eval --precision bf16: $(cat "$tmp/evalb.json")"
else
  bad "eval --precision bf16: $(cat "$tmp/evalb.json")"
fi
expect_error "eval: an unknown precision" "is not one of: fp32, int8, bf16" \
  "$bin" eval --cfg "$cfg" --weights "$tmp/a.safetensors" --data "$d" --precision fp16
if "$bin" predict --cfg "$cfg" --weights "$tmp/a.safetensors" \
     --images $d/t10k-images-idx3-ubyte.gz --limit 3 --json \
     >"$tmp/pred.json" && grep -q '"predictions":\[[0-9],[0-9],[0-9]\]' \
     "$tmp/pred.json" && grep -q '"outputs":\[\[' "$tmp/pred.json"; then
  ok "predict --json"
else
  bad "predict --json: $(cat "$tmp/pred.json")"
fi
for c in train eval predict; do
  if "$bin" $c --help | grep -q "usage: enclaveml $c"; then ok "$c --help";
  else bad "$c --help"; fi
done

# ---- bad input
w=$tmp/a.safetensors
expect_error "unknown command" "unknown command" "$bin" frobnicate
expect_error "unknown option" "--bogus" "$bin" train --cfg "$cfg" --bogus
expect_error "missing --cfg" "--cfg is required" "$bin" train
expect_error "bad --epochs" "--epochs" "$bin" train --cfg "$cfg" --epochs x
expect_error "bad --kernels" "--kernels" "$bin" train --cfg "$cfg" --kernels gpu
expect_error "missing cfg file" "nope.cfg" "$bin" train --cfg "$tmp/nope.cfg"
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[bogus]\n' >"$tmp/s.cfg"
expect_error "unknown section" "s.cfg:5" "$bin" train --cfg "$tmp/s.cfg" --data "$d"
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[connected]\noutput=10\nfoo=1\n[softmax]\n' >"$tmp/k.cfg"
expect_error "unknown key" "k.cfg:7" "$bin" train --cfg "$tmp/k.cfg" --data "$d"
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[convolutional]\nsize=3\n[softmax]\n' >"$tmp/m.cfg"
expect_error "missing key" "filters" "$bin" train --cfg "$tmp/m.cfg" --data "$d"
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[connected]\noutput=99999999\n[softmax]\n' >"$tmp/z.cfg"
expect_error "absurd size" "z.cfg:6" "$bin" train --cfg "$tmp/z.cfg" --data "$d"
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=20\nactivation=relu\n[softmax]\n' >"$tmp/c.cfg"
expect_error "shapes do not chain" "does not fit" "$bin" train --cfg "$tmp/c.cfg" --data "$d"
printf '[net]\nheight=20\nwidth=20\nchannels=1\n[connected]\noutput=10\n[softmax]\n' >"$tmp/h.cfg"
expect_error "data does not fit the cfg" "784" "$bin" train --cfg "$tmp/h.cfg" --data "$d"

t=$tmp/trunc
mkdir -p "$t"
cp $d/* "$t/"
head -c 5000 $d/train-images-idx3-ubyte >"$t/train-images-idx3-ubyte"
expect_error "truncated IDX" "train-images" "$bin" train --cfg "$cfg" --data "$t"
cp $d/train-images-idx3-ubyte "$t/"
gz=$t/t10k-images-idx3-ubyte.gz
head -c 3000 $d/t10k-images-idx3-ubyte.gz >"$gz"
expect_error "truncated gzip" "t10k-images" "$bin" train --cfg "$cfg" --data "$t"
cp $d/t10k-images-idx3-ubyte.gz "$gz"
printf '\xff' | dd of="$gz" bs=1 seek=200 conv=notrunc status=none
expect_error "corrupt gzip" "t10k-images" "$bin" train --cfg "$cfg" --data "$t"
expect_error "missing data dir" "not found" "$bin" train --cfg "$cfg" --data "$tmp/none"

head -c 100 "$w" >"$tmp/t.safetensors"
expect_error "truncated safetensors" "t.safetensors" "$bin" eval --cfg "$cfg" --weights "$tmp/t.safetensors" --data "$d"
printf 'garbage that is not safetensors at all' >"$tmp/g.safetensors"
expect_error "corrupt safetensors" "g.safetensors" "$bin" eval --cfg "$cfg" --weights "$tmp/g.safetensors" --data "$d"
sed 's/filters=16/filters=8/' "$cfg" >"$tmp/other.cfg"
expect_error "weights do not match the cfg" "layers.0.weight" "$bin" eval --cfg "$tmp/other.cfg" --weights "$w" --data "$d"
expect_error "predict: labels file is not images" "values each" "$bin" predict --cfg "$cfg" --weights "$w" --images $d/t10k-labels-idx1-ubyte

# ---- differential privacy: the accountant and bad DP input
if "$bin" privacy --sampling-rate 0.004266667 --noise 1.1 --steps 14070 \
     --delta 1e-5 --json >"$tmp/priv.json" &&
   grep -q '"epsilon":2\.59' "$tmp/priv.json" && grep -q '"order":8.1' "$tmp/priv.json"; then
  ok "privacy: q=256/60000, sigma 1.1, 60 epochs -> epsilon 2.59 at order 8.1"
else
  bad "privacy --json: $(cat "$tmp/priv.json")"
fi
if "$bin" privacy --sampling-rate 0.01 --steps 1000 --delta 1e-5 \
     --target-epsilon 2 --json >"$tmp/priv2.json" && grep -q '"noise":' "$tmp/priv2.json"; then
  ok "privacy --target-epsilon gives a noise multiplier"
else
  bad "privacy --target-epsilon: $(cat "$tmp/priv2.json")"
fi
if "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 32 --threads 1 \
     --dp --clip 1 --target-epsilon 2 --json >"$tmp/dp.json" 2>"$tmp/dp.err" &&
   grep -q '"dp":true' "$tmp/dp.json" && grep -q '"epsilon":' "$tmp/dp.json" &&
   grep -q '"sampling_rate":' "$tmp/dp.json"; then
  ok "train --dp --target-epsilon: epsilon, noise and sampling rate reported"
else
  bad "train --dp: $(cat "$tmp/dp.json" "$tmp/dp.err")"
fi
expect_error "DP: clip <= 0" "--clip" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 0 --noise 1
expect_error "DP: sigma < 0" "--noise" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 1 --noise -0.5
expect_error "DP: delta outside (0, 1)" "--delta" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 1 --noise 1 --delta 1
expect_error "DP: q outside (0, 1]" "--sampling-rate" "$bin" privacy --sampling-rate 1.5 --noise 1 --steps 10 --delta 1e-5
expect_error "DP: unreachable target epsilon" "out of reach" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 1 --target-epsilon 0.00001
expect_error "DP: --seed without --insecure-seed" "--insecure-seed" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 1 --noise 1 --seed 3
expect_error "DP: both --noise and --target-epsilon" "exactly one" "$bin" train --cfg "$cfg" --data "$d" --dp --clip 1 --noise 1 --target-epsilon 2

# ---- the training-state mirror: bad options and bad pools
expect_error "mirror: --resume alone" "--resume needs" "$bin" train --cfg "$cfg" --data "$d" --resume
expect_error "mirror: --mirror-every alone" "--mirror-every needs" "$bin" train --cfg "$cfg" --data "$d" --mirror-every 3
expect_error "mirror: --mirror-every 0" "--mirror-every" "$bin" train --cfg "$cfg" --data "$d" --mirror "$tmp/p.pool" --mirror-every 0
expect_error "mirror: both --mirror and --checkpoint" "not both" "$bin" train --cfg "$cfg" --data "$d" --mirror "$tmp/p.pool" --checkpoint "$tmp/c.ckpt"
printf 'not a pool, but long enough to be taken for one if nobody checked it.%4096s' "" >"$tmp/junk.pool"
expect_error "mirror: a file that is not a pool" "junk.pool: not an enclaveml mirror" "$bin" train --cfg "$cfg" --data "$d" --mirror "$tmp/junk.pool" --resume
expect_error "mirror: a directory" "directory" "$bin" train --cfg "$cfg" --data "$d" --mirror "$tmp" --resume
expect_error "checkpoint: a file that is not one" "not an enclaveml mirror" "$bin" train --cfg "$cfg" --data "$d" --checkpoint "$tmp/junk.pool" --resume
if "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --mirror "$tmp/m.pool" --quiet &&
   [[ -s "$tmp/m.pool" ]]; then
  ok "a mirrored run leaves its pool"
else
  bad "mirrored run"
fi
expect_error "mirror: an existing pool without --resume" "--resume" "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --mirror "$tmp/m.pool"
expect_error "mirror: resumed with other options" "options" "$bin" train --cfg "$cfg" --data "$d" --epochs 2 --mirror "$tmp/m.pool" --resume --quiet

# ---- encrypt: the role and dataset id in the container header
"$bin" keygen --out "$tmp/own" --quiet 2>/dev/null
cp "$d/train-labels-idx1-ubyte" "$tmp/labels.bin"
expect_error "encrypt: a name that says no role, without --role" "--role" \
  "$bin" encrypt --key "$tmp/own.key" --in "$tmp/labels.bin" --out "$tmp/l.emlc"
if [[ ! -e $tmp/l.emlc ]]; then
  ok "encrypt: nothing written when the role is unknown"
else
  bad "encrypt: wrote $tmp/l.emlc without a role"
fi
expect_error "encrypt: an unknown --role" "train-images" \
  "$bin" encrypt --key "$tmp/own.key" --in "$tmp/labels.bin" --out "$tmp/l.emlc" --role labels
expect_error "encrypt: a bad --dataset-id" "32 hex digits" \
  "$bin" encrypt --key "$tmp/own.key" --in "$tmp/labels.bin" --out "$tmp/l.emlc" --role train-labels --dataset-id 00ff
expect_error "encrypt: --dataset and --dataset-id together" "at most one" \
  "$bin" encrypt --key "$tmp/own.key" --in "$tmp/labels.bin" --out "$tmp/l.emlc" --role train-labels --dataset a --dataset-id 000102030405060708090a0b0c0d0e0f
# sha256("enclaveml dataset id v1" || "fmnist-a"), first 16 bytes
want=$(printf 'enclaveml dataset id v1fmnist-a' | sha256sum | cut -c1-32)
if "$bin" encrypt --key "$tmp/own.key" --in "$tmp/labels.bin" --out "$tmp/l.emlc" \
     --role train-labels --dataset fmnist-a 2>"$tmp/enc.err" &&
   grep -q "role train-labels, dataset id $want" "$tmp/enc.err" &&
   [[ $(od -An -tx1 -j4 -N2 "$tmp/l.emlc" | tr -d ' ') == 0200 &&
      $(od -An -tx1 -j64 -N4 "$tmp/l.emlc" | tr -d ' ') == 02000000 &&
      $(od -An -tx1 -j68 -N16 "$tmp/l.emlc" | tr -d ' \n') == "$want" ]] &&
   "$bin" decrypt --key "$tmp/own.key" --in "$tmp/l.emlc" --out "$tmp/l.out" --quiet &&
   cmp -s "$tmp/l.out" "$tmp/labels.bin"; then
  ok "encrypt --role train-labels --dataset fmnist-a: version 2, role 2 and the dataset id in the header; decrypts"
else
  bad "encrypt --role/--dataset: $(cat "$tmp/enc.err")"
fi
if "$bin" encrypt --key "$tmp/own.key" --in "$d/t10k-images-idx3-ubyte.gz" \
     --out "$tmp/t.emlc" --dataset-id 000102030405060708090a0b0c0d0e0f 2>"$tmp/enc.err" &&
   grep -q "role test-images, dataset id 000102030405060708090a0b0c0d0e0f" "$tmp/enc.err" &&
   "$bin" encrypt --recipient "$tmp/own.pub" --in "$tmp/labels.bin" --out "$tmp/n.emlc" \
     --role none 2>"$tmp/enc2.err" &&
   grep -q "role none, dataset id 00000000000000000000000000000000" "$tmp/enc2.err"; then
  ok "encrypt: the role inferred from t10k-images-idx3-ubyte.gz, --dataset-id, --role none (unnamed)"
else
  bad "encrypt: inferred role: $(cat "$tmp/enc.err" "$tmp/enc2.err")"
fi
if "$bin" encrypt --help | grep -q -- "--role" && "$bin" encrypt --help | grep -q -- "--dataset NAME"; then
  ok "encrypt --help names --role and --dataset"
else
  bad "encrypt --help lacks --role/--dataset"
fi
# A version 1 container (as enclaveml wrote it before): a clear refusal.
{ printf 'EMLC\x01\x00\x01\x00\x00\x10\x00\x00\x40\x00\x00\x00'; head -c 64 /dev/zero; } >"$tmp/v1.emlc"
expect_error "decrypt: a version 1 container" "version 1 is no longer supported" \
  "$bin" decrypt --key "$tmp/own.key" --in "$tmp/v1.emlc" --out "$tmp/v1.out"

# ---- convert: Darknet's own .weights (tests/data/darknet-small.*, saved
# by Debian's libdarknet) to safetensors and back, byte for byte
dk=$src/tests/data/darknet-small
if "$bin" convert --cfg "$dk.cfg" --from "$dk.weights" \
     --out "$tmp/small.safetensors" 2>"$tmp/conv.err" &&
   "$bin" convert --cfg "$dk.cfg" --from "$tmp/small.safetensors" \
     --out "$tmp/small.weights" 2>>"$tmp/conv.err" &&
   cmp -s "$dk.weights" "$tmp/small.weights" &&
   grep -q 'convert: .* -> .*small.safetensors: 353 parameters' "$tmp/conv.err"; then
  ok "convert: Darknet's .weights -> safetensors -> .weights, the same bytes"
else
  bad "convert round trip: $(cat "$tmp/conv.err")"
fi
head -c 1000 "$dk.weights" >"$tmp/cut.weights"
expect_error "convert: a truncated .weights file" "truncated" \
  "$bin" convert --cfg "$dk.cfg" --from "$tmp/cut.weights" --out "$tmp/cut.safetensors"
[[ -e $tmp/cut.safetensors ]] && bad "convert left a file behind"
expect_error "convert: weights of another network" "holds 1476 bytes of values where the cfg's network needs" \
  "$bin" convert --cfg "$src/cfg/fmnist-mlp.cfg" --from "$dk.weights" --out "$tmp/x.safetensors"
expect_error "convert: neither side .weights" "must end in .weights" \
  "$bin" convert --cfg "$dk.cfg" --from "$tmp/small.safetensors" --out "$tmp/y.safetensors"

# ---- bench: the engine alone on synthetic input, against the peak
if "$bin" bench --cfg "$src/cfg/fmnist-mlp.cfg" --batch 32 --seconds 0.3 \
     --json --layers >"$tmp/bench.json" 2>"$tmp/bench.err" &&
   grep -q '"images_per_second":[1-9]' "$tmp/bench.json" &&
   grep -q '"peak_share":0\.[0-9]' "$tmp/bench.json" &&
   grep -q '"parameters":235146,' "$tmp/bench.json" &&
   grep -q '"flops_per_image":1007104,' "$tmp/bench.json" &&
   grep -q '"layer":"connected 784 -> 256"' "$tmp/bench.json"; then
  ok "bench --json --layers: $(cut -c1-160 "$tmp/bench.json")"
else
  bad "bench: $(cat "$tmp/bench.json" "$tmp/bench.err")"
fi
if "$bin" bench --cfg "$dk.cfg" --mode infer --seconds 0.2 >"$tmp/b2.out" 2>&1 &&
   grep -q "353 parameters" "$tmp/b2.out" && grep -q "% of this machine's fp32 peak" "$tmp/b2.out"; then
  ok "bench --mode infer on Darknet's layers: $(tail -1 "$tmp/b2.out")"
else
  bad "bench infer: $(cat "$tmp/b2.out")"
fi
expect_error "bench: an unknown precision" "is not one of: fp32, bf16, int8" \
  "$bin" bench --cfg "$dk.cfg" --precision fp8
expect_error "bench: int8 training" "is for inference: add --mode infer" \
  "$bin" bench --cfg "$dk.cfg" --precision int8
if "$bin" bench --cfg "$dk.cfg" --mode infer --precision int8 --seconds 0.2 \
     --json >"$tmp/b8.json" 2>&1 && grep -q '"precision":"int8"' "$tmp/b8.json" &&
   grep -q '"peak_share":0\.[0-9]' "$tmp/b8.json"; then
  ok "bench --precision int8: $(cut -c1-150 "$tmp/b8.json")"
else
  bad "bench int8: $(cat "$tmp/b8.json")"
fi
expect_error "bench: a bad mode" "is not one of: train, infer" \
  "$bin" bench --cfg "$dk.cfg" --mode serve

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
