using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Launches the tensor-core forward kernel when it covers the problem.</summary>
public static class TensorCoreLauncher
{
    /// <summary>Launches and returns true when the tensor-core kernel covers this problem on this accelerator.</summary>
    public static bool TryLaunch<TElem, TCodec>(Accelerator accelerator, FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
        => false;
}
