#!/usr/bin/env bash
# Runs the libFuzzer targets (cargo fuzz, nightly) on their committed corpus, one after the other.
#
#   fuzz/run.sh short [target...]   CI: each target for FUZZ_SECONDS (30) seconds
#   fuzz/run.sh long  [target...]   opt-in: each target for FUZZ_RUNS (10^7) executions, at nice 19
#
# What libFuzzer finds on the way goes to fuzz/work/<target>/ (not committed); a crash's input to
# fuzz/artifacts/<target>/, and the run fails after the other targets had their turn. The committed
# seeds in fuzz/corpus/<target>/ are only read. Each target's figures (executions, exec/s, cov, ft,
# corpus) end up in fuzz/work/<target>.log and in the summary printed last.
# FUZZ_SANITIZER: address (the default) or none.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never

mode=${1:-short}
shift || true
case "$mode" in
  short | long) ;;
  *)
    echo "usage: fuzz/run.sh short|long [target...]" >&2
    exit 2
    ;;
esac
targets=(framed wal_record wal_recovery checkpoint config)
if [ $# -gt 0 ]; then
  targets=("$@")
fi
sanitizer=${FUZZ_SANITIZER:-address}

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Longest input per target: a few segments, a config file, a snapshot with its claims.
max_len() {
  case "$1" in
    wal_recovery | config) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

nice_cmd=()
if [ "$mode" = long ]; then
  nice_cmd=(nice -n 19)
fi

echo "== cargo fuzz build (sanitizer $sanitizer)"
start=$(date +%s)
for t in "${targets[@]}"; do
  "${nice_cmd[@]}" cargo +nightly fuzz build --sanitizer "$sanitizer" "$t"
done
echo "   built in $(($(date +%s) - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  args=(-max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "dict/$t.dict" ]; then
    args+=(-dict="dict/$t.dict")
  fi
  if [ "$mode" = long ]; then
    args+=(-runs="${FUZZ_RUNS:-10000000}")
  else
    args+=(-max_total_time="${FUZZ_SECONDS:-30}")
  fi
  cmd=(cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "work/$t" "corpus/$t" -- "${args[@]}")
  echo "== $t: ${nice_cmd[*]:+${nice_cmd[*]} }${cmd[*]}"
  t0=$(date +%s)
  if "${nice_cmd[@]}" "${cmd[@]}" >"work/$t.log" 2>&1; then
    status=ok
  else
    status="FAILED (see fuzz/work/$t.log and fuzz/artifacts/$t/)"
    failed+=("$t")
    grep -E "panicked at|^SUMMARY|Test unit written" "work/$t.log" | head -5 || true
  fi
  secs=$(($(date +%s) - t0))
  # The last status line: "#<execs> DONE cov: <n> ft: <n> corp: <files>/<size> ... exec/s: <n> rss: <n>"
  last=$(grep -E '^#[0-9]+' "work/$t.log" | tail -1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]+[0-9]+' "work/$t.log" | grep -oE '[0-9]+$' || true)
  rate=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]+[0-9]+' "work/$t.log" | grep -oE '[0-9]+$' || true)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
  corp=$(grep -oE 'corp: [0-9]+/[0-9A-Za-z]+' <<<"$last" | cut -d' ' -f2 || true)
  line="$t: ${execs:-?} execs in ${secs} s (${rate:-?} exec/s), cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?}: $status"
  echo "   $line"
  summary+=("$line")
done

echo "== fuzz summary ($mode, sanitizer $sanitizer)"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]}" >&2
  exit 1
fi
