using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The buffers of one forward call; absent optional ones are empty views.</summary>
internal readonly record struct FwdBuffers<TElem>(
    ArrayView<TElem> Q, ArrayView<TElem> K, ArrayView<TElem> V, ArrayView<TElem> O,
    ArrayView<TElem> Bias, ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<int> SeqInfo)
    where TElem : unmanaged;

/// <summary>Plans a validated forward problem (<see cref="ForwardPlanner"/>) and executes the plan.</summary>
internal static class ForwardLauncher
{
    /// <summary>The plan for this call on this accelerator, as <see cref="Launch{TElem, TCodec}"/> would execute it.</summary>
    public static ForwardPlan Plan<TElem, TCodec>(Accelerator accelerator, LaunchOptions options, in FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var cache = KernelCache.For(accelerator);
        var device = cache.Device(() => DeviceInfo.Of(accelerator, null))
            with { GroupsPerSm = spec => TensorCoreLauncher.Load(accelerator, spec, options.DiskCache).GroupsPerSm };
        var facts = new BufferFacts(ElemOf<TCodec>(), Aligned16(accelerator, buffers), buffers.SeqInfo.IsValid ? checked((int)buffers.SeqInfo.Length) : 0);
        return ForwardPlanner.Plan(p, facts, device, options);
    }

    public static void Launch<TElem, TCodec>(Accelerator accelerator, LaunchOptions options, in FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        // One call's launches are enqueued together (they share the accelerator's scratch buffers with other calls).
        lock (KernelCache.For(accelerator).LaunchLock)
        {
            var plan = Plan<TElem, TCodec>(accelerator, options, p, buffers);
            options.Observer?.Invoke(plan);
            Execute<TElem, TCodec>(accelerator, plan, p, buffers, options.DiskCache);
        }
    }

    private static void Execute<TElem, TCodec>(Accelerator accelerator, ForwardPlan plan, in FwdParams p, in FwdBuffers<TElem> buffers,
        Caching.KernelDiskCache? disk)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var args = KernelArgs.From(p);
        var b = buffers;
        if (plan.Gather is { } g)
        {
            var table = KeyGatherKernel.BuildTable(accelerator, g, ref args, b.Mask, b.SeqInfo, disk);
            var bias = g.GatherBias ? KeyGatherKernel.GatherBias(accelerator, ref args, b.Bias, table, disk) : b.Bias;
            b = b with { SeqInfo = table, Bias = bias };
        }
        if (plan.Family == KernelFamily.TensorCore)
        {
            var tcArgs = args;
            var lse = b.Lse;
            ArrayView<float> work = default;
            if (plan.KvSplit is { } kv)
            {
                // The attention kernel writes each key range's O and LSE into the work buffer (its lse view), the
                // combine kernel the output.
                tcArgs = SplitArgs(args, kv);
                work = KernelCache.For(accelerator).Scratch(checked((int)kv.WorkFloats), slot: 3).Cast<float>();
                lse = work;
            }
            TensorCoreLauncher.Execute(accelerator, plan, tcArgs, new TcBuffers(
                b.Q.Cast<ushort>(), b.K.Cast<ushort>(), b.V.Cast<ushort>(), b.O.Cast<ushort>(),
                b.Bias.IsValid && b.Bias.Length > 0 ? b.Bias.Cast<ushort>() : ArrayView<ushort>.Empty, b.Mask, lse, b.SeqInfo), disk);
            if (plan.KvSplit is { } split && plan.Grid.X > 0)
                Combine<TElem, TCodec>(accelerator, args, split, work, b, disk);
            return;
        }
        var shape = plan.Portable!.Value;
        args.TileQ = shape.TileQ;
        args.TileK = shape.TileK;
        LaunchPortable<TElem, TCodec>(accelerator, plan, args, b, disk);
    }

    /// <summary>
    /// The kernel's view of a split-KV plan: its split count and partial output; with packed GQA the kv head's query
    /// heads as rows: heads → kv heads, Pack·SeqQ rows (TcLoads.LoadQ finds each row's query), no causal band (the
    /// planner packs causal problems only with one query, which sees every key).
    /// </summary>
    internal static KernelArgs SplitArgs(in KernelArgs args, TcKvSplit kv)
    {
        var a = args;
        a.KvSplits = kv.Splits;
        a.Partial = 1;
        if (kv.Pack > 1)
        {
            a.QPack = kv.Pack;
            a.QPackRows = a.SeqQ;
            a.Heads = a.KvHeads;
            a.HeadGroup = 1;
            a.SeqQ *= kv.Pack;
            a.Causal = 0;
        }
        return a;
    }

    /// <summary>Merges a split-KV launch's partial outputs into O and the LSE (<see cref="TcSplitKv.Combine{TElem, TCodec}"/>).</summary>
    private static void Combine<TElem, TCodec>(Accelerator accelerator, in KernelArgs args, TcKvSplit kv, ArrayView<float> work,
        in FwdBuffers<TElem> b, Caching.KernelDiskCache? disk)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        long total = (long)args.Batch * args.Heads * args.SeqQ * args.HeadDim;
        if (total == 0) return;
        var cache = KernelCache.For(accelerator);
        var kernel = cache.GetOrAdd(("splitkv-combine", typeof(TElem), typeof(TCodec)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<TElem>,
                ArrayView<float>, ArrayView<int>, KernelArgs, int, int>>(acc, disk, TcSplitKv.Combine<TElem, TCodec>));
        ArrayView<byte> dummy = cache.Dummy.View;
        var lse = b.Lse.IsValid && b.Lse.Length > 0 ? b.Lse : dummy.Cast<float>();
        var seq = b.SeqInfo.IsValid && b.SeqInfo.Length > 0 ? b.SeqInfo : dummy.Cast<int>();
        kernel(accelerator.DefaultStream, KernelCache.Linear(accelerator, total), work, b.O, lse, seq, args, kv.Splits, kv.Pack);
    }

    /// <summary>The portable kernel: every accelerator, head dim and dtype.</summary>
    private static void LaunchPortable<TElem, TCodec>(Accelerator accelerator, ForwardPlan plan, in KernelArgs args, in FwdBuffers<TElem> buffers,
        Caching.KernelDiskCache? disk)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        if (plan.Grid.X == 0) return;
        var cache = KernelCache.For(accelerator);
        var kernel = cache.GetOrAdd(
            ("portable-fwd", typeof(TElem), typeof(TCodec)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<TElem>, ArrayView<TElem>,
                ArrayView<TElem>, ArrayView<TElem>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, KernelArgs>>(
                acc, disk, PortableForwardKernel.Run<TElem, TCodec>));
        ArrayView<byte> dummy = cache.Dummy.View;
        var bias = buffers.Bias.IsValid && buffers.Bias.Length > 0 ? buffers.Bias : dummy.Cast<TElem>();
        var mask = buffers.Mask.IsValid && buffers.Mask.Length > 0 ? buffers.Mask : dummy;
        var lse = buffers.Lse.IsValid && buffers.Lse.Length > 0 ? buffers.Lse : dummy.Cast<float>();
        var seq = buffers.SeqInfo.IsValid && buffers.SeqInfo.Length > 0 ? buffers.SeqInfo : dummy.Cast<int>();
        var config = new KernelConfig(
            new Index3D(plan.Grid.X, plan.Grid.Y, plan.Grid.Z), new Index3D(plan.GroupSize, 1, 1),
            SharedMemoryConfig.RequestDynamic<float>(plan.SharedBytes / sizeof(float)));
        kernel(accelerator.DefaultStream, config, buffers.Q, buffers.K, buffers.V, buffers.O, bias, mask, lse, seq, args);
    }

    private static ElemKind ElemOf<TCodec>() where TCodec : struct
        => typeof(TCodec) == typeof(Bf16Codec) ? ElemKind.BFloat16
            : typeof(TCodec) == typeof(Fp16Codec) ? ElemKind.Float16
            : ElemKind.Float32;

    /// <summary>q, k and v start 16-byte aligned (asked only where the tensor-core kernel may run: CUDA and CPU).</summary>
    private static bool Aligned16<TElem>(Accelerator accelerator, in FwdBuffers<TElem> b) where TElem : unmanaged
    {
        if (accelerator.AcceleratorType is not (AcceleratorType.Cuda or AcceleratorType.CPU)) return false;
        return Aligned(b.Q.Cast<byte>()) && Aligned(b.K.Cast<byte>()) && Aligned(b.V.Cast<byte>());

        static bool Aligned(ArrayView<byte> view)
            => view.IsValid && view.Length > 0 && (view.LoadEffectiveAddressAsPtr().ToInt64() & 15) == 0;
    }
}
