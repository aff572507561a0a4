#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh), then runs every test of the
# workspace on the Vulkan device (lavapipe where there is no GPU). VKGRAD_PROPTEST_CASES=N
# runs N cases per property instead of the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace
