using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>ForwardForBackward keeps the forward's output, LSE and arguments; its Backward equals the explicit one.</summary>
public class SavedAttentionTests
{
    [Test]
    public void SavedBackwardEqualsExplicitBackward()
    {
        var attn = FlashDmAttention.Auto("cpu");
        var acc = attn.Accelerator;
        using var q = DeviceTensor<float>.Random(acc, 2, 13, 4, 32);
        using var k = DeviceTensor<float>.Random(acc, 2, 9, 2, 32);
        using var v = DeviceTensor<float>.Random(acc, 2, 9, 2, 32);
        using var bias = DeviceTensor<float>.Random(acc, 2, 4, 1, 9);
        using var dO = DeviceTensor<float>.Random(acc, 2, 13, 4, 32);

        using var saved = attn.ForwardForBackward(q, k, v, attnBias: bias, isCausal: true, softcap: 5f);
        using var lse = DeviceTensor<float>.Allocate(acc, 2, 4, 13);
        using var o = attn.Forward(q, k, v, attnBias: bias, isCausal: true, softcap: 5f, softmaxLse: lse);
        Assert.That(saved.Output.ToHost(), Is.EqualTo(o.ToHost()));
        Assert.That(saved.SoftmaxLse.ToHost(), Is.EqualTo(lse.ToHost()));

        using var a = saved.Backward(dO);
        using var b = attn.Backward(dO, q, k, v, o, lse, attnBias: bias, isCausal: true, softcap: 5f);
        Assert.That(a.DQuery.ToHost(), Is.EqualTo(b.DQuery.ToHost()));
        Assert.That(a.DKey.ToHost(), Is.EqualTo(b.DKey.ToHost()));
        Assert.That(a.DValue.ToHost(), Is.EqualTo(b.DValue.ToHost()));
        Assert.That(a.DBias!.ToHost(), Is.EqualTo(b.DBias!.ToHost()));
        Assert.That(a.DBias.ToHost().Any(x => x != 0f), "a nonzero dbias");
    }
}
