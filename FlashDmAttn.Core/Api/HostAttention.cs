using System.Numerics.Tensors;

namespace FlashDmAttn;

/// <summary>
/// Host convenience layer: System.Numerics.Tensors tensors in, tensors out, for callers who do not manage device
/// memory. Each call uploads its inputs to the backend's accelerator, runs the device API (same validation and
/// kernels) and downloads the result.
/// </summary>
public static class HostAttention
{
    /// <summary>Attention on host tensors: query (B, Lq, H, D), key/value (B, Lk, Hkv, D); mask/bias (B|1, H|Hkv|1, Lq|1, Lk|1).</summary>
    public static Tensor<T> Forward<T>(this AttentionBackend backend, Tensor<T> query, Tensor<T> key, Tensor<T> value,
        Tensor<T>? attnMask = null, Tensor<T>? attnBias = null, float? scale = null, bool isCausal = false, float? softcap = null)
        where T : unmanaged
        => ForwardWithLse(backend, query, key, value, attnMask, attnBias, scale, isCausal, softcap).Output;

    /// <summary>As <see cref="Forward{T}"/>, also returning the log-sum-exp (B, H, Lq) in fp32.</summary>
    public static (Tensor<T> Output, Tensor<float> Lse) ForwardWithLse<T>(this AttentionBackend backend,
        Tensor<T> query, Tensor<T> key, Tensor<T> value,
        Tensor<T>? attnMask = null, Tensor<T>? attnBias = null, float? scale = null, bool isCausal = false, float? softcap = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        var acc = backend.Accelerator;
        using var q = Upload(backend, query);
        using var k = Upload(backend, key);
        using var v = Upload(backend, value);
        using var m = attnMask is null ? null : Upload(backend, attnMask);
        using var b = attnBias is null ? null : Upload(backend, attnBias);
        var lseShape = query.Rank == 4 ? new long[] { query.Lengths[0], query.Lengths[2], query.Lengths[1] } : new long[] { 0, 0, 0 };
        using var lse = DeviceTensor<float>.Allocate(acc, lseShape);
        using var o = backend.Forward(q, k, v, m is null ? null : (DeviceMask)m, b, scale, isCausal, softcap, softmaxLse: lse);
        acc.Synchronize();
        return (ToTensor(o), ToTensor(lse));
    }

    /// <summary>Copies a host tensor (any strides) to a new contiguous device tensor.</summary>
    public static DeviceTensor<T> Upload<T>(this AttentionBackend backend, Tensor<T> tensor) where T : unmanaged
    {
        var flat = new T[(long)tensor.FlattenedLength];
        tensor.FlattenTo(flat);
        var shape = new long[tensor.Rank];
        for (int i = 0; i < shape.Length; i++) shape[i] = tensor.Lengths[i];
        return DeviceTensor<T>.FromHost(backend.Accelerator, flat, shape);
    }

    /// <summary>Copies a device tensor to a new host tensor of the same shape.</summary>
    public static Tensor<T> ToTensor<T>(this DeviceTensor<T> tensor) where T : unmanaged
    {
        var lengths = new nint[tensor.Rank];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = (nint)tensor.Shape[i];
        return Tensor.Create(tensor.ToHost(), lengths);
    }
}
