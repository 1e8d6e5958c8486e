using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>Gradient buffers that share memory with an input or with each other are refused before anything is written.</summary>
public class GradientMemoryTests
{
    private static readonly AttentionBackend Cpu = FlashDmAttention.Auto("cpu");

    [TestCase("gradOutput")]
    [TestCase("query")]
    [TestCase("value")]
    [TestCase("gradKey")]
    public void GradQueryOverlapping(string other)
    {
        var acc = Cpu.Accelerator;
        using var q = DeviceTensor<float>.Random(acc, 1, 8, 2, 16);
        using var k = DeviceTensor<float>.Random(acc, 1, 8, 2, 16);
        using var v = DeviceTensor<float>.Random(acc, 1, 8, 2, 16);
        using var dO = DeviceTensor<float>.Random(acc, 1, 8, 2, 16);
        using var lse = DeviceTensor<float>.Allocate(acc, 1, 2, 8);
        using var o = Cpu.Forward(q, k, v, softmaxLse: lse);
        using var dk = DeviceTensor<float>.Allocate(acc, 1, 8, 2, 16);
        var target = other switch { "gradOutput" => dO, "query" => q, "value" => v, _ => dk };
        var before = target.ToHost();
        var e = Assert.Catch<ArgumentException>(() => Cpu.Backward(dO, q, k, v, o, lse, gradQuery: target, gradKey: dk))!;
        Assert.That(e.ParamName, Is.EqualTo(other == "gradKey" ? "gradKey" : "gradQuery"));
        Assert.That(e.Message, Does.Contain(other == "gradKey" ? "gradQuery" : other));
        Assert.That(target.ToHost(), Is.EqualTo(before), "nothing written");
    }

    [Test]
    public void PackedGradientOverlappingItsInput()
    {
        var acc = Cpu.Accelerator;
        using var qkv = DeviceTensor<float>.Random(acc, 1, 8, 3, 2, 16);
        using var dO = DeviceTensor<float>.Random(acc, 1, 8, 2, 16);
        using var lse = DeviceTensor<float>.Allocate(acc, 1, 2, 8);
        using var o = Cpu.ForwardQkvPacked(qkv, softmaxLse: lse);
        var before = qkv.ToHost();
        var e = Assert.Catch<ArgumentException>(() => Cpu.BackwardQkvPacked(dO, qkv, o, lse, gradQkv: qkv))!;
        Assert.That(e.ParamName, Is.EqualTo("gradQkv"));
        Assert.That(qkv.ToHost(), Is.EqualTo(before), "nothing written");
    }
}
