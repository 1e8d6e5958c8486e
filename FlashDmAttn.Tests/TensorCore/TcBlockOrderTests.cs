using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>The launch order of the tensor-core kernel. That the kernel writes every row under each order is shown by
/// the TensorCore CPU and GPU tests (causal and variable-length cases run chunks of several heads, the others one).</summary>
[TestFixture]
public class TcBlockOrderTests
{
    [Test]
    public void EveryBlockOfEveryHeadOnceLongestFirstInEachChunk()
    {
        const int rows = 64;
        foreach (int blocks in new[] { 1, 2, 7, 32 })
        foreach (int heads in new[] { 1, 3, 24, 65 })
        foreach (int want in new[] { 1, 2, 5, 24, 65, 1000 })
        {
            var (dx, dy, dz) = TcBlockOrder.Grid3(blocks, heads, want);
            Assert.That(dy, Is.EqualTo(blocks));
            Assert.That(dx * dz, Is.LessThan(heads + dz), "at most one idle group per chunk and block");
            var seen = new bool[heads, blocks];
            int lastChunk = -1, lastRow = int.MaxValue;
            // CUDA's dispatch order: x fastest, then y, then z.
            for (int z = 0; z < dz; z++)
            for (int y = 0; y < dy; y++)
            for (int x = 0; x < dx; x++)
            {
                int h = TcBlockOrder.Place(x, y, z, dx, dy, rows, out int row0);
                if (h >= heads) continue; // idle group of a short last chunk
                Assert.That(row0 % rows, Is.Zero);
                int b = row0 / rows;
                Assert.That(b, Is.InRange(0, blocks - 1));
                Assert.That(seen[h, b], Is.False, $"blocks {blocks} heads {heads} chunk {want}: ({h}, {b}) twice");
                seen[h, b] = true;
                // Inside a chunk, blocks never increase (the last query block, the longest, first).
                if (z == lastChunk) Assert.That(row0, Is.LessThanOrEqualTo(lastRow));
                (lastChunk, lastRow) = (z, row0);
            }
            Assert.That(seen.Cast<bool>().All(s => s), $"blocks {blocks} heads {heads} chunk {want}: a block never taken");
        }
    }

    [Test]
    public void GridStaysInsideCudaLimits()
    {
        var (x, y, z) = TcBlockOrder.Grid3(3, 200_000, 1); // one head per chunk would need 200 000 chunks
        Assert.That(z, Is.LessThanOrEqualTo(TcBlockOrder.MaxGridYz));
        Assert.That((long)x * z, Is.GreaterThanOrEqualTo(200_000));
        Assert.That(y, Is.EqualTo(3));
    }

    [Test]
    public void ChunkIsOneHeadForEqualWorkAndCoversTheSlotsOtherwise()
    {
        Assert.That(TcBlockOrder.ChunkFor(32, 64, unequalWork: false, slots: 264), Is.EqualTo(1));
        Assert.That(TcBlockOrder.ChunkFor(32, 64, unequalWork: true, slots: 264), Is.EqualTo(33)); // ⌈4·264 / 32⌉
        Assert.That(TcBlockOrder.ChunkFor(8, 256, unequalWork: true, slots: 264), Is.EqualTo(132));
        Assert.That(TcBlockOrder.ChunkFor(64, 24, unequalWork: true, slots: 264), Is.EqualTo(17));
        Assert.That(TcBlockOrder.ChunkFor(4, 3, unequalWork: true, slots: 264), Is.EqualTo(3)); // at most every head
        Assert.That(TcBlockOrder.ChunkFor(10000, 3, unequalWork: true, slots: 2), Is.EqualTo(1));
    }
}
