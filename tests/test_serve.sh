#!/usr/bin/env bash
# test_serve.sh BIN SRCDIR - the attested inference server end to end:
# a model owner encrypts a model and grants its key to the enclave;
# `enclaveml serve` (sim enclave, a real process) loads it and listens on
# a free loopback port; clients check the attestation in its TLS
# certificate before they send anything (`verify --tls`, `client`, curl
# with the printed pin), get the same answers `eval` gives, and bad
# input (a huge header, a plaintext "handshake", a wrong pin, a wrong
# measurement) is refused while the server goes on serving.  A grant of
# another key is refused at start.  Small data, one thread: seconds.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
fm=/usr/share/datasets/fashion-mnist
cfg=$src/cfg/fmnist-mlp.cfg
tmp=$(mktemp -d)
server=
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export ENCLAVEML_HOME=$tmp/home
export LC_ALL=C
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"
cd "$tmp" || exit 1

# ---- the model: an MLP trained briefly on 2,000 images; 500 test images
mkdir -p data
mkidx $fm/train-images-idx3-ubyte.gz data/train-images-idx3-ubyte 2000 784 3
mkidx $fm/train-labels-idx1-ubyte.gz data/train-labels-idx1-ubyte 2000 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz data/t10k-images-idx3-ubyte 500 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz data/t10k-labels-idx1-ubyte 500 1 1
"$bin" train --cfg "$cfg" --data data --epochs 2 --threads 1 --seed 3 \
  --out w.safetensors --quiet 2>/dev/null
want=$("$bin" eval --cfg "$cfg" --weights w.safetensors --data data \
  --threads 1 --json | sed 's/.*"test_accuracy":\([0-9.]*\).*/\1/')
"$bin" keygen --out owner --quiet 2>/dev/null
"$bin" keygen --out other --quiet 2>/dev/null
"$bin" encrypt --key owner.key --in w.safetensors --role model \
  --out m.emlc --quiet
M=$("$bin" measure)
"$bin" attest --out r.json 2>/dev/null
digest=$(sha256sum "$cfg" | cut -c1-64)
"$bin" grant --key owner.key --report r.json --measurement "$M" --allow-sim \
  --recipient owner.pub --cfg-digest "$digest" --out g.grant 2>/dev/null
"$bin" grant --key other.key --report r.json --measurement "$M" --allow-sim \
  --recipient owner.pub --cfg-digest "$digest" --out other.grant 2>/dev/null
if [[ -s m.emlc && -s g.grant && -n $want ]]; then
  ok "model encrypted and granted (eval's accuracy: $want)"
else
  bad "set-up: model, grant or eval missing"
fi

# ---- a grant of another key: refused before anything listens
expect_error "serve: another owner's grant is refused" "grant" \
  "$bin" serve --cfg "$cfg" --model m.emlc --grant other.grant \
  --listen tcp:127.0.0.1:0 --threads 1 --quiet

# ---- the server
"$bin" serve --cfg "$cfg" --model m.emlc --grant g.grant --name fmnist \
  --listen tcp:127.0.0.1:0 --ready-file ready --threads 1 \
  --header-timeout-ms 1500 2>serve.err &
server=$!
for _ in $(seq 1 100); do [[ -s ready ]] && break; sleep 0.1; done
addr=$(cut -d' ' -f1 ready 2>/dev/null)
pin=$(cut -d' ' -f2 ready 2>/dev/null)
hp=${addr#tcp:}
if [[ $addr == tcp:127.0.0.1:* && $pin == sha256//* ]]; then
  ok "serving on $addr, TLS key $pin"
else
  bad "server did not start: $(cat serve.err)"
fi

if "$bin" verify --tls "$addr" --measurement "$M" --allow-sim >v.out &&
   grep -qF "$pin" v.out; then
  ok "verify --tls: the report checks, the pin matches ($(cut -c1-60 v.out)...)"
else
  bad "verify --tls: $(cat v.out)"
fi
wrong=$(printf '%064d' 0)
expect_error "verify --tls: another measurement is refused" \
  "measurement" "$bin" verify --tls "$addr" --measurement "$wrong" --allow-sim
expect_error "verify --tls: a simulated platform needs --allow-sim" \
  "simulated" "$bin" verify --tls "$addr" --measurement "$M"

# ---- predictions: the same accuracy as eval, in JSON and raw
for fmt in json raw; do
  out=$("$bin" client --tls "$addr" --measurement "$M" --allow-sim \
    --name fmnist --count 500 --batch 7 --format $fmt --json)
  got=$(sed 's/.*"accuracy":\([0-9.]*\).*/\1/' <<<"$out")
  if [[ -n $got ]] && awk -v a="$got" -v b="$want" \
       'BEGIN { exit !(a - b < 1e-9 && b - a < 1e-9) }'; then
    ok "client --format $fmt: accuracy $got, as eval's"
  else
    bad "client --format $fmt: '$out' against eval's $want"
  fi
done
before=$(curl -s -k --pinnedpubkey "$pin" "https://$hp/metrics" |
  grep '^enclaveml_requests_total{code="200"}' | cut -d' ' -f2)
expect_error "client: nothing is sent to a server of another measurement" \
  "measurement" "$bin" client --tls "$addr" --measurement "$wrong" \
  --allow-sim --count 10
after=$(curl -s -k --pinnedpubkey "$pin" "https://$hp/metrics" |
  grep '^enclaveml_requests_total{code="200"}' | cut -d' ' -f2)
if [[ -n $before && $after -eq $((before + 1)) ]]; then
  ok "the refused client sent no request (200s: $before, then $after: the second /metrics)"
else
  bad "requests before $before, after $after"
fi

# ---- curl with the pin, and the limits
if [[ $(curl -s -k --pinnedpubkey "$pin" "https://$hp/healthz") == ok ]]; then
  ok "curl --pinnedpubkey: /healthz"
else
  bad "curl /healthz"
fi
if ! curl -s -k --pinnedpubkey 'sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' \
     "https://$hp/healthz" >/dev/null 2>&1; then
  ok "curl with another pin refuses the server"
else
  bad "curl accepted another pin"
fi
code=$(curl -s -k -o /dev/null -w '%{http_code}' -H "X-Pad: $(head -c 9000 /dev/zero | tr '\0' a)" "https://$hp/healthz")
[[ $code == 431 ]] && ok "a 9000-byte header: 431" || bad "big header: $code"
code=$(curl -s -k -o body -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"instances": [[1, 2, 3]]}' "https://$hp/v1/models/fmnist:predict")
if [[ $code == 400 ]] && grep -q '"error"' body; then
  ok "a wrong shape: 400 $(cat body)"
else
  bad "wrong shape: $code $(cat body)"
fi
code=$(curl -s -k -o /dev/null -w '%{http_code}' -d '{}' \
  "https://$hp/v1/models/nope:predict")
[[ $code == 404 ]] && ok "an unknown model: 404" || bad "unknown model: $code"
# plaintext HTTP where TLS is expected: the handshake fails, is logged,
# and the server answers others
printf 'GET /healthz HTTP/1.1\r\n\r\n' >/dev/tcp/127.0.0.1/"${hp#*:}" 2>/dev/null
sleep 0.3
if grep -q "TLS handshake failed" serve.err &&
   [[ $(curl -s -k --pinnedpubkey "$pin" "https://$hp/healthz") == ok ]]; then
  ok "a plaintext client: its handshake fails (logged), others are served"
else
  bad "plaintext client: $(tail -3 serve.err)"
fi
# a client that sends half a request and stops: 408 after the timeout
exec 3<>/dev/tcp/127.0.0.1/"${hp#*:}"
sleep 2
exec 3>&-
if grep -q "closed after its timeout\|request timeout" serve.err; then
  ok "a silent connection is closed after its timeout"
else
  bad "silent connection: $(tail -3 serve.err)"
fi

# ---- int8 in the enclave: calibrated on the images the owner's file
# carries; without them, refused
expect_error "serve --precision int8: no calibration images, refused" \
  "calibration images" "$bin" serve --cfg "$cfg" --model m.emlc \
  --grant g.grant --listen tcp:127.0.0.1:0 --precision int8 --threads 1 \
  --quiet
"$bin" convert --cfg "$cfg" --from w.safetensors --out wc.safetensors \
  --calibration data --calibrate 300 2>/dev/null
"$bin" encrypt --key owner.key --in wc.safetensors --role model \
  --out mc.emlc --quiet
rm -f ready8
"$bin" serve --cfg "$cfg" --model mc.emlc --grant g.grant --name fmnist \
  --listen tcp:127.0.0.1:0 --ready-file ready8 --threads 1 \
  --precision int8 2>serve8.err &
server8=$!
for _ in $(seq 1 100); do [[ -s ready8 ]] && break; sleep 0.1; done
out=$("$bin" client --tls "$(cut -d' ' -f1 ready8)" --measurement "$M" \
  --allow-sim --name fmnist --count 500 --format raw --json)
kill -TERM "$server8"
wait "$server8"
got=$(sed 's/.*"accuracy":\([0-9.]*\).*/\1/' <<<"$out")
if [[ -n $got ]] && awk -v a="$got" -v b="$want" \
     'BEGIN { d = a - b; exit !(d < 0.01 && -d < 0.01) }'; then
  ok "int8 in the enclave: accuracy $got against fp32's $want"
else
  bad "int8 serving: '$out' $(tail -2 serve8.err)"
fi

# ---- stop
kill -TERM "$server"
wait "$server"
rc=$?
server=
if [[ $rc -eq 0 ]] && grep -q "serve: stopped" serve.err; then
  ok "SIGTERM stops the server ($(tail -1 serve.err))"
else
  bad "stop: rc=$rc $(tail -2 serve.err)"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
