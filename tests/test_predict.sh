#!/usr/bin/env bash
# test_predict.sh BIN SRCDIR - private prediction end to end
# (docs/evaluate.md, "Private prediction"): a provider trains a small MLP
# and encrypts it under its key; a user encrypts 100 images (one a canary:
# random pixels) under theirs; each grants its key to the enclave's
# measurement, the user's grant naming the user's own public key as
# recipient.  `enclaveml predict --model-grant` (sim enclave) writes the
# predictions encrypted to the user, who decrypts them with `enclaveml
# decrypt` and finds the plaintext `predict`'s.  A grant of another key or
# for another measurement, a recipient the user's grant does not name, a
# cfg whose digest is not the model grant's and a spent query budget
# (--max-queries 150: a second request of 100 refused, in a new enclave
# process) give one "enclaveml: error:" line and no output file.  The
# canary and the model's weights never appear in anything the host holds
# (the ENCLAVEML_TRACE of the channel, outputs, the work directory).
# `serve` refuses a model whose grant limits queries.
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

# st_ints FILE NAME: a float32 tensor of a safetensors file, one integer a
# line.
st_ints() {
  local hlen hdr a b
  hlen=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  hdr=$(head -c $((8 + hlen)) "$1" | tail -c "$hlen")
  a=$(sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\\[\\([0-9]*\\),\\([0-9]*\\)\\].*/\\1/p" <<<"$hdr")
  b=$(sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\\[\\([0-9]*\\),\\([0-9]*\\)\\].*/\\2/p" <<<"$hdr")
  [[ -n $a && -n $b ]] || return 1
  tail -c +$((8 + hlen + a + 1)) "$1" | head -c $((b - a)) |
    od -An -v -tf4 | awk '{ for (i = 1; i <= NF; i++) printf "%d\n", $i }'
}
# st_shape FILE NAME: a tensor's shape, "[a,b]".
st_shape() {
  local hlen
  hlen=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  head -c $((8 + hlen)) "$1" | tail -c "$hlen" |
    sed -n "s/.*\"$2\":{[^}]*\"shape\":\\(\\[[0-9,]*\\]\\).*/\\1/p"
}

plain=$tmp/plain
keys=$tmp/keys
w=$tmp/w
mkdir -p "$plain/train" "$keys" "$w"
mkidx $fm/train-images-idx3-ubyte.gz "$plain/train/train-images-idx3-ubyte" 2000 784 3
mkidx $fm/train-labels-idx1-ubyte.gz "$plain/train/train-labels-idx1-ubyte" 2000 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/train/t10k-images-idx3-ubyte" 100 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz "$plain/train/t10k-labels-idx1-ubyte" 100 1 1
# The user's 100 images: 99 test images and the canary.
mkidx $fm/t10k-images-idx3-ubyte.gz "$plain/user-images" 99 784 3 500
head -c 784 /dev/urandom >"$plain/canary.img"
cat "$plain/canary.img" >>"$plain/user-images"
printf '\x00\x00\x00\x64' | dd of="$plain/user-images" bs=1 seek=4 conv=notrunc status=none

# ---- the provider trains; plaintext `predict` is the reference
"$bin" train --cfg "$cfg" --data "$plain/train" --epochs 1 --threads 1 \
  --seed 3 --out "$plain/w.safetensors" --quiet 2>/dev/null
"$bin" predict --cfg "$cfg" --weights "$plain/w.safetensors" \
  --images "$plain/user-images" --threads 1 --json >"$plain/ref.json"
sed -n 's/.*"predictions":\[\([0-9,]*\)\].*/\1/p' "$plain/ref.json" | tr ',' '\n' >"$plain/ref.txt"
if [[ -s $plain/w.safetensors && $(wc -l <"$plain/ref.txt") -eq 100 ]]; then
  ok "model trained; plaintext predict on the user's 100 images"
else
  bad "set-up: training or plaintext predict failed"
fi

# ---- keys, ciphertext, grants: the provider (prov) and the user
cd "$w" || exit 1
for k in prov user other; do "$bin" keygen --out "$keys/$k" --quiet 2>/dev/null; done
"$bin" encrypt --key "$keys/prov.key" --in "$plain/w.safetensors" --role model \
  --out m.emlc --quiet
"$bin" encrypt --key "$keys/user.key" --in "$plain/user-images" \
  --role test-images --chunk-size 4096 --out x.emlc --quiet
M=$("$bin" measure)
M512=$("$bin" measure --heap-mb 512)
"$bin" attest --out r.json 2>/dev/null
"$bin" attest --heap-mb 512 --out r512.json 2>/dev/null
digest=$(sha256sum "$cfg" | cut -c1-64)
grant() { "$bin" grant --allow-sim --report r.json --measurement "$M" "$@" 2>/dev/null; }
grant --key "$keys/prov.key" --recipient "$keys/prov.pub" \
  --cfg-digest "$digest" --out m.grant
grant --key "$keys/prov.key" --recipient "$keys/prov.pub" \
  --cfg-digest "$digest" --max-queries 150 --out mq.grant
grant --key "$keys/user.key" --recipient "$keys/user.pub" --out x.grant
grant --key "$keys/other.key" --recipient "$keys/user.pub" --out other.grant
"$bin" grant --allow-sim --report r512.json --measurement "$M512" \
  --key "$keys/user.key" --recipient "$keys/user.pub" --out x512.grant 2>/dev/null
if [[ -s m.emlc && -s x.emlc && -s m.grant && -s mq.grant && -s x.grant &&
      -s other.grant && -s x512.grant ]]; then
  ok "model and images encrypted under two owners' keys, granted to $M"
else
  bad "set-up: encryption or grants missing"
fi

predict() { "$bin" predict --cfg "$cfg" --model m.emlc --images x.emlc --threads 1 "$@"; }

# ==== the predictions: encrypted to the user, the plaintext predict's ====
if ENCLAVEML_TRACE=trace.bin predict --model-grant m.grant --grant x.grant \
     --recipient "$keys/user.pub" --out p.emlc --json >p.out 2>p.err &&
   [[ -s p.emlc && ! -e p.emlc.partial && -s trace.bin ]] &&
   [[ $(num p.out count) == 100 && $(num p.out classes) == 10 ]]; then
  ok "predict in the enclave: 100 images, 10 classes ($(wc -c <p.emlc) bytes encrypted)"
else
  bad "predict: $(cat p.err p.out)"
fi
if "$bin" decrypt --key "$keys/user.key" --in p.emlc --out "$plain/p.safetensors" \
     2>/dev/null && st_ints "$plain/p.safetensors" predictions >"$plain/p.txt" &&
   cmp -s "$plain/p.txt" "$plain/ref.txt" &&
   [[ $(st_shape "$plain/p.safetensors" probabilities) == "[100,10]" &&
      $(st_shape "$plain/p.safetensors" predictions) == "[100]" ]]; then
  ok "the user decrypts the predictions: the plaintext predict's, probabilities [100,10]"
else
  bad "decrypted predictions differ: $(head -c 300 "$plain/p.txt" | tr '\n' ' ') vs $(head -c 300 "$plain/ref.txt" | tr '\n' ' ')"
fi
expect_error "the provider cannot decrypt the user's predictions" "" \
  "$bin" decrypt --key "$keys/prov.key" --in p.emlc --out "$plain/no.safetensors"
if "$bin" predict --help | grep -q -- "--model-grant" &&
   "$bin" predict --model-grant x --help | grep -q "Private prediction"; then
  ok "predict --help names the enclave mode; predict --model-grant --help its options"
else
  bad "predict --help"
fi

# ==== refusals: one error line, no output file ====
refused() { # refused NAME NEEDLE ARGS...
  local name=$1 needle=$2
  shift 2
  rm -f bad.emlc
  expect_error "$name" "$needle" predict "$@" --out bad.emlc
  if [[ -e bad.emlc || -e bad.emlc.partial ]]; then
    bad "$name: an output file was left behind"
  fi
}
refused "the user's grant of another key" "not encrypted under the key" \
  --model-grant m.grant --grant other.grant --recipient "$keys/user.pub"
refused "the user's grant for another measurement" "grant" \
  --model-grant m.grant --grant x512.grant --recipient "$keys/user.pub"
refused "the model's grant of another key" "model" \
  --model-grant x.grant --grant x.grant --recipient "$keys/user.pub"
refused "a recipient the user's grant does not name" "does not name this recipient" \
  --model-grant m.grant --grant x.grant --recipient "$keys/prov.pub"
sed 's/^momentum=0.9$/momentum=0.8/' "$cfg" >other.cfg
refused "a cfg whose digest is not the model grant's" "cfg digest" \
  --model-grant m.grant --grant x.grant --recipient "$keys/user.pub" --cfg other.cfg
refused "missing --recipient" "required" \
  --model-grant m.grant --grant x.grant

# ==== --max-queries 150: two requests of 100, the second refused ====
if predict --model-grant mq.grant --grant x.grant --recipient "$keys/user.pub" \
     --out q1.emlc --json >q1.out 2>q1.err &&
   [[ $(num q1.out queries_spent) == 100 && $(num q1.out queries_max) == 150 ]]; then
  ok "--max-queries 150: the first 100 predictions (100 of 150 spent)"
else
  bad "max-queries first request: $(cat q1.err q1.out)"
fi
refused "a second request of 100 (max-queries 150), in a new enclave process" \
  "the model's owner allows 150 predictions to this recipient; 100 spent, this request asks 100" \
  --model-grant mq.grant --grant x.grant --recipient "$keys/user.pub"
# The count cannot be dropped by the host: without its ledger (the
# platform counter has moved), the enclave refuses.
ledger=$ENCLAVEML_HOME/ledger-$M.bin
mv "$ledger" ledger.bak
refused "the query ledger removed by the host" "ledger" \
  --model-grant mq.grant --grant x.grant --recipient "$keys/user.pub"
mv ledger.bak "$ledger"
if ! "$bin" grant --allow-sim --report r.json --measurement "$M" \
     --key "$keys/prov.key" --recipient "$keys/prov.pub" --max-queries 0 \
     --out zero.grant 2>/dev/null && [[ ! -e zero.grant ]]; then
  ok "grant --max-queries 0 is refused"
else
  bad "grant --max-queries 0 made a grant"
fi
# A model under a query limit is not served (serving cannot count).
expect_error "serve refuses a model whose grant limits queries" "max-queries" \
  timeout 60 "$bin" serve --cfg "$cfg" --model m.emlc --grant mq.grant \
  --listen tcp:127.0.0.1:0 --threads 1 --quiet

# ==== the canary and the weights: never in the clear on the host's side ====
hexof trace.bin >trace.hex
if grep -q '454d4c4d01000800' trace.hex && grep -q '454d4c4d01003900' trace.hex; then
  ok "the trace holds the FILE_OPEN ocalls and the PREDICT ecall"
else
  bad "no FILE_OPEN or PREDICT frame in the trace"
fi
rm -f trace.hex
windows "$plain/canary.img" 0 784 32 1 >"$tmp/canary.pat"
hlen=$(od -An -tu8 -N8 "$plain/w.safetensors" | tr -d ' ')
windows "$plain/w.safetensors" $((8 + hlen + 4096)) 4096 32 32 >>"$tmp/canary.pat"
if [[ $(leaks "$tmp/canary.pat" "$plain" | grep -c -e user-images -e w.safetensors) -eq 2 ]]; then
  ok "control: the search finds the canary and the weights in the plaintext ($(wc -l <"$tmp/canary.pat") windows)"
else
  bad "control: the search does not find the canary or the weights in the plaintext"
fi
windows x.emlc $((100 + 5 * 4112)) 32 32 1 >"$tmp/ct.pat"
if leaks "$tmp/ct.pat" "$w" | grep -qx "$w/trace.bin"; then
  ok "control: the search sees the images' ciphertext the host carried in the trace"
else
  bad "ciphertext control: $(leaks "$tmp/ct.pat" "$w")"
fi
found=$(leaks "$tmp/canary.pat" "$w"; leaks "$tmp/canary.pat" "$ENCLAVEML_HOME")
if [[ -z $found ]]; then
  ok "no 32-byte window of the canary image or the weights in the trace, stdout, stderr or any file of the work directory or ENCLAVEML_HOME"
else
  bad "canary or weight bytes found in: $found"
fi

echo "passed $passed, failed $failed"
[[ $failed -eq 0 ]]
