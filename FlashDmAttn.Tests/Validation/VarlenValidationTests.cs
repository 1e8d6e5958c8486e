using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>The arguments of one variable-length call; tests replace one of them with a bad value.</summary>
public sealed record VarlenArgs(DeviceTensor<float> Q, DeviceTensor<float> K, DeviceTensor<float> V,
    int[] CuQ, int[] CuK, int MaxQ, int MaxK)
{
    public int[,]? Table { get; init; }
    public DeviceMask? Mask { get; init; }
    public DeviceTensor<float>? Bias { get; init; }
    public DeviceTensor<float>? Output { get; init; }
    public DeviceTensor<float>? Lse { get; init; }

    public DeviceTensor<float> Run(AttentionBackend be)
        => be.ForwardVarlen(Q, K, V, CuQ, CuK, MaxQ, MaxK, Mask, Bias, blockTable: Table, output: Output, softmaxLse: Lse);
}

/// <summary>
/// Variable-length and paged entry point: cu_seqlens, max lengths, block tables, packed shapes, mask/bias and
/// output/LSE shapes are rejected before anything is written.
/// Problem: 2 sequences, query lengths {3, 1} (total 4), key lengths {2, 5} (total 7), H 4, Hkv 2, D 8;
/// paged: 4 blocks of 4 keys, sequence 0 on block 2, sequence 1 on blocks 1 and 3.
/// </summary>
public class VarlenValidationTests : ValidationFixture
{
    private const int Batch = 2, TotalQ = 4, TotalK = 7, MaxQ = 3, MaxK = 5, H = 4, Hkv = 2, D = 8;
    private const int Blocks = 4, PageSize = 4;

    private VarlenArgs Valid() => new(Tensor<float>(TotalQ, H, D), Tensor<float>(TotalK, Hkv, D), Tensor<float>(TotalK, Hkv, D),
        [0, 3, 4], [0, 2, 7], MaxQ, MaxK)
    {
        Output = Watched<float>("output", TotalQ, H, D),
        Lse = Watched<float>("softmaxLse", H, TotalQ),
    };

    private VarlenArgs ValidPaged() => Valid() with
    {
        K = Tensor<float>(Blocks, PageSize, Hkv, D),
        V = Tensor<float>(Blocks, PageSize, Hkv, D),
        Table = new[,] { { 2, 0 }, { 1, 3 } },
    };

    // ---------------------------------------------------------------- positive controls

    [Test]
    public void Control_ValidVarlenWritesOutputAndLse()
    {
        var a = Valid() with { Mask = Mask(Batch, Hkv, 1, MaxK), Bias = Tensor<float>(1, H, MaxQ, MaxK) };
        var o = a.Run(Be);
        Assert.That(o.OwnsBuffer, Is.False, "the result of a call with an output is a view of it");
        Assert.That(o.Data, Is.EqualTo(a.Output!.Data), "the result views the caller's output");
        Assert.That(Guard.Changed(), Has.Count.EqualTo(2), "a valid call must write output and LSE");
        Assert.That(o.ToHost(), Has.All.Matches<float>(float.IsFinite));
    }

    [Test]
    public void Control_ValidPagedWritesOutput()
    {
        var a = ValidPaged();
        a.Run(Be);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(2), "a valid paged call must write output and LSE");
        Assert.That(a.Output!.ToHost(), Has.All.Matches<float>(float.IsFinite));
    }

    // ---------------------------------------------------------------- nulls, ranks, dtype

    [Test]
    public void NullCuSeqlens()
    {
        Rejects<ArgumentNullException>(() => (Valid() with { CuQ = null! }).Run(Be), "cuSeqlensQ", "cuSeqlensQ", "null");
        Rejects<ArgumentNullException>(() => (Valid() with { CuK = null! }).Run(Be), "cuSeqlensK", "cuSeqlensK", "null");
    }

    [Test]
    public void NullTensors()
    {
        Rejects<ArgumentNullException>(() => (Valid() with { Q = null! }).Run(Be), "query", "null");
        Rejects<ArgumentNullException>(() => (Valid() with { K = null! }).Run(Be), "key", "null");
        Rejects<ArgumentNullException>(() => (Valid() with { V = null! }).Run(Be), "value", "null");
    }

    [Test]
    public void DTypeDouble()
    {
        var o = Watched<double>("output", TotalQ, H, D);
        Rejects(() => Be.ForwardVarlen(Tensor<double>(TotalQ, H, D), Tensor<double>(TotalK, Hkv, D), Tensor<double>(TotalK, Hkv, D),
            [0, 3, 4], [0, 2, 7], MaxQ, MaxK, output: o), "query", "float32", "got Double");
    }

    [TestCase("query", new long[] { TotalQ, H * D })]
    [TestCase("query", new long[] { 1, 1, TotalQ, H, D })]
    [TestCase("key", new long[] { TotalK, Hkv * D })]
    [TestCase("value", new long[] { TotalK, Hkv * D })]
    [TestCase("value", new long[] { 1, 1, TotalK, Hkv, D })]
    public void WrongRank(string which, long[] shape)
    {
        var t = Tensor<float>(shape);
        var a = which switch { "query" => Valid() with { Q = t }, "key" => Valid() with { K = t }, _ => Valid() with { V = t } };
        Rejects(() => a.Run(Be), which, "expected rank 3", $"got rank {shape.Length}");
    }

    [Test]
    public void Control_BatchMajor4DQueryIsAccepted()
    {
        // (2, 2, H, D) with batches back to back flattens to (4, H, D).
        var a = Valid() with { Q = Tensor<float>(2, 2, H, D) };
        a.Run(Be);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(2));
    }

    [Test]
    public void BatchMajor4DQueryWithGapsBetweenBatches()
    {
        long[] st = [3 * H * D, H * D, D, 1];
        var a = Valid() with { Q = Strided<float>(6 * H * D, 0, [2, 2, H, D], st) };
        Rejects(() => a.Run(Be), "query", "packed back to back", Dims(st));
    }

    // ---------------------------------------------------------------- tensor shapes

    [TestCase(new long[] { TotalK, Hkv, 16 })]
    [TestCase(new long[] { TotalK - 1, Hkv, D })]
    [TestCase(new long[] { TotalK, 1, D })]
    public void ValueShapeMismatch(long[] shape)
    {
        var a = Valid() with { V = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), "value", "expected shape " + Dims(TotalK, Hkv, D), "got " + Dims(shape));
    }

    [Test]
    public void KeyHeadDimMismatch()
    {
        // key has head_dim 16, query and value 8: the key is the odd one out.
        var a = Valid() with { K = Tensor<float>(TotalK, Hkv, 16) };
        Rejects(() => a.Run(Be), "key", "head_dim 8", "got 16");
    }

    [Test]
    public void KvHeadsNotDividingHeads()
    {
        var a = Valid() with { Q = Tensor<float>(TotalQ, 6, D), K = Tensor<float>(TotalK, 4, D), V = Tensor<float>(TotalK, 4, D),
            Output = Watched<float>("output", TotalQ, 6, D), Lse = Watched<float>("softmaxLse", 6, TotalQ) };
        Rejects(() => a.Run(Be), "key", "heads = 6", "kv_heads = 4");
    }

    [TestCase(12)]
    [TestCase(264)]
    public void HeadDimUnsupported(int d)
    {
        var a = Valid() with { Q = Tensor<float>(TotalQ, H, d), K = Tensor<float>(TotalK, Hkv, d), V = Tensor<float>(TotalK, Hkv, d),
            Output = Watched<float>("output", TotalQ, H, d) };
        Rejects(() => a.Run(Be), "query", "multiple of 8", $"got {d}");
    }

    // ---------------------------------------------------------------- cu_seqlens and max lengths

    [TestCase(new[] { 1, 3, 4 }, "expected cu_seqlens to start at 0, got 1")]
    [TestCase(new[] { 0, 5, 4 }, "expected non-decreasing cumulative lengths, got 5 then 4 at index 2")]
    [TestCase(new[] { 0, 3, 5 }, "expected the last entry to equal query.Shape[0] = 4, got 5")]
    [TestCase(new[] { 0, 3, 3 }, "expected the last entry to equal query.Shape[0] = 4, got 3")]
    public void CuSeqlensQInvalid(int[] cu, string fragment)
    {
        var a = Valid() with { CuQ = cu };
        Rejects(() => a.Run(Be), "cuSeqlensQ", fragment);
    }

    [TestCase(new[] { 0 })]
    [TestCase(new int[0])]
    public void CuSeqlensQTooShort(int[] cu)
    {
        var a = Valid() with { CuQ = cu, CuK = cu };
        Rejects(() => a.Run(Be), "cuSeqlensQ", "expected batch + 1 >= 2 entries", $"got {cu.Length}");
    }

    [TestCase(new[] { 0, 7 }, "expected 3 entries like cuSeqlensQ, got 2")]
    [TestCase(new[] { 0, 2, 5, 7 }, "expected 3 entries like cuSeqlensQ, got 4")]
    [TestCase(new[] { 2, 2, 7 }, "expected cu_seqlens to start at 0, got 2")]
    [TestCase(new[] { 0, 8, 7 }, "expected non-decreasing cumulative lengths, got 8 then 7 at index 2")]
    [TestCase(new[] { 0, 2, 6 }, "expected the last entry to equal key.Shape[0] = 7, got 6")]
    [TestCase(new[] { 0, 2, 8 }, "expected the last entry to equal key.Shape[0] = 7, got 8")]
    public void CuSeqlensKInvalid(int[] cu, string fragment)
    {
        var a = Valid() with { CuK = cu };
        Rejects(() => a.Run(Be), "cuSeqlensK", fragment);
    }

    [Test]
    public void MaxSeqlenTooSmall()
    {
        Rejects<ArgumentOutOfRangeException>(() => (Valid() with { MaxQ = MaxQ - 1 }).Run(Be), "maxSeqlenQ",
            $"longest query sequence, {MaxQ}", $"got {MaxQ - 1}");
        Rejects<ArgumentOutOfRangeException>(() => (Valid() with { MaxK = MaxK - 1 }).Run(Be), "maxSeqlenK",
            $"longest key sequence, {MaxK}", $"got {MaxK - 1}");
        Rejects<ArgumentOutOfRangeException>(() => (ValidPaged() with { MaxK = MaxK - 1 }).Run(Be), "maxSeqlenK",
            $"longest key sequence, {MaxK}", $"got {MaxK - 1}");
    }

    // ---------------------------------------------------------------- paged cache

    [TestCase(-1, 1, 1)]
    [TestCase(Blocks, 1, 1)]
    [TestCase(Blocks + 100, 0, 0)]
    [TestCase(int.MinValue, 1, 0)]
    public void BlockIndexOutOfRange(int index, int row, int col)
    {
        var table = new[,] { { 2, 0 }, { 1, 3 } };
        table[row, col] = index;
        var a = ValidPaged() with { Table = table };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "blockTable",
            $"expected block indices in [0, {Blocks})", $"got {index} at [{row}, {col}]");
    }

    [Test]
    public void BlockTableWrongRowCount()
    {
        var a = ValidPaged() with { Table = new[,] { { 2, 0 }, { 1, 3 }, { 0, 0 } } };
        Rejects(() => a.Run(Be), "blockTable", "expected 2 rows", "got 3");
        var b = ValidPaged() with { Table = new[,] { { 2, 0 } } };
        Rejects(() => b.Run(Be), "blockTable", "expected 2 rows", "got 1");
    }

    [Test]
    public void BlockTableTooFewPages()
    {
        // Sequence 1 has 5 keys: one page of 4 is not enough.
        var a = ValidPaged() with { Table = new[,] { { 2 }, { 1 } } };
        Rejects(() => a.Run(Be), "blockTable", "sequence 1 has 5 keys", "1 pages of 4");
    }

    [Test]
    public void PagedKeyWrongRank()
    {
        var a = ValidPaged() with { K = Tensor<float>(Blocks * PageSize, Hkv, D) };
        Rejects(() => a.Run(Be), "key", "expected rank 4", "got rank 3");
    }

    // [16, 2, 8]: rejected, but by the 4-d shape comparison, not a rank check.
    // [4, 4, 2]: the 4-d comparison indexes dim 3 of a rank-3 shape (IndexOutOfRangeException).
    // [4, 4, 2, 8, 3]: the comparison reads only dims 0..3, so a rank-5 value goes through to the kernel.
    [TestCase(new long[] { Blocks * PageSize, Hkv, D })]
    [TestCase(new long[] { Blocks, PageSize, Hkv })]
    [TestCase(new long[] { Blocks, PageSize, Hkv, D, 3 })]
    public void PagedValueWrongRank(long[] shape)
    {
        var a = ValidPaged() with { V = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), "value", "expected rank 4", $"got rank {shape.Length}");
    }

    [TestCase(new long[] { Blocks + 1, PageSize, Hkv, D })]
    [TestCase(new long[] { Blocks, PageSize * 2, Hkv, D })]
    [TestCase(new long[] { Blocks, PageSize, 1, D })]
    [TestCase(new long[] { Blocks, PageSize, Hkv, 16 })]
    public void PagedValueShapeMismatch(long[] shape)
    {
        var a = ValidPaged() with { V = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), "value", "expected shape " + Dims(Blocks, PageSize, Hkv, D), "got " + Dims(shape));
    }

    [Test]
    public void PagedKeyHeadDimMismatch()
    {
        var a = ValidPaged() with { K = Tensor<float>(Blocks, PageSize, Hkv, 16) };
        Rejects(() => a.Run(Be), "key", "expected shape " + Dims(Blocks, PageSize, Hkv, D), "got " + Dims(Blocks, PageSize, Hkv, 16));
    }

    // ---------------------------------------------------------------- mask / bias / output / lse

    [TestCase("attnMask", new long[] { Batch, H, MaxQ, TotalK }, "expected seqlen_k dim 5 or 1, got 7")]
    [TestCase("attnMask", new long[] { Batch, H, TotalQ, MaxK }, "expected seqlen_q dim 3 or 1, got 4")]
    [TestCase("attnMask", new long[] { 3, H, MaxQ, MaxK }, "expected batch dim 2 or 1, got 3")]
    [TestCase("attnBias", new long[] { Batch, 3, MaxQ, MaxK }, "expected head dim 4 (heads), 2 (kv heads) or 1, got 3")]
    [TestCase("attnBias", new long[] { H, MaxQ, MaxK }, "expected rank 4")]
    public void MaskBiasWrongShape(string which, long[] shape, string fragment)
    {
        var a = which == "attnMask" ? Valid() with { Mask = Mask(shape) } : Valid() with { Bias = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), which, fragment, Dims(shape));
    }

    [TestCase(new long[] { TotalQ, H, 16 })]
    [TestCase(new long[] { TotalQ + 1, H, D })]
    [TestCase(new long[] { TotalQ, Hkv, D })]
    public void OutputWrongShape(long[] shape)
    {
        var a = Valid() with { Output = Watched<float>("output", shape) };
        Rejects(() => a.Run(Be), "output", "expected shape " + Dims(TotalQ, H, D), "got " + Dims(shape));
    }

    [Test]
    public void OutputWrongRank()
    {
        var a = Valid() with { Output = Watched<float>("output", 1, TotalQ, H, D) };
        Rejects(() => a.Run(Be), "output", "expected rank 3", "got rank 4");
    }

    [TestCase(new long[] { Batch, H, MaxQ }, "expected rank 2")]
    [TestCase(new long[] { H, TotalQ + 1 }, "expected size = 4 (dim 1), got 5")]
    public void LseWrongShape(long[] shape, string fragment)
    {
        var a = Valid() with { Lse = Watched<float>("softmaxLse", shape) };
        Rejects(() => a.Run(Be), "softmaxLse", fragment, Dims(shape));
    }

    [Test]
    public void LseNotContiguous()
    {
        long[] st = [TotalQ + 1, 1];
        var lse = Guard.Watch(Strided<float>(H * (TotalQ + 1), 0, [H, TotalQ], st), "padded softmaxLse");
        var a = Valid() with { Lse = lse };
        Rejects(() => a.Run(Be), "softmaxLse", "expected a contiguous tensor", Dims(st));
    }
}
