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

    public static void Accelerator(Accelerator actual, Accelerator expected, string name)
    {
        if (!ReferenceEquals(actual, expected))
            throw new ArgumentException($"{name}: expected a tensor on the backend's accelerator '{expected.Name}' ({expected.AcceleratorType}), got one on '{actual.Name}' ({actual.AcceleratorType})", name);
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

    public static void HeadDim(long d, string name)
    {
        if (d <= 0 || d > 256 || d % 8 != 0)
            throw new ArgumentException($"{name}: expected head_dim a multiple of 8 in [8, 256], got {d}", name);
    }
}
