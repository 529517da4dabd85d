#!/usr/bin/env bash
# test_trusted_symbols.sh LIBEML_TRUSTED.a - the build-time check that the
# trusted library (what the enclave program is made of) calls no file,
# directory, network, process, printing or exit function: every undefined
# symbol of every object in the archive is compared with a deny-list.
# String formatting into memory (snprintf, vsnprintf) is allowed; reading
# and writing the channel fd (read, write, recv, close) is the boundary
# itself and is allowed.
set -u
lib=$1
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok: $1"; }
bad() { failed=$((failed + 1)); echo "FAIL: $1"; }

deny=(
  # files and directories
  open open64 openat openat64 __open_2 __open64_2 __openat_2 __openat64_2
  fopen fopen64 freopen freopen64 fdopen creat creat64 opendir fdopendir
  unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir remove
  truncate ftruncate link symlink chmod chown
  # network
  socket socketpair connect bind listen accept accept4
  # processes
  execve execv execvp execvpe execl execlp execle fexecve system popen
  fork vfork posix_spawn posix_spawnp clone clone3 ptrace kill dlopen
  # raw system calls (the sandbox's self-test is platform code)
  syscall
  # printing (library code never prints)
  printf vprintf fprintf vfprintf dprintf vdprintf sprintf vsprintf puts
  fputs putchar fputc putc fwrite perror
  __printf_chk __vprintf_chk __fprintf_chk __vfprintf_chk __sprintf_chk
  __vsprintf_chk __dprintf_chk
  # exiting (library code returns an eml_status)
  exit _exit _Exit quick_exit
)

if [[ ! -f $lib ]]; then
  bad "no such library: $lib"
  echo "$passed passed, $failed failed"
  exit 1
fi
nm_out=$(nm -A --undefined-only "$lib" 2>&1)
if [[ $? -ne 0 ]]; then
  bad "nm failed on $lib: $nm_out"
  echo "$passed passed, $failed failed"
  exit 1
fi
# Lines look like "lib.a:object.o:                 U symbol".
refs=$(echo "$nm_out" | awk 'NF >= 3 && $(NF-1) == "U" {
  split($1, p, ":"); print p[2], $NF }' | sed 's/@.*//' | sort -u)
objects=$(echo "$refs" | awk '{print $1}' | sort -u | wc -l)
symbols=$(echo "$refs" | awk '{print $2}' | sort -u | wc -l)
if [[ $objects -gt 0 && $symbols -gt 0 ]]; then
  ok "read $objects objects of $(basename "$lib"): $symbols distinct undefined symbols"
else
  bad "no undefined symbols found in $lib (nm output format?)"
fi
echo "checked against: ${deny[*]}"
declare -A denied
for s in "${deny[@]}"; do denied[$s]=1; done
offending=0
while read -r obj sym; do
  [[ -z $obj ]] && continue
  if [[ -n ${denied[$sym]:-} ]]; then
    bad "$obj references $sym"
    offending=$((offending + 1))
  fi
done <<<"$refs"
if [[ $offending -eq 0 ]]; then
  ok "no trusted object references a denied symbol"
fi
# The boundary calls, shown for the record (allowed, but they are the
# whole of the trusted code's I/O).
io=$(echo "$refs" | awk '$2 ~ /^(read|write|recv|send|close|mmap|munmap|mlock|munlock|mprotect|madvise)$/ {print $1 ":" $2}' | tr '\n' ' ')
echo "system calls used by trusted objects (allowed): $io"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
