#!/usr/bin/env bash
# Mutation score of the contrastive plugin: how many planted bugs its proofs catch.
# `plugins/contrastive` has no tests of its own; its proof is the engine's tests that load it
# (`engine/tests/contrastive.rs`, `loss_cli.rs`) and `vkgrad verify` of the built plugin (see
# scripts/mutants-cargo.sh). The sample is every 15th mutant cargo-mutants generates
# (round-robin shard 0/15 of ~550); pass another shard (e.g. `scripts/mutants.sh 3/15`) to
# check a different sample. Outside CI: about a minute per mutant on 2 cores, plus one build.
# Needs cargo-mutants (`cargo install cargo-mutants --locked`); results in mutants.out/.
# The score and every survivor are in docs/verification.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shard=${1:-0/15}
VKGRAD_REAL_CARGO=$(command -v cargo)
export VKGRAD_REAL_CARGO
# cargo-mutants runs $CARGO; called as `cargo mutants` cargo would set it to itself.
CARGO="$PWD/scripts/mutants-cargo.sh" cargo-mutants mutants \
    -p vkgrad-plugin-contrastive \
    --shard "$shard" --sharding round-robin \
    --timeout 600 \
    -- --test contrastive --test loss_cli
