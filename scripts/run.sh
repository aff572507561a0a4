#!/usr/bin/env bash
# The main job: train an encoder with SimCLR on the shipped digits (`vkgrad train`), evaluate it
# against raw pixels, and write the run (metrics, checkpoint, plots) under runs/.
# Extra arguments go to `vkgrad train` (e.g. --method supcon, --data mnist10k, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --features vkgrad/mpi -p vkgrad -p vkgrad-plugin-template -p vkgrad-plugin-contrastive \
    -p vkgrad-plugin-encoders -p vkgrad-plugin-augment
./target/release/vkgrad devices
./target/release/vkgrad train "$@"
