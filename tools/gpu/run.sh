#!/usr/bin/env bash
# On the GPU host, from the repository root: runs a program that `tools/gpu.sh bundle` published into .gpu/apps on the
# .NET runtime packed beside it (the host has no .NET).  Adapted from the team's shared GPU run script.
#   bash tools/gpu/run.sh NAME [ARGS...]     runs .gpu/apps/NAME/NAME (GPU_APPS=DIR: DIR/NAME/NAME instead; GPU_VARIANT=V:
#                                            a copy of it with .gpu/var/V/NAME's assemblies laid over, see gpu.sh bundle)
#   bash tools/gpu/run.sh --unpack           only unpacks the runtime
# The runtime is unpacked once into /tmp/dotnet-gpu-VERSION; into a fresh folder renamed into place, so processes
# started at once never see a half-unpacked runtime.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle=$root/.gpu
ver=$(cat "$bundle/dotnet.version" 2>/dev/null || echo unknown)
export DOTNET_ROOT=/tmp/dotnet-gpu-$ver DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
if [ ! -x "$DOTNET_ROOT/dotnet" ]; then
  tmp=$(mktemp -d "$DOTNET_ROOT.XXXXXX")
  tar xJf "$bundle/dotnet.txz" -C "$tmp"
  mv -T "$tmp" "$DOTNET_ROOT" 2>/dev/null || rm -rf "$tmp" # another process was first
fi
export PATH="$DOTNET_ROOT:$PATH"
[ "${1:-}" = --unpack ] && exit 0
name=${1:?usage: run.sh NAME [ARGS...]}; shift
apps=${GPU_APPS:-$bundle/apps}
case $apps in /*) ;; *) apps=$root/$apps ;; esac
if [ -n "${GPU_VARIANT:-}" ]; then
  over=$bundle/var/$GPU_VARIANT/$name
  [ -d "$over" ] || { echo "run.sh: no variant $GPU_VARIANT of $name in $bundle/var" >&2; exit 2; }
  dir=$(mktemp -d "/tmp/gpu-var-$GPU_VARIANT.XXXXXX")
  cp -r "$apps/$name" "$dir/" && cp "$over"/*.dll "$dir/$name/"
  apps=$dir
fi
exec "$apps/$name/$name" "$@"
