#!/usr/bin/env bash
# Fuzzes Pilotfish's parsers of outside input with cargo-fuzz (libFuzzer),
# each target for a bounded time, one after another, then minimises the
# corpus. Not part of the default test run: the corpus it keeps is replayed
# by `cargo test --test fuzz_corpus` (tests/fuzz_corpus.rs), which is.
#
#   scripts/fuzz.sh                   # every target, 60 s each
#   scripts/fuzz.sh path headers      # only these
#   FUZZ_SECONDS=600 scripts/fuzz.sh config
#
# Per target NAME (fuzz/fuzz_targets/NAME.rs; the checks are fuzz/src/NAME.rs):
#   fuzz/seeds/NAME/        hand-written inputs, read, never changed
#   fuzz/corpus/NAME/       what the fuzzer found interesting; new inputs go
#                           here and `cargo fuzz cmin` keeps it minimal
#   fuzz/artifacts/NAME/    failing inputs (crash-*, timeout-*, oom-*), the
#                           smallest for each place a check failed; fix the
#                           code, then move the input to
#                           fuzz/regressions/NAME/ so the tests replay it
#   fuzz/dicts/NAME.dict    keywords for the mutator, when there is one
#
# Settings (environment):
#   FUZZ_SECONDS    time per target (default 60)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang
#                   (default 10)
#   FUZZ_MAX_LEN    largest input tried, in bytes (default 4096; the
#                   config target takes at least its largest seed)
#   FUZZ_FORK       1 (default): keep fuzzing after a failure and collect
#                   every failing input (libFuzzer -fork=1
#                   -ignore_crashes=1); 0: stop at the first one
#   FUZZ_SANITIZER  none (default) or address; see below
#   FUZZ_CMIN       1 (default): minimise the corpus afterwards (`cargo fuzz
#                   cmin`, by edges reached); 0: don't
#   FUZZ_KEEP_LOGS  a folder to keep each target's libFuzzer log in
#
# Toolchain. This runs on stable Rust: cargo-fuzz's coverage
# instrumentation (-Cpasses=sancov-module, -Cllvm-args=...) is made of
# stable flags, and only its default AddressSanitizer needs a nightly flag
# (-Zsanitizer=address). So targets are built with `--sanitizer none`;
# Pilotfish forbids unsafe code, so what ASan adds is checking the
# dependencies' unsafe code. To get it on stable anyway, FUZZ_SANITIZER=
# address sets RUSTC_BOOTSTRAP=1 (which lets stable rustc take -Z flags;
# stable ships the ASan runtime) and builds in its own target folder
# (fuzz/target/asan), because cargo caches the failed "-Z on stable"
# probe in fuzz/target/.rustc_info.json without RUSTC_BOOTSTRAP in the
# key. Nightly's --build-std and --careful are not available either way.

set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
timeout=${FUZZ_TIMEOUT:-10}
max_len=${FUZZ_MAX_LEN:-4096}
fork=${FUZZ_FORK:-1}
sanitizer=${FUZZ_SANITIZER:-none}
cmin=${FUZZ_CMIN:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

build=(--sanitizer "$sanitizer")
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$root/fuzz/target/$triple/release
case $sanitizer in
    none) ;;
    address)
        export RUSTC_BOOTSTRAP=1
        build+=(--target-dir "$root/fuzz/target/asan")
        bin_dir=$root/fuzz/target/asan/$triple/release
        ;;
    *)
        echo "fuzz.sh: FUZZ_SANITIZER must be none or address" >&2
        exit 2
        ;;
esac

cd fuzz
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz.sh: building ${targets[*]}" >&2
for target in "${targets[@]}"; do
    cargo fuzz build "${build[@]}" "$target"
done

# Runs one input through the target once: where it fails ($at: the place
# that panicked, or libFuzzer's kind of failure) and what it said.
replay() {
    local out
    out=$("$bin_dir/$target" -timeout="$timeout" -rss_limit_mb=2048 "$1" 2>&1 || true)
    at=$(grep -m1 -oE 'panicked at [^ ]+' <<<"$out" | sed 's/panicked at //; s/:$//' || true)
    message=$(grep -m1 -A1 'panicked at' <<<"$out" | tail -1 | cut -c1-160 || true)
    if [ -z "$at" ]; then
        at=$(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+' <<<"$out" || true)
        at=${at:-passes now}
        message=$at
    fi
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
summary=()
for target in "${targets[@]}"; do
    corpus=corpus/$target
    artifacts=artifacts/$target
    mkdir -p "$corpus" "$artifacts" "seeds/$target"
    before=$(ls "$artifacts")
    len=$max_len
    largest=$(find "seeds/$target" "$corpus" -type f -printf '%s\n' | sort -n | tail -1)
    if [ -n "$largest" ] && [ "$largest" -gt "$len" ]; then
        len=$largest
    fi
    args=(-max_total_time="$seconds" -timeout="$timeout" -max_len="$len"
        -rss_limit_mb=2048 -print_final_stats=1)
    if [ "$fork" = 1 ]; then
        args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    if [ -f "dicts/$target.dict" ]; then
        args+=(-dict="dicts/$target.dict")
    fi
    echo "fuzz.sh: $target for ${seconds}s" >&2
    log=$logs/$target.log
    started=$(date +%s)
    # New inputs go to the first folder; the seeds are only read.
    status=0
    cargo fuzz run "${build[@]}" "$target" "$corpus" "seeds/$target" -- "${args[@]}" \
        >"$log" 2>&1 || status=$?
    took=$(($(date +%s) - started))

    # Executions: the last libFuzzer status line (`#RUNS ...`; in fork
    # mode `#RUNS: cov: ...`), or the final stats.
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
    if [ -z "$runs" ]; then
        runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    new=$(comm -13 <(echo "$before" | sort) <(ls "$artifacts" | sort) | grep -v '^$' || true)
    crashes=$(echo "$new" | grep -c . || true)

    if [ "$cmin" = 1 ]; then
        # Edges only (not hit counts): the inputs that reach code no other
        # input reaches, which keeps the corpus small.
        cargo fuzz cmin "${build[@]}" "$target" "$corpus" -- -use_counters=0 \
            -timeout="$timeout" -rss_limit_mb=2048 >"$logs/$target.cmin.log" 2>&1 ||
            { echo "fuzz.sh: $target: cmin failed, corpus left as it was:"; tail -20 "$logs/$target.cmin.log"; } >&2
    fi
    files=$(find "$corpus" -type f | wc -l)
    kib=$(find "$corpus" -type f -printf '%s\n' | awk '{ n += $1 } END { printf "%.1f", n / 1024 }')
    line="$target: ${took}s, ${runs:-?} runs, corpus $files files ($kib KiB)"
    line="$line, $crashes failing inputs"
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        line="$line, fuzzer exited $status (log below)"
        tail -30 "$log" >&2
    fi
    summary+=("$line")
    # A bug found once is found again and again: keep the smallest new
    # input for each place a check failed that no earlier input fails at,
    # with what it said.
    declare -A known=() smallest=() said=()
    for artifact in $before; do
        replay "$artifacts/$artifact"
        known[$at]=1
    done
    kinds=0
    for artifact in $new; do
        replay "$artifacts/$artifact"
        keep=${smallest[$at]:-}
        size=$(stat -c %s "$artifacts/$artifact")
        if [ -n "${known[$at]:-}" ]; then
            rm -f "$artifacts/$artifact" # as an input already kept fails
        elif [ -z "$keep" ] || [ "$size" -lt "$(stat -c %s "$artifacts/$keep")" ]; then
            if [ -n "$keep" ]; then rm -f "$artifacts/$keep"; else kinds=$((kinds + 1)); fi
            smallest[$at]=$artifact
            said[$at]=$message
        else
            rm -f "$artifacts/$artifact"
        fi
    done
    summary[-1]="${summary[-1]} ($kinds new kinds)"
    for at in "${!smallest[@]}"; do
        summary+=("    $at: ${said[$at]}")
        summary+=("      fuzz/$artifacts/${smallest[$at]}")
    done
    unset known smallest said
    if [ -n "${FUZZ_KEEP_LOGS:-}" ]; then
        mkdir -p "$FUZZ_KEEP_LOGS"
        cp "$log" "$FUZZ_KEEP_LOGS/"
    fi
done

echo
printf '%s\n' "${summary[@]}"
echo
echo "Replay a failing input:  cd fuzz && cargo fuzz run --sanitizer $sanitizer NAME artifacts/NAME/FILE"
echo "Minimise it:             cd fuzz && cargo fuzz tmin --sanitizer $sanitizer NAME artifacts/NAME/FILE"
