using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Which (batch·head, query block) a group takes, and the grid that goes with it. Query blocks are taken last-first
/// (with a causal band the last rows see the most keys). Two orders:
/// <list type="bullet">
/// <item>blocks first: grid (query blocks, Batch·Heads); the groups running at once share one or two heads' K/V in L2.
/// Non-causal attention uses it: every group has the same work.</item>
/// <item>heads first (<see cref="FwdParams.HeadsFirst"/>): grid (Batch·Heads, query blocks), so the longest query block
/// of every head is dispatched before any shorter one (longest-processing-time-first). With blocks first, the last
/// head's long blocks start in the last wave and leave the other SMs idle at the end (ncu of causal maskbias: SMs active
/// 87 % of the kernel's cycles).</item>
/// </list>
/// </summary>
public static class TcBlockOrder
{
    /// <summary>CUDA's limit on a grid's y and z sizes.</summary>
    public const int MaxGridY = 65535;

    /// <summary>The (batch·head) index of this group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BatchHead(in FwdParams p) => p.HeadsFirst != 0 ? Grid.IdxX : Grid.IdxY;

    /// <summary>The first query row of this group's block of <paramref name="rows"/> rows (last block first).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Row0(in FwdParams p, int rows)
        => p.HeadsFirst != 0 ? (Grid.DimY - 1 - Grid.IdxY) * rows : (Grid.DimX - 1 - Grid.IdxX) * rows;

    /// <summary>
    /// Host side: the grid for <paramref name="queryBlocks"/> blocks of <paramref name="batchHeads"/> heads, and whether it
    /// is heads first. Heads first when <paramref name="preferHeadsFirst"/> and the blocks fit the grid's y size, or when
    /// the heads do not fit it.
    /// </summary>
    public static (int X, int Y, bool HeadsFirst) Grid2D(int queryBlocks, int batchHeads, bool preferHeadsFirst)
    {
        bool headsFirst = preferHeadsFirst ? queryBlocks <= MaxGridY : batchHeads > MaxGridY;
        return headsFirst ? (batchHeads, queryBlocks, true) : (queryBlocks, batchHeads, false);
    }
}
