#!/usr/bin/env bash
# Regenerates tests/data/darknet-expected.tsv: parameter counts and FLOPs
# of Darknet's own cfg files as Darknet itself computes them
# (scripts/darknet-oracle.c).  Needs network access to Debian's archive
# (apt-get download darknet); run by hand, never by the build or tests.
#
#   scripts/darknet-oracle.sh > tests/data/darknet-expected.tsv
# and also writes tests/data/darknet-small.{weights,in,out}: Darknet's own
# save of tests/data/darknet-small.cfg with set values, an input, and
# Darknet's inference output for it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download darknet >/dev/null 2>&1
dpkg -x darknet_*.deb x
mkdir stub
echo 'void eml_oracle_stub(void) {}' >stub/s.c
for l in highgui videoio imgcodecs core; do
  cc -shared -fPIC -o "stub/libopencv_$l.so.406" \
    -Wl,-soname,"libopencv_$l.so.406" stub/s.c
done
lib=$tmp/x/usr/lib/darknet
cc -O1 -I"$lib/include" "$here/scripts/darknet-oracle.c" -o oracle \
  -L"$lib" -ldarknet -Lstub -Wl,--allow-shlib-undefined
# batch=1: Darknet allocates every layer's outputs for a whole batch, and
# the batch changes no count.
mkdir cfg
for f in resnet18 resnet34 resnet50 resnet101 darknet19 darknet cifar \
  cifar.test; do
  sed -e 's/^batch=.*/batch=1/' -e 's/^subdivisions=.*/subdivisions=1/' \
    "$tmp/x/usr/share/darknet/cfg/$f.cfg" >"cfg/$f.cfg"
done
echo "# Darknet $(dpkg-deb -f darknet_*.deb Version), by scripts/darknet-oracle.sh"
LD_LIBRARY_PATH=$tmp/stub:$lib ./oracle cfg/*.cfg 2>/dev/null
LD_LIBRARY_PATH=$tmp/stub:$lib ./oracle --fixture \
  "$here/tests/data/darknet-small.cfg" "$here/tests/data/darknet-small" \
  >/dev/null 2>&1
