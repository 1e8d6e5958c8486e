using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>
/// Sizes the launch cannot address (the kernels take int batch, heads and lengths; the portable kernel's grid has one
/// column per (batch, head) pair, at most the accelerator's grid y size) are rejected with an ArgumentException naming
/// the argument and both values, before any allocation or write. Huge logical shapes are stride-0 views of a few
/// elements; outputs are watched where their shape can be materialised.
/// </summary>
public class SizeLimitTests : ValidationFixture
{
    private const long D = 8;

    /// <summary>A view of <paramref name="shape"/> over D elements: every dim but the last has stride 0.</summary>
    private DeviceTensor<float> Broadcast(params long[] shape)
    {
        var strides = new long[shape.Length];
        strides[^1] = 1;
        return Tensor<float>(shape[^1]).View(0, shape, strides);
    }

    [Test]
    public void SeqQOf2Pow31Rows()
    {
        long lq = 1L << 31;
        Rejects<ArgumentOutOfRangeException>(() => Be.Forward(Broadcast(1, lq, 1, D), Broadcast(1, 4, 1, D), Broadcast(1, 4, 1, D)),
            "query", "seqlen_q at most 2147483647", $"got {lq}");
    }

    [Test]
    public void SeqKOf2Pow31Rows()
    {
        long lk = 1L << 31;
        var o = Watched<float>("output", 1, 4, 1, D);
        Rejects<ArgumentOutOfRangeException>(() => Be.Forward(Broadcast(1, 4, 1, D), Broadcast(1, lk, 1, D), Broadcast(1, lk, 1, D), output: o),
            "key", "seqlen_k at most 2147483647", $"got {lk}");
    }

    [Test]
    public void BatchOf2Pow32Plus1()
    {
        long b = (1L << 32) + 1;
        Rejects<ArgumentOutOfRangeException>(() => Be.Forward(Broadcast(b, 1, 1, D), Broadcast(b, 1, 1, D), Broadcast(b, 1, 1, D)),
            "query", "batch at most 2147483647", $"got {b}");
    }

    [Test]
    public void HeadsOf2Pow31()
    {
        long h = 1L << 31;
        Rejects<ArgumentOutOfRangeException>(() => Be.Forward(Broadcast(1, 1, h, D), Broadcast(1, 1, 1, D), Broadcast(1, 1, 1, D)),
            "query", "heads at most 2147483647", $"got {h}");
    }

    [Test]
    public void BatchTimesHeadsOf2Pow32()
    {
        long b = 1L << 16, h = 1L << 16;
        Rejects<ArgumentOutOfRangeException>(() => Be.Forward(Broadcast(b, 1, h, D), Broadcast(b, 1, 1, D), Broadcast(b, 1, 1, D)),
            "query", "batch·heads at most", $"got {b}·{h} = {b * h}");
    }

    [Test]
    public void PagedPageSizeOf2Pow31()
    {
        long ps = 1L << 31;
        var q = Tensor<float>(2, 1, D);
        var k = Broadcast(1, ps, 1, D);
        var o = Watched<float>("output", 2, 1, D);
        Rejects<ArgumentOutOfRangeException>(() => Be.ForwardVarlen(q, k, k, [0, 1, 2], [0, 1, 2], 1, 1, blockTable: new[,] { { 0 }, { 0 } }, output: o),
            "key", "page_size at most 2147483647", $"got {ps}");
    }

    [Test]
    public void TopKRowsOverflowingLong()
    {
        long n = 1L << 32;
        var bias = Tensor<float>(4).View(0, [n, n, 1, 4], [0, 0, 0, 1]);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Be.TopK(bias, 2));
        Assert.That(ex!.ParamName, Is.EqualTo("attnBias"));
        Assert.That(ex.Message, Does.Contain("expected at most 2147483647 rows").And.Contain($"got {(Int128)n * n}"));
    }

    [Test]
    public void AllocateOverflowingShape()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => DeviceTensor<float>.Allocate(Acc, 1L << 40, 1L << 40));
        Assert.That(ex!.ParamName, Is.EqualTo("shape"));
        Assert.That(ex.Message, Does.Contain("[1099511627776, 1099511627776]").And.Contain("bytes"));
    }
}
