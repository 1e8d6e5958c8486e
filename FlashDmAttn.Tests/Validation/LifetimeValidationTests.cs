using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>
/// Disposed tensors (or views whose buffer's owner was disposed) passed to an entry point are rejected like any bad
/// argument: an ArgumentException naming it, before anything is written.
/// </summary>
public class LifetimeValidationTests : ValidationFixture
{
    private const long B = 1, L = 4, H = 2, D = 8;

    private DeviceTensor<float> Disposed(params long[] shape)
    {
        var t = DeviceTensor<float>.Allocate(Acc, shape);
        t.Dispose();
        return t;
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("attnBias")]
    [TestCase("output")]
    [TestCase("softmaxLse")]
    public void DisposedArgument(string which)
    {
        var q = which == "query" ? Disposed(B, L, H, D) : Tensor<float>(B, L, H, D);
        var k = which == "key" ? Disposed(B, L, H, D) : Tensor<float>(B, L, H, D);
        var v = which == "value" ? Disposed(B, L, H, D) : Tensor<float>(B, L, H, D);
        var bias = which == "attnBias" ? Disposed(B, H, L, L) : null;
        var o = which == "output" ? Disposed(B, L, H, D) : Watched<float>("output", B, L, H, D);
        var lse = which == "softmaxLse" ? Disposed(B, H, L) : Watched<float>("softmaxLse", B, H, L);
        Rejects(() => Be.Forward(q, k, v, attnBias: bias, output: o, softmaxLse: lse), which, "expected a live tensor", "disposed");
    }

    [Test]
    public void ViewOfDisposedOwner()
    {
        var owner = DeviceTensor<float>.Allocate(Acc, B, L, H, D);
        var view = owner.View(0, [B, L, H, D], [L * H * D, H * D, D, 1]);
        owner.Dispose();
        var o = Watched<float>("output", B, L, H, D);
        Rejects(() => Be.Forward(view, Tensor<float>(B, L, H, D), Tensor<float>(B, L, H, D), output: o), "query", "expected a live tensor");
    }

    [Test]
    public void MaskFromDisposedTensor()
    {
        var m = DeviceTensor<byte>.Allocate(Acc, B, H, L, L);
        DeviceMask mask = m;
        m.Dispose();
        var o = Watched<float>("output", B, L, H, D);
        Rejects(() => Be.Forward(Tensor<float>(B, L, H, D), Tensor<float>(B, L, H, D), Tensor<float>(B, L, H, D), mask, output: o),
            "attnMask", "expected a live tensor");
        Rejects(() => Be.Forward(Tensor<float>(B, L, H, D), Tensor<float>(B, L, H, D), Tensor<float>(B, L, H, D), m, output: o),
            "attnMask", "expected a live tensor");
    }

    [Test]
    public void DisposedPacked()
    {
        var o = Watched<float>("output", B, L, H, D);
        Rejects(() => Be.ForwardQkvPacked(Disposed(B, L, 3, H, D), output: o), "qkv", "expected a live tensor");
        Rejects(() => Be.ForwardKvPacked(Tensor<float>(B, L, H, D), Disposed(B, L, 2, H, D), output: o), "kv", "expected a live tensor");
    }

    [Test]
    public void DisposedVarlenQuery()
    {
        var o = Watched<float>("output", L, H, D);
        Rejects(() => Be.ForwardVarlen(Disposed(L, H, D), Tensor<float>(L, H, D), Tensor<float>(L, H, D), [0, (int)L], [0, (int)L],
            (int)L, (int)L, output: o), "query", "expected a live tensor");
    }
}
