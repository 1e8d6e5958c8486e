#!/usr/bin/env bash
# Packs the test and bench programs for the GPU host (../shared/gpu/bundle.sh), then drops what only
# BenchmarkDotNet's CPU mode loads (Roslyn, disassemblers, tracing) so the tree + .gpu stays under 64 MiB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
../shared/gpu/bundle.sh FlashDmAttn.Tests FlashDmAttn.Bench
cp FlashDmAttn.Bench/compare.py .gpu/
( cd .gpu/apps/FlashDmAttn.Bench && rm -f libcapstone.so Microsoft.CodeAnalysis*.dll Microsoft.Diagnostics.Tracing.TraceEvent.dll \
    Iced.dll Microsoft.Diagnostics.Runtime.dll Gee.External.Capstone.dll )
du -sh .gpu
