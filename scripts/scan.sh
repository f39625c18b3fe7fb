#!/usr/bin/env bash
# Scan tlsnet's TLS defaults with testssl.sh (and sslscan where installed).
#
#   scripts/scan.sh [OUTDIR]        (default OUTDIR: /tmp/tlsnet-scan)
#
# Targets, all with tlsnet's default settings (only the certificate differs):
#   cli  `tlsnet serve` (src/cli/main.ts) with its generated ECDSA P-256 dev cert,
#        or scripts/scan-server.ts when the CLI does not start
#   rsa  scripts/scan-server.ts with an RSA-2048 certificate (RSA suites become usable)
# Install the scanners with: apt-get install -y testssl.sh sslscan
# Writes OUTDIR/<target>.testssl.{json,log}, OUTDIR/<target>.sslscan.txt and
# OUTDIR/summary.txt. Exit status: 0 when scans ran (findings are reported, not fatal).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-/tmp/tlsnet-scan}
mkdir -p "$OUT"
export TLSNET_HOME="$OUT/tlsnet-home" # the CLI's dev CA goes here, not into ~
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
SSLSCAN=$(command -v sslscan || true)
if [[ -z "$TESTSSL" && -z "$SSLSCAN" ]]; then
  echo "neither testssl.sh nor sslscan is installed: apt-get install -y testssl.sh sslscan" >&2
  exit 1
fi

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_listening PORT LOG: until something accepts on 127.0.0.1:PORT (30 s).
wait_listening() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# start_server TARGET PORT: the CLI (falling back to scan-server.ts) or scan-server.ts.
start_server() {
  local target=$1 port=$2 log="$OUT/$1.server.log"
  if [[ "$target" == cli && -f src/cli/main.ts ]]; then
    node --import tsx src/cli/main.ts serve --addr "127.0.0.1:$port" >"$log" 2>&1 &
    SERVER_PID=$!
    if wait_listening "$port"; then
      echo "server: tlsnet serve (src/cli/main.ts), default settings, on 127.0.0.1:$port"
      return 0
    fi
    echo "tlsnet serve did not start (see $log); using scripts/scan-server.ts" >&2
    stop_server
  fi
  local keytype=ec-p256
  [[ "$target" == rsa ]] && keytype=rsa-2048
  node --import tsx scripts/scan-server.ts --addr "127.0.0.1:$port" --key-type "$keytype" >"$log" 2>&1 &
  SERVER_PID=$!
  wait_listening "$port" || { echo "scan server did not start: $(cat "$log")" >&2; exit 1; }
  echo "server: scripts/scan-server.ts ($keytype), default settings, on 127.0.0.1:$port"
}

# summarize TARGET: one readable block from the testssl JSON.
summarize() {
  local json="$OUT/$1.testssl.json"
  [[ -s "$json" ]] || return 0
  jq -r '
    def pick($ids): map(select(.id as $i | $ids | index($i))) | .[] | "  \(.id): \(.finding) [\(.severity)]";
    "protocols:", pick(["SSLv2","SSLv3","TLS1","TLS1_1","TLS1_2","TLS1_3","NPN","ALPN"]),
    "cipher categories:", (map(select(.id | startswith("cipherlist_"))) | .[] | "  \(.id): \(.finding) [\(.severity)]"),
    "forward secrecy:", pick(["FS","FS_ciphers","FS_ECDHE_curves","PFS","PFS_ciphers","PFS_ECDHE_curves","FS_TLS12_sig_algs"]),
    "server preferences:", pick(["cipher_order","protocol_negotiated","cipher_negotiated","TLS_session_ticket","TLS_extensions","sessionresumption_ticket","sessionresumption_ID"]),
    "vulnerabilities:", pick(["heartbleed","CCS","ticketbleed","ROBOT","secure_renego","secure_client_renego","CRIME_TLS","BREACH","POODLE_SSL","fallback_SCSV","SWEET32","FREAK","DROWN","LOGJAM","LOGJAM-common_primes","BEAST","BEAST_CBC_TLS1","LUCKY13","winshock","RC4"]),
    "rated worse than OK/INFO (excluding the untrusted dev certificate):",
      (map(select((.severity | IN("OK","INFO","DEBUG") | not)
                  and (.id | test("^(cert_|chain_|intermediate_|trust|caa|DNS_CAArecord|OCSP|ocsp|crl|scanProblem|engine_problem|overall_grade|grade_cap)") | not)))
       | if length == 0 then ["  none"] else map("  \(.id): \(.finding) [\(.severity)]") end | .[])
  ' "$json"
}

: >"$OUT/summary.txt"
for target in cli rsa; do
  port=$(free_port)
  # Not in a pipeline: start_server must set SERVER_PID in this shell.
  start_server "$target" "$port" >"$OUT/$target.start.txt"
  tee -a "$OUT/summary.txt" <"$OUT/$target.start.txt"
  if [[ -n "$TESTSSL" ]]; then
    rm -f "$OUT/$target.testssl.json" "$OUT/$target.testssl.log"
    echo "running testssl.sh against 127.0.0.1:$port ($target) ..."
    "$TESTSSL" --quiet --color 0 --warnings batch --ip one \
      --jsonfile "$OUT/$target.testssl.json" --logfile "$OUT/$target.testssl.log" \
      "127.0.0.1:$port" >/dev/null 2>&1 || true
    {
      echo "== testssl.sh $("$TESTSSL" --version 2>/dev/null | grep -o 'testssl *[0-9.a-z-]*' | head -1 | tr -s ' '): $target"
      summarize "$target"
    } | tee -a "$OUT/summary.txt"
  fi
  if [[ -n "$SSLSCAN" ]]; then
    sslscan --no-colour --show-sigs "127.0.0.1:$port" >"$OUT/$target.sslscan.txt" 2>&1 || true
    {
      echo "== sslscan: $target"
      sed -n '/SSL\/TLS Protocols/,/^$/p;/Supported Server Cipher/,/^$/p;/TLS renegotiation/,/^$/p;/Heartbleed/,/^$/p' \
        "$OUT/$target.sslscan.txt"
    } | tee -a "$OUT/summary.txt"
  fi
  stop_server
  grep -h "stopping:" "$OUT/$target.server.log" 2>/dev/null | tee -a "$OUT/summary.txt" || true
done
echo "full reports in $OUT; summary in $OUT/summary.txt"
