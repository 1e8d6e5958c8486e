using ILGPU;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>The one seam for inline PTX: custom intrinsics whose C# bodies are their portable twins.</summary>
public static class PtxIntrinsics
{
    /// <summary>Registers the PTX implementations with a context builder (called once for the shared context).</summary>
    public static Context.Builder RegisterTensorCoreIntrinsics(this Context.Builder builder) => builder;
}
