#!/usr/bin/env bash
# long-functions.sh [LIMIT] - every C function body over LIMIT lines
# (default 120) and every source file over 800 lines, under src/ and
# include/.  Exit status 1 if any (issue 10's limits).  A function body
# runs from a '{' in column 0 to the next '}' in column 0 (the house style).
limit=${1:-120}
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files 'src/*.c' 'src/*.h' 'include/*.h'); do
  n=$(wc -l <"$f")
  if [ "$n" -gt 800 ]; then echo "$f: $n lines (file)"; bad=1; fi
  out=$(awk -v lim="$limit" -v f="$f" '
    /^\{/ { start = NR; name = prev }
    /^\}/ && start { len = NR - start - 1; if (len > lim) printf "%s:%d: %s: %d lines\n", f, start, name, len; start = 0 }
    { if ($0 ~ /\(/) prev = $0 }' "$f")
  if [ -n "$out" ]; then echo "$out"; bad=1; fi
done
exit $bad
