#!/usr/bin/env bash
# npm run test:asan: build the native engine with AddressSanitizer + UBSan
# (build/native-asan/, beside the normal build) and run the whole suite on the
# native engine against it. ASan must be the first library in the process, so
# libasan is preloaded into node (LD_PRELOAD); leak detection is off because
# Node itself does not free everything at exit (set ASAN_OPTIONS to override).
# The tools the tests start (curl, openssl, gnutls, haproxy, ...) run without
# the preload, through wrappers put first in PATH: an uninstrumented curl with
# libasan preloaded hangs on its first connection. Any ASan or UBSan report
# fails the run. Extra arguments replace the default test files.
set -euo pipefail
cd "$(dirname "$0")/.."
cc="${CC:-cc}"
node --import tsx scripts/build-native.ts --asan
libasan="$("$cc" -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
  echo "test:asan: $cc has no libasan.so (install the compiler's ASan runtime, e.g. gcc's libasan)" >&2
  exit 1
fi
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/*.test.ts)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/asan"
shims="$work/bin"
mkdir "$shims"
for tool in curl openssl gnutls-cli gnutls-serv haproxy stunnel stunnel4 hitch python3 java go git getconf; do
  real="$(command -v "$tool" || true)"
  [ -z "$real" ] && [ -x "/usr/sbin/$tool" ] && real="/usr/sbin/$tool"
  [ -n "$real" ] || continue
  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" >"$shims/$tool"
  chmod +x "$shims/$tool"
done
export PATH="$shims:$PATH"
export TLSNET_ENGINE=native
export TLSNET_NATIVE_ADDON="$PWD/build/native-asan/tlsnet_native.node"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:log_path=$log}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$log}"
echo "test:asan: LD_PRELOAD=$libasan, addon $TLSNET_NATIVE_ADDON, reports to $log.*"
status=0
LD_PRELOAD="$libasan" node --import tsx --test --test-concurrency=2 --test-timeout=300000 \
  "${files[@]}" || status=$?
if compgen -G "$log.*" >/dev/null; then
  echo "test:asan: sanitizer reports:" >&2
  cat "$log".* >&2
  exit 1
fi
exit $status
