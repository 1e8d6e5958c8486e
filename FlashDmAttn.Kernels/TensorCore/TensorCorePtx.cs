using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Compiles every tensor-core specialization to PTX (sm_80, ISA 7.8) without a GPU, with the same context options as
/// the shared context (O1, algorithms, the tensor-core intrinsics), for ptxas -v on a GPU host and for text checks.
/// </summary>
public static class TensorCorePtx
{
    /// <summary>One compiled specialization and what its PTX text says.</summary>
    public sealed record Entry(string Name, string Ptx, int LocalDecls, int LocalLoads, int LocalStores, int Calls,
        int Mma, int LdMatrix, int CpAsync, int BarSync, int SharedLoads, int SharedStores);

    /// <summary>Dense (no feature), causal, causal + mask + bias (the maskbias/perkey benchmarks), every feature; dense
    /// stream-K (extra only).</summary>
    public static readonly (string Tag, Type Flags)[] FlagSets =
    [
        ("dense", typeof(TcFlags<Off, Off, Off, Off>)), ("causal", typeof(TcFlags<On, Off, Off, Off>)),
        ("cmb", typeof(TcFlags<On, On, On, Off>)), ("all", typeof(TcFlags<On, On, On, On>)),
        ("sk", typeof(TcStreamKFlags<Off>)),
    ];

    private static (string Name, Type Elem, Type HeadDim, Type Flags) Spec(string dtype, string hd, Type headDim, int flagSet)
        => ($"{dtype}_{hd}_{FlagSets[flagSet].Tag}", dtype == "bf16" ? typeof(Bf16Mma) : typeof(Fp16Mma), headDim, FlagSets[flagSet].Flags);

    /// <summary>
    /// Kernels the launcher runs, kept small (the PTX test compiles each one on the CPU, ~4 s apiece): every head dim with
    /// every feature in the shape used with a mask or bias (64 rows for D ≤ 128), the benchmarked shapes with each flag
    /// set, fp16 once (name: dtype_dD[r64]_tag).
    /// </summary>
    public static readonly (string Name, Type Elem, Type HeadDim, Type Flags)[] Specializations =
    [
        Spec("bf16", "d32r64", typeof(Hd32R64), 3), Spec("bf16", "d64r64", typeof(Hd64R64), 3), Spec("bf16", "d96r64", typeof(Hd96R64), 3),
        Spec("bf16", "d128r64", typeof(Hd128R64), 3), Spec("bf16", "d192", typeof(Hd192), 3), Spec("bf16", "d256", typeof(Hd256), 3),
        Spec("bf16", "d64", typeof(Hd64), 0), Spec("bf16", "d64", typeof(Hd64), 1), Spec("bf16", "d128", typeof(Hd128), 0),
        Spec("bf16", "d128", typeof(Hd128), 1), Spec("bf16", "d64r64", typeof(Hd64R64), 2), Spec("bf16", "d128r64", typeof(Hd128R64), 2),
        Spec("fp16", "d128r64", typeof(Hd128R64), 3),
    ];

    /// <summary>For ptxas -v beside <see cref="Specializations"/>, not part of the PTX test: the A/B variants
    /// (<see cref="TcTune"/> bits, FLASHDMATTN_TC_TUNE; name ..._t{bits}) of the benchmarked bf16 shapes, and the other
    /// launched shapes (the remaining head dims without a mask, with a mask and bias but no softcap).</summary>
    public static readonly (string Name, Type Elem, Type HeadDim, Type Flags)[] ExtraSpecializations =
        (from tb in new[] { (0, typeof(NoTuneBits)), (8, typeof(SplitKvBits)), (16, typeof(BiasFfmaBits)), (32, typeof(LateBitsBits)) }
         from d in new[] { ("d64", typeof(Hd64)), ("d128", typeof(Hd128)), ("d128r64", typeof(Hd128R64)) }
         from f in new[] { 0, 1, 2 }
         where d.Item1 == "d128r64" ? f == 2 : f != 2 && tb.Item1 < 16
         let sp = Spec("bf16", d.Item1, typeof(Tuned<,>).MakeGenericType(d.Item2, tb.Item2), f)
         select (sp.Name + "_t" + tb.Item1, sp.Elem, sp.HeadDim, sp.Flags))
        .Concat(
         from d in new[] { ("d32", typeof(Hd32)), ("d96", typeof(Hd96)), ("d192", typeof(Hd192)), ("d256", typeof(Hd256)),
                           ("d32r64", typeof(Hd32R64)), ("d96r64", typeof(Hd96R64)) }
         from f in d.Item1.EndsWith("r64") ? new[] { 2 } : new[] { 0, 1 }
         select Spec("bf16", d.Item1, d.Item2, f))
        .Concat(new[] { Spec("bf16", "d64", typeof(Hd64), 4), Spec("bf16", "d128", typeof(Hd128), 4) }).ToArray();

    /// <summary>Compiles the specializations whose name contains <paramref name="filter"/> (all when null), with the
    /// A/B variants and the other launched shapes (<see cref="ExtraSpecializations"/>) when <paramref name="extra"/>.</summary>
    /// <remarks>Each specialization gets its own context, disposed after it: one context keeps the IR of every kernel it
    /// compiled, and the 13 launched kernels in one context reached 12 GB (Debug), which with the other tests in the
    /// process ran the 24 GB CI machine out of memory.</remarks>
    public static IReadOnlyList<Entry> Compile(string? filter = null, OptimizationLevel level = OptimizationLevel.O1, bool extra = false)
    {
        var run = typeof(TensorCoreForwardKernel).GetMethod(nameof(TensorCoreForwardKernel.Run), BindingFlags.Public | BindingFlags.Static)!;
        var list = new List<Entry>();
        foreach (var (name, elem, hd, flags) in extra ? Specializations.Concat(ExtraSpecializations) : Specializations)
        {
            if (filter is not null && !name.Contains(filter, StringComparison.Ordinal)) continue;
            using (var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(level)))
            using (var backend = new PTXBackend(ctx, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!))
            {
                var entry = EntryPointDescription.FromExplicitlyGroupedKernel(run.MakeGenericMethod(elem, hd, flags));
                var ck = (PTXCompiledKernel)backend.Compile(entry, new KernelSpecialization(TensorCoreForwardKernel.Threads, 1));
                list.Add(Analyse(name, ck.PTXAssembly));
            }
            GC.Collect();
        }
        return list;
    }

    private static int Count(string text, string pattern) => Regex.Matches(text, pattern, RegexOptions.Multiline).Count;

    public static Entry Analyse(string name, string ptx) => new(name, ptx,
        Count(ptx, @"^\s*\.local\b"), Count(ptx, @"\bld\.local\b"), Count(ptx, @"\bst\.local\b"),
        Count(ptx, @"^\s*call\b"), Count(ptx, @"\bmma\.sync\b"), Count(ptx, @"\bldmatrix\b"),
        Count(ptx, @"\bcp\.async\.cg\b"), Count(ptx, @"\bbar\.sync\b|\bbarrier\.sync\b|\bbar\.red\b"),
        Count(ptx, @"\bld\.shared\b"), Count(ptx, @"\bst\.shared\b"));

    /// <summary>
    /// The order of barrier-relevant instructions in the entry (bar, cp.async commit/wait, ldmatrix, cp.async,
    /// shared loads/stores, branches and labels), one per line, for checking that no shared read crossed a barrier.
    /// </summary>
    public static string BarrierTrace(string ptx)
    {
        var sb = new StringBuilder();
        foreach (var raw in ptx.Split('\n'))
        {
            var line = raw.Trim();
            if (Regex.IsMatch(line, @"^(\$?[A-Za-z_][\w$]*:)|\bbar\.|\bbarrier\.|cp\.async|ldmatrix|\b(ld|st)\.shared|^@?%?\w*\s*bra|^@%p\d+ bra"))
                sb.AppendLine(line);
        }
        return sb.ToString();
    }

    /// <summary>
    /// Checks the shared-memory order of the kernel's one-barrier-per-tile loop in PTX text order (ILGPU's O2 was seen
    /// moving shared loads across barriers): after a cp.async.wait_group, no shared memory may be read and no cp.async
    /// issued until a barrier (bar.sync, or bar.red of the mask look-ahead) has followed it; ldmatrix and ld.shared are
    /// only allowed once such a barrier opened the window. Returns null when the order holds, else the first violation.
    /// Text order only: a read hoisted above the wait into the previous tile's window is not seen here (the GPU tests
    /// and racecheck cover that).
    /// </summary>
    public static string? CheckBarrierOrder(string ptx)
    {
        const int Closed = 0, Waiting = 1, Open = 2;
        int state = Closed, n = 0;
        foreach (var raw in ptx.Split('\n'))
        {
            var line = raw.Trim();
            if (line.StartsWith('@')) line = line[(line.IndexOf(' ') + 1)..].TrimStart();
            string tok =
                line.StartsWith("bar.sync", StringComparison.Ordinal) || line.StartsWith("barrier.sync", StringComparison.Ordinal)
                    || line.StartsWith("bar.red", StringComparison.Ordinal) ? "B" :
                line.StartsWith("cp.async.wait_group", StringComparison.Ordinal) ? "W" :
                line.StartsWith("cp.async.commit_group", StringComparison.Ordinal) ? "" :
                line.StartsWith("cp.async", StringComparison.Ordinal) ? "A" :
                line.StartsWith("ldmatrix", StringComparison.Ordinal) || line.StartsWith("ld.shared", StringComparison.Ordinal) ? "L" : "";
            if (tok.Length == 0) continue;
            n++;
            switch (tok)
            {
                case "W": state = Waiting; break;
                case "B": if (state == Waiting) state = Open; break;
                case "A": if (state == Waiting) return $"event {n}: {line} between a wait_group and its barrier"; break;
                case "L": if (state != Open) return $"event {n}: {line} before the barrier that follows a wait_group"; break;
            }
        }
        return null;
    }

    /// <summary>
    /// Writes tc_fwd_{dtype}_d{D}.ptx (and .trace.txt with <see cref="BarrierTrace"/>) into <paramref name="dir"/> plus
    /// summary.txt; returns the summary. On a GPU host: <c>ptxas -arch=sm_90 -v tc_fwd_bf16_d128.ptx -o /dev/null</c>.
    /// </summary>
    public static string Dump(string dir, string? filter = null, bool extra = false) => Dump(dir, filter, out _, extra);

    /// <summary><see cref="Dump(string, string?, bool)"/>, also returning the compiled entries.</summary>
    public static string Dump(string dir, string? filter, out IReadOnlyList<Entry> entries, bool extra = false)
    {
        Directory.CreateDirectory(dir);
        var sb = new StringBuilder();
        sb.AppendLine("name                   shared_B  .local ld.local st.local call  mma ldmatrix cp.async bar ld.shared st.shared barrier-order");
        entries = Compile(filter, extra: extra);
        foreach (var e in entries)
        {
            File.WriteAllText(Path.Combine(dir, $"tc_fwd_{e.Name}.ptx"), e.Ptx);
            File.WriteAllText(Path.Combine(dir, $"tc_fwd_{e.Name}.trace.txt"), BarrierTrace(e.Ptx));
            int d = int.Parse(Regex.Match(e.Name, @"_d(\d+)").Groups[1].Value);
            sb.AppendLine($"{e.Name,-22} {TensorCoreLauncher.SharedBytes(d),8} {e.LocalDecls,7} {e.LocalLoads,8} {e.LocalStores,8} {e.Calls,4} {e.Mma,4} {e.LdMatrix,8} {e.CpAsync,8} {e.BarSync,3} {e.SharedLoads,9} {e.SharedStores,9} {CheckBarrierOrder(e.Ptx) ?? "ok"}");
        }
        File.WriteAllText(Path.Combine(dir, "summary.txt"), sb.ToString());
        return sb.ToString();
    }
}
