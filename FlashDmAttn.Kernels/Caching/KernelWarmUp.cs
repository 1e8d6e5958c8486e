using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Caching;

/// <summary>
/// Compiles ahead of time the tensor-core kernels that a list of problems will run: each problem is planned as a call
/// would be, and its kernel specializations loaded. With a disk cache on CUDA, the PTX of the specializations the cache
/// lacks can first be compiled in parallel (one ILGPU context per specialization, as many at once as asked), so the
/// loads that follow are cache hits.
/// </summary>
internal static class KernelWarmUp
{
    /// <summary>One step done: the specialization and whether it came from the disk cache.</summary>
    public readonly record struct Step(int Done, int Total, string Kernel, bool FromDisk);

    public static IReadOnlyList<TcKernelSpec> Run(Accelerator accelerator, LaunchOptions options, IReadOnlyList<FwdParams> problems,
        ElemKind elem, int maxParallelism, IProgress<Step>? progress)
    {
        var specs = Specs(accelerator, options, problems, elem);
        if (maxParallelism > 1 && options.DiskCache is { } disk && accelerator is CudaAccelerator cuda)
            CompileMissing(cuda, disk, specs, maxParallelism);
        int done = 0;
        foreach (var spec in specs)
        {
            TensorCoreLauncher.Load(accelerator, spec, options.DiskCache);
            progress?.Report(new Step(++done, specs.Count, spec.ToString(), CachedKernels.LastWasHit));
        }
        return specs;
    }

    /// <summary>The distinct tensor-core specializations the problems' plans run, asking no occupancy (nothing loads).</summary>
    public static List<TcKernelSpec> Specs(Accelerator accelerator, LaunchOptions options, IReadOnlyList<FwdParams> problems, ElemKind elem)
    {
        var device = KernelCache.For(accelerator).Device(() => DeviceInfo.Of(accelerator, null));
        var specs = new List<TcKernelSpec>();
        foreach (var p in problems)
        {
            var asked = new List<TcKernelSpec>();
            var probe = device with { GroupsPerSm = s => { asked.Add(s); return DeviceInfo.DefaultGroupsPerSm; } };
            var plan = ForwardPlanner.Plan(p, new BufferFacts(elem, true, 0), probe, options);
            if (plan.TensorCore is { } spec) asked.Add(spec);
            foreach (var s in asked)
                if (!specs.Contains(s)) specs.Add(s);
        }
        return specs;
    }

    private static void CompileMissing(CudaAccelerator cuda, KernelDiskCache disk, List<TcKernelSpec> specs, int maxParallelism)
    {
        var props = cuda.Context.Properties;
        string driver = cuda.DriverVersion.ToString();
        var missing = specs.Where(s => disk.TryRead(Key(cuda.Context, s, cuda, driver)) is null).ToList();
        Parallel.ForEach(missing, new ParallelOptions { MaxDegreeOfParallelism = maxParallelism }, spec =>
        {
            var method = TensorCoreLauncher.Method(spec);
            using var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(props.OptimizationLevel));
            using var backend = new PTXBackend(ctx, cuda.Architecture, cuda.InstructionSet, null!);
            var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), TensorCoreLauncher.Specialization);
            // Keyed as the accelerator's own compile would be: a context built with other options gets another key.
            disk.Write(KernelCacheKey.For(method, TensorCoreLauncher.Specialization, ctx, cuda.Architecture, cuda.InstructionSet, driver).Text,
                PtxEntry.From(compiled).Encode());
        });
    }

    private static string Key(Context context, TcKernelSpec spec, CudaAccelerator cuda, string driver)
        => KernelCacheKey.For(TensorCoreLauncher.Method(spec), TensorCoreLauncher.Specialization, context, cuda.Architecture,
            cuda.InstructionSet, driver).Text;
}
