using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>
/// Compiles tensor-core kernels to PTX (sm_80, ISA 7.8) without a GPU, with the same context options as the library's
/// shared context (O1, algorithms, the tensor-core intrinsics): for the PTX tests, and for ptxas -v on a GPU host
/// (tools/gpu.sh ptx carries the files the PTX test writes).
/// </summary>
internal static class TensorCorePtx
{
    /// <summary>One compiled specialization and what its PTX text says.</summary>
    public sealed record Entry(string Name, string Ptx, int LocalDecls, int LocalLoads, int LocalStores, int Calls,
        int Mma, int LdMatrix, int CpAsync, int BarSync, int SharedLoads, int SharedStores)
    {
        public int Shared { get; init; }
    }

    private static TcKernelSpec Spec(TcElemKind elem, TcShape shape, string tag) => tag switch
    {
        "dense" => new(elem, shape, false, false, false, false, false),
        "causal" => new(elem, shape, true, false, false, false, false),
        "cmb" => new(elem, shape, true, true, true, false, false),
        "all" => new(elem, shape, true, true, true, true, false),
        "sk" => new(elem, shape, false, false, false, false, true),
        _ => throw new ArgumentException(tag),
    };

    /// <summary>File name of a specialization: dtype_shape_features (dense, causal, cmb = causal+mask+bias, all = every
    /// feature, sk = stream-K; others list their features).</summary>
    public static string Name(TcKernelSpec s)
    {
        string tag = s switch
        {
            { StreamK: true, Softcap: false } => "sk",
            { StreamK: false, Causal: false, Mask: false, Bias: false, Softcap: false } => "dense",
            { StreamK: false, Causal: true, Mask: false, Bias: false, Softcap: false } => "causal",
            { StreamK: false, Causal: true, Mask: true, Bias: true, Softcap: false } => "cmb",
            { StreamK: false, Causal: true, Mask: true, Bias: true, Softcap: true } => "all",
            _ => string.Join("", new[] { s.StreamK ? "k" : "", s.Causal ? "c" : "", s.Mask ? "m" : "", s.Bias ? "b" : "", s.Softcap ? "s" : "" }),
        };
        return $"{s.Elem.ToString().ToLowerInvariant()}_{TcShapes.Name(s.Shape).Replace("-", "")}_{tag}";
    }

    /// <summary>
    /// Kernels the launcher runs, kept small (the PTX test compiles each one on the CPU, ~4 s apiece): every head dim with
    /// every feature in the shape used with a mask or bias (64 rows for D ≤ 128), the benchmarked shapes with each feature
    /// set, fp16 once.
    /// </summary>
    public static readonly TcKernelSpec[] Specializations =
    [
        Spec(TcElemKind.Bf16, TcShape.D32R64, "all"), Spec(TcElemKind.Bf16, TcShape.D64R64, "all"), Spec(TcElemKind.Bf16, TcShape.D96R64, "all"),
        Spec(TcElemKind.Bf16, TcShape.D128R64, "all"), Spec(TcElemKind.Bf16, TcShape.D192, "all"), Spec(TcElemKind.Bf16, TcShape.D256, "all"),
        Spec(TcElemKind.Bf16, TcShape.D64, "dense"), Spec(TcElemKind.Bf16, TcShape.D64, "causal"), Spec(TcElemKind.Bf16, TcShape.D128, "dense"),
        Spec(TcElemKind.Bf16, TcShape.D128, "causal"), Spec(TcElemKind.Bf16, TcShape.D64R64, "cmb"), Spec(TcElemKind.Bf16, TcShape.D128R64, "cmb"),
        Spec(TcElemKind.Fp16, TcShape.D128R64, "all"),
    ];

    /// <summary>For ptxas -v beside <see cref="Specializations"/>, not part of the PTX test: the other launched shapes
    /// (the remaining head dims without a mask, with a mask and bias but no softcap; gathered keys; stream-K).</summary>
    public static readonly TcKernelSpec[] ExtraSpecializations =
        (from shape in new[] { TcShape.D32, TcShape.D96, TcShape.D192, TcShape.D256 }
         from tag in new[] { "dense", "causal" }
         select Spec(TcElemKind.Bf16, shape, tag))
        .Concat(new[]
        {
            Spec(TcElemKind.Bf16, TcShape.D32R64, "cmb"), Spec(TcElemKind.Bf16, TcShape.D96R64, "cmb"),
            Spec(TcElemKind.Bf16, TcShape.D128R64Gather, "cmb"), Spec(TcElemKind.Bf16, TcShape.D64, "sk"), Spec(TcElemKind.Bf16, TcShape.D128, "sk"),
        }).ToArray();

    /// <summary>The tensor-core backward's specializations in the PTX test (both kernels of each): the benchmarked
    /// D = 128 dense and causal ones, every feature at D = 64 and 128.</summary>
    public static readonly TcKernelSpec[] BackwardSpecializations =
    [
        Spec(TcElemKind.Bf16, TcShape.D128Bwd, "dense"), Spec(TcElemKind.Bf16, TcShape.D128Bwd, "causal"),
        Spec(TcElemKind.Bf16, TcShape.D128Bwd, "all"), Spec(TcElemKind.Bf16, TcShape.D64Bwd, "all"),
    ];

    /// <summary>For ptxas -v beside <see cref="BackwardSpecializations"/>: the other head dims, fp16, and mask + bias
    /// without softcap (maskbias and perkey).</summary>
    public static readonly TcKernelSpec[] ExtraBackwardSpecializations =
    [
        Spec(TcElemKind.Bf16, TcShape.D128Bwd, "cmb"), Spec(TcElemKind.Bf16, TcShape.D64Bwd, "dense"), Spec(TcElemKind.Bf16, TcShape.D64Bwd, "causal"),
        Spec(TcElemKind.Bf16, TcShape.D32Bwd, "all"), Spec(TcElemKind.Bf16, TcShape.D96Bwd, "all"), Spec(TcElemKind.Fp16, TcShape.D128Bwd, "all"),
    ];

    /// <summary>The kernel method of a specialization, through the launcher's static switch.</summary>
    public static MethodInfo KernelMethod(TcKernelSpec spec) => TensorCoreLauncher.Method(spec);

    /// <summary>
    /// Compiles the backward's key-block (bwdk_…), query-block (bwdq_…) and dq-from-dS (bwdg_…) kernels of <paramref name="specs"/>, each in
    /// its own context (see <see cref="Compile"/>).
    /// </summary>
    public static IReadOnlyList<Entry> CompileBackward(IEnumerable<TcKernelSpec> specs)
    {
        var list = new List<Entry>();
        foreach (var spec in specs)
        {
            var (qBytes, kBytes) = BackwardPlanner.TcBackwardShared(spec.Shape);
            var kernels = new[]
            {
                ("bwdk", TcBackwardLauncher.KeyMethod(spec), kBytes), ("bwdq", TcBackwardLauncher.QueryMethod(spec), qBytes),
                ("bwdg", TcBackwardLauncher.GradMethod(spec), BackwardPlanner.TcGradShared(spec.Shape)),
            };
            foreach (var (kind, method, shared) in kernels)
            {
                using (var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(OptimizationLevel.O1)))
                using (var backend = new PTXBackend(ctx, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!))
                {
                    var entry = EntryPointDescription.FromExplicitlyGroupedKernel(method);
                    var ck = (PTXCompiledKernel)backend.Compile(entry, new KernelSpecialization(TensorCoreForwardKernel.Threads, 1));
                    list.Add(Analyse($"{kind}_{Name(spec)}", ck.PTXAssembly) with { Shared = shared });
                }
                GC.Collect();
            }
        }
        return list;
    }

    /// <summary>Compiles the specializations whose name contains <paramref name="filter"/> (all when null), with
    /// <see cref="ExtraSpecializations"/> when <paramref name="extra"/>.</summary>
    /// <remarks>Each specialization gets its own context, disposed after it: one context keeps the IR of every kernel it
    /// compiled, and the 13 launched kernels in one context reached 12 GB (Debug), more than the CI machine has beside
    /// the other tests.</remarks>
    public static IReadOnlyList<Entry> Compile(string? filter = null, OptimizationLevel level = OptimizationLevel.O1, bool extra = false)
    {
        var list = new List<Entry>();
        foreach (var spec in extra ? Specializations.Concat(ExtraSpecializations) : Specializations)
        {
            string name = Name(spec);
            if (filter is not null && !name.Contains(filter, StringComparison.Ordinal)) continue;
            using (var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(level)))
            using (var backend = new PTXBackend(ctx, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!))
            {
                var entry = EntryPointDescription.FromExplicitlyGroupedKernel(KernelMethod(spec));
                var ck = (PTXCompiledKernel)backend.Compile(entry, new KernelSpecialization(TensorCoreForwardKernel.Threads, 1));
                list.Add(Analyse(name, ck.PTXAssembly) with { Shared = TcShapes.SharedBytes(spec.Shape, spec.Bias) });
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
        if (extra) entries = entries.Concat(CompileBackward(BackwardSpecializations.Concat(ExtraBackwardSpecializations))).ToList();
        foreach (var e in entries)
        {
            File.WriteAllText(Path.Combine(dir, $"tc_fwd_{e.Name}.ptx"), e.Ptx);
            File.WriteAllText(Path.Combine(dir, $"tc_fwd_{e.Name}.trace.txt"), BarrierTrace(e.Ptx));
            sb.AppendLine($"{e.Name,-22} {e.Shared,8} {e.LocalDecls,7} {e.LocalLoads,8} {e.LocalStores,8} {e.Calls,4} {e.Mma,4} {e.LdMatrix,8} {e.CpAsync,8} {e.BarSync,3} {e.SharedLoads,9} {e.SharedStores,9} {CheckBarrierOrder(e.Ptx) ?? "ok"}");
        }
        File.WriteAllText(Path.Combine(dir, "summary.txt"), sb.ToString());
        return sb.ToString();
    }
}
