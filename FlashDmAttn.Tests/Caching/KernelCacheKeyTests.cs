using System.Diagnostics;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Caching;

/// <summary>The kernel cache's key and entries, on the CPU: every part of the key matters, a compiled kernel is rebuilt
/// from its entry exactly, processes filling one cache leave it valid, and the options reach the launcher.</summary>
[TestFixture]
public class KernelCacheKeyTests
{
    private static readonly TcKernelSpec Dense64 = new(TcElemKind.Bf16, TcShape.D64, false, false, false, false, false);
    private static readonly TcKernelSpec Causal64 = Dense64 with { Causal = true };

    [Test]
    public void EveryPartOfTheKeyChangesIt()
    {
        using var o1 = Context.Create(b => b.EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var o2 = Context.Create(b => b.EnableAlgorithms().Optimize(OptimizationLevel.O2));
        var method = TensorCoreLauncher.Method(Dense64);
        var spec = TensorCoreLauncher.Specialization;
        var key = KernelCacheKey.For(method, spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8");
        var variants = new[]
        {
            KernelCacheKey.For(TensorCoreLauncher.Method(Causal64), spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(TensorCoreLauncher.Method(Dense64 with { Elem = TcElemKind.Fp16 }), spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(TensorCoreLauncher.Method(Dense64 with { Shape = TcShape.D64R64 }), spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(method, new ILGPU.Runtime.KernelSpecialization(128, 2), o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(method, spec, o2, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(method, spec, o1, CudaArchitecture.SM_80, CudaInstructionSet.ISA_80, "12.8"),
            KernelCacheKey.For(method, spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_78, "12.8"),
            KernelCacheKey.For(method, spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.9"),
            key with { Library = key.Library + "+other build" },
            key with { Ilgpu = key.Ilgpu + "+other build" },
        };
        Assert.That(KernelCacheKey.For(method, spec, o1, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, "12.8").Text, Is.EqualTo(key.Text), "stable");
        foreach (var v in variants)
            Assert.That(v.Text, Is.Not.EqualTo(key.Text), v.ToString());
        Assert.That(variants.Select(v => v.Text).Distinct().Count(), Is.EqualTo(variants.Length));
        Assert.That(key.Library, Does.Contain(typeof(KernelCacheKey).Module.ModuleVersionId.ToString()), "the library's build");
        Assert.That(key.Ilgpu, Does.Contain(Context.Version), "ILGPU's version");
    }

    [Test]
    public void ACompiledKernelIsRebuiltFromItsEntryWithoutCompiling()
    {
        var method = TensorCoreLauncher.Method(Dense64 with { Shape = TcShape.D32 });
        using var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(OptimizationLevel.O1));
        using var backend = new PTXBackend(ctx, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), TensorCoreLauncher.Specialization);
        var entry = PtxEntry.Decode(PtxEntry.From(compiled).Encode());
        Assert.That(entry, Is.EqualTo(PtxEntry.From(compiled)), "entry round trip");
        Assert.That(entry!.SharedDynamic, Is.True, "the kernel's dynamic shared memory is part of the entry");

        using var fresh = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(OptimizationLevel.O1));
        var rebuilt = entry.Rebuild(fresh, method);
        Assert.That(rebuilt.PTXAssembly, Is.EqualTo(compiled.PTXAssembly));
        Assert.That(rebuilt.Name, Is.EqualTo(compiled.Name));
        Assert.That(rebuilt.Specialization.MaxNumThreadsPerGroup, Is.EqualTo(compiled.Specialization.MaxNumThreadsPerGroup));
        Assert.That(rebuilt.Specialization.MinNumGroupsPerMultiprocessor, Is.EqualTo(compiled.Specialization.MinNumGroupsPerMultiprocessor));
        Assert.That(() => entry.Rebuild(fresh, TensorCoreLauncher.Method(Causal64)).PTXAssembly, Throws.Nothing,
            "same entry name for every instantiation: the key, not the name, tells specializations apart");
        Assert.That(() => (entry with { Name = "Kernel_Other" }).Rebuild(fresh, method), Throws.TypeOf<InvalidDataException>());
    }

    [Test]
    public void TwoProcessesFillingOneCacheLeaveItValid()
    {
        string dir = Path.Combine(Path.GetTempPath(), "fdm-cache-procs-" + Guid.NewGuid().ToString("N"));
        try
        {
            string self = typeof(KernelCacheKeyTests).Assembly.Location;
            var children = Enumerable.Range(0, 2).Select(i => Process.Start(new ProcessStartInfo("dotnet",
                $"\"{self}\" --filter FullyQualifiedName~{nameof(KernelCacheWriterChild)} --test-parameter cache-dir={dir} --test-parameter writer={i}")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!).ToList();
            foreach (var c in children)
            {
                string output = c.StandardOutput.ReadToEnd() + c.StandardError.ReadToEnd();
                c.WaitForExit();
                Assert.That(c.ExitCode, Is.Zero, output);
            }
            var cache = new KernelDiskCache(dir);
            for (int k = 0; k < KernelCacheWriterChild.Keys; k++)
            {
                var read = cache.TryRead($"key {k}");
                Assert.That(read, Is.Not.Null, $"key {k}");
                Assert.That(read, Is.EqualTo(KernelCacheWriterChild.Payload(0, k)).Or.EqualTo(KernelCacheWriterChild.Payload(1, k)), $"key {k}: one writer's payload");
            }
            Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(KernelCacheWriterChild.Keys), "no temporary files left");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Test]
    public void OptionsReachTheLauncher()
    {
        var cpu = FlashDmAttention.Auto("cpu");
        Assert.That(cpu.LaunchOptions.DiskCache?.Directory, Is.EqualTo(KernelDiskCache.DefaultDirectory), "on by default");
        Assert.That(cpu.WithOptions(new AttentionOptions { UseKernelCache = false }).LaunchOptions.DiskCache, Is.Null, "disabled: nothing is read or written");
        Assert.That(cpu.WithOptions(new AttentionOptions { KernelCacheDirectory = "/some/dir" }).LaunchOptions.DiskCache!.Directory, Is.EqualTo("/some/dir"));
        Assert.That(CachedKernels.LastWasHit, Is.False);
    }

    [Test]
    public void WarmUpPlansTheKernelsOfEachShape()
    {
        var cpu = FlashDmAttention.Auto("cpu").WithLaunch(o => o with { TensorCoreOnCpu = true, StreamK = StreamKMode.On });
        AttentionShape[] shapes =
        [
            new(2, 1024, 1024, 8, 8, 128, IsCausal: true),
            new(2, 1024, 1024, 8, 8, 128, IsCausal: true),
            new(1, 4096, 4096, 16, 16, 128, IsCausal: true, Mask: OperandForm.PerKey, Bias: OperandForm.PerKey),
            new(1, 4096, 4096, 16, 16, 64, Mask: OperandForm.PerQuery, Bias: OperandForm.PerQuery, Softcap: 30f),
            new(1, 4224, 4224, 1, 1, 64), // 33 blocks on 2 resident groups: stream-K
        ];
        var specs = KernelWarmUp.Specs(cpu.Accelerator, cpu.LaunchOptions, shapes.Select(s => cpu.ProblemOf(s)).ToList(), ElemKind.BFloat16);
        Assert.That(specs, Is.EqualTo(new[]
        {
            new TcKernelSpec(TcElemKind.Bf16, TcShape.D128, true, false, false, false, false),
            new TcKernelSpec(TcElemKind.Bf16, TcShape.D128R64Gather, true, true, true, false, false),
            new TcKernelSpec(TcElemKind.Bf16, TcShape.D64R64, false, true, true, true, false),
            new TcKernelSpec(TcElemKind.Bf16, TcShape.D64, false, false, false, false, true),
        }));
        Assert.That(() => cpu.WarmUp<BFloat16>([new(1, 8, 8, 2, 3, 64)]), Throws.ArgumentException);
        Assert.That(() => cpu.WarmUp<BFloat16>([], maxParallelism: 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(FlashDmAttention.Auto("cpu").WarmUp<float>([new(1, 64, 64, 2, 2, 64)]), Is.Zero, "fp32: no tensor-core kernel");
    }
}

/// <summary>Run by <see cref="KernelCacheKeyTests.TwoProcessesFillingOneCacheLeaveItValid"/> in child processes.</summary>
[TestFixture, Explicit("a child process of the kernel cache tests")]
public class KernelCacheWriterChild
{
    public const int Keys = 6;

    public static byte[] Payload(int writer, int key)
    {
        var bytes = new byte[256 * 1024];
        new Random(1000 * writer + key).NextBytes(bytes);
        return bytes;
    }

    [Test]
    public void Write()
    {
        var cache = new KernelDiskCache(TestContext.Parameters.Get("cache-dir", ""));
        int writer = int.Parse(TestContext.Parameters.Get("writer", "0"));
        for (int round = 0; round < 20; round++)
            for (int k = 0; k < Keys; k++)
                Assert.That(cache.Write($"key {k}", Payload(writer, k)), Is.True);
    }
}
