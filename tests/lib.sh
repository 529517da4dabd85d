# lib.sh - what the end-to-end shell tests share.  Sourced after $tmp (a
# scratch directory) is set.
#   ok MSG / bad MSG        count a check and print it
#   expect_error NAME NEEDLE CMD...
#   mkidx SRC.gz DST COUNT ITEMBYTES NDIMS [FIRST]
#   hexof, windows, leaks   the canary checks' byte searches
#   num FILE KEY / str FILE KEY   members of a flat JSON object
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok: $1"; }
bad() { failed=$((failed + 1)); echo "FAIL: $1"; }

# expect_error NAME NEEDLE CMD... : exit non-zero (not a signal), exactly
# one stderr line starting "enclaveml: error:" and containing NEEDLE, and
# nothing on stdout.
expect_error() {
  local name=$1 needle=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [[ $rc -ne 0 && $rc -lt 128 && $lines -eq 1 ]] &&
     grep -q '^enclaveml: error: ' "$tmp/err" &&
     grep -qF -- "$needle" "$tmp/err" && [[ ! -s "$tmp/out" ]]; then
    ok "$name ($(cat "$tmp/err"))"
  else
    bad "$name: rc=$rc, stdout: $(head -c 200 "$tmp/out"), stderr: $(head -c 600 "$tmp/err")"
  fi
}

# mkidx SRC.gz DST COUNT ITEMBYTES NDIMS [FIRST]: records [FIRST,
# FIRST+COUNT) of a gzipped IDX file (28x28 images or labels) as a raw IDX
# file.
mkidx() {
  local n=$3 first=${6:-0} hdr skip
  if [[ $5 -eq 3 ]]; then
    hdr=$(printf '\\x00\\x00\\x08\\x03\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x1c\\x00\\x00\\x00\\x1c' \
      $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))
    skip=16
  else
    hdr=$(printf '\\x00\\x00\\x08\\x01\\x%02x\\x%02x\\x%02x\\x%02x' \
      $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))
    skip=8
  fi
  { printf "$hdr"
    gzip -dc "$1" | tail -c +$((skip + first * $4 + 1)) | head -c $((n * $4)); } >"$2"
}

# port_base: the first of a few consecutive loopback ports for nodes a test
# starts by hand, below the kernel's ephemeral range (32768 and up), where
# no outgoing connection of this machine can be holding one.
port_base() {
  echo $((20000 + RANDOM % 12000))
}

# Lowercase hex of a file, one line.
hexof() { od -An -v -tx1 "$1" | tr -d ' \n'; }
# windows FILE OFFSET LENGTH WIDTH STEP: hex of every WIDTH-byte window of
# FILE[OFFSET, OFFSET+LENGTH) starting STEP bytes apart, one per line.
windows() {
  local h i
  h=$(tail -c +$(($2 + 1)) "$1" | head -c "$3" | od -An -v -tx1 | tr -d ' \n')
  for ((i = 0; i + $4 <= $3; i += $5)); do echo "${h:2*i:2*$4}"; done
}
# leaks PATTERNS DIR [EXCLUDED...]: the files under DIR (but EXCLUDED) whose
# bytes contain any of the hex windows in PATTERNS.
leaks() {
  local pat=$1 dir=$2 f x skip
  shift 2
  find "$dir" -type f | sort | while read -r f; do
    skip=0
    for x in "$@"; do [[ $f == "$x" ]] && skip=1; done
    [[ $skip -eq 1 ]] && continue
    if hexof "$f" | grep -qF -f "$pat"; then echo "$f"; fi
  done
}

# num FILE KEY: a number member of a flat JSON object; str FILE KEY: a
# string member.
num() { sed -n "s/.*\"$2\":\\([-0-9.e+]*\\).*/\\1/p" "$1"; }
str() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$1"; }
