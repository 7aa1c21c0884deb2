#!/usr/bin/env bash
# Fuzzes every parser of outside input (the targets in fuzz/, see RELIABILITY.md)
# with cargo-fuzz + libFuzzer, FUZZ_SECONDS each (default 20).
#
#   ./scripts/fuzz.sh                      # every target, 20 s each
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh sdp_offer candidate
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 20)
#   FUZZ_SANITIZER  address | none (default none: the code under test is safe Rust,
#                   and ASan halves the speed; use address for a long run)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a failure (default 10)
#
# The seed corpus in fuzz/corpus/<target>/ is only read; what a run discovers goes to
# fuzz/work/corpus/<target>/ (ignored by git, kept between local runs). A crash, panic,
# failed assertion, timeout or out-of-memory is written to fuzz/artifacts/<target>/; the
# script then goes on with the other targets, prints every reproducer and exits 1.
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer, sancov passes), which RUSTC_BOOTSTRAP=1 lets stable rustc accept.
# Nothing here opens a socket, so it runs outside any network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-20}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"

source scripts/deps.sh
# cmake, gcc/g++ and pkg-config (deps.sh) also build libFuzzer itself (libfuzzer-sys).

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2
fi
export RUSTC_BOOTSTRAP=1
# One target directory per sanitizer: switching would otherwise rebuild everything.
FUZZ_FLAGS=(--release --sanitizer "$SANITIZER" --target-dir "fuzz/target/$SANITIZER")

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== build (${targets[*]}; sanitizer: $SANITIZER)"
build_start=$(date +%s)
if [ "$#" -gt 0 ]; then
  for target in "${targets[@]}"; do cargo fuzz build "${FUZZ_FLAGS[@]}" "$target"; done
else
  cargo fuzz build "${FUZZ_FLAGS[@]}"
fi
echo "   built in $(($(date +%s) - build_start)) s"

failed=()
summary=()
for target in "${targets[@]}"; do
  seeds="fuzz/corpus/$target"
  work="fuzz/work/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  log="fuzz/work/$target.log"
  mkdir -p "$work" "$artifacts"
  [ -d "$seeds" ] || { echo "error: no seed corpus $seeds" >&2; exit 2; }
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")

  echo "== fuzz $target for ${SECONDS_EACH} s"
  status=0
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "$work" "$seeds" -- \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 -print_funcs=0 "${dict[@]}" \
    >"$log" 2>&1 || status=$?

  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    summary+=("$(printf '%-14s ok      %10s execs  %s' "$target" "${runs:-?}" "${cov:-}")")
  else
    tail -40 "$log"
    reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    summary+=("$(printf '%-14s FAILED  %10s execs  %s  reproducer: %s' "$target" "${runs:-?}" "${cov:-}" "${reproducer:-none (see $log)}")")
    failed+=("$target ${reproducer:-}")
  fi
done

echo "== summary (logs in fuzz/work/)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "== ${#failed[@]} target(s) failed; reproduce with:"
  for entry in "${failed[@]}"; do
    read -r target reproducer <<<"$entry"
    echo "   RUSTC_BOOTSTRAP=1 cargo fuzz run ${FUZZ_FLAGS[*]} $target ${reproducer:-<artifact>}"
  done
  exit 1
fi
echo "== no crash in ${#targets[@]} target(s)"
