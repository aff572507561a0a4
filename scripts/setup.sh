#!/usr/bin/env bash
# Installs what vkgrad needs on a fresh Debian machine, idempotently, and prints the
# environment (SHADERC_LIB_DIR) that the build needs. Source it or run it; both work.
#
# Why the merged archive: Debian's libshaderc_combined.a holds only shaderc's own objects,
# not glslang or SPIRV-Tools, so the vulkano-shaders proc-macro fails to load and rustc
# reports "can't find crate for `vulkano_shaders`". We merge the real pieces into one
# archive outside the sources and point shaderc-sys at it.
set -euo pipefail

# OpenMPI + libclang: the `mpi` feature (data-parallel training, docs/distributed.md; the
# `mpi` crate's bindings are generated with bindgen, which needs libclang).
PKGS="mesa-vulkan-drivers libvulkan1 libvulkan-dev vulkan-tools libshaderc-dev glslang-dev spirv-tools glslc openmpi-bin libopenmpi-dev libclang-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

L=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHADERC_DIR="$ROOT/.cache/shaderc"   # .cargo/config.toml points SHADERC_LIB_DIR here
if [ ! -f "$SHADERC_DIR/libshaderc_combined.a" ] || [ "$SHADERC_DIR/libshaderc_combined.a" -ot "$L/libshaderc_combined.a" ]; then
  echo "setup: merging shaderc + glslang + SPIRV-Tools into $SHADERC_DIR" >&2
  mkdir -p "$SHADERC_DIR"
  tmp="$SHADERC_DIR/libshaderc_combined.a.tmp"
  rm -f "$tmp"
  { echo "create $tmp"
    for a in libshaderc_combined.a libglslang.a libMachineIndependent.a libGenericCodeGen.a \
             libOSDependent.a libOGLCompiler.a libSPIRV.a libHLSL.a \
             libglslang-default-resource-limits.a libSPIRV-Tools-opt.a libSPIRV-Tools.a; do
      [ -f "$L/$a" ] && echo "addlib $L/$a"
    done
    echo save; echo end; } | ar -M
  mv "$tmp" "$SHADERC_DIR/libshaderc_combined.a"
fi
export SHADERC_LIB_DIR="$SHADERC_DIR"
echo "setup: ok (SHADERC_LIB_DIR=$SHADERC_DIR)" >&2
# Data-parallel runs: `mpirun -np K ./target/release/vkgrad train ...`; as root OpenMPI also
# needs --allow-run-as-root, in containers OMPI_MCA_btl_vader_single_copy_mechanism=none
# (docs/distributed.md).
