#!/usr/bin/env bash
# Package smoke test: pack FlashDmAttn (+ FlashDmAttn.Kernels) into a temporary local feed, create a fresh console
# project that references the package by version, run one small forward on the CPU backend and check the result.
# Exits non-zero on any failure. Builds only Core and Kernels (Release); the tests, bench and demo are not built.
#   bash tools/package-smoke.sh            (KEEP=1 keeps the temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
start=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/flashdmattn-smoke.XXXXXX")
if [[ "${KEEP:-0}" != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
feed=$work/feed app=$work/app
mkdir -p "$feed" "$app"

echo "== pack into $feed"
dotnet pack FlashDmAttn.Core/FlashDmAttn.Core.csproj -c Release -o "$feed" -v quiet -nologo
dotnet pack FlashDmAttn.Kernels/FlashDmAttn.Kernels.csproj -c Release --no-build -o "$feed" -v quiet -nologo
ls "$feed"
nupkg=$(ls "$feed"/FlashDmAttn.[0-9]*.nupkg)
version=$(basename "$nupkg" .nupkg); version=${version#FlashDmAttn.}
for f in FlashDmAttn.$version.nupkg FlashDmAttn.$version.snupkg \
         FlashDmAttn.Kernels.$version.nupkg FlashDmAttn.Kernels.$version.snupkg; do
  [[ -f "$feed/$f" ]] || { echo "FAIL: $f was not produced"; exit 1; }
done
# The package carries its docs, readme and licence.
has() { unzip -l "$feed/$1" | grep " $2\$" >/dev/null || { echo "FAIL: $2 missing from $1"; exit 1; }; }
for p in FlashDmAttn:Core FlashDmAttn.Kernels:Kernels; do
  id=${p%%:*} asm=FlashDmAttn.${p#*:}
  for f in lib/net10.0/$asm.dll lib/net10.0/$asm.xml README.md LICENSE; do has "$id.$version.nupkg" "$f"; done
  has "$id.$version.snupkg" "lib/net10.0/$asm.pdb"
done

# The app restores from the local feed plus this machine's own sources (the user-level NuGet.Config is not
# cleared). Packages are extracted into a private folder so that a package rebuilt with the same version is never
# taken from a stale cache; the machine's global folder serves as a fallback for everything else (ILGPU, ...).
global=$(dotnet nuget locals global-packages --list | sed -n 's/^global-packages: *//p')
cat > "$app/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <config>
    <add key="globalPackagesFolder" value="$work/packages" />
  </config>
  <packageSources>
    <add key="flashdmattn-local" value="$feed" />
  </packageSources>
  <fallbackPackageFolders>
    <add key="machine-global" value="$global" />
  </fallbackPackageFolders>
</configuration>
XML

echo "== new console app in $app, package FlashDmAttn $version"
cd "$app"
dotnet new console -n SmokeApp -o . --framework net10.0 >/dev/null
dotnet add package FlashDmAttn --version "$version" >/dev/null
cat > Program.cs <<'CS'
using FlashDmAttn;

const int B = 1, L = 37, H = 2, D = 32;
var rng = new Random(1);
float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

var attn = FlashDmAttention.Auto("cpu");
var acc = attn.Accelerator;
float[] vHost = Rand(B * L * H * D);
using var q = DeviceTensor<float>.FromHost(acc, Rand(B * L * H * D), B, L, H, D);
using var k = DeviceTensor<float>.FromHost(acc, Rand(B * L * H * D), B, L, H, D);
using var v = DeviceTensor<float>.FromHost(acc, vHost, B, L, H, D);

using var output = attn.Forward(q, k, v);
float[] o = output.ToHost();
long[] shape = output.Shape.ToArray();
Console.WriteLine($"backend cpu, output [{string.Join(", ", shape)}]");

if (!shape.SequenceEqual(new long[] { B, L, H, D })) { Console.Error.WriteLine("FAIL: wrong output shape"); return 1; }
if (o.Length != B * L * H * D) { Console.Error.WriteLine($"FAIL: {o.Length} output elements"); return 1; }
if (!o.All(float.IsFinite)) { Console.Error.WriteLine("FAIL: non-finite output"); return 1; }
// Each output row is a convex combination of the rows of v: inside v's range.
float lo = vHost.Min() - 1e-4f, hi = vHost.Max() + 1e-4f;
if (o.Any(x => x < lo || x > hi)) { Console.Error.WriteLine("FAIL: output outside the range of v"); return 1; }
Console.WriteLine("package smoke: OK");
return 0;
CS
dotnet run -c Release
echo "== package smoke passed in $((SECONDS - start)) s"
