using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Masking;

/// <summary>Where the rows of a (B, H, Lq, Lk) bias and of its mask live.</summary>
public struct TopKParams
{
    public int Heads, RowsPerHead, SeqK, Keep;
    public long InStrideB, InStrideH, InStrideQ;
    public long OutStrideB, OutStrideH, OutStrideQ;
}

/// <summary>
/// The dynamic mask: for every row of a bias, 1 for its <c>Keep</c> largest entries and 0 elsewhere, computed on
/// the device so no L×L array ever reaches the host. One group per row: a 32-step radix select over
/// order-preserving keys finds the Keep-th largest value t; entries above t are kept, and ties at t are kept
/// lowest index first until exactly Keep are set (min(Keep, Lk) when the row is shorter).
/// </summary>
public static class TopKMaskKernel
{
    /// <summary>fp32 bits → unsigned key with the same order (NaN sorts above +∞).</summary>
    public static uint OrderKey(float value)
    {
        uint u = Interop.FloatAsInt(value);
        return (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;
    }

    public static void Run<TElem, TCodec>(ArrayView<TElem> bias, ArrayView<byte> mask, TopKParams p)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var counter = SharedMemory.Allocate<int>(1);
        var prefix = SharedMemory.GetDynamic<int>();
        int tid = Group.IdxX, nt = Group.DimX;
        int row = Grid.IdxX;
        int bh = row / p.RowsPerHead, i = row - bh * p.RowsPerHead;
        int b = bh / p.Heads, h = bh - b * p.Heads;
        long inRow = b * p.InStrideB + h * p.InStrideH + i * p.InStrideQ;
        long outRow = b * p.OutStrideB + h * p.OutStrideH + i * p.OutStrideQ;
        int n = p.SeqK, keep = p.Keep < n ? p.Keep : n;

        // Radix select: the largest t with #(key >= t) >= keep.
        uint t = 0;
        for (int bit = 31; bit >= 0 && keep > 0; bit--)
        {
            uint candidate = t | (1u << bit);
            if (tid == 0) counter[0] = 0;
            Group.Barrier();
            int local = 0;
            for (int j = tid; j < n; j += nt)
                if (OrderKey(TCodec.ToFloat(bias[inRow + j])) >= candidate) local++;
            if (local > 0) Atomic.Add(ref counter[0], local);
            Group.Barrier();
            if (counter[0] >= keep) t = candidate;
            Group.Barrier();
        }

        // Ties at t: each thread owns a contiguous chunk; an exclusive scan of the chunks' tie counts orders them.
        int chunk = (n + nt - 1) / nt, start = tid * chunk, end = start + chunk < n ? start + chunk : n;
        int above = 0, ties = 0;
        for (int j = start; j < end; j++)
        {
            uint key = OrderKey(TCodec.ToFloat(bias[inRow + j]));
            if (keep > 0 && key > t) above++;
            else if (keep > 0 && key == t) ties++;
        }
        prefix[tid] = ties;
        prefix[nt + tid] = above;
        Group.Barrier();
        if (tid == 0)
        {
            int runTies = 0, runAbove = 0;
            for (int x = 0; x < nt; x++)
            {
                int c = prefix[x];
                prefix[x] = runTies;
                runTies += c;
                runAbove += prefix[nt + x];
            }
            counter[0] = keep - runAbove; // ties to keep
        }
        Group.Barrier();
        int tiesToKeep = counter[0], seen = prefix[tid];
        for (int j = start; j < end; j++)
        {
            uint key = OrderKey(TCodec.ToFloat(bias[inRow + j]));
            byte m = 0;
            if (keep > 0 && key > t) m = 1;
            else if (keep > 0 && key == t)
            {
                if (seen < tiesToKeep) m = 1;
                seen++;
            }
            mask[outRow + j] = m;
        }
    }

    public static void Launch<TElem, TCodec>(Accelerator accelerator, ArrayView<TElem> bias, ArrayView<byte> mask, TopKParams p, int rows)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        if (rows == 0 || p.SeqK == 0) return;
        var kernel = KernelCache.For(accelerator).GetOrAdd(
            ("topk-mask", typeof(TElem), typeof(TCodec)),
            acc => acc.LoadStreamKernel<ArrayView<TElem>, ArrayView<byte>, TopKParams>(Run<TElem, TCodec>));
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;
        kernel(new KernelConfig(rows, group, SharedMemoryConfig.RequestDynamic<int>(2 * group)), bias, mask, p);
    }
}
