using ILGPU;
using ILGPU.Runtime;

namespace FlashDmAttn;

/// <summary>
/// A strided N-d view over an ILGPU <see cref="ArrayView{T}"/>: shape and element strides, on one accelerator.
/// It may own its buffer (<see cref="Allocate"/>, <see cref="FromHost"/>) or wrap a caller's view (the constructor);
/// disposing releases only an owned buffer.
/// </summary>
public sealed class DeviceTensor<T> : IDisposable where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense>? _owned;
    private readonly long[] _shape;
    private readonly long[] _strides;

    /// <summary>Wraps <paramref name="data"/>; strides default to row-major contiguous.</summary>
    public DeviceTensor(ArrayView<T> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
    {
        Data = data;
        _shape = shape.ToArray();
        _strides = strides.IsEmpty ? ContiguousStrides(_shape) : strides.ToArray();
        if (_strides.Length != _shape.Length)
            throw new ArgumentException($"expected {_shape.Length} strides (one per dim of shape [{string.Join(", ", _shape)}]), got {_strides.Length}", nameof(strides));
    }

    private DeviceTensor(MemoryBuffer1D<T, Stride1D.Dense> owned, long[] shape) : this(owned.View, shape)
        => _owned = owned;

    /// <summary>A new contiguous tensor on <paramref name="accelerator"/> (contents undefined).</summary>
    public static DeviceTensor<T> Allocate(Accelerator accelerator, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        long n = 1;
        foreach (var s in shape)
        {
            if (s < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"expected non-negative sizes, got [{string.Join(", ", shape)}]");
            n *= s;
        }
        return new DeviceTensor<T>(accelerator.Allocate1D<T>(Math.Max(n, 1)), (long[])shape.Clone());
    }

    /// <summary>Copies a row-major host array to a new tensor of <paramref name="shape"/>.</summary>
    public static DeviceTensor<T> FromHost(Accelerator accelerator, T[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var t = Allocate(accelerator, shape);
        if (t.ElementCount != data.Length)
        {
            t.Dispose();
            throw new ArgumentException($"expected {t.ElementCount} elements for shape [{string.Join(", ", shape)}], got {data.Length}", nameof(data));
        }
        if (data.Length > 0) t.Data.SubView(0, data.Length).CopyFromCPU(data);
        return t;
    }

    public ArrayView<T> Data { get; }
    public ReadOnlySpan<long> Shape => _shape;
    public ReadOnlySpan<long> Strides => _strides;
    public int Rank => _shape.Length;
    public long ElementCount { get { long n = 1; foreach (var s in _shape) n *= s; return n; } }
    public Accelerator Accelerator => Data.GetAccelerator();

    /// <summary>True when the strides are row-major contiguous.</summary>
    public bool IsContiguous
    {
        get
        {
            long expect = 1;
            for (int i = _shape.Length - 1; i >= 0; i--)
            {
                if (_shape[i] != 1 && _strides[i] != expect) return false;
                expect *= _shape[i];
            }
            return true;
        }
    }

    /// <summary>A view of the same memory with another shape/strides, starting <paramref name="offset"/> elements in.</summary>
    public DeviceTensor<T> View(long offset, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides)
        => new(Data.SubView(offset), shape, strides);

    /// <summary>Copies the tensor to a row-major host array (any strides).</summary>
    public T[] ToHost()
    {
        long n = ElementCount;
        if (n == 0) return Array.Empty<T>();
        long span = 1;
        for (int i = 0; i < Rank; i++) span += (_shape[i] - 1) * _strides[i];
        var raw = new T[span];
        Data.SubView(0, span).CopyToCPU(raw);
        if (IsContiguous) return raw;
        var result = new T[n];
        var idx = new long[Rank];
        for (long e = 0; e < n; e++)
        {
            long off = 0;
            for (int i = 0; i < Rank; i++) off += idx[i] * _strides[i];
            result[e] = raw[off];
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (++idx[i] < _shape[i]) break;
                idx[i] = 0;
            }
        }
        return result;
    }

    /// <summary>Copies a row-major host array into this tensor (contiguous tensors only).</summary>
    public void CopyFromHost(T[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (!IsContiguous) throw new InvalidOperationException("CopyFromHost needs a contiguous tensor");
        if (data.Length != ElementCount)
            throw new ArgumentException($"expected {ElementCount} elements, got {data.Length}", nameof(data));
        if (data.Length > 0) Data.SubView(0, data.Length).CopyFromCPU(data);
    }

    /// <summary>A mask view of this tensor (bytes/bools: nonzero is visible; floats: nonzero value is visible).</summary>
    public static implicit operator DeviceMask(DeviceTensor<T> tensor) => DeviceMask.From(tensor);

    public override string ToString() => $"DeviceTensor<{typeof(T).Name}>[{string.Join(", ", _shape)}]";

    public void Dispose()
    {
        _owned?.Dispose();
        _owned = null;
    }

    internal static long[] ContiguousStrides(long[] shape)
    {
        var strides = new long[shape.Length];
        long s = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            strides[i] = s;
            s *= Math.Max(shape[i], 1);
        }
        return strides;
    }
}
