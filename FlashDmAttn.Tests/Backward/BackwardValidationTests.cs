using FlashDmAttn.Tests.Support;
using FlashDmAttn.Tests.Validation;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>The arguments of one dense backward call; tests replace one of them with a bad value.</summary>
public sealed record BackwardArgs(DeviceTensor<float> DO, DeviceTensor<float> Q, DeviceTensor<float> K, DeviceTensor<float> V,
    DeviceTensor<float> O, DeviceTensor<float> Lse)
{
    public DeviceTensor<float>? Bias { get; init; }
    public DeviceTensor<float>? GradQuery { get; init; }
    public DeviceTensor<float>? GradKey { get; init; }
    public DeviceTensor<float>? GradValue { get; init; }
    public DeviceTensor<float>? GradBias { get; init; }

    public AttentionGradients<float> Run(AttentionBackend be)
        => be.Backward(DO, Q, K, V, O, Lse, null, Bias, gradQuery: GradQuery, gradKey: GradKey, gradValue: GradValue, gradBias: GradBias);

    /// <summary>This call with the argument named <paramref name="which"/> replaced (null included).</summary>
    public BackwardArgs With(string which, DeviceTensor<float>? t) => which switch
    {
        "gradOutput" => this with { DO = t! },
        "query" => this with { Q = t! },
        "key" => this with { K = t! },
        "value" => this with { V = t! },
        "output" => this with { O = t! },
        "softmaxLse" => this with { Lse = t! },
        "gradQuery" => this with { GradQuery = t },
        "gradKey" => this with { GradKey = t },
        "gradValue" => this with { GradValue = t },
        "gradBias" => this with { GradBias = t },
        _ => throw new ArgumentException(which),
    };
}

/// <summary>
/// Backward entry points: a gradient buffer, dO, output or LSE of the wrong shape, and a missing required argument,
/// are rejected with an ArgumentException-family error naming the argument, before any caller gradient buffer
/// (NaN-poisoned here) is written.
/// Problem: B 2, Lq 5, Lk 6, H 4, Hkv 2, D 8, bias (B, 1, Lq, Lk).
/// </summary>
public class BackwardValidationTests : ValidationFixture
{
    private const long B = 2, Lq = 5, Lk = 6, H = 4, Hkv = 2, D = 8;

    private readonly List<DeviceTensor<float>> _poisoned = [];

    [SetUp]
    public void ForgetPoisoned() => _poisoned.Clear();

    /// <summary>A NaN-filled caller gradient buffer, checked after every rejected call.</summary>
    private DeviceTensor<float> Poisoned(params long[] shape)
    {
        var t = Own(DeviceTensor<float>.FromHost(Acc, TestData.Poison<float>(shape.Aggregate(1L, (a, x) => a * x)), shape));
        _poisoned.Add(t);
        return t;
    }

    /// <summary>A valid call: the forward's real output and LSE, and NaN-filled gradient buffers.</summary>
    private BackwardArgs Valid()
    {
        var (q, k, v) = (Tensor<float>(B, Lq, H, D), Tensor<float>(B, Lk, Hkv, D), Tensor<float>(B, Lk, Hkv, D));
        var bias = Tensor<float>(B, 1, Lq, Lk);
        var o = Own(DeviceTensor<float>.Allocate(Acc, B, Lq, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(Acc, B, H, Lq));
        Be.Forward(q, k, v, attnBias: bias, output: o, softmaxLse: lse);
        return new BackwardArgs(Tensor<float>(B, Lq, H, D), q, k, v, o, lse)
        {
            Bias = bias,
            GradQuery = Poisoned(B, Lq, H, D),
            GradKey = Poisoned(B, Lk, Hkv, D),
            GradValue = Poisoned(B, Lk, Hkv, D),
            GradBias = Poisoned(B, 1, Lq, Lk),
        };
    }

    /// <summary>The rejection naming <paramref name="param"/>, and every poisoned buffer still all NaN.</summary>
    private void RejectsUnwritten<TEx>(TestDelegate call, string param) where TEx : ArgumentException
    {
        Rejects<TEx>(call, param);
        foreach (var t in _poisoned)
            Assert.That(t.ToHost(), Has.All.NaN, $"a caller gradient buffer {Dims(t.Shape.ToArray())} written by a call rejected for {param}");
    }

    // ---------------------------------------------------------------- positive control

    [Test]
    public void Control_ValidCallWritesEveryGradientBuffer()
    {
        using var g = Valid().Run(Be);
        Assert.That(_poisoned, Has.Count.EqualTo(4));
        foreach (var t in _poisoned)
            Assert.That(t.ToHost(), Has.All.Matches<float>(float.IsFinite), $"gradient buffer {Dims(t.Shape.ToArray())}");
    }

    // ---------------------------------------------------------------- dense

    [TestCase("gradOutput", new long[] { B, Lq, H, D + 1 })]
    [TestCase("gradOutput", new long[] { B, Lq + 1, H, D })]
    [TestCase("gradOutput", new long[] { B, Lq, H * D })]
    [TestCase("output", new long[] { B, Lq, H - 1, D })]
    [TestCase("output", new long[] { B, Lk, H, D })]
    [TestCase("softmaxLse", new long[] { B, H, Lq + 1 })]
    [TestCase("softmaxLse", new long[] { B, Lq, H })]
    [TestCase("softmaxLse", new long[] { H, B * Lq })]
    [TestCase("gradQuery", new long[] { B, Lq, H, D + 1 })]
    [TestCase("gradQuery", new long[] { B, Lk, H, D })]
    [TestCase("gradKey", new long[] { B, Lk, H, D })]
    [TestCase("gradKey", new long[] { B, Lk, Hkv, D, 1 })]
    [TestCase("gradValue", new long[] { B, Lk + 1, Hkv, D })]
    [TestCase("gradValue", new long[] { B, Lq, H, D })]
    [TestCase("gradBias", new long[] { B, H, Lq, Lk })]
    [TestCase("gradBias", new long[] { B, 1, Lq, 1 })]
    [TestCase("gradBias", new long[] { 1, 1, Lq, Lk })]
    public void WrongShapeIsRejected(string which, long[] shape)
    {
        var a = Valid();
        var bad = which.StartsWith("grad") && which != "gradOutput" ? Poisoned(shape) : Tensor<float>(shape);
        RejectsUnwritten<ArgumentException>(() => a.With(which, bad).Run(Be), which);
    }

    [TestCase("gradOutput")]
    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("output")]
    [TestCase("softmaxLse")]
    public void MissingRequiredArgumentIsRejected(string which)
    {
        var a = Valid();
        RejectsUnwritten<ArgumentNullException>(() => a.With(which, null).Run(Be), which);
    }

    [Test]
    public void GradBiasWithoutBiasIsRejected()
    {
        var a = Valid() with { Bias = null };
        RejectsUnwritten<ArgumentException>(() => a.Run(Be), "gradBias");
    }

    // ---------------------------------------------------------------- packed

    [TestCase(new long[] { B, Lq, 2, H, D })]
    [TestCase(new long[] { B, Lq, 3, H, D + 1 })]
    [TestCase(new long[] { B, Lq, H, D })]
    public void QkvPackedWrongGradQkvIsRejected(long[] shape)
    {
        var qkv = Tensor<float>(B, Lq, 3, H, D);
        var o = Own(DeviceTensor<float>.Allocate(Acc, B, Lq, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(Acc, B, H, Lq));
        Be.ForwardQkvPacked(qkv, isCausal: true, output: o, softmaxLse: lse);
        var dO = Tensor<float>(B, Lq, H, D);
        var bad = Poisoned(shape);
        RejectsUnwritten<ArgumentException>(() => Be.BackwardQkvPacked(dO, qkv, o, lse, isCausal: true, gradQkv: bad), "gradQkv");
        RejectsUnwritten<ArgumentNullException>(() => Be.BackwardQkvPacked(dO, null!, o, lse, isCausal: true, gradQkv: bad), "qkv");
    }

    [TestCase(new long[] { B, Lk, 3, Hkv, D })]
    [TestCase(new long[] { B, Lk, 2, H, D })]
    [TestCase(new long[] { B, Lk, Hkv, D })]
    public void KvPackedWrongGradKvIsRejected(long[] shape)
    {
        var q = Tensor<float>(B, Lq, H, D);
        var kv = Tensor<float>(B, Lk, 2, Hkv, D);
        var o = Own(DeviceTensor<float>.Allocate(Acc, B, Lq, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(Acc, B, H, Lq));
        Be.ForwardKvPacked(q, kv, output: o, softmaxLse: lse);
        var dO = Tensor<float>(B, Lq, H, D);
        var gq = Poisoned(B, Lq, H, D);
        var bad = Poisoned(shape);
        RejectsUnwritten<ArgumentException>(() => Be.BackwardKvPacked(dO, q, kv, o, lse, gradQuery: gq, gradKv: bad), "gradKv");
        RejectsUnwritten<ArgumentNullException>(() => Be.BackwardKvPacked(dO, q, null!, o, lse, gradQuery: gq), "kv");
    }

    // ---------------------------------------------------------------- varlen and paged

    // Sequences: query lengths {3, 1} (total 4), key lengths {2, 5} (total 7); paged: 4 blocks of 4, {2}, {1, 3}.
    private const int TotalQ = 4, TotalK = 7, MaxQ = 3, MaxK = 5;
    private static readonly int[] CuQ = [0, 3, 4], CuK = [0, 2, 7];

    [TestCase(false, "gradKey", new long[] { TotalK + 1, Hkv, D })]
    [TestCase(false, "gradValue", new long[] { TotalK, H, D })]
    [TestCase(false, "gradQuery", new long[] { TotalQ, H, D + 1 })]
    [TestCase(false, "softmaxLse", new long[] { 2, H, MaxQ })]
    [TestCase(false, "gradOutput", new long[] { TotalQ + 1, H, D })]
    [TestCase(true, "gradKey", new long[] { TotalK, Hkv, D })]
    [TestCase(true, "gradValue", new long[] { 4, 4, Hkv, D + 1 })]
    public void VarlenWrongShapeIsRejected(bool paged, string which, long[] shape)
    {
        var q = Tensor<float>(TotalQ, H, D);
        var (k, v) = paged
            ? (Tensor<float>(4, 4, Hkv, D), Tensor<float>(4, 4, Hkv, D))
            : (Tensor<float>(TotalK, Hkv, D), Tensor<float>(TotalK, Hkv, D));
        int[,]? table = paged ? new[,] { { 2, 0 }, { 1, 3 } } : null;
        var o = Own(DeviceTensor<float>.Allocate(Acc, TotalQ, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(Acc, H, TotalQ));
        Be.ForwardVarlen(q, k, v, CuQ, CuK, MaxQ, MaxK, blockTable: table, output: o, softmaxLse: lse);
        var dO = Tensor<float>(TotalQ, H, D);
        long[] kShape = k.Shape.ToArray();
        var gq = which == "gradQuery" ? Poisoned(shape) : Poisoned(TotalQ, H, D);
        var gk = which == "gradKey" ? Poisoned(shape) : Poisoned(kShape);
        var gv = which == "gradValue" ? Poisoned(shape) : Poisoned(kShape);
        var lseArg = which == "softmaxLse" ? Tensor<float>(shape) : lse;
        var dOArg = which == "gradOutput" ? Tensor<float>(shape) : dO;
        RejectsUnwritten<ArgumentException>(() => Be.BackwardVarlen(dOArg, q, k, v, o, lseArg, CuQ, CuK, MaxQ, MaxK,
            blockTable: table, gradQuery: gq, gradKey: gk, gradValue: gv), which);
    }

    [Test]
    public void VarlenMissingCuSeqlensIsRejected()
    {
        var q = Tensor<float>(TotalQ, H, D);
        var k = Tensor<float>(TotalK, Hkv, D);
        var o = Own(DeviceTensor<float>.Allocate(Acc, TotalQ, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(Acc, H, TotalQ));
        Be.ForwardVarlen(q, k, k, CuQ, CuK, MaxQ, MaxK, output: o, softmaxLse: lse);
        var gq = Poisoned(TotalQ, H, D);
        RejectsUnwritten<ArgumentNullException>(() => Be.BackwardVarlen(Tensor<float>(TotalQ, H, D), q, k, k, o, lse, null!, CuK,
            MaxQ, MaxK, gradQuery: gq), "cuSeqlensQ");
    }
}
