namespace FlashDmAttn;

/// <summary>Random inputs for examples and tests: standard-normal values in an attention dtype.</summary>
public static class RandomData
{
    /// <summary>
    /// <paramref name="count"/> standard-normal values rounded to T (float, System.Half or BFloat16); the same
    /// <paramref name="seed"/> gives the same values, no seed a fresh draw.
    /// </summary>
    public static T[] Normal<T>(long count, int? seed = null) where T : unmanaged
    {
        if (DTypes.Of<T>() is null)
            throw new ArgumentException($"T: expected dtype {DTypes.Supported}, got {typeof(T).Name}", nameof(T));
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rng = seed is { } s ? new Random(s) : new Random(Random.Shared.Next());
        var values = new T[count];
        for (long i = 0; i < count; i++)
        {
            float z = MathF.Sqrt(-2 * MathF.Log(1 - rng.NextSingle())) * MathF.Cos(2 * MathF.PI * rng.NextSingle());
            values[i] = typeof(T) == typeof(float) ? (T)(object)z
                : typeof(T) == typeof(System.Half) ? (T)(object)(System.Half)z
                : (T)(object)(BFloat16)z;
        }
        return values;
    }
}
