using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Masking;

/// <summary>Where the rows of a (B, H, Lq, Lk) bias and of its mask live.</summary>
internal struct TopKParams
{
    public int Heads, RowsPerHead, SeqK, Keep;
    public long InStrideB, InStrideH, InStrideQ;
    public long OutStrideB, OutStrideH, OutStrideQ;
}

/// <summary>
/// The dynamic mask: for every row of a bias, 1 for its <c>Keep</c> largest entries and 0 elsewhere, computed on
/// the device so no L×L array ever reaches the host. One group per row: a 4-pass radix select (8 bits a pass)
/// over order-preserving keys finds the Keep-th largest value t; entries above t are kept, and ties at t are kept
/// lowest index first until exactly Keep are set (min(Keep, Lk) when the row is shorter).
/// </summary>
internal static class TopKMaskKernel
{
    private const int Bins = 256;

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
        var hist = SharedMemory.Allocate<int>(Bins + 2);
        int tid = Group.IdxX, nt = Group.DimX;
        int row = Grid.IdxX;
        int bh = row / p.RowsPerHead, i = row - bh * p.RowsPerHead;
        int b = bh / p.Heads, h = bh - b * p.Heads;
        long inRow = b * p.InStrideB + h * p.InStrideH + i * p.InStrideQ;
        long outRow = b * p.OutStrideB + h * p.OutStrideH + i * p.OutStrideQ;
        int n = p.SeqK, keep = p.Keep < n ? p.Keep : n;

        // Radix select, 8 bits a pass from the top: t = the key of the keep-th largest entry,
        // remaining = how many entries equal to t are kept.
        uint t = 0, known = 0;
        int remaining = keep;
        for (int shift = 24; shift >= 0 && keep > 0; shift -= 8)
        {
            for (int x = tid; x < Bins; x += nt) hist[x] = 0;
            Group.Barrier();
            for (int j = tid; j < n; j += nt)
            {
                uint key = OrderKey(TCodec.ToFloat(bias[inRow + j]));
                if ((key & known) == t) Atomic.Add(ref hist[(int)((key >> shift) & 0xFFu)], 1);
            }
            Group.Barrier();
            if (tid == 0)
            {
                int above = 0, digit = Bins - 1;
                for (; digit > 0; digit--)
                {
                    if (above + hist[digit] >= remaining) break;
                    above += hist[digit];
                }
                hist[Bins] = digit;
                hist[Bins + 1] = remaining - above;
            }
            Group.Barrier();
            t |= (uint)hist[Bins] << shift;
            known |= 0xFFu << shift;
            remaining = hist[Bins + 1];
            Group.Barrier();
        }

        // Ties at t: each thread owns a contiguous chunk; a group exclusive scan of the chunks' tie counts orders them.
        int chunk = (n + nt - 1) / nt, start = tid * chunk, end = start + chunk < n ? start + chunk : n;
        int ties = 0;
        for (int j = start; j < end; j++)
            if (keep > 0 && OrderKey(TCodec.ToFloat(bias[inRow + j])) == t) ties++;
        int seen = GroupExtensions.ExclusiveScan<int, AddInt32>(ties);
        for (int j = start; j < end; j++)
        {
            uint key = OrderKey(TCodec.ToFloat(bias[inRow + j]));
            byte m = 0;
            if (keep > 0 && key > t) m = 1;
            else if (keep > 0 && key == t)
            {
                if (seen < remaining) m = 1;
                seen++;
            }
            mask[outRow + j] = m;
        }
    }

    public static void Launch<TElem, TCodec>(Accelerator accelerator, ArrayView<TElem> bias, ArrayView<byte> mask, TopKParams p, int rows,
        Caching.KernelDiskCache? disk)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        if (rows == 0 || p.SeqK == 0) return;
        var kernel = KernelCache.For(accelerator).GetOrAdd(
            ("topk-mask", typeof(TElem), typeof(TCodec)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<byte>, TopKParams>>(
                acc, disk, Run<TElem, TCodec>));
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;
        kernel(accelerator.DefaultStream, new KernelConfig(rows, group), bias, mask, p);
    }
}
