#!/usr/bin/env bash
# `cargo` as `scripts/mutants.sh` hands it to cargo-mutants: every command passes through, and
# after a `cargo test` that passed, the mutated contrastive plugin must also pass the whole
# `vkgrad verify` harness (all its components, options sampled) — the command a plugin author
# runs. cargo-mutants counts a non-zero exit as the mutant caught.
set -uo pipefail
real=${VKGRAD_REAL_CARGO:?set by scripts/mutants.sh}
# cargo-mutants tests the mutated package; the plugin's tests live in the engine's package
# (its `--test-package` did not take another package here), so its test runs are pointed there.
args=()
for a in "$@"; do
    if [[ "${1:-}" == test && " $* " != *" --no-run "* && "$a" == --package=vkgrad-plugin-contrastive* ]]; then
        a=--package=vkgrad
    fi
    args+=("$a")
done
"$real" "${args[@]}" || exit $?
# The build phase (`cargo test --no-run`) must build the plugin too, so that a mutant that does
# not compile counts as unviable — not as caught by a test whose plugin build failed.
if [[ "${1:-}" == test && " $* " == *" --no-run "* ]]; then
    "$real" build -q -p vkgrad -p vkgrad-plugin-contrastive || exit $?
fi
if [[ "${1:-}" == test && " $* " != *" --no-run "* ]]; then
    target=${CARGO_TARGET_DIR:-target}
    "$target/debug/vkgrad" verify "$target/debug/libvkgrad_plugin_contrastive.so" --cases 32 \
        > verify.log 2>&1 || { tail -5 verify.log; exit 1; }
fi
