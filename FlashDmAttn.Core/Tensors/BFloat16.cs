using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn;

/// <summary>
/// bfloat16: the upper 16 bits of an IEEE fp32 (8 exponent bits, 7 mantissa bits).
/// Conversions from float round to nearest even; NaN stays NaN.
/// </summary>
public readonly struct BFloat16 : IEquatable<BFloat16>, IComparable<BFloat16>
{
    /// <summary>The raw bits.</summary>
    public readonly ushort Bits;

    private BFloat16(ushort bits) => Bits = bits;

    public static BFloat16 FromBits(ushort bits) => new(bits);

    public static explicit operator BFloat16(float value) => new(BFloat16Bits.FromFloat(value));
    public static explicit operator BFloat16(double value) => (BFloat16)(float)value;
    public static implicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.Bits << 16);
    public static explicit operator double(BFloat16 value) => (float)value;

    public static BFloat16 Zero => default;
    public static BFloat16 One => (BFloat16)1f;

    public bool Equals(BFloat16 other) => ((float)this).Equals((float)other);
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);
    public override int GetHashCode() => ((float)this).GetHashCode();
    public int CompareTo(BFloat16 other) => ((float)this).CompareTo((float)other);
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
