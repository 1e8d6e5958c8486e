using FlashDmAttn.Kernels.Caching;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Caching;

/// <summary>The on-disk entry format: what is read back is exactly what was written under that key, and anything
/// else (truncated, corrupted, another key's entry) reads as a miss that the next write replaces.</summary>
[TestFixture]
public class KernelDiskCacheTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "fdm-cache-test-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static byte[] Payload(int seed, int length = 4096)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Test]
    public void ReadsBackWhatWasWritten()
    {
        var cache = new KernelDiskCache(_dir);
        Assert.That(cache.TryRead("key a"), Is.Null, "empty cache");
        var payload = Payload(TestContext.CurrentContext.Random.Next());
        Assert.That(cache.Write("key a", payload), Is.True);
        Assert.That(cache.TryRead("key a"), Is.EqualTo(payload));
        Assert.That(cache.TryRead("key b"), Is.Null);
        Assert.That(new KernelDiskCache(_dir).TryRead("key a"), Is.EqualTo(payload), "another instance (process) reads it");
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary files left");
    }

    [Test]
    public void TruncatedOrCorruptEntriesAreMissesAndGetRebuilt()
    {
        var cache = new KernelDiskCache(_dir);
        var payload = Payload(1);
        cache.Write("k", payload);
        string path = cache.PathOf("k");
        byte[] good = File.ReadAllBytes(path);
        var rng = new Random(TestContext.CurrentContext.Random.Next());
        foreach (int length in new[] { 0, 3, 10, good.Length / 2, good.Length - 1 })
        {
            File.WriteAllBytes(path, good[..length]);
            Assert.That(cache.TryRead("k"), Is.Null, $"truncated to {length} bytes");
        }
        for (int i = 0; i < 20; i++)
        {
            var bad = (byte[])good.Clone();
            int at = rng.Next(bad.Length);
            bad[at] ^= (byte)(1 << rng.Next(8));
            File.WriteAllBytes(path, bad);
            Assert.That(cache.TryRead("k"), Is.Null, $"bit flipped at byte {at}");
        }
        File.WriteAllBytes(path, [.. good, 0]);
        Assert.That(cache.TryRead("k"), Is.Null, "trailing byte");
        cache.Write("k", payload);
        Assert.That(cache.TryRead("k"), Is.EqualTo(payload), "rebuilt");
    }

    [Test]
    public void AnotherKeysEntryUnderThisNameIsAMiss()
    {
        var cache = new KernelDiskCache(_dir);
        cache.Write("other key", Payload(2));
        Directory.CreateDirectory(_dir);
        File.Copy(cache.PathOf("other key"), cache.PathOf("this key"));
        Assert.That(cache.TryRead("this key"), Is.Null);
    }

    [Test]
    public void ConcurrentWritersLeaveOneValidEntry()
    {
        var payloads = Enumerable.Range(0, 8).Select(i => Payload(100 + i, 64 * 1024)).ToArray();
        Parallel.For(0, 64, i => new KernelDiskCache(_dir).Write("shared", payloads[i % payloads.Length]));
        var read = new KernelDiskCache(_dir).TryRead("shared");
        Assert.That(read, Is.Not.Null);
        Assert.That(payloads.Any(p => p.AsSpan().SequenceEqual(read)), Is.True, "one writer's complete payload");
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary files left");
    }

    [Test]
    public void AnUnwritableDirectoryIsNotAnError()
    {
        Directory.CreateDirectory(_dir);
        string file = Path.Combine(_dir, "not-a-directory");
        File.WriteAllText(file, "x");
        var cache = new KernelDiskCache(Path.Combine(file, "sub"));
        Assert.That(cache.Write("k", Payload(3)), Is.False);
        Assert.That(cache.TryRead("k"), Is.Null);
    }
}
