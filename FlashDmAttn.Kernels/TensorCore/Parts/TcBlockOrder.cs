using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Which (batch·head, query block) a group takes. The grid is (chunk, blocks, chunks). CUDA starts blocks x fastest,
/// then y, then z (observed behaviour, which the measured gains rest on; not a documented guarantee), so the heads are
/// walked in chunks, and inside a chunk level by level from the last query block (with a
/// causal band it sees the most keys) to the first, each level over the chunk's heads. The indices come straight from
/// the grid registers (ptxas recomputes them where it needs them instead of keeping them live: a one-dimensional grid
/// with divisions here cost the D = 128 kernels 16–32 B more spill stores).
/// <list type="bullet">
/// <item>Chunks of one head (blocks first): the groups running at once share one or two heads' K/V in L2. Non-causal
/// attention uses it: every group has the same work.</item>
/// <item>Larger chunks dispatch the long blocks of all the chunk's heads before their short ones
/// (longest-processing-time-first). With one-head chunks the last heads' long blocks start in the last wave and leave
/// the other SMs idle at the end.
/// <see cref="ChunkFor"/> picks the chunk.</item>
/// </list>
/// The tensor-core backward's key-block and dq kernels take the same grids (<see cref="Grid3"/>, <see cref="ChunkFor"/>)
/// with their own levels: key tiles from the first, query tiles from the last.
/// </summary>
internal static class TcBlockOrder
{
    /// <summary>CUDA's limit on a grid's y and z sizes.</summary>
    public const int MaxGridYz = 65535;

    /// <summary>This group's (batch·head) index (past the last head when the last chunk is short: the group has no work)
    /// and its first query row, for query blocks of <paramref name="rows"/> rows; with <paramref name="splits"/> key
    /// ranges per block (split-KV) each level of y holds a block's splits side by side.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BatchHead(int rows, int splits, out int row0)
        => Place(Grid.IdxX, Grid.IdxY, Grid.IdxZ, Grid.DimX, Grid.DimY, rows, splits, out row0);

    /// <summary>The group at (x, y, z) of a grid (<paramref name="dimX"/>, <paramref name="dimY"/>, ·).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Place(int x, int y, int z, int dimX, int dimY, int rows, int splits, out int row0)
    {
        row0 = splits > 1 ? (dimY / splits - 1 - y / splits) * rows : (dimY - 1 - y) * rows;
        return z * dimX + x;
    }

    /// <summary>Which of a block's key ranges this group takes (0 without split-KV).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Split(int splits) => splits > 1 ? Grid.IdxY % splits : 0;

    /// <summary>
    /// Host side: heads per chunk. One without a causal band or variable lengths (equal work). Otherwise enough heads that
    /// the last chunk's work covers the resident groups (<paramref name="slots"/>) about four times over its longest
    /// block's: chunk·blocks²/2 tile steps on <paramref name="slots"/> groups ≥ 2·blocks, so chunk ≥ 4·slots/blocks; no
    /// more, so that the chunk's heads share L2 (all heads in one chunk lost to both one-head chunks and these).
    /// </summary>
    public static int ChunkFor(int blocks, int heads, bool unequalWork, int slots)
        => !unequalWork || blocks <= 0 ? 1 : (int)Math.Clamp((4L * slots + blocks - 1) / blocks, 1, Math.Max(heads, 1));

    /// <summary>Host side: the grid for <paramref name="blocks"/> query blocks of <paramref name="heads"/> heads in chunks
    /// of about <paramref name="chunk"/> heads: heads / chunk rounded to the nearest count of chunks, the heads split
    /// evenly over them (at most one idle group per chunk and block), and no more chunks than the grid's z size allows.</summary>
    public static (int X, int Y, int Z) Grid3(int blocks, int heads, int chunk, int splits = 1)
    {
        if (blocks <= 0 || heads <= 0) return (0, 0, 0);
        int want = Math.Clamp(chunk, 1, heads);
        long chunks = Math.Clamp((heads + want / 2) / want, 1, MaxGridYz);
        int size = (int)((heads + chunks - 1) / chunks);
        return (size, blocks * Math.Max(splits, 1), (heads + size - 1) / size);
    }
}
