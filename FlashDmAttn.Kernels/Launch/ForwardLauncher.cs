using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The buffers of one forward call; absent optional ones are empty views.</summary>
public readonly record struct FwdBuffers<TElem>(
    ArrayView<TElem> Q, ArrayView<TElem> K, ArrayView<TElem> V, ArrayView<TElem> O,
    ArrayView<TElem> Bias, ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<int> SeqInfo)
    where TElem : unmanaged;

/// <summary>Chooses the forward kernel and its launch shape for a validated problem, and launches it.</summary>
public static class ForwardLauncher
{
    private const int PortableSharedBudget = 48 * 1024;

    /// <summary>FLASHDMATTN_KERNEL=portable sends every problem to the portable kernel (debugging, baselines).</summary>
    public static readonly bool ForcePortable =
        string.Equals(Environment.GetEnvironmentVariable("FLASHDMATTN_KERNEL"), "portable", StringComparison.OrdinalIgnoreCase);

    /// <summary>Tile shape and group size of the portable kernel for this accelerator and head dim.</summary>
    public static (int TileQ, int TileK, int GroupSize) PortableShape(Accelerator accelerator, int headDim, int maxSeq)
    {
        int budget = Math.Min(PortableSharedBudget, accelerator.MaxSharedMemoryPerGroup);
        int tile = 64;
        while (tile > 8 && PortableForwardKernel.SharedFloats(tile, tile, headDim) * sizeof(float) > budget)
            tile /= 2;
        // Small problems: no point in tiles longer than the sequences.
        while (tile > 8 && tile / 2 >= maxSeq)
            tile /= 2;
        bool cpu = accelerator.AcceleratorType == AcceleratorType.CPU;
        int group = cpu ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 128;
        return (tile, tile, group);
    }

    /// <summary>Which forward kernel a bf16 problem of this head dim gets here, for logs and benchmarks.</summary>
    public static string Describe(Accelerator accelerator, int headDim)
    {
        if (!ForcePortable && accelerator.AcceleratorType == AcceleratorType.Cuda && TensorCoreLauncher.SupportsHeadDim(headDim))
            return $"tensor-core mma.sync (D={headDim})";
        var (tq, tk, g) = PortableShape(accelerator, headDim, int.MaxValue);
        return $"portable(tile {tq}x{tk}, {g} threads)";
    }

    public static void Launch<TElem, TCodec>(Accelerator accelerator, FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        // One call's launches are enqueued together (they share the accelerator's scratch buffers with other calls).
        lock (KernelCache.For(accelerator).LaunchLock)
        {
            var b = buffers;
            // A mask broadcast over queries (with a bias that is too, or none): list the visible keys once, so the
            // kernels walk w keys instead of Lk.
            if (p.HasMask != 0 && p.MaskStrideQ == 0 && p.SeqK > 0 && (p.HasBias == 0 || p.BiasStrideQ == 0))
            {
                var table = KeyGatherKernel.Prepare(accelerator, ref p, b.Mask, b.SeqInfo);
                var bias = p.HasBias != 0 ? KeyGatherKernel.GatherBias(accelerator, ref p, b.Bias, table) : b.Bias;
                b = b with { SeqInfo = table, Bias = bias };
            }
            if (!ForcePortable && TensorCoreLauncher.TryLaunch<TElem, TCodec>(accelerator, p, b))
                return;
            LaunchPortable<TElem, TCodec>(accelerator, p, b);
        }
    }

    /// <summary>The portable kernel: every accelerator, head dim and dtype.</summary>
    public static void LaunchPortable<TElem, TCodec>(Accelerator accelerator, FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var cache = KernelCache.For(accelerator);
        var seqInfo = buffers.SeqInfo;
        var (tileQ, tileK, group) = PortableShape(accelerator, p.HeadDim, Math.Max(p.SeqQ, p.SeqK));
        p.TileQ = tileQ;
        p.TileK = tileK;
        var kernel = cache.GetOrAdd(
            ("portable-fwd", typeof(TElem), typeof(TCodec)),
            acc => acc.LoadStreamKernel<ArrayView<TElem>, ArrayView<TElem>, ArrayView<TElem>, ArrayView<TElem>,
                ArrayView<TElem>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, FwdParams>(
                PortableForwardKernel.Run<TElem, TCodec>));

        ArrayView<byte> dummy = cache.Dummy.View;
        var bias = buffers.Bias.IsValid && buffers.Bias.Length > 0 ? buffers.Bias : dummy.Cast<TElem>();
        var mask = buffers.Mask.IsValid && buffers.Mask.Length > 0 ? buffers.Mask : dummy;
        var lse = buffers.Lse.IsValid && buffers.Lse.Length > 0 ? buffers.Lse : dummy.Cast<float>();
        var seq = seqInfo.IsValid && seqInfo.Length > 0 ? seqInfo : dummy.Cast<int>();

        int gridX = (p.SeqQ + tileQ - 1) / tileQ;
        int gridY = p.Batch * p.Heads;
        if (gridX == 0 || gridY == 0) return;
        var config = new KernelConfig(
            new Index2D(gridX, gridY), new Index2D(group, 1),
            SharedMemoryConfig.RequestDynamic<float>(PortableForwardKernel.SharedFloats(tileQ, tileK, p.HeadDim)));
        kernel(config, buffers.Q, buffers.K, buffers.V, buffers.O, bias, mask, lse, seq, p);
    }
}
