using NUnit.Framework;

namespace FlashDmAttn.Tests.Support;

/// <summary>Random inputs in a dtype, conversions, poisoning and the error measure.</summary>
public static class TestData
{
    public static Random NewRandom(out int seed)
    {
        seed = Random.Shared.Next();
        return new Random(seed);
    }

    public static double ToDouble<T>(T x) => x switch
    {
        float f => f,
        Half h => (double)h,
        BFloat16 b => (double)b,
        byte u => u,
        bool z => z ? 1 : 0,
        _ => throw new NotSupportedException(typeof(T).Name),
    };

    public static T FromDouble<T>(double x)
    {
        if (typeof(T) == typeof(float)) return (T)(object)(float)x;
        if (typeof(T) == typeof(Half)) return (T)(object)(Half)x;
        if (typeof(T) == typeof(BFloat16)) return (T)(object)(BFloat16)x;
        if (typeof(T) == typeof(byte)) return (T)(object)(byte)x;
        if (typeof(T) == typeof(bool)) return (T)(object)(x != 0);
        throw new NotSupportedException(typeof(T).Name);
    }

    /// <summary>Normal(0, sigma) values rounded to T; returns the T array and its exact doubles.</summary>
    public static (T[] Values, double[] Exact) Normal<T>(Random rng, long n, double sigma = 1.0)
    {
        var vals = new T[n];
        var exact = new double[n];
        for (long i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double z = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2) * sigma;
            vals[i] = FromDouble<T>(z);
            exact[i] = ToDouble(vals[i]);
        }
        return (vals, exact);
    }

    public static T[] Poison<T>(long n) => Enumerable.Repeat(FromDouble<T>(double.NaN), (int)n).ToArray();

    /// <summary>‖out − ref‖ / ‖ref‖ (NaN if any output is NaN; absolute error if ref is all zero).</summary>
    public static double RelativeError(double[] actual, double[] expected)
    {
        double num = 0, den = 0;
        for (long i = 0; i < actual.Length; i++)
        {
            if (double.IsNaN(actual[i])) return double.NaN;
            double e = actual[i] - expected[i];
            num += e * e;
            den += expected[i] * expected[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    public static double Tolerance<T>()
        => typeof(T) == typeof(float) ? 1e-5 : typeof(T) == typeof(Half) ? 2e-3 : 1e-2;

    public static void AssertClose(double[] actual, double[] expected, double tol, string what)
    {
        double err = RelativeError(actual, expected);
        // A plain comparison: NUnit's ordering puts NaN below every number, so Is.LessThanOrEqualTo would pass NaN.
        Assert.That(err <= tol, Is.True, $"{what}: relative error {err:E3} (NaN: an output was NaN/unwritten) > {tol:E1}");
    }
}
