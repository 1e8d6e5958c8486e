using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Api;

/// <summary>Runs <see cref="RowBroadcastKernel"/> (the epilogue of key-broadcast masks and biases) for the dtype of T.</summary>
internal static class RowBroadcast
{
    public static void Apply<T>(Accelerator accelerator, in FwdParams p, ArrayView<T> o, ArrayView<byte> mask,
        ArrayView<T> bias, ArrayView<float> lse, ArrayView<int> seqInfo, Kernels.Caching.KernelDiskCache? disk) where T : unmanaged
    {
        switch (DTypes.Of<T>())
        {
            case DType.Float32:
                RowBroadcastKernel.Launch<float, Fp32Codec>(accelerator, p, o.Cast<float>(), mask, Cast<T, float>(bias), lse, seqInfo, disk);
                break;
            case DType.Float16:
                RowBroadcastKernel.Launch<ushort, Fp16Codec>(accelerator, p, o.Cast<ushort>(), mask, Cast<T, ushort>(bias), lse, seqInfo, disk);
                break;
            default:
                RowBroadcastKernel.Launch<ushort, Bf16Codec>(accelerator, p, o.Cast<ushort>(), mask, Cast<T, ushort>(bias), lse, seqInfo, disk);
                break;
        }
    }

    private static ArrayView<TOut> Cast<TIn, TOut>(ArrayView<TIn> view) where TIn : unmanaged where TOut : unmanaged
        => view.IsValid && view.Length > 0 ? view.Cast<TOut>() : ArrayView<TOut>.Empty;
}
