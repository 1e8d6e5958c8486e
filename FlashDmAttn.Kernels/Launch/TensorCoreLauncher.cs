using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Reflection;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The buffers of a tensor-core launch (16-bit elements); absent optional ones are empty views.</summary>
internal readonly record struct TcBuffers(
    ArrayView<ushort> Q, ArrayView<ushort> K, ArrayView<ushort> V, ArrayView<ushort> O,
    ArrayView<ushort> Bias, ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<int> SeqInfo);

/// <summary>Loads tensor-core kernels by <see cref="TcKernelSpec"/> and executes tensor-core plans.</summary>
internal static class TensorCoreLauncher
{
    /// <summary>A loaded kernel and its resident groups per SM.</summary>
    internal sealed record Loaded(
        Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
            ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, KernelArgs> Kernel,
        int GroupsPerSm);

    /// <summary>The kernel of <paramref name="spec"/> on <paramref name="accelerator"/>, loaded once per accelerator:
    /// from <paramref name="disk"/> when it holds the kernel's PTX (CUDA), else compiled (and stored there).</summary>
    public static Loaded Load(Accelerator accelerator, TcKernelSpec spec, KernelDiskCache? disk)
        => KernelCache.For(accelerator).GetOrAdd(("tc-fwd", spec),
            a => TcStaticSwitch.Dispatch<LoadVisitor, Loaded>(spec, new LoadVisitor(a, TcShapes.SharedBytes(spec.Shape, spec.Bias), disk)));

    /// <summary>The kernel method of a specialization (the PTX tests and the warm-up compile it by itself).</summary>
    public static MethodInfo Method(TcKernelSpec spec) => TcStaticSwitch.Dispatch<MethodVisitor, MethodInfo>(spec, default);

    private readonly struct MethodVisitor : ITcKernelVisitor<MethodInfo>
    {
        public MethodInfo Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
            => new Action<ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
                ArrayView<byte>, ArrayView<float>, ArrayView<int>, KernelArgs>(TensorCoreForwardKernel.Run<TE, THd, TF>).Method;
    }

    /// <summary>Group-size specialization of every tensor-core kernel.</summary>
    public static KernelSpecialization Specialization => new(TensorCoreForwardKernel.Threads, 1);

    private readonly struct LoadVisitor(Accelerator acc, int shared, KernelDiskCache? disk) : ITcKernelVisitor<Loaded>
    {
        public Loaded Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
        {
            var kernel = CachedKernels.Load(acc, disk, new MethodVisitor().Visit<TE, THd, TF>(), Specialization);
            var launch = kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<ushort>,
                ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, KernelArgs>>();
            if (acc is CudaAccelerator && shared > 48 * 1024)
                CudaDriver.AllowLargeSharedMemory((CudaKernel)kernel, shared);
            var a = acc;
            return new Loaded((config, q, k, v, o, bias, mask, lse, seq, args) => launch(a.DefaultStream, config, q, k, v, o, bias, mask, lse, seq, args),
                ResidentGroupsPerSm(acc, kernel, shared));
        }
    }

    /// <summary>Runs a tensor-core plan. A stream-K plan's work buffer takes the place of seqInfo (its problems have
    /// neither variable lengths nor key lists).</summary>
    public static void Execute(Accelerator acc, ForwardPlan plan, KernelArgs args, in TcBuffers buffers, KernelDiskCache? disk)
    {
        var spec = plan.TensorCore!.Value;
        var kernel = Load(acc, spec, disk).Kernel;
        var cache = KernelCache.For(acc);
        var buf = buffers;
        if (plan.StreamK is { } split)
        {
            args.SplitDp = split.Dp;
            args.SplitTiles = plan.StreamKTiles;
            args.SplitPerWorker = split.PerWorker;
            long words = TcStreamK.WorkWords(TcShapes.Rows(spec.Shape) / 64, TcShapes.HeadDim(spec.Shape), split.Workers);
            buf = buf with { SeqInfo = cache.Scratch(checked((int)words), slot: 2) };
        }
        if (plan.Grid.X == 0) return;
        ArrayView<byte> dummy = cache.Dummy.View;
        var config = new KernelConfig(
            new Index3D(plan.Grid.X, plan.Grid.Y, plan.Grid.Z), new Index3D(plan.GroupSize, 1, 1),
            SharedMemoryConfig.RequestDynamic<Chunk16>(plan.SharedBytes / 16));
        kernel(config, buf.Q, buf.K, buf.V, buf.O, OrDummy(buf.Bias, dummy.Cast<ushort>()), OrDummy(buf.Mask, dummy),
            OrDummy(buf.Lse, dummy.Cast<float>()), OrDummy(buf.SeqInfo, dummy.Cast<int>()), args);
    }

    private static ArrayView<T> OrDummy<T>(ArrayView<T> view, ArrayView<T> dummy) where T : unmanaged
        => view.IsValid && view.Length > 0 ? view : dummy;

    /// <summary>
    /// Groups of this kernel resident on one SM at once, from the driver's occupancy calculator (registers and shared
    /// memory); <see cref="DeviceInfo.DefaultGroupsPerSm"/> elsewhere or if the driver does not answer.
    /// </summary>
    private static int ResidentGroupsPerSm(Accelerator acc, Kernel kernel, int sharedBytes)
    {
        if (acc is not CudaAccelerator) return DeviceInfo.DefaultGroupsPerSm;
        try
        {
            int n = acc.EstimateMaxActiveGroupsPerMultiprocessor(kernel, TensorCoreForwardKernel.Threads, sharedBytes);
            return n > 0 ? n : DeviceInfo.DefaultGroupsPerSm;
        }
        catch (Exception)
        {
            return DeviceInfo.DefaultGroupsPerSm;
        }
    }
}
