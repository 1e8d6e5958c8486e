using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FlashDmAttn.Tests.Support;
using FlashDmAttn.Tests.Validation;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Decode;

/// <summary>
/// One <see cref="AttentionBackend.ForwardWithKvCache{T}"/> problem. Table null: a contiguous cache (B, PageSize, Hkv, D),
/// PageSize being Lmax; otherwise a paged cache of Blocks blocks. PackedKv: key and value caches (and the new rows)
/// are interleaved views of one (…, 2, Hkv, D) buffer, so neither is contiguous. Operands: "none", "mask+bias" (a mask
/// (B, 1, Lq, capacity) and a bias (1, H, Lq, capacity)) or "per-key" (a mask (B, Hkv, 1, capacity), whose keys are
/// gathered, and a bias (B, H, 1, capacity)).
/// </summary>
public sealed record CacheCase(int B, int Lq, int H, int Hkv, int D, int[] CacheSeqlens, int Lnew, int PageSize,
    int[,]? Table = null, int Blocks = 0, bool Causal = false, bool PackedKv = false, string Operands = "none");

/// <summary>
/// The KV-cache entry point against float64 attention over the cache as it is after the call. Every cache element is
/// first set to a distinct NaN pattern except the rows the sequences already hold: the append must write exactly the
/// new rows (each equal to keyNew/valueNew, every other element bit-identical), and attention must never read a row
/// past a sequence's length (a NaN read would spread into the output). Output and LSE start as NaN.
/// </summary>
public class KvCacheTests
{
    /// <summary>Decode steps over long caches on CUDA: the planner's split-KV and packed GQA through the cache path.</summary>
    [CudaFixture]
    public class Gpu
    {
        [Test]
        public void PagedDecodeGqa_Bf16()
            => Run<BFloat16>(new CacheCase(B: 3, Lq: 1, H: 8, Hkv: 2, D: 128, CacheSeqlens: [3000, 0, 1777], Lnew: 1, PageSize: 256,
                Table: new[,] { { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }, { 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23 },
                    { 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24 } }, Blocks: 36), "cuda");

        [Test]
        public void ContiguousSpeculativeGqa_Fp16()
            => Run<Half>(new CacheCase(B: 2, Lq: 8, H: 8, Hkv: 2, D: 64, CacheSeqlens: [2500, 4000], Lnew: 8, PageSize: 4096), "cuda");

        [Test]
        public void ContiguousCausalPerKey_Bf16()
            => Run<BFloat16>(new CacheCase(B: 2, Lq: 2, H: 4, Hkv: 2, D: 128, CacheSeqlens: [3000, 1000], Lnew: 2, PageSize: 3072,
                Causal: true, Operands: "per-key"), "cuda");
    }

    [Test]
    public void Contiguous_NoAppend_Fp32()
        => Run<float>(new CacheCase(B: 2, Lq: 1, H: 2, Hkv: 2, D: 32, CacheSeqlens: [5, 16], Lnew: 0, PageSize: 16));

    [Test]
    public void Contiguous_Append_CausalGqa_Fp32()
        => Run<float>(new CacheCase(B: 3, Lq: 3, H: 4, Hkv: 2, D: 32, CacheSeqlens: [0, 7, 21], Lnew: 3, PageSize: 24, Causal: true));

    [Test]
    public void Contiguous_Append_Bf16()
        => Run<BFloat16>(new CacheCase(B: 2, Lq: 1, H: 2, Hkv: 2, D: 32, CacheSeqlens: [3, 10], Lnew: 1, PageSize: 16));

    /// <summary>Sequence 0 appends across a page boundary (positions 6..9, pages of 8); pages partly filled; unused table
    /// slots hold −1; blocks no sequence uses must stay untouched.</summary>
    [Test]
    public void Paged_AppendCrossesPageBoundary_Fp32()
        => Run<float>(new CacheCase(B: 3, Lq: 1, H: 4, Hkv: 2, D: 64, CacheSeqlens: [6, 11, 0], Lnew: 4, PageSize: 8,
            Table: new[,] { { 7, 2, -1, -1 }, { 4, 9, 0, -1 }, { 5, 1, 3, 8 } }, Blocks: 10));

    /// <summary>Sequence 1 has an empty cache and nothing is appended: output 0, LSE −∞, no NaN.</summary>
    [Test]
    public void Paged_NoAppend_EmptySequence_Causal_Fp32()
        => Run<float>(new CacheCase(B: 3, Lq: 2, H: 2, Hkv: 1, D: 32, CacheSeqlens: [5, 0, 8], Lnew: 0, PageSize: 4,
            Table: new[,] { { 3, 0 }, { -1, -1 }, { 5, 1 } }, Blocks: 6, Causal: true));

    [Test]
    public void Paged_Append_CausalGqa_Bf16()
        => Run<BFloat16>(new CacheCase(B: 2, Lq: 2, H: 4, Hkv: 2, D: 64, CacheSeqlens: [7, 13], Lnew: 2, PageSize: 8,
            Table: new[,] { { 1, 4, 2 }, { 5, 0, 3 } }, Blocks: 6, Causal: true));

    [Test]
    public void Paged_Append_MaskAndBias_Fp32()
        => Run<float>(new CacheCase(B: 2, Lq: 2, H: 4, Hkv: 2, D: 32, CacheSeqlens: [4, 9], Lnew: 2, PageSize: 8,
            Table: new[,] { { 3, 0 }, { 1, 4 } }, Blocks: 5, Operands: "mask+bias"));

    [Test]
    public void Contiguous_Append_PerKeyMaskAndBias_Causal_Fp32()
        => Run<float>(new CacheCase(B: 2, Lq: 3, H: 4, Hkv: 2, D: 32, CacheSeqlens: [5, 12], Lnew: 2, PageSize: 16,
            Causal: true, Operands: "per-key"));

    /// <summary>Key and value caches interleaved in one buffer, new rows too: the append honours every stride.</summary>
    [Test]
    public void Paged_Append_InterleavedKv_Fp32()
        => Run<float>(new CacheCase(B: 2, Lq: 1, H: 2, Hkv: 1, D: 32, CacheSeqlens: [3, 6], Lnew: 3, PageSize: 4,
            Table: new[,] { { 2, 5, 0 }, { 4, 1, 3 } }, Blocks: 6, PackedKv: true));

    internal static void Run<T>(CacheCase c, string backendName = "cpu") where T : unmanaged
    {
        var backend = TestBackends.Get(backendName);
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int B = c.B, Lq = c.Lq, H = c.H, Hkv = c.Hkv, D = c.D, Lnew = c.Lnew, ps = c.PageSize;
        bool paged = c.Table is not null;
        int blocks = paged ? c.Blocks : B, maxPages = paged ? c.Table!.GetLength(1) : 1, cap = maxPages * ps;
        var table = c.Table ?? new int[B, 1];
        if (!paged) for (int b = 0; b < B; b++) table[b, 0] = b;
        var lens = c.CacheSeqlens.Select(n => n + Lnew).ToArray();

        // Both caches in one buffer: side by side, or interleaved row by row (…, 2, Hkv, D).
        long row = (long)Hkv * D, cacheElems = blocks * ps * row;
        long KAt(int blk, int r, int hk) => (c.PackedKv ? ((long)blk * ps + r) * 2 * row : ((long)blk * ps + r) * row) + hk * D;
        long VAt(int blk, int r, int hk) => KAt(blk, r, hk) + (c.PackedKv ? row : cacheElems);
        long newElems = (long)B * Lnew * row;
        long KNewAt(int b, int i, int hk) => (c.PackedKv ? ((long)b * Lnew + i) * 2 * row : ((long)b * Lnew + i) * row) + hk * D;
        long VNewAt(int b, int i, int hk) => KNewAt(b, i, hk) + (c.PackedKv ? row : newElems);

        var store = new T[2 * cacheElems];
        for (long e = 0; e < store.Length; e++) store[e] = DistinctNaN<T>(e);
        for (int b = 0; b < B; b++)
            for (int pos = 0; pos < c.CacheSeqlens[b]; pos++)
                for (int hk = 0; hk < Hkv; hk++)
                {
                    var (kv, _) = TestData.Normal<T>(rng, 2 * D);
                    Array.Copy(kv, 0, store, KAt(table[b, pos / ps], pos % ps, hk), D);
                    Array.Copy(kv, D, store, VAt(table[b, pos / ps], pos % ps, hk), D);
                }
        var (newRows, _) = TestData.Normal<T>(rng, 2 * newElems);

        // What the caches must hold afterwards: the store with the new rows in place.
        var expected = (T[])store.Clone();
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Lnew; i++)
                for (int hk = 0; hk < Hkv; hk++)
                {
                    int pos = c.CacheSeqlens[b] + i, blk = table[b, pos / ps];
                    Array.Copy(newRows, KNewAt(b, i, hk), expected, KAt(blk, pos % ps, hk), D);
                    Array.Copy(newRows, VNewAt(b, i, hk), expected, VAt(blk, pos % ps, hk), D);
                }

        var (q, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        HostOperand? maskRef = null, biasRef = null;
        DeviceTensor<byte>? mask = null;
        DeviceTensor<T>? bias = null;
        if (c.Operands != "none")
        {
            int[] ms = c.Operands == "mask+bias" ? [B, 1, Lq, cap] : [B, Hkv, 1, cap];
            int[] bs = c.Operands == "mask+bias" ? [1, H, Lq, cap] : [B, H, 1, cap];
            var md = new double[ms.Aggregate(1, (x, y) => x * y)];
            for (int e = 0; e < md.Length; e++) md[e] = rng.NextDouble() < 0.7 ? 1 : 0;
            var (bv, bd) = TestData.Normal<T>(rng, bs.Aggregate(1, (x, y) => x * y));
            (maskRef, biasRef) = (new HostOperand(md, ms), new HostOperand(bd, bs));
            mask = DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), ms.Select(x => (long)x).ToArray());
            bias = DeviceTensor<T>.FromHost(acc, bv, bs.Select(x => (long)x).ToArray());
        }

        using var storeT = DeviceTensor<T>.FromHost(acc, store, store.Length);
        long[] cacheStrides = c.PackedKv ? [ps * 2 * row, 2 * row, D, 1] : [ps * row, row, D, 1];
        var keyCache = storeT.View(0, [blocks, ps, Hkv, D], cacheStrides);
        var valueCache = storeT.View(c.PackedKv ? row : cacheElems, [blocks, ps, Hkv, D], cacheStrides);
        using var newT = DeviceTensor<T>.FromHost(acc, newRows, newRows.Length);
        long[] newStrides = c.PackedKv ? [Lnew * 2 * row, 2 * row, D, 1] : [Lnew * row, row, D, 1];
        var keyNew = Lnew == 0 ? null : newT.View(0, [B, Lnew, Hkv, D], newStrides);
        var valueNew = Lnew == 0 ? null : newT.View(c.PackedKv ? row : newElems, [B, Lnew, Hkv, D], newStrides);
        using var qt = DeviceTensor<T>.FromHost(acc, q, B, Lq, H, D);
        using var o = DeviceTensor<T>.FromHost(acc, TestData.Poison<T>((long)B * Lq * H * D), B, Lq, H, D);
        using var lse = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>((long)B * H * Lq), B, H, Lq);
        var seqlens = (int[])c.CacheSeqlens.Clone();

        var result = backend.ForwardWithKvCache(qt, keyCache, valueCache, seqlens, keyNew, valueNew, c.Table,
            mask is null ? null : (DeviceMask)mask, bias, isCausal: c.Causal, output: o, softmaxLse: lse);

        Assert.That(result.Data, Is.EqualTo(o.Data), "the result views the caller's output");
        Assert.That(seqlens, Is.EqualTo(c.CacheSeqlens), "cacheSeqlens is the caller's to advance");
        var after = storeT.ToHost();
        AssertBitIdentical(after, expected, $"caches after the append (seed={seed})");

        // The reference reads each sequence's rows through the table, from the cache as the call left it.
        var kd = new double[(long)B * cap * row];
        var vd = new double[kd.Length];
        for (int b = 0; b < B; b++)
            for (int pos = 0; pos < lens[b]; pos++)
                for (int hk = 0; hk < Hkv; hk++)
                    for (int x = 0; x < D; x++)
                    {
                        long dst = ((long)b * cap + pos) * row + hk * D + x;
                        kd[dst] = TestData.ToDouble(after[KAt(table[b, pos / ps], pos % ps, hk) + x]);
                        vd[dst] = TestData.ToDouble(after[VAt(table[b, pos / ps], pos % ps, hk) + x]);
                    }
        var (oRef, lseRef) = Reference.Attention(qd, kd, vd, B, Lq, cap, H, Hkv, D, maskRef, biasRef, 1 / Math.Sqrt(D),
            c.Causal, 0, seqK: lens);
        var oOut = o.ToHost().Select(TestData.ToDouble).ToArray();
        TestData.AssertClose(oOut, oRef, TestData.Tolerance<T>(), $"output (seed={seed})");
        var lseOut = lse.ToHost();
        for (int e = 0; e < lseRef.Length; e++)
            if (double.IsNegativeInfinity(lseRef[e])) Assert.That(lseOut[e], Is.EqualTo(float.NegativeInfinity), $"lse[{e}] (seed={seed})");
            else Assert.That(lseOut[e], Is.EqualTo(lseRef[e]).Within(1e-4 * Math.Max(1, Math.Abs(lseRef[e]))), $"lse[{e}] (seed={seed})");
        for (int b = 0; b < B; b++)
            if (lens[b] == 0)
                for (long e = (long)b * Lq * H * D; e < (long)(b + 1) * Lq * H * D; e++)
                    Assert.That(oOut[e], Is.EqualTo(0.0), $"output of sequence {b}, which has no keys, at {e}");
        mask?.Dispose();
        bias?.Dispose();
    }

    /// <summary>A NaN whose payload (and sign) varies with <paramref name="e"/>, so a misplaced copy shows.</summary>
    private static T DistinctNaN<T>(long e) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return (T)(object)BitConverter.UInt32BitsToSingle(0x7FC0_0000u | (uint)(e % 0x3F_FFFF + 1) | (e / 0x3F_FFFF % 2 == 1 ? 0x8000_0000u : 0));
        if (typeof(T) == typeof(Half))
            return (T)(object)BitConverter.UInt16BitsToHalf((ushort)(0x7E00 | (int)(e % 511 + 1) | (e / 511 % 2 == 1 ? 0x8000 : 0)));
        return (T)(object)BFloat16.FromBits((ushort)(0x7FC0 | (int)(e % 63 + 1) | (e / 63 % 2 == 1 ? 0x8000 : 0)));
    }

    private static void AssertBitIdentical<T>(T[] actual, T[] expected, string what) where T : unmanaged
    {
        int size = Unsafe.SizeOf<T>();
        var a = MemoryMarshal.AsBytes(actual.AsSpan());
        var x = MemoryMarshal.AsBytes(expected.AsSpan());
        int bad = 0, first = -1;
        for (int i = 0; i < actual.Length; i++)
            if (!a.Slice(i * size, size).SequenceEqual(x.Slice(i * size, size)))
            {
                bad++;
                if (first < 0) first = i;
            }
        Assert.That(bad, Is.Zero, $"{what}: {bad} of {actual.Length} elements differ, the first at {first}");
    }
}

/// <summary>The arguments of one KV-cache call; tests replace one of them with a bad value.</summary>
public sealed record KvCacheArgs(DeviceTensor<float> Q, DeviceTensor<float> KeyCache, DeviceTensor<float> ValueCache, int[] Seqlens)
{
    public DeviceTensor<float>? KeyNew { get; init; }
    public DeviceTensor<float>? ValueNew { get; init; }
    public int[,]? Table { get; init; }
    public DeviceMask? Mask { get; init; }
    public DeviceTensor<float>? Bias { get; init; }
    public DeviceTensor<float>? Output { get; init; }
    public DeviceTensor<float>? Lse { get; init; }

    public DeviceTensor<float> Run(AttentionBackend be)
        => be.ForwardWithKvCache(Q, KeyCache, ValueCache, Seqlens, KeyNew, ValueNew, Table, Mask, Bias, output: Output, softmaxLse: Lse);
}

/// <summary>
/// Every bad argument of the KV-cache entry point is rejected, naming it, before anything is written: the caches (watched
/// bit for bit), output and LSE stay as they were.
/// Problem: 2 sequences holding {2, 5} tokens, one new token each, Lq 1, H 4, Hkv 2, D 8; paged: 4 blocks of 4 rows,
/// 2 pages per sequence (capacity 8), sequence 0 on block 2, sequence 1 on blocks 1 and 3.
/// </summary>
public class KvCacheValidationTests : ValidationFixture
{
    private const int B = 2, Lq = 1, H = 4, Hkv = 2, D = 8, Blocks = 4, Page = 4, Cap = 8;

    private KvCacheArgs Valid() => new(Tensor<float>(B, Lq, H, D),
        Watched<float>("keyCache", Blocks, Page, Hkv, D), Watched<float>("valueCache", Blocks, Page, Hkv, D), [2, 5])
    {
        KeyNew = Tensor<float>(B, 1, Hkv, D),
        ValueNew = Tensor<float>(B, 1, Hkv, D),
        Table = new[,] { { 2, 0 }, { 1, 3 } },
        Output = Watched<float>("output", B, Lq, H, D),
        Lse = Watched<float>("softmaxLse", B, H, Lq),
    };

    private KvCacheArgs ValidContiguous() => Valid() with
    {
        KeyCache = Watched<float>("keyCache", B, Cap, Hkv, D),
        ValueCache = Watched<float>("valueCache", B, Cap, Hkv, D),
        Table = null,
    };

    // ---------------------------------------------------------------- positive controls

    [Test]
    public void Control_ValidPagedCallWritesCachesOutputAndLse()
    {
        var a = Valid();
        var o = a.Run(Be);
        Assert.That(o.OwnsBuffer, Is.False, "the result of a call with an output is a view of it");
        Assert.That(Guard.Changed(), Has.Count.EqualTo(4), "a valid call appends to both caches and writes output and LSE");
        Assert.That(a.Seqlens, Is.EqualTo(new[] { 2, 5 }), "cacheSeqlens is left to the caller");
    }

    [Test]
    public void Control_ValidContiguousCallWritesCachesOutputAndLse()
    {
        ValidContiguous().Run(Be);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(4));
    }

    [Test]
    public void Control_TableSlotsPastASequenceMayHoldAnything()
    {
        (Valid() with { Table = new[,] { { 2, -1 }, { 1, 3 } } }).Run(Be);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(4));
    }

    [Test]
    public void Control_NoAppendWritesOnlyOutputAndLse()
    {
        (Valid() with { KeyNew = null, ValueNew = null }).Run(Be);
        Assert.That(Guard.Changed().Select(x => x.Split(' ')[0]), Is.EquivalentTo(new[] { "output", "softmaxLse" }));
    }

    // ---------------------------------------------------------------- cacheSeqlens

    [TestCase(new[] { 2, 8 }, "expected entries in [0, 7]", "got 8 at index 1")]   // 8 + 1 new > capacity 8
    [TestCase(new[] { -1, 5 }, "expected entries in [0, 7]", "got -1 at index 0")]
    public void CacheSeqlensOutOfRange(int[] seqlens, string expected, string got)
        => Rejects<ArgumentOutOfRangeException>(() => (Valid() with { Seqlens = seqlens }).Run(Be), "cacheSeqlens", expected, got);

    [Test]
    public void Control_CacheFilledToCapacity()
    {
        // 7 + 1 = 8 rows: the last position of sequence 0's pages (block 0 is its second page).
        (Valid() with { Seqlens = [7, 5] }).Run(Be);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(4));
    }

    [TestCase(new[] { 2 })]
    [TestCase(new[] { 2, 5, 1 })]
    public void CacheSeqlensWrongLength(int[] seqlens)
        => Rejects(() => (Valid() with { Seqlens = seqlens }).Run(Be), "cacheSeqlens", "expected 2 entries", $"got {seqlens.Length}");

    [Test]
    public void NullCacheSeqlens()
        => Rejects<ArgumentNullException>(() => (Valid() with { Seqlens = null! }).Run(Be), "cacheSeqlens", "got null");

    // ---------------------------------------------------------------- block table

    [TestCase(-1)]
    [TestCase(Blocks)]
    public void PageIndexOutOfRange(int block)
    {
        var a = Valid() with { Table = new[,] { { 2, 0 }, { 1, block } } };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "blockTable", $"expected block indices in [0, {Blocks})", $"got {block} at [1, 1]");
    }

    [Test]
    public void PageNeededOnlyAfterTheAppendIsChecked()
    {
        // Sequence 1 holds 4 rows (page 0 full); its new token needs page 1, which is not a block.
        var a = Valid() with { Seqlens = [2, 4], Table = new[,] { { 2, 0 }, { 1, -1 } } };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "blockTable", "got -1 at [1, 1]");
    }

    [TestCase(1)]
    [TestCase(3)]
    public void BlockTableRows(int rows)
        => Rejects(() => (Valid() with { Table = new int[rows, 2] }).Run(Be), "blockTable", "expected 2 rows", $"got {rows}");

    [Test]
    public void AppendedRowsOnOneCacheRow()
    {
        // Sequence 0 appends at position 2 (block 2, row 2); sequence 1 at position 6, which the table also puts there.
        var a = Valid() with { Seqlens = [2, 6], Table = new[,] { { 2, 0 }, { 1, 2 } } };
        Rejects(() => a.Run(Be), "blockTable", "distinct cache rows", "row 2 of block 2");
    }

    // ---------------------------------------------------------------- keyNew / valueNew

    [Test]
    public void KeyNewWithoutValueNew()
        => Rejects<ArgumentNullException>(() => (Valid() with { ValueNew = null }).Run(Be), "valueNew", "keyNew is given", "got null");

    [Test]
    public void ValueNewWithoutKeyNew()
        => Rejects<ArgumentNullException>(() => (Valid() with { KeyNew = null }).Run(Be), "keyNew", "valueNew is given", "got null");

    [TestCase(new long[] { 3, 1, Hkv, D })]
    [TestCase(new long[] { B, 1, 1, D })]
    [TestCase(new long[] { B, 1, Hkv, 16 })]
    public void KeyNewWrongShape(long[] shape)
    {
        var a = Valid() with { KeyNew = Tensor<float>(shape), ValueNew = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), "keyNew", "expected shape " + Dims(B, 1, Hkv, D), "got " + Dims(shape));
    }

    [Test]
    public void KeyNewWrongRank()
        => Rejects(() => (Valid() with { KeyNew = Tensor<float>(B, Hkv, D) }).Run(Be), "keyNew", "expected rank 4", "got rank 3");

    [Test]
    public void ValueNewUnlikeKeyNew()
        => Rejects(() => (Valid() with { ValueNew = Tensor<float>(B, 2, Hkv, D) }).Run(Be), "valueNew",
            "expected shape " + Dims(B, 1, Hkv, D), "got " + Dims(B, 2, Hkv, D));

    [Test]
    public void MoreNewRowsThanTheCacheHolds()
    {
        var a = Valid() with { Seqlens = [0, 0], KeyNew = Tensor<float>(B, Cap + 1, Hkv, D), ValueNew = Tensor<float>(B, Cap + 1, Hkv, D) };
        Rejects(() => a.Run(Be), "keyNew", $"at most the cache's {Cap} positions", $"got {Cap + 1}");
    }

    [Test]
    public void KeyNewInsideTheCache()
    {
        var a = Valid();
        // The new keys are rows of the key cache itself: the copy would read what it writes.
        a = a with { KeyNew = a.KeyCache.View(0, [B, 1, Hkv, D], [Hkv * D, Hkv * D, D, 1]) };
        Rejects(() => a.Run(Be), "keyCache", "memory apart from keyNew");
    }

    // ---------------------------------------------------------------- caches

    [Test]
    public void KeyCacheWrongRank()
        => Rejects(() => (Valid() with { KeyCache = Tensor<float>(Blocks * Page, Hkv, D) }).Run(Be), "keyCache", "expected rank 4", "got rank 3");

    [TestCase(new long[] { Blocks + 1, Page, Hkv, D })]
    [TestCase(new long[] { Blocks, Page * 2, Hkv, D })]
    [TestCase(new long[] { Blocks, Page, 1, D })]
    public void ValueCacheUnlikeKeyCache(long[] shape)
        => Rejects(() => (Valid() with { ValueCache = Tensor<float>(shape) }).Run(Be), "valueCache",
            "expected shape " + Dims(Blocks, Page, Hkv, D), "got " + Dims(shape));

    [Test]
    public void KeyCacheHeadDimUnlikeQuery()
    {
        var a = Valid() with { KeyCache = Tensor<float>(Blocks, Page, Hkv, 16), ValueCache = Tensor<float>(Blocks, Page, Hkv, 16) };
        Rejects(() => a.Run(Be), "keyCache", "head_dim 8 like query", "got 16");
    }

    [Test]
    public void KvHeadsNotDividingHeads()
    {
        var a = Valid() with { KeyCache = Tensor<float>(Blocks, Page, 3, D), ValueCache = Tensor<float>(Blocks, Page, 3, D) };
        Rejects(() => a.Run(Be), "keyCache", "heads = 4", "kv_heads = 3");
    }

    [Test]
    public void ContiguousCacheBatchUnlikeQuery()
    {
        var a = ValidContiguous() with { KeyCache = Tensor<float>(B + 1, Cap, Hkv, D), ValueCache = Tensor<float>(B + 1, Cap, Hkv, D) };
        Rejects(() => a.Run(Be), "keyCache", "batch like query", $"got {B + 1}");
    }

    [Test]
    public void ContiguousCacheSeqlensAboveLmax()
        => Rejects<ArgumentOutOfRangeException>(() => (ValidContiguous() with { Seqlens = [2, Cap] }).Run(Be), "cacheSeqlens",
            $"expected entries in [0, {Cap - 1}]", $"got {Cap} at index 1");

    [Test]
    public void NullQuery()
        => Rejects<ArgumentNullException>(() => (Valid() with { Q = null! }).Run(Be), "query", "got null");

    // ---------------------------------------------------------------- mask, bias, output, LSE

    [TestCase("attnMask", new long[] { B, H, Lq, Cap + 1 }, "expected seqlen_k dim 8 or 1, got 9")]
    [TestCase("attnMask", new long[] { B, H, 2, Cap }, "expected seqlen_q dim 1 or 1, got 2")]
    [TestCase("attnBias", new long[] { B, 3, Lq, Cap }, "expected head dim 4 (heads), 2 (kv heads) or 1, got 3")]
    public void MaskOrBiasWrongShape(string which, long[] shape, string fragment)
    {
        var a = which == "attnMask" ? Valid() with { Mask = Mask(shape) } : Valid() with { Bias = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), which, fragment);
    }

    [TestCase(new long[] { B, Lq, H, 16 }, "expected shape")]
    [TestCase(new long[] { B * Lq, H, D }, "expected rank 4")]
    public void OutputWrongShape(long[] shape, string fragment)
        => Rejects(() => (Valid() with { Output = Tensor<float>(shape) }).Run(Be), "output", fragment);

    [Test]
    public void OutputWithGapsBetweenBatches()
    {
        // (B, Lq, H, D) views the output as (B·Lq, H, D) rows: its batches must follow each other.
        long[] st = [2 * Lq * H * D, H * D, D, 1];
        var a = Valid() with { Output = Guard.Watch(Strided<float>(2 * B * Lq * H * D, 0, [B, Lq, H, D], st), "output") };
        Rejects(() => a.Run(Be), "output", "packed back to back", Dims(st));
    }

    [Test]
    public void LseWrongShape()
        => Rejects(() => (Valid() with { Lse = Tensor<float>(H, B * Lq) }).Run(Be), "softmaxLse", "expected rank 3");
}
