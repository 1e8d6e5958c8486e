namespace FlashDmAttn;

/// <summary>
/// The gradients of one backward call. Tensors the call allocated belong to this object; gradient buffers the caller
/// passed in come back as views that own nothing, so <see cref="Dispose"/> releases exactly what the call allocated.
/// </summary>
public sealed class AttentionGradients<T> : IDisposable where T : unmanaged
{
    internal AttentionGradients(DeviceTensor<T> dq, DeviceTensor<T> dk, DeviceTensor<T> dv, DeviceTensor<T>? dbias, DeviceTensor<T>? packed)
    {
        DQuery = dq;
        DKey = dk;
        DValue = dv;
        DBias = dbias;
        Packed = packed;
    }

    /// <summary>Gradient of the query, in its shape.</summary>
    public DeviceTensor<T> DQuery { get; }

    /// <summary>Gradient of the key, in its shape (summed over the query heads of each kv head).</summary>
    public DeviceTensor<T> DKey { get; }

    /// <summary>Gradient of the value, in its shape (summed over the query heads of each kv head).</summary>
    public DeviceTensor<T> DValue { get; }

    /// <summary>Gradient of the bias in the bias's own shape (summed over every dim it was broadcast along); null when
    /// the call had no bias.</summary>
    public DeviceTensor<T>? DBias { get; }

    /// <summary>The packed gradient of the packed entry points: (B, L, 3, H, D) for qkv, (B, Lk, 2, Hkv, D) for kv,
    /// whose slices are <see cref="DQuery"/>/<see cref="DKey"/>/<see cref="DValue"/>; null otherwise.</summary>
    public DeviceTensor<T>? Packed { get; }

    public void Dispose()
    {
        DQuery.Dispose();
        DKey.Dispose();
        DValue.Dispose();
        DBias?.Dispose();
        Packed?.Dispose();
    }
}
