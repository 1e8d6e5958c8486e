using System.Runtime.CompilerServices;
using ILGPU.Runtime;

namespace FlashDmAttn.Validation;

/// <summary>
/// Argument checks shared by every entry point. Each throws an <see cref="ArgumentException"/>-family error
/// that names the argument, what was expected and what came — always before anything is launched or written.
/// </summary>
internal static class Check
{
    public static string Dims(ReadOnlySpan<long> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public static void DType<T>(string name)
    {
        if (DTypes.Of<T>() is null)
            throw new ArgumentException($"{name}: expected dtype {DTypes.Supported}, got {typeof(T).Name}", name);
    }

    public static void NotNull(object? value, string name)
    {
        if (value is null) throw new ArgumentNullException(name, $"{name}: expected a tensor, got null");
    }

    public static void Rank(ReadOnlySpan<long> shape, int rank, string layout, string name)
    {
        if (shape.Length != rank)
            throw new ArgumentException($"{name}: expected rank {rank} {layout}, got rank {shape.Length} {Dims(shape)}", name);
    }

    public static void Dim(ReadOnlySpan<long> shape, int dim, long expected, string what, string name)
    {
        if (shape[dim] != expected)
            throw new ArgumentException($"{name}: expected {what} = {expected} (dim {dim}), got {shape[dim]} in shape {Dims(shape)}", name);
    }

    /// <summary>A tensor (or view) that was disposed, or whose buffer's owner was, cannot be read or written.</summary>
    public static void Live(bool disposed, object tensor, string name)
    {
        if (disposed)
            throw new ArgumentException($"{name}: expected a live tensor, got {tensor}, which was disposed (or views a buffer whose owner was)", name);
    }

    public static void Accelerator(Accelerator actual, Accelerator expected, string name)
    {
        if (ReferenceEquals(actual, expected)) return;
        string same = actual.Name == expected.Name && actual.AcceleratorType == expected.AcceleratorType
            ? ": a different accelerator instance of the same device"
            : "";
        throw new ArgumentException($"{name}: expected a tensor on the backend's accelerator {Describe(expected)}, got one on {Describe(actual)}{same}", name);
    }

    /// <summary>Per-instance numbers, so that two accelerators of one device can be told apart in messages.</summary>
    private static readonly ConditionalWeakTable<Accelerator, StrongBox<int>> Instances = new();
    private static int _lastInstance;

    /// <summary>"'name' (type, accelerator #n)": n numbers the accelerator instances in the order they are first seen here.</summary>
    internal static string Describe(Accelerator accelerator)
    {
        var n = Instances.GetValue(accelerator, _ => new StrongBox<int>(Interlocked.Increment(ref _lastInstance)));
        return $"'{accelerator.Name}' ({accelerator.AcceleratorType}, accelerator #{n.Value})";
    }

    /// <summary>Last dim contiguous, strides non-negative, and every addressed element inside the view.</summary>
    public static void Layout(ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, long viewLength, string name)
    {
        int r = shape.Length;
        for (int i = 0; i < r; i++)
        {
            if (shape[i] < 0)
                throw new ArgumentException($"{name}: expected non-negative sizes, got {Dims(shape)}", name);
            if (strides[i] < 0)
                throw new ArgumentException($"{name}: expected non-negative strides, got {Dims(strides)}", name);
        }
        if (r > 0 && shape[r - 1] > 1 && strides[r - 1] != 1)
            throw new ArgumentException($"{name}: expected the last dim to be contiguous (stride 1), got strides {Dims(strides)}", name);
        bool empty = false;
        Int128 last = 0;
        for (int i = 0; i < r; i++)
        {
            empty |= shape[i] == 0;
            last += (Int128)Math.Max(shape[i] - 1, 0) * strides[i];
        }
        if (!empty && last >= viewLength)
            throw new ArgumentOutOfRangeException(name, $"{name}: shape {Dims(shape)} with strides {Dims(strides)} reaches element {last}, but the view holds {viewLength} elements");
    }

    /// <summary>An output must not write one element twice: no stride 0 on a dim longer than 1.</summary>
    public static void NoOverlap(ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, string name)
    {
        for (int i = 0; i < shape.Length; i++)
            if (shape[i] > 1 && strides[i] == 0)
                throw new ArgumentException($"{name}: expected an output whose elements do not overlap, got stride 0 on dim {i} of shape {Dims(shape)}", name);
    }

    /// <summary>
    /// The bytes a strided view can touch, [first, last], from the view's device address; null for an empty view or
    /// where the accelerator gives no address (then memory checks are skipped).
    /// </summary>
    public static (long First, long Last)? Extent(ILGPU.ArrayView<byte> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, int elemBytes)
    {
        long span = 0;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 0) return null;
            span += (shape[i] - 1) * Math.Abs(strides[i]);
        }
        if (!data.IsValid || data.Length == 0) return null;
        try
        {
            long first = data.LoadEffectiveAddressAsPtr().ToInt64();
            return (first, first + (span + 1) * elemBytes - 1);
        }
        catch (Exception e) when (e is NotSupportedException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>A written tensor's bytes must be apart from a read (or another written) one's.</summary>
    public static void Apart((long First, long Last)? written, string name, (long First, long Last)? other, string otherName)
    {
        if (written is { } w && other is { } o && w.First <= o.Last && o.First <= w.Last)
            throw new ArgumentException($"{name}: expected memory apart from {otherName}, got overlapping ranges (bytes {w.First:X}..{w.Last:X} and {o.First:X}..{o.Last:X})", name);
    }

    public static void NotNullArray(object? value, string name)
    {
        if (value is null) throw new ArgumentNullException(name, $"{name}: expected an int[] of batch + 1 cumulative lengths, got null");
    }

    public static void Lengths(string name, ReadOnlySpan<long> shape, long b, long l, long h, long d)
    {
        if (shape[0] != b || shape[1] != l || shape[2] != h || shape[3] != d)
            throw new ArgumentException($"{name}: expected shape [{b}, {l}, {h}, {d}], got {Dims(shape)}", name);
    }

    public static float Scale(float? scale, int headDim)
    {
        float s = scale ?? (float)(1.0 / Math.Sqrt(headDim));
        if (!float.IsFinite(s))
            throw new ArgumentOutOfRangeException("scale", $"scale: expected a finite number, got {s}");
        return s;
    }

    public static float Softcap(float? softcap)
    {
        if (softcap is null) return 0f;
        float c = softcap.Value;
        if (!(c > 0f) || !float.IsFinite(c))
            throw new ArgumentOutOfRangeException("softcap", $"softcap: expected a finite value > 0 (or null to disable), got {c}");
        return c;
    }

    /// <summary>A size the kernels take as an int (batch, heads, sequence lengths, page size).</summary>
    public static int IntSize(long value, string what, string name, ReadOnlySpan<long> shape)
    {
        if (value > int.MaxValue)
            throw new ArgumentOutOfRangeException(name, $"{name}: expected {what} at most {int.MaxValue} (the kernels address it with an int), got {value} in shape {Dims(shape)}");
        return (int)value;
    }

    /// <summary>
    /// The forward grid has one column of groups per (batch, head) pair: heads must be an int and batch·heads at most
    /// <paramref name="limit"/> (the accelerator's grid size where only the portable kernel can take the problem).
    /// </summary>
    public static void BatchHeads(long batch, long heads, long limit, string batchWhat, string name, ReadOnlySpan<long> shape)
    {
        IntSize(heads, "heads", name, shape);
        Int128 pairs = (Int128)batch * heads;
        if (pairs > limit)
            throw new ArgumentOutOfRangeException(name, $"{name}: expected {batchWhat}·heads at most {limit} (one grid column of groups per pair{(limit < int.MaxValue ? " on this accelerator" : "")}), got {batch}·{heads} = {pairs} in shape {Dims(shape)}");
    }

    /// <summary>A tensor the call allocates must fit the accelerator's memory (its byte count computed without overflow).</summary>
    public static void Allocation<T>(Accelerator accelerator, long[] shape, string what, string name) where T : unmanaged
    {
        Int128 bytes = Unsafe.SizeOf<T>();
        foreach (var s in shape) bytes *= s;
        if (bytes > accelerator.MemorySize)
            throw new ArgumentOutOfRangeException(name, $"{name}: the {what} {Dims(shape)} takes {bytes} bytes; expected at most the accelerator's memory, {accelerator.MemorySize} bytes");
    }

    public static void HeadDim(long d, string name)
    {
        if (d <= 0 || d > 256 || d % 8 != 0)
            throw new ArgumentException($"{name}: expected head_dim a multiple of 8 in [8, 256], got {d}", name);
    }
}
