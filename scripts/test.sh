#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh), then runs every test of the
# workspace on the Vulkan device (lavapipe where there is no GPU), and the op property tests a
# second time with the GPU kernel variants forced (VKGRAD_KERNELS=gpu) and fusion off, so both
# variant families and both execution modes are verified on any machine; then `vkgrad verify` on every built-in plugin.
# VKGRAD_PROPTEST_CASES=N runs N cases per property.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --features vkgrad/mpi
# The second run also turns fusion off (elementwise ops one kernel each, as before the lazy
# graph), so every op property holds fused and unfused; tests/tests/fusion.rs compares the two.
# The property tests are named as test targets of the whole workspace (not `-p vkgrad-tests`):
# the same package selection resolves the same features, so the first run's binaries are reused
# instead of a second copy of every one being built.
prop_tests=()
for f in tests/tests/*.rs; do prop_tests+=(--test "$(basename "$f" .rs)"); done
VKGRAD_KERNELS=gpu VKGRAD_FUSION=0 cargo test --workspace --features vkgrad/mpi "${prop_tests[@]}"
# Every built-in plugin (and the template) must pass `vkgrad verify`, as any user's plugin must.
cargo build --release --features vkgrad/mpi -p vkgrad -p vkgrad-plugin-template -p vkgrad-plugin-contrastive \
    -p vkgrad-plugin-encoders -p vkgrad-plugin-augment
for p in target/release/libvkgrad_plugin_*.so; do ./target/release/vkgrad verify "$p" --cases 64; done
# ... and the harness must catch known faults injected into every built-in component (no
# blind spot).
# Augmentations at 32 cases: an option drawn away from its default in few of 16 cases
# (`channels` = 1) can go unseen there.
for p in target/release/libvkgrad_plugin_{contrastive,encoders,template}.so; do
    ./target/release/vkgrad verify "$p" --self-test --cases 16
done
./target/release/vkgrad verify target/release/libvkgrad_plugin_augment.so --self-test --cases 32
