namespace FlashDmAttn;

/// <summary>The element types the kernels compute with (fp32 accumulation in all cases).</summary>
public enum DType
{
    Float32,
    Float16,
    BFloat16,
}

/// <summary>Maps CLR element types to <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>The dtype of <typeparamref name="T"/>, or null if attention does not support it.</summary>
    public static DType? Of<T>()
    {
        if (typeof(T) == typeof(float)) return DType.Float32;
        if (typeof(T) == typeof(Half)) return DType.Float16;
        if (typeof(T) == typeof(BFloat16)) return DType.BFloat16;
        return null;
    }

    internal static string Supported => "float32 (float), float16 (System.Half) or bfloat16 (FlashDmAttn.BFloat16)";
}
