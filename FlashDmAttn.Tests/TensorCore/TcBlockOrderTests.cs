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
                int h = TcBlockOrder.Place(x, y, z, dx, dy, rows, 1, out int row0);
                if (h >= heads) continue; // idle group of a short last chunk
                Assert.That(h / dx, Is.EqualTo(z), "a chunk's heads are next to each other");
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
    public void SplitsOfABlockSitSideBySideAlongY()
    {
        const int rows = 64;
        foreach (int splits in new[] { 2, 3, 15 })
        foreach (int blocks in new[] { 1, 3 })
        {
            var (dx, dy, dz) = TcBlockOrder.Grid3(blocks, 5, 1, splits);
            Assert.That(dy, Is.EqualTo(blocks * splits));
            var seen = new HashSet<(int, int, int)>();
            for (int z = 0; z < dz; z++)
            for (int y = 0; y < dy; y++)
            for (int x = 0; x < dx; x++)
            {
                int h = TcBlockOrder.Place(x, y, z, dx, dy, rows, splits, out int row0);
                if (h >= 5) continue;
                Assert.That(row0 / rows, Is.InRange(0, blocks - 1));
                Assert.That(seen.Add((h, row0, y % splits)), Is.True, "each (head, block, split) once");
            }
            Assert.That(seen, Has.Count.EqualTo(5 * blocks * splits));
        }
    }

    [TestCase(4, 24, 5, 5, 5)]      // 24 / 5 = 4.8 → 5 chunks of 5 heads (one idle group per block)
    [TestCase(8, 256, 132, 128, 2)] // 1.94 → 2 chunks of 128
    [TestCase(256, 8, 5, 4, 2)]     // 1.6 → 2 chunks of 4
    [TestCase(64, 24, 17, 24, 1)]   // 1.41 → 1 chunk: every head
    [TestCase(32, 64, 1, 1, 64)]    // one head per chunk: the query blocks of a head together
    public void GridHonoursTheChunk(int blocks, int heads, int chunk, int size, int chunks)
        => Assert.That(TcBlockOrder.Grid3(blocks, heads, chunk), Is.EqualTo((size, blocks, chunks)));

    [Test]
    public void GridStaysInsideCudaLimits()
    {
        // One head per chunk would need 200 000 chunks: 65 535 at most, so ⌈200 000 / 65 535⌉ = 4 heads each.
        Assert.That(TcBlockOrder.Grid3(3, 200_000, 1), Is.EqualTo((4, 3, 50_000)));
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
