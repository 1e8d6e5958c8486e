using System.Reflection;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The buffers of the tensor-core backward's two kernels (16-bit elements; scratch in fp32).</summary>
internal readonly record struct TcBwdBuffers(
    ArrayView<ushort> Q, ArrayView<ushort> K, ArrayView<ushort> V, ArrayView<ushort> DO, ArrayView<ushort> Bias,
    ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<float> D, ArrayView<int> SeqInfo,
    ArrayView<ushort> DQ, ArrayView<float> DKh, ArrayView<float> DVh, ArrayView<float> DBias, ArrayView<ushort> DBiasOut,
    ArrayView<ushort> DK, ArrayView<ushort> DV, ArrayView<ushort> DsTiles, ArrayView<int> DsFlags);

/// <summary>Loads the tensor-core backward's kernels by <see cref="TcKernelSpec"/> (through the disk cache) and runs
/// them: the query-block kernel (dq), then the key-block kernel (dk, dv and the bias gradient); or, with the dS scratch
/// (<see cref="BackwardPlan.DsTiles"/>), the key-block kernel first, then the dq kernel that reads its dS tiles.</summary>
internal static class TcBackwardLauncher
{
    private delegate void KeyKernel(AcceleratorStream stream, KernelConfig config, ArrayView<ushort> q, ArrayView<ushort> k,
        ArrayView<ushort> v, ArrayView<ushort> dO, ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse,
        ArrayView<float> dvec, ArrayView<int> seqInfo, ArrayView<float> dkh, ArrayView<float> dvh, ArrayView<float> dbias,
        ArrayView<ushort> dbiasOut, ArrayView<ushort> dk, ArrayView<ushort> dv, ArrayView<ushort> dsTiles, ArrayView<int> dsFlags,
        BwdArgs a);

    private delegate void GradKernel(AcceleratorStream stream, KernelConfig config, ArrayView<ushort> k, ArrayView<int> seqInfo,
        ArrayView<ushort> dsTiles, ArrayView<int> dsFlags, ArrayView<ushort> dq, BwdArgs a);

    private delegate void QueryKernel(AcceleratorStream stream, KernelConfig config, ArrayView<ushort> q, ArrayView<ushort> k,
        ArrayView<ushort> v, ArrayView<ushort> dO, ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse,
        ArrayView<float> dvec, ArrayView<int> seqInfo, ArrayView<ushort> dq, BwdArgs a);

    /// <summary>The key-block kernel method of a specialization (PTX tests compile it by itself).</summary>
    public static MethodInfo KeyMethod(TcKernelSpec spec) => TcStaticSwitch.Dispatch<KeyMethodVisitor, MethodInfo>(spec, default);

    /// <summary>The query-block kernel method of a specialization.</summary>
    public static MethodInfo QueryMethod(TcKernelSpec spec) => TcStaticSwitch.Dispatch<QueryMethodVisitor, MethodInfo>(spec, default);

    /// <summary>The dq kernel (from the dS scratch) of a specialization.</summary>
    public static MethodInfo GradMethod(TcKernelSpec spec) => TcStaticSwitch.Dispatch<GradMethodVisitor, MethodInfo>(spec, default);

    /// <summary>The key-block kernel's signature (more parameters than an Action takes).</summary>
    private delegate void KeyBlockMethod(ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> dO,
        ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<int> seqInfo,
        ArrayView<float> dkh, ArrayView<float> dvh, ArrayView<float> dbias, ArrayView<ushort> dbiasOut,
        ArrayView<ushort> dk, ArrayView<ushort> dv, ArrayView<ushort> dsTiles, ArrayView<int> dsFlags, BwdArgs a);

    private readonly struct GradMethodVisitor : ITcKernelVisitor<MethodInfo>
    {
        public MethodInfo Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
            => new Action<ArrayView<ushort>, ArrayView<int>, ArrayView<ushort>, ArrayView<int>, ArrayView<ushort>, BwdArgs>(
                TcBackwardKernels.QueryGrad<TE, THd, TF>).Method;
    }

    private readonly struct KeyMethodVisitor : ITcKernelVisitor<MethodInfo>
    {
        public MethodInfo Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
            => new KeyBlockMethod(TcBackwardKernels.KeyBlock<TE, THd, TF>).Method;
    }

    private readonly struct QueryMethodVisitor : ITcKernelVisitor<MethodInfo>
    {
        public MethodInfo Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
            => new Action<ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
                ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<ushort>,
                BwdArgs>(TcBackwardKernels.QueryBlock<TE, THd, TF>).Method;
    }

    private static TDelegate Load<TDelegate>(Accelerator acc, KernelDiskCache? disk, MethodInfo method, int sharedBytes)
        where TDelegate : Delegate
    {
        var kernel = CachedKernels.Load(acc, disk, method, TensorCoreLauncher.Specialization);
        if (acc is CudaAccelerator && sharedBytes > 48 * 1024)
            CudaDriver.AllowLargeSharedMemory((CudaKernel)kernel, sharedBytes);
        return kernel.CreateLauncherDelegate<TDelegate>();
    }

    public static void Execute(Accelerator acc, BackwardPlan plan, in BwdArgs a, in TcBwdBuffers b, KernelDiskCache? disk)
    {
        var spec = plan.TensorCore!.Value;
        var cache = KernelCache.For(acc);
        if (plan.QueryGrid.X > 0 && !plan.DsTiles)
        {
            int shared = plan.QuerySharedBytes;
            var kernel = cache.GetOrAdd(("tc-bwd-query", spec), x => Load<QueryKernel>(x, disk, QueryMethod(spec), shared));
            kernel(acc.DefaultStream, Config(plan.QueryGrid, shared), b.Q, b.K, b.V, b.DO, b.Bias, b.Mask, b.Lse, b.D, b.SeqInfo, b.DQ, a);
        }
        if (plan.DsTiles)
        {
            // Key blocks, then dq from their dS tiles, for DsPairs (batch, head) pairs at a time (the scratch holds theirs).
            int kShared = plan.KeySharedBytes, gShared = plan.QuerySharedBytes;
            var key = cache.GetOrAdd(("tc-bwd-key", spec), x => Load<KeyKernel>(x, disk, KeyMethod(spec), kShared));
            var grad = cache.GetOrAdd(("tc-bwd-grad", spec), x => Load<GradKernel>(x, disk, GradMethod(spec), gShared));
            long pairs = (long)a.F.Batch * a.F.Heads;
            var c = a;
            for (long p0 = 0; p0 < pairs; p0 += plan.DsPairs)
            {
                c.DsPair0 = (int)p0;
                c.DsPairs = (int)Math.Min(plan.DsPairs, pairs - p0);
                if (p0 > 0) b.DsFlags.MemSetToZero(acc.DefaultStream);
                key(acc.DefaultStream, Config(TcBlockOrder.Grid3(plan.KeyGrid.Y, c.DsPairs, plan.KeyChunk), kShared), b.Q, b.K, b.V, b.DO, b.Bias, b.Mask, b.Lse, b.D,
                    b.SeqInfo, b.DKh, b.DVh, b.DBias, b.DBiasOut, b.DK, b.DV, b.DsTiles, b.DsFlags, c);
                grad(acc.DefaultStream, Config(TcBlockOrder.Grid3(plan.QueryGrid.Y, c.DsPairs, plan.QueryChunk), gShared), b.K, b.SeqInfo, b.DsTiles, b.DsFlags, b.DQ, c);
            }
            return;
        }
        if (plan.KeyGrid.X > 0)
        {
            int shared = plan.KeySharedBytes;
            var kernel = cache.GetOrAdd(("tc-bwd-key", spec), x => Load<KeyKernel>(x, disk, KeyMethod(spec), shared));
            kernel(acc.DefaultStream, Config(plan.KeyGrid, shared), b.Q, b.K, b.V, b.DO, b.Bias, b.Mask, b.Lse, b.D, b.SeqInfo,
                b.DKh, b.DVh, b.DBias, b.DBiasOut, b.DK, b.DV, b.DsTiles, b.DsFlags, a);
        }
    }

    private static KernelConfig Config((int X, int Y, int Z) grid, int sharedBytes)
        => new(new Index3D(grid.X, grid.Y, grid.Z), new Index3D(TcBackwardKernels.Threads, 1, 1),
            SharedMemoryConfig.RequestDynamic<Chunk16>(sharedBytes / 16));
}
