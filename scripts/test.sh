#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh), then runs every test of the
# workspace on the Vulkan device (lavapipe where there is no GPU), and the op property tests a
# second time with the GPU kernel variants forced (VKGRAD_KERNELS=gpu), so both variant
# families are verified on any machine. VKGRAD_PROPTEST_CASES=N runs N cases per property.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace
VKGRAD_KERNELS=gpu cargo test -p vkgrad-tests
