using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// Who owns a buffer: the result of a call with a caller's output is a non-owning view, so disposing it (e.g. through
/// <c>using var r = attn.Forward(..., output: x)</c>) leaves x usable; any use of a disposed tensor throws
/// ObjectDisposedException. And the device-side <see cref="DeviceTensor{T}.Fill"/>.
/// </summary>
public class DeviceTensorTests
{
    private static AttentionBackend Be => FlashDmAttention.Auto("cpu");

    [Test]
    public void DisposingTheResultLeavesTheCallersOutputUsable()
    {
        var acc = Be.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int B = 1, L = 5, H = 2, D = 8;
        var (qv, qd) = TestData.Normal<float>(rng, B * L * H * D);
        var (kv, kd) = TestData.Normal<float>(rng, B * L * H * D);
        var (vv, vd) = TestData.Normal<float>(rng, B * L * H * D);
        using var q = DeviceTensor<float>.FromHost(acc, qv, B, L, H, D);
        using var k = DeviceTensor<float>.FromHost(acc, kv, B, L, H, D);
        using var v = DeviceTensor<float>.FromHost(acc, vv, B, L, H, D);
        using var x = DeviceTensor<float>.Allocate(acc, B, L, H, D);
        x.Fill(float.NaN);
        DeviceTensor<float> result;
        using (var r = Be.Forward(q, k, v, isCausal: true, output: x))
        {
            result = r;
            Assert.That(r.OwnsBuffer, Is.False);
            Assert.That(r.Shape.ToArray(), Is.EqualTo(x.Shape.ToArray()));
        }
        Assert.That(x.IsDisposed, Is.False, "disposing the result disposed the caller's output");
        var (oRef, _) = Reference.Attention(qd, kd, vd, B, L, L, H, H, D, null, null, 1 / Math.Sqrt(D), true, 0);
        TestData.AssertClose(x.ToHost().Select(f => (double)f).ToArray(), oRef, TestData.Tolerance<float>(), $"seed={seed} output");
        Assert.That(result.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => result.ToHost());
    }

    [Test]
    public void AllocatedResultOwnsItsBuffer()
    {
        var acc = Be.Accelerator;
        using var q = DeviceTensor<float>.Random(acc, 1, 3, 1, 8);
        var r = Be.Forward(q, q, q);
        Assert.That(r.OwnsBuffer, Is.True);
        Assert.That(r.ToHost(), Has.All.Matches<float>(float.IsFinite));
        r.Dispose();
        Assert.Throws<ObjectDisposedException>(() => r.ToHost());
    }

    [Test]
    public void DisposedTensorThrowsObjectDisposed()
    {
        var t = DeviceTensor<float>.FromHost(Be.Accelerator, [1f, 2f, 3f, 4f], 2, 2);
        var view = t.View(1, [3], [1]);
        var wrapper = new DeviceTensor<float>(t.Data, [4]);
        Assert.That(view.ToHost(), Is.EqualTo(new[] { 2f, 3f, 4f }));
        view.Dispose();
        Assert.Throws<ObjectDisposedException>(() => view.ToHost(), "a disposed view");
        Assert.That(t.ToHost(), Is.EqualTo(new[] { 1f, 2f, 3f, 4f }), "disposing a view released its owner's buffer");
        var view2 = t.View(0, [4], [1]);
        t.Dispose();
        Assert.Multiple(() =>
        {
            Assert.Throws<ObjectDisposedException>(() => t.ToHost());
            Assert.Throws<ObjectDisposedException>(() => _ = t.Data);
            Assert.Throws<ObjectDisposedException>(() => t.CopyFromHost([0f, 0f, 0f, 0f]));
            Assert.Throws<ObjectDisposedException>(() => t.Fill(0f));
            Assert.Throws<ObjectDisposedException>(() => t.View(0, [1], [1]));
            Assert.Throws<ObjectDisposedException>(() => view2.ToHost(), "a view of a disposed owner");
            Assert.That(view2.IsDisposed, Is.True);
        });
        t.Dispose(); // twice is fine
        wrapper.Dispose();
        Assert.Throws<ObjectDisposedException>(() => wrapper.ToHost());
    }

    [Test]
    public void FillContiguous()
    {
        var acc = Be.Accelerator;
        using var f = DeviceTensor<float>.Allocate(acc, 3, 5);
        using var h = DeviceTensor<Half>.Allocate(acc, 7);
        using var b = DeviceTensor<BFloat16>.Allocate(acc, 2, 3, 4);
        using var m = DeviceTensor<byte>.Allocate(acc, 1, 1, 1, 33);
        f.Fill(-2.5f);
        h.Fill((Half)0.75);
        b.Fill((BFloat16)3f);
        m.Fill(1);
        Assert.Multiple(() =>
        {
            Assert.That(f.ToHost(), Has.All.EqualTo(-2.5f));
            Assert.That(h.ToHost(), Has.All.EqualTo((Half)0.75));
            Assert.That(b.ToHost().Select(x => (float)x), Has.All.EqualTo(3f));
            Assert.That(m.ToHost(), Has.All.EqualTo((byte)1));
        });
        f.Fill(float.NaN);
        Assert.That(f.ToHost(), Has.All.NaN);
    }

    /// <summary>A padded view and a rank-6 view whose dims do not merge: only the addressed elements change.</summary>
    [TestCase(new long[] { 3, 4 }, new long[] { 6, 1 })]
    [TestCase(new long[] { 2, 2, 2, 2, 2, 3 }, new long[] { 200, 90, 40, 17, 6, 1 })]
    [TestCase(new long[] { 4, 3 }, new long[] { 0, 1 })]
    public void FillStridedTouchesOnlyItsElements(long[] shape, long[] strides)
    {
        var acc = Be.Accelerator;
        long span = 1;
        for (int i = 0; i < shape.Length; i++) span += (shape[i] - 1) * strides[i];
        var before = Enumerable.Range(0, (int)span + 5).Select(i => (float)i).ToArray();
        using var raw = DeviceTensor<float>.FromHost(acc, before, before.Length);
        var view = raw.View(2, shape, strides);
        view.Fill(-1f);
        var after = raw.ToHost();
        var addressed = new HashSet<long>();
        var idx = new long[shape.Length];
        long n = shape.Aggregate(1L, (a, s) => a * s);
        for (long e = 0; e < n; e++)
        {
            long off = 2;
            for (int i = 0; i < shape.Length; i++) off += idx[i] * strides[i];
            addressed.Add(off);
            for (int i = shape.Length - 1; i >= 0 && ++idx[i] == shape[i]; i--) idx[i] = 0;
        }
        for (int i = 0; i < after.Length; i++)
            Assert.That(after[i], Is.EqualTo(addressed.Contains(i) ? -1f : before[i]), $"element {i}");
        Assert.That(view.ToHost(), Has.All.EqualTo(-1f));
    }
}
