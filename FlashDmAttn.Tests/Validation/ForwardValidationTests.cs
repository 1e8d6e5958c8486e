using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>The arguments of one dense call; tests replace one of them with a bad value.</summary>
public sealed record DenseArgs(DeviceTensor<float> Q, DeviceTensor<float> K, DeviceTensor<float> V)
{
    public DeviceMask? Mask { get; init; }
    public DeviceTensor<float>? Bias { get; init; }
    public float? Scale { get; init; }
    public float? Softcap { get; init; }
    public bool Causal { get; init; }
    public DeviceTensor<float>? Output { get; init; }
    public DeviceTensor<float>? Lse { get; init; }

    public DeviceTensor<float> Run(AttentionBackend be)
        => be.Forward(Q, K, V, Mask, Bias, Scale, Causal, Softcap, output: Output, softmaxLse: Lse);

    public DenseArgs With(string which, DeviceTensor<float> t) => which switch
    {
        "query" => this with { Q = t },
        "key" => this with { K = t },
        "value" => this with { V = t },
        "output" => this with { Output = t },
        "attnBias" => this with { Bias = t },
        _ => throw new ArgumentException(which),
    };
}

/// <summary>
/// Dense, qkv-packed and kv-packed entry points: every bad argument is rejected with an ArgumentException-family
/// error naming it, with expected and actual values in the message, before the output or LSE buffer is written.
/// </summary>
public class ForwardValidationTests : ValidationFixture
{
    private const long B = 2, Lq = 4, Lk = 6, H = 4, Hkv = 2, D = 8;

    private static long[] ShapeOf(string which) => which switch
    {
        "query" or "output" => [B, Lq, H, D],
        "key" or "value" => [B, Lk, Hkv, D],
        _ => throw new ArgumentException(which),
    };

    /// <summary>A valid problem with a watched (sentinel-filled) output and LSE.</summary>
    private DenseArgs Valid(long b = B, long lq = Lq, long lk = Lk, long h = H, long hkv = Hkv, long d = D)
        => new(Tensor<float>(b, lq, h, d), Tensor<float>(b, lk, hkv, d), Tensor<float>(b, lk, hkv, d))
        {
            Output = Watched<float>("output", b, lq, h, d),
            Lse = Watched<float>("softmaxLse", b, h, lq),
        };

    // ---------------------------------------------------------------- positive controls

    [Test]
    public void Control_ValidCallWritesOutputAndLse()
    {
        var a = Valid() with
        {
            Mask = Mask(1, Hkv, 1, Lk),
            Bias = Tensor<float>(B, 1, Lq, Lk),
            Scale = 0.3f,
            Softcap = 5f,
        };
        var o = a.Run(Be);
        Acc.Synchronize();
        Assert.That(o.OwnsBuffer, Is.False, "the result of a call with an output is a view of it");
        Assert.That(o.Data, Is.EqualTo(a.Output!.Data), "the result views the caller's output");
        var changed = Guard.Changed();
        Assert.That(changed, Has.Some.StartsWith("output").And.Some.StartsWith("softmaxLse"),
            "a valid call must write the watched buffers (else the untouched checks prove nothing)");
        Assert.That(o.ToHost(), Has.All.Matches<float>(float.IsFinite));
        Assert.That(a.Lse!.ToHost(), Has.All.Matches<float>(float.IsFinite));
    }

    [Test]
    public void Control_ValidPaddedStridesAreAccepted()
    {
        long hs = D + 8, ls = (H + 1) * hs, bs = (Lq + 1) * ls;
        var q = Strided<float>(B * bs, 0, [B, Lq, H, D], [bs, ls, hs, 1]);
        var a = Valid() with { Q = q };
        a.Run(Be);
        Assert.That(Guard.Changed(), Has.Some.StartsWith("output"));
    }

    [Test]
    public void Control_ValidQkvPackedWritesOutput()
    {
        var qkv = Tensor<float>(B, Lq, 3, H, D);
        var o = Watched<float>("output", B, Lq, H, D);
        var lse = Watched<float>("softmaxLse", B, H, Lq);
        Be.ForwardQkvPacked(qkv, output: o, softmaxLse: lse);
        Assert.That(Guard.Changed(), Has.Count.EqualTo(2));
    }

    // ---------------------------------------------------------------- ranks and nulls

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    public void Rank3(string which)
    {
        var s = ShapeOf(which);
        var a = Valid().With(which, Tensor<float>(s[0] * s[1], s[2], s[3]));
        Rejects(() => a.Run(Be), which, "expected rank 4", "got rank 3", Dims(s[0] * s[1], s[2], s[3]));
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    public void Rank5(string which)
    {
        var s = ShapeOf(which);
        var a = Valid().With(which, Tensor<float>(1, s[0], s[1], s[2], s[3]));
        Rejects(() => a.Run(Be), which, "expected rank 4", "got rank 5");
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    public void Null(string which)
        => Rejects<ArgumentNullException>(() => Valid().With(which, null!).Run(Be), which, which, "null");

    // ---------------------------------------------------------------- shape consistency

    [TestCase("key", new long[] { 3, Lk, Hkv, D })]     // batch
    [TestCase("value", new long[] { 3, Lk, Hkv, D })]
    [TestCase("key", new long[] { B, Lk, Hkv, 16 })]    // head_dim
    [TestCase("value", new long[] { B, Lk, Hkv, 16 })]
    [TestCase("value", new long[] { B, Lk + 1, Hkv, D })] // seqlen_k differs between k and v
    [TestCase("value", new long[] { B, Lk, 1, D })]     // kv_heads differs between k and v
    public void KeyValueShapeMismatch(string which, long[] shape)
    {
        var a = Valid().With(which, Tensor<float>(shape));
        Rejects(() => a.Run(Be), which, "expected shape " + Dims(B, Lk, Hkv, D), "got " + Dims(shape));
    }

    [Test]
    public void QueryHeadDimDiffersFromKey()
    {
        var a = Valid() with { Q = Tensor<float>(B, Lq, H, 16), Output = Watched<float>("output", B, Lq, H, 16) };
        Rejects(() => a.Run(Be), "key", "expected shape " + Dims(B, Lk, Hkv, 16), "got " + Dims(B, Lk, Hkv, D));
    }

    [Test]
    public void KvHeadsNotDividingHeads()
    {
        var a = Valid(h: 6, hkv: 4);
        Rejects(() => a.Run(Be), "key", "heads = 6", "kv_heads = 4");
    }

    [TestCase(12)]
    [TestCase(264)]
    [TestCase(4)]
    public void HeadDimUnsupported(int d)
    {
        var a = Valid(d: d);
        Rejects(() => a.Run(Be), "query", "multiple of 8 in [8, 256]", $"got {d}");
    }

    // ---------------------------------------------------------------- dtypes

    [Test]
    public void DTypeDouble() => RejectsDType<double>();

    [Test]
    public void DTypeInt() => RejectsDType<int>();

    private void RejectsDType<T>() where T : unmanaged
    {
        var (q, k, v) = (Tensor<T>(B, Lq, H, D), Tensor<T>(B, Lk, Hkv, D), Tensor<T>(B, Lk, Hkv, D));
        var o = Watched<T>("output", B, Lq, H, D);
        var lse = Watched<float>("softmaxLse", B, H, Lq);
        Rejects(() => Be.Forward(q, k, v, output: o, softmaxLse: lse), "query", "float32", "bfloat16", $"got {typeof(T).Name}");
        Rejects(() => Be.ForwardQkvPacked(Tensor<T>(B, Lq, 3, H, D), output: o, softmaxLse: lse), "qkv", "float32", $"got {typeof(T).Name}");
        Rejects(() => Be.ForwardKvPacked(q, Tensor<T>(B, Lk, 2, Hkv, D), output: o, softmaxLse: lse), "kv", "float32", $"got {typeof(T).Name}");
    }

    // ---------------------------------------------------------------- strides

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("output")]
    public void LastDimNotContiguous(string which)
    {
        var s = ShapeOf(which);
        long n = s[0] * s[1] * s[2] * s[3];
        long[] st = [2 * s[1] * s[2] * s[3], 2 * s[2] * s[3], 2 * s[3], 2];
        var t = Strided<float>(2 * n, 0, s, st);
        var a = Valid().With(which, which == "output" ? Guard.Watch(t, "strided output") : t);
        Rejects(() => a.Run(Be), which, "stride 1", "got strides " + Dims(st));
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("output")]
    public void NegativeStride(string which)
    {
        var s = ShapeOf(which);
        long n = s[0] * s[1] * s[2] * s[3];
        long[] st = [s[1] * s[2] * s[3], -(s[2] * s[3]), s[3], 1];  // rows reversed
        var t = Strided<float>(n, (s[1] - 1) * s[2] * s[3], s, st);
        var a = Valid().With(which, which == "output" ? Guard.Watch(t, "reversed output") : t);
        Rejects(() => a.Run(Be), which, "non-negative strides", "got " + Dims(st));
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("output")]
    public void ReachesPastView(string which)
    {
        var s = ShapeOf(which);
        long n = s[0] * s[1] * s[2] * s[3];
        var t = new DeviceTensor<float>(Tensor<float>(n - 1).Data, s);
        var a = Valid().With(which, which == "output" ? Guard.Watch(t, "short output") : t);
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), which, $"reaches element {n - 1}", $"holds {n - 1} elements");
    }

    /// <summary>
    /// Strides whose reach overflows a long must not slip past the bounds check. An invalid softmaxLse is passed
    /// too, so that if the stride check misses, the call still stops (blaming softmaxLse) before any launch.
    /// </summary>
    [TestCase("query")]
    [TestCase("key")]
    [TestCase("attnBias")]
    public void StrideOverflowIsRejected(string which)
    {
        const long b = 3;
        var a = Valid(b: b) with { Lse = Watched<float>("softmaxLse", 1, 1, 1) };
        long[] shape = which switch { "query" => [b, Lq, H, D], "key" => [b, Lk, Hkv, D], _ => [b, H, Lq, Lk] };
        long[] st = [1L << 62, shape[2] * shape[3], shape[3], 1];   // (3 − 1)·2^62 wraps to long.MinValue
        var t = Strided<float>(shape[1] * shape[2] * shape[3], 0, shape, st);
        a = which == "attnBias" ? a with { Bias = t } : a.With(which, t);
        Rejects(() => a.Run(Be), which, Dims(st));
    }

    [Test]
    public void EmptyViewIsRejected()
    {
        var a = Valid() with { Q = new DeviceTensor<float>(ILGPU.ArrayView<float>.Empty, [B, Lq, H, D]) };
        Rejects(() => a.Run(Be), "query");
    }

    // ---------------------------------------------------------------- mask / bias

    [TestCase("attnMask", new long[] { B, H, Lq * Lk }, "expected rank 4")]
    [TestCase("attnMask", new long[] { 1, B, H, Lq, Lk }, "expected rank 4")]
    [TestCase("attnMask", new long[] { 3, H, Lq, Lk }, "expected batch dim 2 or 1, got 3")]
    [TestCase("attnMask", new long[] { B, 3, Lq, Lk }, "expected head dim 4 (heads), 2 (kv heads) or 1, got 3")]
    [TestCase("attnMask", new long[] { B, H, 3, Lk }, "expected seqlen_q dim 4 or 1, got 3")]
    [TestCase("attnMask", new long[] { B, H, Lq, 5 }, "expected seqlen_k dim 6 or 1, got 5")]
    [TestCase("attnMask", new long[] { B, H, Lq, 2 }, "expected seqlen_k dim 6 or 1, got 2")]
    [TestCase("attnBias", new long[] { B, H, Lq * Lk }, "expected rank 4")]
    [TestCase("attnBias", new long[] { 3, H, Lq, Lk }, "expected batch dim 2 or 1, got 3")]
    [TestCase("attnBias", new long[] { B, 3, Lq, Lk }, "expected head dim 4 (heads), 2 (kv heads) or 1, got 3")]
    [TestCase("attnBias", new long[] { B, H, 3, Lk }, "expected seqlen_q dim 4 or 1, got 3")]
    [TestCase("attnBias", new long[] { B, H, Lq, 7 }, "expected seqlen_k dim 6 or 1, got 7")]
    public void MaskBiasWrongShape(string which, long[] shape, string fragment)
    {
        var a = which == "attnMask" ? Valid() with { Mask = Mask(shape) } : Valid() with { Bias = Tensor<float>(shape) };
        Rejects(() => a.Run(Be), which, fragment, Dims(shape));
    }

    [TestCase("attnMask")]
    [TestCase("attnBias")]
    public void MaskBiasLastDimNotContiguous(string which)
    {
        long[] s = [B, H, Lq, Lk], st = [H * Lq * Lk * 2, Lq * Lk * 2, Lk * 2, 2];
        var a = which == "attnMask"
            ? Valid() with { Mask = Mask(2 * B * H * Lq * Lk).View(0, s, st) }
            : Valid() with { Bias = Strided<float>(2 * B * H * Lq * Lk, 0, s, st) };
        Rejects(() => a.Run(Be), which, "stride 1", Dims(st));
    }

    [TestCase("attnMask")]
    [TestCase("attnBias")]
    public void MaskBiasReachesPastView(string which)
    {
        long n = B * H * Lq * Lk;
        var a = which == "attnMask"
            ? Valid() with { Mask = new DeviceTensor<byte>(Mask(n - 1).Data, [B, H, Lq, Lk]) }
            : Valid() with { Bias = new DeviceTensor<float>(Tensor<float>(n - 1).Data, [B, H, Lq, Lk]) };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), which, $"reaches element {n - 1}", $"holds {n - 1} elements");
    }

    [Test]
    public void MaskOfIntIsRejected()
    {
        var m = Tensor<int>(B, H, Lq, Lk);
        var a = Valid();
        // The implicit DeviceTensor<int> → DeviceMask conversion (DeviceMask.From) is what throws.
        Rejects(() => Be.Forward(a.Q, a.K, a.V, attnMask: m, output: a.Output, softmaxLse: a.Lse),
            "attnMask", "byte, float, Half or BFloat16", "got Int32");
    }

    [Test]
    public void MaskOfDoubleIsRejected()
    {
        var m = Tensor<double>(B, H, Lq, Lk);
        Rejects(() => DeviceMask.From(m), "attnMask", "byte, float, Half or BFloat16", "got Double");
    }

    // ---------------------------------------------------------------- output / softmaxLse

    [TestCase(new long[] { B, Lq, H, 16 })]
    [TestCase(new long[] { B, Lq + 1, H, D })]
    [TestCase(new long[] { 1, Lq, H, D })]
    [TestCase(new long[] { B, Lq, Hkv, D })]
    public void OutputWrongShape(long[] shape)
    {
        var a = Valid() with { Output = Watched<float>("output", shape) };
        Rejects(() => a.Run(Be), "output", "expected shape " + Dims(B, Lq, H, D), "got " + Dims(shape));
    }

    [Test]
    public void OutputWrongRank()
    {
        var a = Valid() with { Output = Watched<float>("output", B * Lq, H, D) };
        Rejects(() => a.Run(Be), "output", "expected rank 4", "got rank 3");
    }

    [TestCase(new long[] { B, H, Lq + 1 }, "expected size = 4 (dim 2), got 5")]
    [TestCase(new long[] { B, Hkv, Lq }, "expected size = 4 (dim 1), got 2")]
    [TestCase(new long[] { 1, H, Lq }, "expected size = 2 (dim 0), got 1")]
    [TestCase(new long[] { B, Lq, H, 1 }, "expected rank 3")]
    [TestCase(new long[] { B, H * Lq }, "expected rank 3")]
    public void LseWrongShape(long[] shape, string fragment)
    {
        var a = Valid() with { Lse = Watched<float>("softmaxLse", shape) };
        Rejects(() => a.Run(Be), "softmaxLse", fragment, Dims(shape));
    }

    [Test]
    public void LseNotContiguous()
    {
        long[] st = [H * (Lq + 1), Lq + 1, 1];
        var lse = Guard.Watch(Strided<float>(B * H * (Lq + 1), 0, [B, H, Lq], st), "padded softmaxLse");
        var a = Valid() with { Lse = lse };
        Rejects(() => a.Run(Be), "softmaxLse", "expected a contiguous tensor", "got strides " + Dims(st));
    }

    [Test]
    public void LseReachesPastView()
    {
        long n = B * H * Lq;
        var lse = Guard.Watch(new DeviceTensor<float>(Tensor<float>(n - 1).Data, [B, H, Lq]), "short softmaxLse");
        var a = Valid() with { Lse = lse };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "softmaxLse", $"reaches element {n - 1}", $"holds {n - 1} elements");
    }

    // ---------------------------------------------------------------- scale / softcap

    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity)]
    public void ScaleNotFinite(float scale)
    {
        var a = Valid() with { Scale = scale };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "scale", "expected a finite number", $"got {scale}");
    }

    [TestCase(0f)]
    [TestCase(-0f)]
    [TestCase(-1f)]
    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity)]
    public void SoftcapInvalid(float softcap)
    {
        var a = Valid() with { Softcap = softcap };
        Rejects<ArgumentOutOfRangeException>(() => a.Run(Be), "softcap", "expected a finite value > 0", $"got {softcap}");
    }

    // ---------------------------------------------------------------- packed entry points

    [TestCase(new long[] { B, Lq, 2, H, D }, "expected the q/k/v dim = 3 (dim 2), got 2")]
    [TestCase(new long[] { B, Lq, 4, H, D }, "expected the q/k/v dim = 3 (dim 2), got 4")]
    [TestCase(new long[] { B, Lq, 3 * H, D }, "expected rank 5")]
    [TestCase(new long[] { 1, B, Lq, 3, H, D }, "expected rank 5")]
    public void QkvPackedWrongShape(long[] shape, string fragment)
    {
        var qkv = Tensor<float>(shape);
        var o = Watched<float>("output", B, Lq, H, D);
        var lse = Watched<float>("softmaxLse", B, H, Lq);
        Rejects(() => Be.ForwardQkvPacked(qkv, output: o, softmaxLse: lse), "qkv", fragment, Dims(shape));
    }

    [TestCase(new long[] { B, Lk, 3, Hkv, D }, "expected the k/v dim = 2 (dim 2), got 3")]
    [TestCase(new long[] { B, Lk, 1, Hkv, D }, "expected the k/v dim = 2 (dim 2), got 1")]
    [TestCase(new long[] { B, Lk, 2 * Hkv, D }, "expected rank 5")]
    [TestCase(new long[] { B, Lk, 2, Hkv, D, 1 }, "expected rank 5")]
    public void KvPackedWrongShape(long[] shape, string fragment)
    {
        var a = Valid();
        var kv = Tensor<float>(shape);
        Rejects(() => Be.ForwardKvPacked(a.Q, kv, output: a.Output, softmaxLse: a.Lse), "kv", fragment, Dims(shape));
    }

    [Test]
    public void KvPackedQueryWrongRank()
    {
        var a = Valid();
        var kv = Tensor<float>(B, Lk, 2, Hkv, D);
        Rejects(() => Be.ForwardKvPacked(Tensor<float>(B * Lq, H, D), kv, output: a.Output, softmaxLse: a.Lse),
            "query", "expected rank 4", "got rank 3");
    }

    [Test]
    public void KvPackedQueryHeadDimMismatch()
    {
        var a = Valid();
        var kv = Tensor<float>(B, Lk, 2, Hkv, 16);
        Rejects(() => Be.ForwardKvPacked(a.Q, kv, output: a.Output, softmaxLse: a.Lse),
            "key", "expected shape " + Dims(B, Lk, Hkv, D), "got " + Dims(B, Lk, Hkv, 16));
    }

    [Test]
    public void PackedNulls()
    {
        var a = Valid();
        Rejects<ArgumentNullException>(() => Be.ForwardQkvPacked<float>(null!, output: a.Output, softmaxLse: a.Lse), "qkv", "null");
        Rejects<ArgumentNullException>(() => Be.ForwardKvPacked(a.Q, null!, output: a.Output, softmaxLse: a.Lse), "kv", "null");
        Rejects<ArgumentNullException>(() => Be.ForwardKvPacked(null!, Tensor<float>(B, Lk, 2, Hkv, D), output: a.Output, softmaxLse: a.Lse), "query", "null");
    }

    [Test]
    public void QkvPackedOutputWrongShape()
    {
        var o = Watched<float>("output", B, Lq, H, 16);
        Rejects(() => Be.ForwardQkvPacked(Tensor<float>(B, Lq, 3, H, D), output: o), "output",
            "expected shape " + Dims(B, Lq, H, D), "got " + Dims(B, Lq, H, 16));
    }

    [Test]
    public void QkvPackedNonContiguousLastDim()
    {
        long[] s = [B, Lq, 3, H, D], st = [Lq * 3 * H * D * 2, 3 * H * D * 2, H * D * 2, D * 2, 2];
        var qkv = Strided<float>(2 * B * Lq * 3 * H * D, 0, s, st);
        var o = Watched<float>("output", B, Lq, H, D);
        Rejects(() => Be.ForwardQkvPacked(qkv, output: o), "qkv", "stride 1", Dims(st));
    }
}
