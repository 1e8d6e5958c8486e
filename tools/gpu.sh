#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2120,SC2119  # steps are called by name (${w[0]}_step), with or without arguments
# FlashDmAttn's one GPU tool. The GPU host has no .NET SDK: `bundle` (here, with the SDK) publishes the test and bench
# programs framework-dependent for linux-x64 and packs this machine's .NET runtime into the git-ignored .gpu/, which a
# device run carries beside the working tree (tree + .gpu under 64 MiB). Everything else runs on the GPU host, from the
# repository root, with what the tree holds: tools/gpu/run.sh (runs a bundled app), tools/gpu/peers.py (PyTorch's
# kernels on the same cases), tools/gpu/cases.txt (the named case lists), FlashDmAttn.Bench/compare.py.
#
# Here:
#   tools/gpu.sh bundle [--ptx] [--base REV] [--variant NAME=REV ...]
#       --ptx       also dump the tensor-core PTX (the explicit test DumpLaunchedKernels, a few minutes) into .gpu/ptx.tgz for `ptx`
#       --base REV  also publish the bench of commit REV into .gpu/base/ for `ab`
#       --variant NAME=REV  also the bench and tests of commit REV, as their own assemblies only (FlashDmAttn.*.dll, laid
#                   over this bundle's apps when run: the packages must be the same), into .gpu/var/NAME/; `ab` times
#                   every variant beside this bundle and the base; GPU_VARIANT=NAME runs any step on a variant's build
#   tools/gpu.sh cases [LIST]          print a case list (no LIST: the list names)
# On the GPU host (device run with carry [".gpu"]); several steps in one call: tools/gpu.sh test ptx bench all
#   test [PART...]                     the GPU test category in 7 processes at once (PART: 0..6, default all; or a
#                                      filter expression without spaces, its own process)
#   ptx [--sass [NAME]]                ptxas -v (registers, spills, stack) over the carried PTX; --sass: the SASS
#                                      around each local-memory access of tc_fwd_NAME*.ptx (default bf16_d128_dense)
#   bench [CASES] [--reps N] [--peers P|--no-peers] [--backward] [--kv-splits N]
#                                      (--backward: forward + backward, ours with dbias where a case has a bias; the
#                                      peers' without: peers.py --backward)
#                                      our bench, then peers.py on the same cases (default sdpa-flash,sdpa-cudnn,flex),
#                                      then compare.py's ratio table; default CASES: the list `default`
#   sanitize [CASES] [--backward]      compute-sanitizer memcheck and racecheck (default list `small`); --backward: the
#                                      forward + backward of each case
#   ncu [CASES] [--times] [--backward] [--kernel NAME]
#                                      Nsight Compute, full set, one launch of NAME (default the forward's) per case
#                                      (default list `profile`); --times: every kernel's duration in one forward
#                                      (default list `ktime`), or one forward + backward with --backward
#   check                              ptx, then sanitize beside test (one call before committing a kernel change)
#   coldstart [CASES]                  first forward of each case in fresh processes: kernel cache off, empty, filled,
#                                      filled with the driver's JIT cache off (default list `first-call`)
#   ab [CASES] [--repeat N] [--peers P|--no-peers] [--backward]
#                                      this bundle's bench against .gpu/base's (bundle --base), alternated N times
#                                      (default 2; default list `ab-set`), median per case, best peer of the same call
# CASES: a list name of tools/gpu/cases.txt, or case strings "kind:B=..,H=..;kind:..." (peers.py's syntax).
# Output: the step's summary on stdout and in $OUT/summary.txt; all logs in $OUT/logs.tgz; bench's table also in
# $OUT/compare.txt ($OUT defaults to /tmp/gpu-out; a device run brings back at most 8 files from it).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
self=$root/tools/gpu.sh
G=tools/gpu
CASES_FILE=$G/cases.txt
BUNDLE=.gpu
STEPS=" test ptx bench sanitize ncu check ab coldstart "

die() { echo "gpu.sh: $*" >&2; exit 2; }

# Case list NAME of cases.txt, joined by ';'; or ARG itself when it already is case strings.
cases() {
  case $1 in
    *:*) echo "$1" ;;
    *) local c
       c=$(awk -v want="$1" '{ sub(/#.*/, ""); gsub(/[ \t\r]+/, "") }
                             /^\[.*\]$/ { on = ($0 == "[" want "]"); next }
                             on && $0 != "" { printf "%s%s", sep, $0; sep = ";" }' "$CASES_FILE")
       [ -n "$c" ] || die "no case list '$1' in $CASES_FILE (lists: $(list_names))"
       echo "$c" ;;
  esac
}
list_names() { grep -oE '^\[[^]]+\]' "$CASES_FILE" | tr -d '[]' | tr '\n' ' '; }

# ---------------------------------------------------------------- here: bundle
bundle() {
  local ptx=0 base="" variants=()
  while [ $# -gt 0 ]; do
    case $1 in
      --ptx) ptx=1 ;;
      --base) base=${2:?--base REV}; shift ;;
      --variant) [[ ${2:-} == ?*=?* ]] || die "bundle: --variant NAME=REV"; variants+=("$2"); shift ;;
      *) die "bundle: unknown argument $1" ;;
    esac
    shift
  done
  command -v dotnet > /dev/null || die "bundle needs the .NET SDK (run it on the CPU machine)"
  set -e
  mkdir -p "$BUNDLE/apps"
  # The runtime of this machine (host + Microsoft.NETCore.App), xz-packed once per runtime version (~25 MB).
  local dotnet_root runtime_ver
  dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
  runtime_ver=$(find "$dotnet_root/shared/Microsoft.NETCore.App" -mindepth 1 -maxdepth 1 -type d -printf "%f\n" | sort -V | tail -1)
  if [ ! -f "$BUNDLE/dotnet.txz" ] || [ "$(cat "$BUNDLE/dotnet.version" 2>/dev/null)" != "$runtime_ver" ]; then
    tar cf - -C "$dotnet_root" dotnet LICENSE.txt ThirdPartyNotices.txt host "shared/Microsoft.NETCore.App/$runtime_ver" 2>/dev/null \
      | xz -T0 -6 > "$BUNDLE/dotnet.txz"
    echo "$runtime_ver" > "$BUNDLE/dotnet.version"
  fi
  local p
  for p in FlashDmAttn.Tests FlashDmAttn.Bench; do publish "$p/$p.csproj" "$BUNDLE/apps/$p"; done
  if [ -n "$base" ]; then
    # The bench of an earlier commit, for `ab`: the commit's tree exported (git archive), published, trimmed.
    local src; src=$(mktemp -d /tmp/flashdmattn-base.XXXXXX)
    git archive "$base" | tar x -C "$src"
    publish "$src/FlashDmAttn.Bench/FlashDmAttn.Bench.csproj" "$BUNDLE/base/apps/FlashDmAttn.Bench"
    git rev-parse --short "$base" > "$BUNDLE/base/commit"
    rm -rf "$src"
  fi
  rm -rf "$BUNDLE/var"
  local v
  for v in "${variants[@]}"; do
    # A variant: its commit's bench and tests published, then only its own assemblies kept (a few hundred KB).
    local name=${v%%=*} rev=${v#*=} vsrc
    vsrc=$(mktemp -d /tmp/flashdmattn-var.XXXXXX)
    git archive "$rev" | tar x -C "$vsrc"
    for p in FlashDmAttn.Tests FlashDmAttn.Bench; do
      publish "$vsrc/$p/$p.csproj" "$vsrc/out/$p"
      if ! diff <(cd "$vsrc/out/$p" && ls | grep -v '^FlashDmAttn\.') <(cd "$BUNDLE/apps/$p" && ls | grep -v '^FlashDmAttn\.') > /dev/null; then
        rm -rf "$vsrc"; die "bundle: variant $name's $p has other dependencies than this bundle's: publish it as the bundle instead"
      fi
      mkdir -p "$BUNDLE/var/$name/$p"
      cp "$vsrc/out/$p"/FlashDmAttn.*.dll "$BUNDLE/var/$name/$p/"
    done
    echo "variant $name: $(git rev-parse --short "$rev")" | tee "$BUNDLE/var/$name/commit"
    rm -rf "$vsrc"
  done
  if [ "$ptx" = 1 ]; then
    # Dumped here: on the GPU host the dump ran past a 600 s call. Packed (the 64 MiB limit); `ptx` unpacks it.
    local dir; dir=$(mktemp -d /tmp/flashdmattn-ptx.XXXXXX)
    dotnet "$BUNDLE/apps/FlashDmAttn.Tests/FlashDmAttn.Tests.dll" --filter "FullyQualifiedName~DumpLaunchedKernels" \
      --test-parameter "ptx-dir=$dir/ptx" > "$dir/dump.log" 2>&1 || { cat "$dir/dump.log"; return 1; }
    tar czf "$BUNDLE/ptx.tgz" -C "$dir" ptx
    rm -rf "$dir" "$BUNDLE/ptx"
    echo "ptx: $(tar tzf "$BUNDLE/ptx.tgz" | grep -c '\.ptx$') kernels in $BUNDLE/ptx.tgz"
  fi
  set +e
  du -sh "$BUNDLE/dotnet.txz" "$BUNDLE"/apps/* "$BUNDLE"/base "$BUNDLE"/var "$BUNDLE"/ptx.tgz 2>/dev/null
  local tree gpu
  tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  gpu=$(du -sb "$BUNDLE" | cut -f1)
  echo "tree $((tree >> 20)) MiB + $BUNDLE $((gpu >> 20)) MiB = $(((tree + gpu) >> 20)) MiB (a device run carries at most 64)"
  [ $((tree + gpu)) -lt $((64 << 20)) ] || { echo "gpu.sh: over 64 MiB: the device run would refuse it" >&2; return 1; }
}

# Publishes one project framework-dependent for linux-x64 into DIR, then drops what only BenchmarkDotNet's CPU mode
# loads (Roslyn, disassemblers, tracing): the GPU mode and the tests never touch them.
publish() {
  local csproj=$1 out=$2
  rm -rf "${out:?}"
  dotnet publish "$csproj" -c Release -r linux-x64 --self-contained false \
    -p:InvariantGlobalization=true -p:UseAppHost=true -p:SatelliteResourceLanguages=en -o "$out" -nologo -v quiet
  ( cd "$out" && rm -f libcapstone.so Microsoft.CodeAnalysis*.dll Microsoft.Diagnostics.Tracing.TraceEvent.dll \
      Iced.dll Microsoft.Diagnostics.Runtime.dll Gee.External.Capstone.dll && rm -rf amd64 x86 arm64 ) # TraceEvent's Windows DLLs
}

# ---------------------------------------------------------------- GPU host
app() { bash "$G"/run.sh "$@"; }

test_step() {
  # The GPU category in seven processes at once: most of its time is ILGPU/driver JIT, CPU-bound on the host.
  local sk="FullyQualifiedName!~TcStreamKGpu" i log
  local parts=("FullyQualifiedName~TensorCoreGpu&FullyQualifiedName~bf16&$sk"
               "FullyQualifiedName~TensorCoreGpu&FullyQualifiedName!~bf16&$sk"
               "FullyQualifiedName~ForwardCoverage&FullyQualifiedName~fp16"
               "FullyQualifiedName~ForwardCoverage&FullyQualifiedName~bf16"
               "FullyQualifiedName~ForwardCoverage&FullyQualifiedName!~fp16&FullyQualifiedName!~bf16"
               "FullyQualifiedName!~TensorCoreGpu&FullyQualifiedName!~ForwardCoverage&$sk"
               "FullyQualifiedName~TcStreamKGpu")
  # A PART that is not a number is a filter expression of its own (no spaces), e.g. FullyQualifiedName~Lq257&FullyQualifiedName~D128.
  local sel=("$@") n=${#parts[@]}; [ ${#sel[@]} -gt 0 ] || sel=("${!parts[@]}")
  for i in "${!sel[@]}"; do
    if [[ ${sel[$i]} =~ ^[0-9]+$ ]]; then [ -n "${parts[${sel[$i]}]:-}" ] || die "test: no part ${sel[$i]} (0..$((n - 1)))"
    else parts+=("${sel[$i]}"); sel[i]=$((${#parts[@]} - 1)); fi
  done
  for i in "${sel[@]}"; do
    app FlashDmAttn.Tests --filter "TestCategory=GPU&${parts[$i]}" --output detailed > "$LOG/tests$i.log" 2>&1 &
  done
  wait
  local bad=0
  for i in "${sel[@]}"; do
    log=$LOG/tests$i.log
    echo "test part $i: $(grep -cE '^passed' "$log") passed, $(grep -cE '^failed' "$log") failed," \
         "$(grep -cE '^skipped' "$log") skipped; $(grep -E 'duration' "$log" | tail -1)"
    grep -qE '^Test run summary: Passed' "$log" || { bad=1; grep -E "^failed" -A3 "$log" | head -20; tail -3 "$log"; }
  done
  return "$bad"
}

ptx_step() {
  local sass="" f n
  [ "${1:-}" = --sass ] && sass=${2:-bf16_d128_dense}
  [ -f "$BUNDLE"/ptx.tgz ] && [ ! -d "$BUNDLE"/ptx ] && tar xzf "$BUNDLE"/ptx.tgz -C "$BUNDLE"
  # Dumping the PTX on the GPU host ran past a 600 s call: this step needs PTX carried from `bundle --ptx`.
  [ -d "$BUNDLE"/ptx ] || { echo "ptx: no carried PTX (tools/gpu.sh bundle --ptx on the CPU machine)"; return 1; }
  for f in "$BUNDLE"/ptx/*.ptx; do
    echo "== $(basename "$f")"; ptxas -arch=sm_90 -v "$f" -o /dev/null 2>&1 | grep -E "registers|spill|stack|error"
  done > "$LOG/ptxas.txt"
  grep -E "^==|stack frame|registers" "$LOG/ptxas.txt"
  [ -f "$BUNDLE"/ptx/summary.txt ] && cp "$BUNDLE"/ptx/summary.txt "$LOG/ptx-summary.txt" # the dump's own counts
  [ -n "$sass" ] || return 0
  mkdir -p "$LOG/sass"
  for f in "$BUNDLE"/ptx/tc_fwd_"$sass"*.ptx; do
    n=$(basename "$f" .ptx)
    ptxas -arch=sm_90 "$f" -o "/tmp/$n.cubin" && cuobjdump -sass "/tmp/$n.cubin" > "$LOG/sass/$n.sass"
    grep -n -B6 -A3 -E "\b(STL|LDL)" "$LOG/sass/$n.sass" > "$LOG/sass/$n.spills.txt"
    echo "sass $n: $(grep -cE '\b(STL|LDL)' "$LOG/sass/$n.sass") local accesses"
  done
}

# Parses [CASES] [--reps N] [--repeat N] [--peers P|--no-peers] [--times] into globals.
step_args() {
  list=$1; shift; reps=""; repeat=2; peers="sdpa-flash,sdpa-cudnn,flex"; times=0; backward=""; bargs=""; kname=Kernel_Run
  while [ $# -gt 0 ]; do
    case $1 in
      --reps) reps=${2:?--reps N}; shift ;;
      --repeat) repeat=${2:?--repeat N}; shift ;;
      --peers) peers=${2:?--peers P}; shift ;;
      --no-peers) peers="" ;;
      --times) times=1 ;;
      --backward) backward=--backward ;;
      --kernel) kname=${2:?--kernel NAME}; shift ;;
      --kv-splits) bargs+=" $1 ${2:?$1 N}"; shift ;;
      -*) die "unknown option $1" ;;
      *) list=$1 ;;
    esac
    shift
  done
  cs=$(cases "$list") || exit 2
}

peers_run() { # CASES -> $LOG/peers.txt
  [ -n "$peers" ] || { : > "$LOG/peers.txt"; return; }
  PYTHONUNBUFFERED=1 python3 "$G"/peers.py --cases "$1" --peers "$peers" $backward > "$LOG/peers.txt" 2> "$LOG/peers.err"
  echo "peers rc=$? ($peers)"
}

bench_step() {
  step_args default "$@"
  # shellcheck disable=SC2086 # bargs: the bench's own A/B options, word-split on purpose
  app FlashDmAttn.Bench --gpu --cases "$cs" ${reps:+--reps "$reps"} $backward $bargs > "$LOG/ours.txt" 2>&1
  grep -v '^FlashDmAttn|' "$LOG/ours.txt"
  peers_run "$cs"
  python3 FlashDmAttn.Bench/compare.py "$LOG/ours.txt" "$LOG/peers.txt" | tee "$LOG/compare.txt"
  cp "$LOG/compare.txt" "$OUT/compare.txt"
}

sanitize_step() {
  step_args small "$@"
  local tool
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --print-limit 20 bash "$G"/run.sh FlashDmAttn.Bench --gpu --cases "$cs" --reps 1 $backward \
      > "$LOG/sanitize-$tool.txt" 2>&1
    echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Hazard|Invalid" "$LOG/sanitize-$tool.txt" | sort | uniq -c | head -5
  done
}

# Cold start: each case's first forward in fresh processes, kernel cache off, empty (fills it), filled, and filled with
# the driver's JIT cache off (what is left is the driver's PTX -> SASS time).
coldstart_step() {
  step_args first-call "$@"
  local dir c IFS=';'
  dir=$(mktemp -d /tmp/flashdmattn-kernels.XXXXXX)
  for c in $cs; do
    app FlashDmAttn.Bench --first-call "$c" --no-kernel-cache | sed 's/^/off|/'
    app FlashDmAttn.Bench --first-call "$c" --kernel-cache "$dir" | sed 's/^/empty|/'
    app FlashDmAttn.Bench --first-call "$c" --kernel-cache "$dir" | sed 's/^/filled|/'
    CUDA_CACHE_DISABLE=1 app FlashDmAttn.Bench --first-call "$c" --kernel-cache "$dir" | sed 's/^/filled-no-driver-cache|/'
  done | tee "$LOG/coldstart.txt"
  rm -rf "$dir"
}

ncu_step() {
  step_args profile "$@"
  [ "$times" = 1 ] && [ "$list" = profile ] && { list=ktime; cs=$(cases ktime); }
  local i=0 c ncs
  IFS=';' read -ra ncs <<< "$cs"
  for c in "${ncs[@]}"; do
    i=$((i + 1))
    if [ "$times" = 1 ]; then
      # Duration of every kernel of one timed forward (after the warm-ups): where a multi-launch forward spends; with
      # --backward, of one forward + backward (the last 16 launches).
      local tail=8; [ -n "$backward" ] && tail=16
      echo "== $c" | tee -a "$LOG/ktime.txt"
      ncu --metrics gpu__time_duration.sum --csv bash "$G"/run.sh FlashDmAttn.Bench --gpu --cases "$c" --reps 1 $backward 2>/dev/null \
        | grep -E '^"' | awk -F'","' '{print $5" | "$9" | "$NF}' | tail -"$tail" | tee -a "$LOG/ktime.txt"
    else
      # One launch of kernel NAME (--kernel, default the forward's Kernel_Run; with --backward the backward's, e.g.
      # Kernel_KeyBlock) after 3 warm-ups, full section set: details text and SASS source counters.
      ncu --kernel-name "$kname" --launch-skip 3 --launch-count 1 --set full -f -o "/tmp/ncu$i" \
        bash "$G"/run.sh FlashDmAttn.Bench --gpu --cases "$c" --reps 1 $backward > "$LOG/ncu$i.log" 2>&1
      echo "ncu $i $c rc=$?" | tee -a "$LOG/ncu$i.log"
      ncu -i "/tmp/ncu$i.ncu-rep" --page details > "$LOG/ncu$i-details.txt" 2>&1
      ncu -i "/tmp/ncu$i.ncu-rep" --page source --print-source sass --csv 2>&1 | gzip > "$LOG/ncu$i-sass.csv.gz"
    fi
  done
}

check_step() {
  ptx_step
  sanitize_step > "$LOG/check-sanitize.txt" 2>&1 &
  test_step
  wait
  cat "$LOG/check-sanitize.txt"
}

ab_step() {
  step_args ab-set "$@"
  [ -x "$BUNDLE"/base/apps/FlashDmAttn.Bench/FlashDmAttn.Bench ] || die "ab: no $BUNDLE/base (tools/gpu.sh bundle --base REV)"
  local base=base
  echo "new: this bundle; base: $(cat "$BUNDLE"/base/commit 2>/dev/null || echo '?')"
  local v vars=()
  for v in "$BUNDLE"/var/*/; do [ -d "$v" ] && vars+=("$(basename "$v")"); done
  [ ${#vars[@]} -eq 0 ] || echo "variants: $(cat "$BUNDLE"/var/*/commit | tr '\n' ' ')"
  # Every build compiles its own kernels (10-20 s a specialization, CPU-bound on the host): one untimed pass of all
  # builds at once fills each build's disk kernel cache and the driver's, so the timed passes below load, not compile.
  local t0=$SECONDS
  app FlashDmAttn.Bench --gpu --cases "$cs" --reps 1 $backward > "$LOG/prewarm-new.log" 2>&1 &
  GPU_APPS=$BUNDLE/base/apps app FlashDmAttn.Bench --gpu --cases "$cs" --reps 1 $backward > "$LOG/prewarm-base.log" 2>&1 &
  for v in "${vars[@]}"; do
    GPU_VARIANT=$v app FlashDmAttn.Bench --gpu --cases "$cs" --reps 1 $backward > "$LOG/prewarm-$v.log" 2>&1 &
  done
  wait
  echo "prewarm: $((SECONDS - t0)) s"
  for _ in $(seq 1 "$repeat"); do
    app FlashDmAttn.Bench --gpu --cases "$cs" ${reps:+--reps "$reps"} $backward | grep '^FlashDmAttn|' | sed "s/^FlashDmAttn|/new|/" >> "$LOG/ab.txt"
    GPU_APPS=$BUNDLE/base/apps app FlashDmAttn.Bench --gpu --cases "$cs" ${reps:+--reps "$reps"} $backward \
      | grep '^FlashDmAttn|' | sed "s/^FlashDmAttn|/$base|/" >> "$LOG/ab.txt"
    for v in "${vars[@]}"; do
      GPU_VARIANT=$v app FlashDmAttn.Bench --gpu --cases "$cs" ${reps:+--reps "$reps"} $backward \
        | grep '^FlashDmAttn|' | sed "s/^FlashDmAttn|/$v|/" >> "$LOG/ab.txt"
    done
  done
  peers_run "$cs"
  python3 "$G"/ab-summary.py "$LOG/ab.txt" "$LOG/peers.txt" --base "$base" | tee "$LOG/compare.txt"
  cp "$LOG/compare.txt" "$OUT/compare.txt"
}

# ---------------------------------------------------------------- dispatch
[ $# -gt 0 ] || { sed -n '3,/^set -uo/p' "$self" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }
case $1 in
  bundle) shift; bundle "$@"; exit ;;
  cases) if [ -n "${2:-}" ]; then cases "$2" | tr ';' '\n'; else list_names; echo; fi; exit ;;
  -h|--help|help) sed -n '3,/^set -uo/p' "$self" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[[ $STEPS == *" $1 "* ]] || die "unknown step '$1' (steps:$STEPS; here: bundle, cases)"
[ -f "$BUNDLE"/dotnet.txz ] || die "no $BUNDLE/dotnet.txz: run tools/gpu.sh bundle on the CPU machine, carry .gpu"

OUT=${OUT:-/tmp/gpu-out}; LOG=/tmp/gpu-logs
rm -rf "$LOG"; mkdir -p "$OUT" "$LOG" # a warm host keeps /tmp between calls
# Steps: each subcommand word starts one; the words after it, up to the next, are its arguments.
steps=(); for a in "$@"; do
  if [[ $STEPS == *" $a "* ]]; then steps+=("$a"); else [ ${#steps[@]} -gt 0 ] && steps[-1]+=" $a"; fi
done
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | sed 's/^/gpu: /'
  bash "$G"/run.sh --unpack # the runtime once, before any parallel step
  failed=0
  for s in "${steps[@]}"; do
    read -ra w <<< "$s"
    echo "### ${w[*]}"
    "${w[0]}_step" "${w[@]:1}" || failed=1
  done
  exit $failed
} 2>&1 | tee -a "$OUT/summary.txt"
rc=${PIPESTATUS[0]}
tar czf "$OUT/logs.tgz" -C "$(dirname $LOG)" "$(basename $LOG)"
exit "$rc"
