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
        foreach (int blocks in new[] { 1, 2, 7, 32 })
        foreach (int heads in new[] { 1, 3, 24, 65 })
        foreach (int chunk in new[] { 1, 2, 5, 24, 65 }.Where(c => c <= heads))
        {
            var seen = new bool[heads, blocks];
            int lastChunk = -1, lastBlock = int.MaxValue;
            for (int id = 0; id < blocks * heads; id++)
            {
                int h = TcBlockOrder.Place(id, blocks, heads, chunk, out int b);
                Assert.That(h, Is.InRange(0, heads - 1), $"blocks {blocks} heads {heads} chunk {chunk} id {id}");
                Assert.That(b, Is.InRange(0, blocks - 1));
                Assert.That(seen[h, b], Is.False, $"({h}, {b}) twice");
                seen[h, b] = true;
                // Chunks in order; inside one, blocks never increase (the last query block, the longest, first).
                int c = h / chunk;
                Assert.That(c, Is.GreaterThanOrEqualTo(lastChunk));
                if (c == lastChunk) Assert.That(b, Is.LessThanOrEqualTo(lastBlock));
                (lastChunk, lastBlock) = (c, b);
            }
        }
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
