using System.Runtime.InteropServices;
using ILGPU.Runtime;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Validation;

/// <summary>
/// Watches caller buffers: fills each one's whole backing view with random bits (NaN patterns included for
/// floating types) and can tell, bit for bit, whether anything wrote to them since.
/// </summary>
public sealed class SentinelGuard(int seed)
{
    private readonly Random _rng = new(seed);
    private readonly List<(string Name, Accelerator Acc, Func<byte[]> Read, byte[] Expected)> _watched = [];

    public DeviceTensor<T> Watch<T>(DeviceTensor<T> tensor, string name) where T : unmanaged
    {
        var fill = new T[tensor.Data.Length];
        _rng.NextBytes(MemoryMarshal.AsBytes(fill.AsSpan()));
        // Make sure NaN bit patterns are present for float/Half/BFloat16 (quiet NaN with a payload in element 0).
        if (fill.Length > 0 && typeof(T) == typeof(float)) MemoryMarshal.Cast<T, uint>(fill.AsSpan())[0] = 0x7FC0_1234u;
        tensor.Data.CopyFromCPU(fill);
        tensor.Accelerator.Synchronize();
        _watched.Add((name, tensor.Accelerator, () => ReadBits(tensor), MemoryMarshal.AsBytes(fill.AsSpan()).ToArray()));
        return tensor;
    }

    private static byte[] ReadBits<T>(DeviceTensor<T> tensor) where T : unmanaged
    {
        var a = new T[tensor.Data.Length];
        tensor.Data.CopyToCPU(a);
        return MemoryMarshal.AsBytes(a.AsSpan()).ToArray();
    }

    /// <summary>Names of the watched buffers whose bits differ from their sentinel fill.</summary>
    public List<string> Changed()
    {
        foreach (var acc in _watched.Select(w => w.Acc).Distinct()) acc.Synchronize();
        var changed = new List<string>();
        foreach (var (name, _, read, expected) in _watched)
        {
            var actual = read();
            int diffs = 0, first = -1;
            for (int i = 0; i < actual.Length; i++)
                if (actual[i] != expected[i]) { diffs++; if (first < 0) first = i; }
            if (diffs > 0) changed.Add($"{name} ({diffs} bytes differ, first at byte {first})");
        }
        return changed;
    }

    public void AssertUntouched()
        => Assert.That(Changed(), Is.Empty, "caller buffers written by a rejected call");
}

/// <summary>Shared plumbing: the CPU backend, owned tensors, the sentinel guard and the rejection assertion.</summary>
public abstract class ValidationFixture
{
    protected AttentionBackend Be = null!;
    protected SentinelGuard Guard = null!;
    private readonly List<IDisposable> _owned = [];

    protected Accelerator Acc => Be.Accelerator;

    [SetUp]
    public void BaseSetUp()
    {
        Be = FlashDmAttention.Auto("cpu");
        Guard = new SentinelGuard(TestContext.CurrentContext.Random.Next());
    }

    [TearDown]
    public void BaseTearDown()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }

    protected TT Own<TT>(TT d) where TT : IDisposable { _owned.Add(d); return d; }

    /// <summary>A contiguous tensor (contents: small deterministic values, fine for any dtype).</summary>
    protected DeviceTensor<T> Tensor<T>(params long[] shape) where T : unmanaged => Tensor<T>(Acc, shape);

    protected DeviceTensor<T> Tensor<T>(Accelerator acc, params long[] shape) where T : unmanaged
    {
        var t = Own(DeviceTensor<T>.Allocate(acc, shape));
        var host = new T[t.Data.Length];
        for (int i = 0; i < host.Length; i++) host[i] = Value<T>(((i * 37) % 17 - 8) / 8.0);
        t.Data.CopyFromCPU(host);
        return t;
    }

    /// <summary>An all-visible byte mask.</summary>
    protected DeviceTensor<byte> Mask(params long[] shape) => Mask(Acc, shape);

    protected DeviceTensor<byte> Mask(Accelerator acc, params long[] shape)
    {
        var t = Own(DeviceTensor<byte>.Allocate(acc, shape));
        t.Data.CopyFromCPU(Enumerable.Repeat((byte)1, (int)t.Data.Length).ToArray());
        return t;
    }

    /// <summary>A view of <paramref name="shape"/> with explicit strides, over a fresh buffer of <paramref name="bufferLength"/> elements starting <paramref name="offset"/> in.</summary>
    protected DeviceTensor<T> Strided<T>(long bufferLength, long offset, long[] shape, long[] strides) where T : unmanaged
    {
        var raw = Tensor<T>(bufferLength);
        return raw.View(offset, shape, strides);
    }

    /// <summary>The watched caller-visible output (sentinel-filled).</summary>
    protected DeviceTensor<T> Watched<T>(string name, params long[] shape) where T : unmanaged
        => Guard.Watch(Own(DeviceTensor<T>.Allocate(Acc, shape)), name);

    protected static T Value<T>(double x) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return (T)(object)(float)x;
        if (typeof(T) == typeof(double)) return (T)(object)x;
        if (typeof(T) == typeof(Half)) return (T)(object)(Half)x;
        if (typeof(T) == typeof(BFloat16)) return (T)(object)(BFloat16)x;
        if (typeof(T) == typeof(int)) return (T)(object)(int)Math.Round(x * 8);
        if (typeof(T) == typeof(byte)) return (T)(object)(byte)(x != 0 ? 1 : 0);
        return default;
    }

    protected static string Dims(params long[] s) => "[" + string.Join(", ", s) + "]";

    /// <summary>
    /// Asserts <paramref name="call"/> throws <typeparamref name="TEx"/> (or a subclass) naming <paramref name="param"/>,
    /// with every fragment in its message, and that no watched buffer was written.
    /// </summary>
    protected TEx Rejects<TEx>(TestDelegate call, string param, params string[] fragments) where TEx : ArgumentException
    {
        var ex = Assert.Catch(call, $"expected {typeof(TEx).Name} for {param}");
        Assert.That(ex, Is.InstanceOf<TEx>(), $"wrong exception type: {ex}");
        var aex = (TEx)ex!;
        Assert.Multiple(() =>
        {
            Assert.That(aex.ParamName, Is.EqualTo(param), $"ParamName; message: {aex.Message}");
            foreach (var f in fragments)
                Assert.That(aex.Message, Does.Contain(f), "message fragment");
        });
        Guard.AssertUntouched();
        return aex;
    }

    protected ArgumentException Rejects(TestDelegate call, string param, params string[] fragments)
        => Rejects<ArgumentException>(call, param, fragments);
}
