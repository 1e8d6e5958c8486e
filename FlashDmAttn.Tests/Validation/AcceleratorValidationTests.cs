using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>
/// Tensors living on a second CPU accelerator (same ILGPU context, different <see cref="Accelerator"/> instance)
/// handed to the shared CPU backend; and backend selection by name.
/// </summary>
public class AcceleratorValidationTests : ValidationFixture
{
    private const long B = 1, Lq = 4, Lk = 4, H = 2, Hkv = 2, D = 8;
    private CPUAccelerator _other = null!;

    [OneTimeSetUp]
    public void CreateOther() => _other = FlashDmAttention.Context.CreateCPUAccelerator(0);

    [OneTimeTearDown]
    public void DisposeOther() => _other.Dispose();

    [Test]
    public void Control_SecondAcceleratorIsDistinct()
    {
        Assert.That(_other, Is.Not.SameAs(Be.Accelerator));
        Assert.That(_other.AcceleratorType, Is.EqualTo(AcceleratorType.CPU));
    }

    [TestCase("query")]
    [TestCase("key")]
    [TestCase("value")]
    [TestCase("output")]
    [TestCase("softmaxLse")]
    [TestCase("attnMask")]
    [TestCase("attnBias")]
    public void TensorFromAnotherAccelerator(string which)
    {
        var q = Tensor<float>(B, Lq, H, D);
        var k = Tensor<float>(B, Lk, Hkv, D);
        var v = Tensor<float>(B, Lk, Hkv, D);
        var o = Watched<float>("output", B, Lq, H, D);
        var lse = Watched<float>("softmaxLse", B, H, Lq);
        DeviceMask? mask = null;
        DeviceTensor<float>? bias = null;
        switch (which)
        {
            case "query": q = Tensor<float>(_other, B, Lq, H, D); break;
            case "key": k = Tensor<float>(_other, B, Lk, Hkv, D); break;
            case "value": v = Tensor<float>(_other, B, Lk, Hkv, D); break;
            case "output": o = Guard.Watch(Own(DeviceTensor<float>.Allocate(_other, B, Lq, H, D)), "foreign output"); break;
            case "softmaxLse": lse = Guard.Watch(Own(DeviceTensor<float>.Allocate(_other, B, H, Lq)), "foreign softmaxLse"); break;
            case "attnMask": mask = Mask(_other, B, H, Lq, Lk); break;
            case "attnBias": bias = Tensor<float>(_other, B, H, Lq, Lk); break;
        }
        Rejects(() => Be.Forward(q, k, v, mask, bias, output: o, softmaxLse: lse), which,
            "expected a tensor on the backend's accelerator", $"'{Be.Accelerator.Name}'", $"got one on '{_other.Name}'");
    }

    /// <summary>Both accelerators are 'CPUAccelerator' (CPU): the message must still tell them apart.</summary>
    [Test]
    public void MessageTellsInstancesOfOneDeviceApart()
    {
        Assert.That(_other.Name, Is.EqualTo(Be.Accelerator.Name), "control: same device name");
        var q = Tensor<float>(_other, B, Lq, H, D);
        var o = Watched<float>("output", B, Lq, H, D);
        var ex = Rejects(() => Be.Forward(q, Tensor<float>(B, Lk, Hkv, D), Tensor<float>(B, Lk, Hkv, D), output: o), "query",
            "a different accelerator instance of the same device");
        var ids = System.Text.RegularExpressions.Regex.Matches(ex.Message, @"accelerator #(\d+)").Select(m => m.Groups[1].Value).ToArray();
        Assert.That(ids, Has.Length.EqualTo(2), ex.Message);
        Assert.That(ids[0], Is.Not.EqualTo(ids[1]), ex.Message);
        // The numbers are stable per instance.
        var again = Rejects(() => Be.Forward(q, Tensor<float>(B, Lk, Hkv, D), Tensor<float>(B, Lk, Hkv, D), output: o), "query");
        Assert.That(again.Message, Is.EqualTo(ex.Message));
    }

    [Test]
    public void PackedFromAnotherAccelerator()
    {
        var o = Watched<float>("output", B, Lq, H, D);
        Rejects(() => Be.ForwardQkvPacked(Tensor<float>(_other, B, Lq, 3, H, D), output: o), "qkv", "backend's accelerator");
        Rejects(() => Be.ForwardKvPacked(Tensor<float>(B, Lq, H, D), Tensor<float>(_other, B, Lk, 2, Hkv, D), output: o), "kv", "backend's accelerator");
    }

    [Test]
    public void VarlenFromAnotherAccelerator()
    {
        var o = Watched<float>("output", Lq, H, D);
        Rejects(() => Be.ForwardVarlen(Tensor<float>(Lq, H, D), Tensor<float>(_other, Lk, Hkv, D), Tensor<float>(Lk, Hkv, D),
            [0, (int)Lq], [0, (int)Lk], (int)Lq, (int)Lk, output: o), "key", "backend's accelerator");
    }

    // ---------------------------------------------------------------- backend selection

    [TestCase("tpu")]
    [TestCase("")]
    [TestCase("cuda0")]
    public void UnknownBackend(string name)
    {
        var ex = Assert.Throws<ArgumentException>(() => FlashDmAttention.Auto(name));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.ParamName, Is.EqualTo("backend"));
            Assert.That(ex.Message, Does.Contain($"got '{name}'"));
            Assert.That(ex.Message, Does.Contain("cuda, opencl, cpu"));
        });
    }

    [TestCase("cuda")]
    [TestCase("opencl")]
    public void BackendWithoutDevice(string name)
    {
        if (FlashDmAttention.GetAvailableBackends().Contains(name))
            Assert.Ignore($"this machine has a {name} device");
        var ex = Assert.Throws<ArgumentException>(() => FlashDmAttention.Auto(name));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.ParamName, Is.EqualTo("backend"));
            Assert.That(ex.Message, Does.Contain($"'{name}' has no device"));
            Assert.That(ex.Message, Does.Contain("available: " + string.Join(", ", FlashDmAttention.GetAvailableBackends())));
            Assert.That(ex.Message, Does.Contain("cpu"));
        });
    }

    [Test]
    public void Control_NamesAreTrimmedAndCaseInsensitive()
    {
        Assert.That(FlashDmAttention.Auto(" CPU "), Is.SameAs(FlashDmAttention.Auto("cpu")));
        Assert.That(FlashDmAttention.Auto("cpu").Name, Is.EqualTo("cpu"));
    }
}
