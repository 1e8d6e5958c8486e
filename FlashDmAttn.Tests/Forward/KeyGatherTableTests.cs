using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// The key table of a mask broadcast over queries, against the same lists made on the host: per row the count, the
/// ascending visible keys and every key's rank, for rows several chunks long (KeyGatherKernel.Chunk keys per group),
/// ragged last chunks, a row with no visible key and one with all; on the CPU accelerator and on CUDA.
/// </summary>
[TestFixture("cpu")]
[CudaFixture("cuda")]
public class KeyGatherTableTests(string backendName)
{
    [TestCase(1, 3, 9000, 0.3)]
    [TestCase(2, 2, 4096, 0.01)]
    [TestCase(1, 2, 2 * KeyGatherKernel.Chunk + 1, 0.5)]
    [TestCase(3, 1, 100, 0.7)]
    public void ListsCountsAndRanksMatchTheHost(int batch, int heads, int seqK, double visible)
    {
        var acc = TestBackends.Get(backendName).Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int rows = batch * heads;
        var mask = new byte[(long)rows * seqK];
        for (long e = 0; e < mask.Length; e++) mask[e] = (byte)(rng.NextDouble() < visible ? 1 + rng.Next(255) : 0);
        for (int j = 0; j < seqK; j++) mask[j] = 0;                            // row 0: nothing visible
        if (rows > 1) for (int j = 0; j < seqK; j++) mask[(long)seqK + j] = 1; // row 1: everything

        var p = new KernelArgs
        {
            Batch = batch, Heads = heads, SeqK = seqK, HasMask = 1, MaskElemBytes = 1,
            MaskStrideB = (long)heads * seqK, MaskStrideH = seqK, MaskStrideQ = 0,
        };
        const int prefix = 5; // stands in for the call's seqInfo, which the table starts with
        var g = new GatherPlan(heads, heads, rows, prefix, prefix + rows + 2L * rows * seqK, false);
        using var maskBuf = acc.Allocate1D(mask);
        using var info = acc.Allocate1D(Enumerable.Range(100, prefix).ToArray());
        var table = KeyGatherKernel.BuildTable(acc, g, ref p, maskBuf.View, info.View, null);
        acc.Synchronize();
        using var copy = acc.Allocate1D<int>(g.TableLength);
        table.SubView(0, g.TableLength).CopyTo((ArrayView<int>)copy.View);
        var got = copy.GetAsArray1D();

        Assert.That(got.Take(prefix), Is.EqualTo(Enumerable.Range(100, prefix)), "the call's seqInfo first");
        Assert.That(p.GatherKeys, Is.EqualTo(1));
        for (int r = 0; r < rows; r++)
        {
            var keys = Enumerable.Range(0, seqK).Where(j => mask[(long)r * seqK + j] != 0).ToArray();
            Assert.That(got[prefix + r], Is.EqualTo(keys.Length), $"row {r} count (seed {seed})");
            long list = prefix + rows + (long)r * seqK, rank = prefix + rows + (long)(rows + r) * seqK;
            Assert.That(got.Skip((int)list).Take(keys.Length), Is.EqualTo(keys), $"row {r} keys (seed {seed})");
            int below = 0;
            for (int j = 0; j < seqK; j++)
            {
                if (got[rank + j] != below)
                    Assert.Fail($"row {r}: rank of key {j} is {got[rank + j]}, expected {below} (seed {seed})");
                if (mask[(long)r * seqK + j] != 0) below++;
            }
        }
    }
}
