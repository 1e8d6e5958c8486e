using ILGPU;
using ILGPU.Runtime;

namespace FlashDmAttn;

/// <summary>
/// A strided N-d view over an ILGPU <see cref="ArrayView{T}"/>: shape and element strides, on one accelerator.
/// It may own its buffer (<see cref="Allocate"/>, <see cref="FromHost"/>), view a buffer another tensor owns
/// (<see cref="View"/>, and the tensor an entry point returns when the caller passed its own output), or wrap a
/// caller's view (the constructor). Disposing releases only an owned buffer; any use of a disposed tensor, or of a
/// view whose owner was disposed, throws <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class DeviceTensor<T> : IDisposable where T : unmanaged
{
    /// <summary>A buffer and whether its owner has released it, shared by the owner and its views.</summary>
    private sealed class Storage(MemoryBuffer1D<T, Stride1D.Dense> buffer)
    {
        public MemoryBuffer1D<T, Stride1D.Dense> Buffer { get; } = buffer;
        public bool Released { get; set; }
    }

    private readonly ArrayView<T> _data;
    private readonly Storage? _storage;   // null when wrapping a caller's view
    private readonly bool _owns;
    private bool _disposed;
    private readonly long[] _shape;
    private readonly long[] _strides;

    /// <summary>Wraps <paramref name="data"/>; strides default to row-major contiguous.</summary>
    public DeviceTensor(ArrayView<T> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
        : this(data, shape, strides, null, false)
    {
    }

    private DeviceTensor(ArrayView<T> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, Storage? storage, bool owns)
    {
        _data = data;
        _storage = storage;
        _owns = owns;
        _shape = shape.ToArray();
        _strides = strides.IsEmpty ? ContiguousStrides(_shape) : strides.ToArray();
        if (_strides.Length != _shape.Length)
            throw new ArgumentException($"expected {_shape.Length} strides (one per dim of shape [{string.Join(", ", _shape)}]), got {_strides.Length}", nameof(strides));
    }

    private DeviceTensor(MemoryBuffer1D<T, Stride1D.Dense> owned, long[] shape)
        : this(owned.View, shape, default, new Storage(owned), true)
    {
    }

    /// <summary>A new contiguous tensor on <paramref name="accelerator"/> (contents undefined).</summary>
    public static DeviceTensor<T> Allocate(Accelerator accelerator, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(shape);
        Int128 n = 1;
        foreach (var s in shape)
        {
            if (s < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"shape: expected non-negative sizes, got [{string.Join(", ", shape)}]");
            n *= s;
        }
        if (n * Interop.SizeOf<T>() > accelerator.MemorySize)
            throw new ArgumentOutOfRangeException(nameof(shape), $"shape: [{string.Join(", ", shape)}] takes {n * Interop.SizeOf<T>()} bytes; expected at most the accelerator's memory, {accelerator.MemorySize} bytes");
        return new DeviceTensor<T>(accelerator.Allocate1D<T>(Math.Max((long)n, 1)), (long[])shape.Clone());
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

    /// <summary>
    /// A new contiguous tensor of standard-normal values (<see cref="RandomData.Normal{T}"/>, fresh each call) for
    /// examples and tests; T is float, System.Half or BFloat16.
    /// </summary>
    public static DeviceTensor<T> Random(Accelerator accelerator, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        Int128 n = 1;
        foreach (var s in shape) n *= Math.Max(s, 0);
        if (n > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(shape), $"shape: expected at most {Array.MaxLength} elements (they are drawn on the host), got {n} for [{string.Join(", ", shape)}]");
        return FromHost(accelerator, RandomData.Normal<T>((long)n), shape);
    }

    /// <summary>The elements; throws <see cref="ObjectDisposedException"/> once this tensor or the owner of its buffer is disposed.</summary>
    public ArrayView<T> Data
    {
        get
        {
            ThrowIfDisposed();
            return _data;
        }
    }

    /// <summary>True once this tensor, or the tensor owning the buffer it views, has been disposed.</summary>
    public bool IsDisposed => _disposed || _storage is { Released: true };

    /// <summary>True when disposing this tensor releases its buffer (it was allocated by <see cref="Allocate"/> or <see cref="FromHost"/>).</summary>
    public bool OwnsBuffer => _owns;

    public ReadOnlySpan<long> Shape => _shape;
    public ReadOnlySpan<long> Strides => _strides;
    public int Rank => _shape.Length;
    public long ElementCount { get { long n = 1; foreach (var s in _shape) n *= s; return n; } }
    public Accelerator Accelerator => Data.GetAccelerator();

    /// <summary>True when the strides are row-major contiguous (an empty tensor always is: it has no element to place).</summary>
    public bool IsContiguous
    {
        get
        {
            if (ElementCount == 0) return true;
            long expect = 1;
            for (int i = _shape.Length - 1; i >= 0; i--)
            {
                if (_shape[i] != 1 && _strides[i] != expect) return false;
                expect *= _shape[i];
            }
            return true;
        }
    }

    /// <summary>A view of the same memory with another shape/strides, starting <paramref name="offset"/> elements in. The
    /// view shares the buffer and never releases it; it stops working when the buffer's owner is disposed.</summary>
    public DeviceTensor<T> View(long offset, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides)
        => new(Data.SubView(offset), shape, strides, _storage, false);

    /// <summary>A non-owning view of this whole tensor (same shape and strides): what an entry point returns for a
    /// caller's output, so that disposing the result leaves the caller's tensor alive.</summary>
    internal DeviceTensor<T> Alias() => new(Data, _shape, _strides, _storage, false);

    /// <summary>
    /// Sets every element of the tensor to <paramref name="value"/> on the device (asynchronous, on the accelerator's
    /// default stream). Only the addressed elements are written: padding between strided rows is left alone.
    /// </summary>
    public void Fill(T value) => TensorFill.Fill(Data, _shape, _strides, value);

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

    /// <summary>Releases the buffer when this tensor owns it; a view or wrapper only stops being usable.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_owns && _storage is not null)
        {
            _storage.Released = true;
            _storage.Buffer.Dispose();
        }
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
            throw new ObjectDisposedException(ToString(), $"{this} was disposed");
        if (_storage is { Released: true })
            throw new ObjectDisposedException(ToString(), $"{this} views a buffer whose owning tensor was disposed");
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
