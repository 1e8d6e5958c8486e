using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn.Api;

/// <summary>Turns a validated problem of element type T into the kernel specialization of its dtype.</summary>
internal static class Dispatch
{
    public static void Forward<T>(Accelerator accelerator, LaunchOptions options, in FwdParams p,
        ArrayView<T> q, ArrayView<T> k, ArrayView<T> v, ArrayView<T> o, ArrayView<T> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo) where T : unmanaged
    {
        switch (DTypes.Of<T>())
        {
            case DType.Float32:
                ForwardLauncher.Launch<float, Fp32Codec>(accelerator, options, p, new FwdBuffers<float>(
                    q.Cast<float>(), k.Cast<float>(), v.Cast<float>(), o.Cast<float>(), Cast<T, float>(bias), mask, lse, seqInfo));
                break;
            case DType.Float16:
                ForwardLauncher.Launch<ushort, Fp16Codec>(accelerator, options, p, new FwdBuffers<ushort>(
                    q.Cast<ushort>(), k.Cast<ushort>(), v.Cast<ushort>(), o.Cast<ushort>(), Cast<T, ushort>(bias), mask, lse, seqInfo));
                break;
            case DType.BFloat16:
                ForwardLauncher.Launch<ushort, Bf16Codec>(accelerator, options, p, new FwdBuffers<ushort>(
                    q.Cast<ushort>(), k.Cast<ushort>(), v.Cast<ushort>(), o.Cast<ushort>(), Cast<T, ushort>(bias), mask, lse, seqInfo));
                break;
            default:
                throw new ArgumentException($"query: expected dtype {DTypes.Supported}, got {typeof(T).Name}", "query");
        }
    }

    public static void Backward<T>(Accelerator accelerator, LaunchOptions options, in Kernels.Backward.BwdParams p,
        ArrayView<T> q, ArrayView<T> k, ArrayView<T> v, ArrayView<T> o, ArrayView<T> dO, ArrayView<T> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        ArrayView<T> dq, ArrayView<T> dk, ArrayView<T> dv, ArrayView<T> dbias) where T : unmanaged
    {
        switch (DTypes.Of<T>())
        {
            case DType.Float32:
                BackwardLauncher.Launch<float, Fp32Codec>(accelerator, options, p, Buffers<T, float>(q, k, v, o, dO, bias, mask, lse, seqInfo, dq, dk, dv, dbias));
                break;
            case DType.Float16:
                BackwardLauncher.Launch<ushort, Fp16Codec>(accelerator, options, p, Buffers<T, ushort>(q, k, v, o, dO, bias, mask, lse, seqInfo, dq, dk, dv, dbias));
                break;
            case DType.BFloat16:
                BackwardLauncher.Launch<ushort, Bf16Codec>(accelerator, options, p, Buffers<T, ushort>(q, k, v, o, dO, bias, mask, lse, seqInfo, dq, dk, dv, dbias));
                break;
            default:
                throw new ArgumentException($"query: expected dtype {DTypes.Supported}, got {typeof(T).Name}", "query");
        }
    }

    private static BwdBuffers<TOut> Buffers<TIn, TOut>(ArrayView<TIn> q, ArrayView<TIn> k, ArrayView<TIn> v, ArrayView<TIn> o,
        ArrayView<TIn> dO, ArrayView<TIn> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        ArrayView<TIn> dq, ArrayView<TIn> dk, ArrayView<TIn> dv, ArrayView<TIn> dbias)
        where TIn : unmanaged where TOut : unmanaged
        => new(Cast<TIn, TOut>(q), Cast<TIn, TOut>(k), Cast<TIn, TOut>(v), Cast<TIn, TOut>(o), Cast<TIn, TOut>(dO), Cast<TIn, TOut>(bias),
            mask, lse, seqInfo, Cast<TIn, TOut>(dq), Cast<TIn, TOut>(dk), Cast<TIn, TOut>(dv), Cast<TIn, TOut>(dbias));

    private static ArrayView<TOut> Cast<TIn, TOut>(ArrayView<TIn> view) where TIn : unmanaged where TOut : unmanaged
        => view.IsValid && view.Length > 0 ? view.Cast<TOut>() : ArrayView<TOut>.Empty;
}
