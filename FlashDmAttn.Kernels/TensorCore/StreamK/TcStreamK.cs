using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Host side of a stream-K launch: <paramref name="Dp"/> whole blocks, then <paramref name="Workers"/> groups
/// that walk <paramref name="PerWorker"/> consecutive key tiles each over the remaining blocks.</summary>
internal readonly record struct TcSplitPlan(int Dp, int Workers, int PerWorker);

/// <summary>
/// Stream-K for problems whose blocks all have the same work (no causal band, mask, bias, variable lengths, paging or
/// gathered keys): G blocks of T key tiles on S resident groups take ⌈G/S⌉ waves, and the last wave is partly empty (e.g.
/// D = 64, B4 H32 L4096: 4096 blocks on 264 groups = 15.5 waves, so 16). Here the blocks of all waves but the last two
/// run whole; the rest, between S and 2S blocks, is cut into S equal runs of consecutive (block, key tile) steps, one per
/// worker group, so every group ends at about the same time (CUTLASS's data-parallel + stream-K hybrid). A run is at
/// least T tiles long, so a block is split between at most two workers: each piece writes its unnormalised O, row max
/// and row sums to a slot of the work buffer, and the second to arrive (an atomic counter per slot) merges both and
/// writes the output. Nobody waits for anybody, so no co-residency is assumed. The planner takes it by default where the
/// head-dim policy has <see cref="TcTune.StreamK"/> (D = 64 on 128 rows); the launch options turn it on or off.
/// Work buffer (int words, passed as the kernel's seqInfo, which these launches do not use): S counters (zero between
/// launches: the merging group resets its own; allocation zeroes them, and a launch that aborts half-way leaves the CUDA
/// context unusable anyway; counters of a later launch with more workers fall on earlier counters or on slot 0's halves,
/// which no launch writes: slot 0 has no partner, and 2 halves hold more words than there are workers), then per
/// slot two pieces of Threads × <see cref="WordsPerThread{THd}"/> words, word i of thread t at i·Threads + t.
/// </summary>
internal static class TcStreamK
{
    private const int Threads = TensorCoreForwardKernel.Threads;

    /// <summary>
    /// Host side: the plan for <paramref name="groups"/> blocks of <paramref name="tiles"/> key tiles on
    /// <paramref name="slots"/> resident groups, or null when stream-K would not shorten the launch by at least
    /// <paramref name="minGain"/> of it (a full or nearly full last wave, one wave of work or less, one tile per block).
    /// </summary>
    public static TcSplitPlan? Plan(long groups, int tiles, int slots, double minGain = 0.01)
    {
        if (slots < 2 || tiles < 2 || groups <= slots || groups * tiles > int.MaxValue / 2) return null;
        long waves = groups / slots, rem = groups % slots;
        if (rem == 0) return null;
        // Whole waves take ⌈G/S⌉ block times; even runs take G/S: the gain is (S − rem) / S of one block time.
        double gain = (double)(slots - rem) / slots / (waves + 1);
        if (gain < minGain) return null;
        long dp = (waves - 1) * slots;
        long rest = (groups - dp) * tiles; // S + rem blocks
        int perWorker = (int)((rest + slots - 1) / slots);
        return new TcSplitPlan((int)dp, slots, perWorker);
    }

    /// <summary>Words of one thread's piece: O (D/2 per m-tile) and the row state (4 per m-tile).</summary>
    public static int WordsPerThread<THd>() where THd : struct, ITcHeadDim => THd.Mt * (THd.D / 2 + 4);

    /// <summary>Host side: the work buffer's length in int words for <paramref name="workers"/> workers.</summary>
    public static long WorkWords<THd>(int workers) where THd : struct, ITcHeadDim
        => WorkWords(THd.Mt, THd.D, workers);

    /// <summary>Host side: the work buffer's length for a policy of <paramref name="mTiles"/> m-tiles per warp and head
    /// dim <paramref name="headDim"/>.</summary>
    public static long WorkWords(int mTiles, int headDim, int workers)
        => workers + 2L * workers * Threads * (mTiles * (headDim / 2 + 4));

    /// <summary>The (block, key tile) steps [<paramref name="pos"/>, <paramref name="end"/>) of group <paramref name="g"/>
    /// (steps numbered block·tiles + tile; <paramref name="total"/> of them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Range(int g, int dp, int tiles, int perWorker, int total, out int pos, out int end)
    {
        if (g < dp)
        {
            pos = g * tiles;
            end = pos + tiles;
        }
        else
        {
            pos = dp * tiles + (g - dp) * perWorker;
            end = XMath.Min(pos + perWorker, total);
        }
    }

    /// <summary>The piece of a block that starts at step <paramref name="pos"/> of a run ending at <paramref name="end"/>:
    /// block <paramref name="block"/>, tiles [<paramref name="t0"/>, <paramref name="t1"/>); returns its slot, −1 for a
    /// whole block (a head piece, from tile 0, meets its tail in slot w + 1, a tail piece its head in slot w).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Piece(int pos, int end, int tiles, int w, out int block, out int t0, out int t1)
    {
        block = pos / tiles;
        t0 = pos - block * tiles;
        t1 = XMath.Min(tiles, t0 + (end - pos));
        return t0 == 0 && t1 == tiles ? -1 : (t0 == 0 ? w + 1 : w);
    }

    /// <summary>
    /// Kernel side, after a piece's tile loop: stores this thread's state in its half of <paramref name="slot"/>, then
    /// counts the piece in. The group that arrives second loads both halves (head piece first, so the sum does not depend
    /// on which piece finished last), merges them (returns true: write the block); the first returns false.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool Fixup<THd>(ArrayView<int> work, in KernelArgs p, int slot, int half, int tid,
        ref OAcc2 acc, ref MRow st0, ref MRow st1) where THd : struct, ITcHeadDim
    {
        int workers = Grid.DimX - p.SplitDp;
        long piece = (long)WordsPerThread<THd>() * Threads;
        long head = workers + 2 * slot * piece + tid;
        Save<THd>(work, head + half * piece, acc, st0, st1);
        MemoryFence.DeviceLevel();
        Group.Barrier();
        int arrived = 0;
        if (tid == 0) arrived = Atomic.Add(ref work[slot], 1);
        if (!Group.BarrierOr(arrived == 1)) return false;
        MemoryFence.DeviceLevel();
        if (tid == 0) work[slot] = 0; // both pieces are in: the counter is ready for the next launch
        long tail = head + piece;
        int stat = THd.Mt * (THd.D / 2);
        st0 = LoadRow(work, head + (long)stat * Threads);
        acc.A = Merge<THd>(Frag.LoadO<THd>(work, head, Threads), ref st0, Frag.LoadO<THd>(work, tail, Threads),
            LoadRow(work, tail + (long)stat * Threads));
        if (THd.Mt > 1)
        {
            long oB = (long)(THd.D / 2) * Threads, sB = (long)(stat + 4) * Threads;
            st1 = LoadRow(work, head + sB);
            acc.B = Merge<THd>(Frag.LoadO<THd>(work, head + oB, Threads), ref st1, Frag.LoadO<THd>(work, tail + oB, Threads),
                LoadRow(work, tail + sB));
        }
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Save<THd>(ArrayView<int> work, long at, in OAcc2 acc, in MRow st0, in MRow st1) where THd : struct, ITcHeadDim
    {
        int stat = THd.Mt * (THd.D / 2);
        Frag.SaveO<THd>(acc.A, work, at, Threads);
        SaveRow(work, at + (long)stat * Threads, st0);
        if (THd.Mt > 1)
        {
            Frag.SaveO<THd>(acc.B, work, at + (long)(THd.D / 2) * Threads, Threads);
            SaveRow(work, at + (long)(stat + 4) * Threads, st1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SaveRow(ArrayView<int> work, long at, in MRow r)
    {
        work[at] = (int)Interop.FloatAsInt(r.MA);
        work[at + Threads] = (int)Interop.FloatAsInt(r.MB);
        work[at + 2 * Threads] = (int)Interop.FloatAsInt(r.LA);
        work[at + 3 * Threads] = (int)Interop.FloatAsInt(r.LB);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static MRow LoadRow(ArrayView<int> work, long at) => new()
    {
        MA = Interop.IntAsFloat((uint)work[at]),
        MB = Interop.IntAsFloat((uint)work[at + Threads]),
        LA = Interop.IntAsFloat((uint)work[at + 2 * Threads]),
        LB = Interop.IntAsFloat((uint)work[at + 3 * Threads]),
    };

    /// <summary>One m-tile's two pieces: both rescaled to the larger running max (log2 units), sums and O added.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static OAcc Merge<THd>(OAcc o, ref MRow r, OAcc xo, MRow x) where THd : struct, ITcHeadDim
    {
        float mA = TcScore.Max(r.MA, x.MA), mB = TcScore.Max(r.MB, x.MB);
        float a = Factor(r.MA, mA), b = Factor(r.MB, mB), c = Factor(x.MA, mA), d = Factor(x.MB, mB);
        r = new MRow { MA = mA, MB = mB, LA = r.LA * a + x.LA * c, LB = r.LB * b + x.LB * d };
        return Frag.Combine<THd>(o, xo, a, b, c, d);
    }

    /// <summary>2^(m − max), 0 for a piece that saw no key of the row (m = −∞).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Factor(float m, float max) => m == float.NegativeInfinity ? 0f : Ptx.Ex2(m - max);
}
