using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// The epilogue of a mask or bias broadcast over keys (key dim 1), run after attention without that operand.
/// A key-broadcast bias adds one constant c to every score of a row (after softcap), so the softmax and the output are
/// unchanged and only the row's log-sum-exp moves by c (rows with no visible key keep −∞; c = −∞ empties the row). A
/// key-broadcast mask shows a row all of its keys or none: masked rows get output 0 and LSE −∞, as every row with no
/// visible key does. The operands are described by <paramref name="p"/>'s mask and bias fields (read at key 0 of each
/// row); its LSE and output fields are those of the attention call.
/// </summary>
internal static class RowBroadcastKernel
{
    public static void Run<TElem, TCodec>(ArrayView<TElem> o, ArrayView<byte> mask, ArrayView<TElem> bias,
        ArrayView<float> lse, ArrayView<int> seqInfo, KernelArgs p)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        long total = (long)p.Batch * p.Heads * p.SeqQ;
        for (long w = Grid.GlobalIndex.X; w < total; w += (long)Grid.DimX * Group.DimX)
        {
            long bh = w / p.SeqQ;
            int i = (int)(w - bh * p.SeqQ);
            int b = (int)(bh / p.Heads), h = (int)(bh - (long)b * p.Heads);
            var blk = BlockInfo.Create(p, seqInfo, b);
            if (i >= blk.SeqQ) continue;
            bool visible = p.HasMask == 0 || MaskBias.MaskVisible(p, mask, MaskBias.MaskIndex(p, b, h, i), 0);
            float shift = p.HasBias != 0 ? TCodec.ToFloat(bias[MaskBias.BiasIndex(p, b, h, i)]) : 0f;
            visible &= shift != float.NegativeInfinity;
            long lseAt = b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0 + i;
            if (!visible)
            {
                long row = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, i, h);
                var zero = TCodec.FromFloat(0f);
                for (int c = 0; c < p.HeadDim; c++) o[row + c] = zero;
                if (p.WriteLse != 0) lse[lseAt] = float.NegativeInfinity;
            }
            else if (p.WriteLse != 0 && p.HasBias != 0)
            {
                lse[lseAt] += shift; // −∞ (no visible key) stays −∞
            }
        }
    }

    /// <summary>
    /// Enqueues the epilogue on the default stream, after the attention launches of the same call. Absent buffers may be
    /// empty views; <paramref name="p"/> must have HasMask or HasBias set.
    /// </summary>
    public static void Launch<TElem, TCodec>(Accelerator accelerator, in FwdParams p, ArrayView<TElem> o, ArrayView<byte> mask,
        ArrayView<TElem> bias, ArrayView<float> lse, ArrayView<int> seqInfo, Caching.KernelDiskCache? disk)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        long total = (long)p.Batch * p.Heads * p.SeqQ;
        if (total == 0) return;
        var cache = KernelCache.For(accelerator);
        var kernel = cache.GetOrAdd(("row-broadcast", typeof(TElem), typeof(TCodec)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<byte>,
                ArrayView<TElem>, ArrayView<float>, ArrayView<int>, KernelArgs>>(acc, disk, Run<TElem, TCodec>));
        ArrayView<byte> dummy = cache.Dummy.View;
        kernel(accelerator.DefaultStream, KernelCache.Linear(accelerator, total), o,
            mask.IsValid && mask.Length > 0 ? mask : dummy,
            bias.IsValid && bias.Length > 0 ? bias : dummy.Cast<TElem>(),
            lse.IsValid && lse.Length > 0 ? lse : dummy.Cast<float>(),
            seqInfo.IsValid && seqInfo.Length > 0 ? seqInfo : dummy.Cast<int>(),
            KernelArgs.From(p));
    }
}
