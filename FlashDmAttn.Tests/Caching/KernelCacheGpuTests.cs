using ILGPU.Runtime;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Tests.Support;
using FlashDmAttn.Tests.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Caching;

/// <summary>The disk cache on CUDA: a fresh accelerator (as a new process has: no kernel in memory) fills a cache, the
/// next fresh one runs from it and matches the float64 reference, and a disabled cache writes nothing.</summary>
[CudaFixture]
public class KernelCacheGpuTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        if (!FlashDmAttention.CudaAvailable) Assert.Ignore("no CUDA device");
        _dir = Path.Combine(Path.GetTempPath(), "fdm-cache-gpu-" + Guid.NewGuid().ToString("N"));
    }

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, true);
        // The shared backend's accelerator is this thread's current CUDA context again for the tests after these.
        if (FlashDmAttention.CudaAvailable) FlashDmAttention.Auto("cuda").Accelerator.Bind();
    }

    /// <summary>A backend on a new accelerator of the CUDA device, recording whether tensor-core kernels came from disk.</summary>
    private static (AttentionBackend Backend, Accelerator Accelerator) Fresh(AttentionOptions options)
    {
        var device = FlashDmAttention.Context.Devices.First(d => d.AcceleratorType == AcceleratorType.Cuda);
        var acc = device.CreateAccelerator(FlashDmAttention.Context);
        return (new AttentionBackend("cuda", acc).WithOptions(options), acc);
    }

    [Test]
    public void ASecondAcceleratorRunsFromTheCacheTheFirstFilled()
    {
        var c = new AttentionCase("bf16", 1, 150, 200, 4, 2, 128, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]);
        var options = new AttentionOptions { KernelCacheDirectory = _dir };
        var (first, acc1) = Fresh(options);
        using (acc1)
        {
            var plans = TensorCoreRunner.Run(first, c);
            Assert.That(plans.Single().Family, Is.EqualTo(KernelFamily.TensorCore));
            Assert.That(CachedKernels.LastWasHit, Is.False, "an empty cache: compiled");
        }
        Assert.That(Directory.GetFiles(_dir, "*.kernel"), Has.Length.EqualTo(1), "one entry stored");

        var (second, acc2) = Fresh(options);
        using (acc2)
        {
            TensorCoreRunner.Run(second, c); // checks the output against the float64 reference
            Assert.That(CachedKernels.LastWasHit, Is.True, "loaded from the disk cache");
        }

        // A corrupt entry is not loaded: compiled again and replaced.
        string entry = Directory.GetFiles(_dir, "*.kernel").Single();
        var bytes = File.ReadAllBytes(entry);
        bytes[bytes.Length / 2] ^= 0x55;
        File.WriteAllBytes(entry, bytes);
        var (third, acc3) = Fresh(options);
        using (acc3)
        {
            TensorCoreRunner.Run(third, c);
            Assert.That(CachedKernels.LastWasHit, Is.False, "a corrupt entry is compiled again");
        }
        Assert.That(File.ReadAllBytes(entry), Is.Not.EqualTo(bytes), "the entry was rewritten");
    }

    [Test]
    public void ADisabledCacheWritesNothing()
    {
        var (backend, acc) = Fresh(new AttentionOptions { UseKernelCache = false, KernelCacheDirectory = _dir });
        using (acc)
            TensorCoreRunner.Run(backend, new AttentionCase("fp16", 1, 70, 90, 2, 1, 64));
        Assert.That(Directory.Exists(_dir), Is.False);
    }

    [Test]
    public void WarmUpLeavesNothingToCompile()
    {
        var (backend, acc) = Fresh(new AttentionOptions { KernelCacheDirectory = _dir });
        using (acc)
        {
            var steps = new List<WarmUpProgress>();
            var shape = new AttentionShape(1, 96, 96, 2, 2, 64, IsCausal: true, Softcap: 20f);
            int n = backend.WarmUp<Half>([shape, shape], new InlineProgress(steps.Add), maxParallelism: 2);
            Assert.That(n, Is.EqualTo(1));
            Assert.That(steps.Select(s => (s.Done, s.Total)), Is.EqualTo(new[] { (1, 1) }));
            Assert.That(steps[0].FromDiskCache, Is.True, "compiled in parallel into the cache first, then loaded from it");
            TensorCoreRunner.Run(backend, new AttentionCase("fp16", 1, 96, 96, 2, 2, 64, Causal: true, Softcap: 20f));
        }
    }

    private sealed class InlineProgress(Action<WarmUpProgress> report) : IProgress<WarmUpProgress>
    {
        public void Report(WarmUpProgress value) => report(value);
    }
}
