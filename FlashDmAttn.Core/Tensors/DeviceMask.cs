using ILGPU;
using ILGPU.Runtime;

namespace FlashDmAttn;

/// <summary>
/// An attention mask of logical shape (B, H, Lq, Lk) as the kernels read it: raw bytes, 1, 2 or 4 per element.
/// Visible where the element is nonzero (for floating-point masks: where its value is nonzero, so −0 is masked).
/// Made from a <see cref="DeviceTensor{T}"/> of byte, float, Half or BFloat16 (implicitly); host bool masks upload through <see cref="FromBools"/>.
/// </summary>
public sealed class DeviceMask
{
    private readonly Func<bool> _sourceDisposed;

    private DeviceMask(ArrayView<byte> bytes, int elementBytes, long[] shape, long[] strides, Accelerator accelerator, string elementType,
        Func<bool> sourceDisposed)
    {
        Bytes = bytes; ElementBytes = elementBytes; ShapeArray = shape; StridesArray = strides;
        Accelerator = accelerator; ElementType = elementType; _sourceDisposed = sourceDisposed;
    }

    /// <summary>True once the tensor this mask was made from (or the owner of its buffer) has been disposed.</summary>
    public bool IsDisposed => _sourceDisposed();

    internal ArrayView<byte> Bytes { get; }
    internal int ElementBytes { get; }
    internal long[] ShapeArray { get; }
    internal long[] StridesArray { get; }
    public Accelerator Accelerator { get; }
    public string ElementType { get; }
    public ReadOnlySpan<long> Shape => ShapeArray;
    public ReadOnlySpan<long> Strides => StridesArray;

    /// <summary>
    /// Uploads a host bool mask as a byte tensor (ILGPU cannot allocate bool buffers: bool is not blittable).
    /// Pass the result, or a view of it, as attnMask.
    /// </summary>
    public static DeviceTensor<byte> FromBools(Accelerator accelerator, bool[] visible, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(visible);
        var bytes = new byte[visible.Length];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = visible[i] ? (byte)1 : (byte)0;
        return DeviceTensor<byte>.FromHost(accelerator, bytes, shape);
    }

    public static DeviceMask From<T>(DeviceTensor<T> tensor) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(tensor);
        int size = typeof(T) == typeof(byte) || typeof(T) == typeof(sbyte) ? 1
            : typeof(T) == typeof(System.Half) || typeof(T) == typeof(BFloat16) ? 2
            : typeof(T) == typeof(float) ? 4
            : throw new ArgumentException($"attnMask: expected element type byte, float, Half or BFloat16, got {typeof(T).Name}", "attnMask");
        if (tensor.IsDisposed)
            throw new ArgumentException($"attnMask: expected a live tensor, got disposed {tensor}", "attnMask");
        var raw = tensor.Data.Length == 0 ? ArrayView<byte>.Empty : tensor.Data.Cast<byte>();
        return new DeviceMask(raw, size, tensor.Shape.ToArray(), tensor.Strides.ToArray(), tensor.Accelerator, typeof(T).Name,
            () => tensor.IsDisposed);
    }

    public override string ToString() => $"DeviceMask<{ElementType}>[{string.Join(", ", ShapeArray)}]";
}
