using ILGPU;

namespace FlashDmAttn.Kernels.Numerics;

/// <summary>
/// How a storage element is widened to fp32 and narrowed back (round to nearest even).
/// Kernels are generic over a codec struct, so ILGPU specializes one kernel per dtype.
/// </summary>
internal interface IElementCodec<T> where T : unmanaged
{
    static abstract float ToFloat(T value);
    static abstract T FromFloat(float value);
}

/// <summary>fp32 storage: identity.</summary>
internal readonly struct Fp32Codec : IElementCodec<float>
{
    public static float ToFloat(float value) => value;
    public static float FromFloat(float value) => value;
}

/// <summary>IEEE fp16 stored as its 16 raw bits.</summary>
internal readonly struct Fp16Codec : IElementCodec<ushort>
{
    public static float ToFloat(ushort value) => HalfBits.ToFloat(value);
    public static ushort FromFloat(float value) => HalfBits.FromFloat(value);
}

/// <summary>bfloat16 stored as its 16 raw bits (the upper half of an fp32).</summary>
internal readonly struct Bf16Codec : IElementCodec<ushort>
{
    public static float ToFloat(ushort value) => Interop.IntAsFloat((uint)value << 16);
    public static ushort FromFloat(float value) => BFloat16Bits.FromFloat(value);
}

/// <summary>Bit-exact fp16 conversions that run on every accelerator (no hardware intrinsics).</summary>
internal static class HalfBits
{
    public static float ToFloat(ushort h)
    {
        const uint ShiftedExp = 0x7C00u << 13;
        uint o = ((uint)h & 0x7FFFu) << 13;
        uint exp = ShiftedExp & o;
        o += (127u - 15u) << 23;
        if (exp == ShiftedExp)
        {
            o += (128u - 16u) << 23; // Inf / NaN
        }
        else if (exp == 0)
        {
            o += 1u << 23; // zero / subnormal: renormalise through float arithmetic
            o = Interop.FloatAsInt(Interop.IntAsFloat(o) - Interop.IntAsFloat(113u << 23));
        }
        return Interop.IntAsFloat(o | (((uint)h & 0x8000u) << 16));
    }

    public static ushort FromFloat(float value)
    {
        const uint Fp32Infinity = 255u << 23;
        const uint Fp16Max = (127u + 16u) << 23;
        const uint DenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        uint f = Interop.FloatAsInt(value);
        uint sign = f & 0x80000000u;
        f ^= sign;
        uint o;
        if (f >= Fp16Max)
        {
            o = f > Fp32Infinity ? 0x7E00u : 0x7C00u;
        }
        else if (f < (113u << 23))
        {
            // subnormal or zero: let fp32 addition do the round-to-nearest-even
            o = Interop.FloatAsInt(Interop.IntAsFloat(f) + Interop.IntAsFloat(DenormMagic)) - DenormMagic;
        }
        else
        {
            uint mantOdd = (f >> 13) & 1u;
            f += unchecked((uint)((15 - 127) << 23)) + 0xFFFu;
            f += mantOdd;
            o = f >> 13;
        }
        return (ushort)(o | (sign >> 16));
    }
}

/// <summary>bf16 narrowing with round to nearest even; NaN stays NaN.</summary>
internal static class BFloat16Bits
{
    public static ushort FromFloat(float value)
    {
        uint u = Interop.FloatAsInt(value);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u)
            return (ushort)((u >> 16) | 0x40u);
        u += 0x7FFFu + ((u >> 16) & 1u);
        return (ushort)(u >> 16);
    }
}
