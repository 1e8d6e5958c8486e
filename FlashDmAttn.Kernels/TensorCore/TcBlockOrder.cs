using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Which (batch·head, query block) a group takes. The grid is one-dimensional, Batch·Heads·blocks groups, walked in
/// chunks of <see cref="FwdParams.HeadChunk"/> heads: inside a chunk, level by level from the last query block (with a
/// causal band it sees the most keys) to the first, each level over the chunk's heads.
/// <list type="bullet">
/// <item>Chunks of one head (blocks first): the groups running at once share one or two heads' K/V in L2. Non-causal
/// attention uses it: every group has the same work.</item>
/// <item>Larger chunks dispatch the long blocks of all the chunk's heads before their short ones
/// (longest-processing-time-first). With one-head chunks, the last heads' long blocks start in the last wave and leave
/// the other SMs idle at the end (ncu of causal maskbias: SMs active 87 % of the kernel's cycles).
/// <see cref="ChunkFor"/> picks the chunk.</item>
/// </list>
/// </summary>
public static class TcBlockOrder
{
    /// <summary>This group's (batch·head) index and first query row, for query blocks of <paramref name="rows"/> rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BatchHead(in FwdParams p, int rows, out int row0)
    {
        int heads = p.Batch * p.Heads;
        int bh = Place(Grid.IdxX, Grid.DimX / heads, heads, p.HeadChunk, out int block);
        row0 = block * rows;
        return bh;
    }

    /// <summary>Group <paramref name="id"/> of <paramref name="blocks"/>·<paramref name="heads"/>: its head and query block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Place(int id, int blocks, int heads, int chunk, out int block)
    {
        int perChunk = chunk * blocks;
        int c = id / perChunk;
        int r = id - c * perChunk;
        int h0 = c * chunk;
        int inChunk = heads - h0 < chunk ? heads - h0 : chunk; // the last chunk may be smaller
        int level = r / inChunk;
        block = blocks - 1 - level;
        return h0 + r - level * inChunk;
    }

    /// <summary>
    /// Host side: heads per chunk. One without a causal band or variable lengths (equal work). Otherwise enough heads
    /// that the last chunk's work covers the resident groups (<paramref name="slots"/>) about four times over its
    /// longest block's: chunk·blocks²/2 tile steps on <paramref name="slots"/> groups ≥ 2·blocks, so chunk ≥
    /// 4·slots/blocks; no more, so that the chunk's heads share L2 (every head in one chunk was 2–4 % slower at
    /// L = 1024 with 256 heads: H100, PERF-NOTES v10).
    /// </summary>
    public static int ChunkFor(int blocks, int batchHeads, bool unequalWork, int slots)
    {
        if (!unequalWork || blocks <= 0 || batchHeads <= 0) return 1;
        long want = (4L * slots + blocks - 1) / blocks;
        return (int)Math.Clamp(want, 1, batchHeads);
    }
}
