#!/usr/bin/env bash
# The main job. Until `vkgrad train` exists: list the Vulkan devices and run the benchmarks.
# Extra arguments go to `vkgrad bench` (e.g. --json, --filter matmul, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin vkgrad
./target/release/vkgrad devices
./target/release/vkgrad bench "$@"
