using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>
/// The backward's kernels and the explicitly grouped forward helpers compile to PTX (sm_80) without a GPU, with the
/// library's context options: the CPU accelerator runs their C# directly, so only this shows that the CUDA backend
/// takes every construct in them. No PTX file may call a function (everything is inlined or an intrinsic).
/// </summary>
public class PortablePtxTests
{
    private static IEnumerable<TestCaseData> Kernels()
    {
        foreach (var (name, method) in new (string, Delegate)[]
        {
            ("RowDot bf16", BackwardReduce.RowDot<ushort, Bf16Codec>),
            ("QueryBlock bf16", PortableBackwardKernels.QueryBlock<ushort, Bf16Codec>),
            ("KeyBlock bf16", PortableBackwardKernels.KeyBlock<ushort, Bf16Codec>),
            ("KeyBlock fp32", PortableBackwardKernels.KeyBlock<float, Fp32Codec>),
            ("KeyHeads fp16", BackwardReduce.KeyHeads<ushort, Fp16Codec>),
            ("BiasBroadcast bf16", BackwardReduce.BiasBroadcast<ushort, Bf16Codec>),
            ("RowBroadcast bf16", RowBroadcastKernel.Run<ushort, Bf16Codec>),
            ("GatherBias bf16", KeyGatherKernel.GatherBiasKernel<ushort>),
        })
            yield return new TestCaseData(method).SetName($"CompilesToPtx({name})");
    }

    [TestCaseSource(nameof(Kernels))]
    public void CompilesToPtx(Delegate kernel)
    {
        using var ctx = Context.Create(b => b.EnableAlgorithms().RegisterTensorCoreIntrinsics().Optimize(OptimizationLevel.O1));
        using var backend = new PTXBackend(ctx, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Method), default);
        Assert.That(compiled.PTXAssembly, Does.Contain(".entry"));
        Assert.That(System.Text.RegularExpressions.Regex.IsMatch(compiled.PTXAssembly, @"^\s*call\b", System.Text.RegularExpressions.RegexOptions.Multiline),
            Is.False, "a call in the PTX");
    }
}
