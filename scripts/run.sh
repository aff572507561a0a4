#!/usr/bin/env bash
# The main job. Until `vkgrad train` exists: list the Vulkan devices and the plugins, and run
# the benchmarks.
# Extra arguments go to `vkgrad bench` (e.g. --json, --filter matmul, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p vkgrad -p vkgrad-plugin-template -p vkgrad-plugin-contrastive
./target/release/vkgrad devices
./target/release/vkgrad plugins
./target/release/vkgrad bench "$@"
