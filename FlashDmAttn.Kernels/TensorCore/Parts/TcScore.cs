using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Per-tile arguments of the score transform (this lane's two rows of one m-tile).</summary>
internal struct ScoreArgs
{
    public float Scale, ScaleLog2, Cap;
    /// <summary>Byte addresses of this lane's bias rows (rows past the sequence clamped to its last row).</summary>
    public ulong BiasA, BiasB;
    /// <summary>Key index of this lane's first element in the tile: k0 + (Bc/4)·(lane % 4) (TcKeyOrder); n-tile j's pair is + 2j.</summary>
    public int Col0;
}

internal static class TcScore
{
    public const float Log2E = 1.44269504088896340736f;
    public const float Ln2 = 0.693147180559945309417f;

    /// <summary>max.f32 (one instruction; a compare and select would be two).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max(float a, float b) => XMath.Max(a, b);

    /// <summary>
    /// Scores stay raw dot products (no bias, no softcap, scale ≥ 0: the launcher sends a negative scale to the
    /// softcap specialisation): the row max is taken on them and the scale folds into the exponent's FFMA.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Raw<TF>() where TF : struct, ITcFlags => !TF.Bias && !TF.Softcap;

    /// <summary>
    /// Bias without softcap (<see cref="TcTune.BiasFfma"/>): scores are s·scale + bias in natural units (one FFMA), and
    /// log2(e) goes into the row max and the exponent's FFMA as the raw scores' scale does (one FMUL fewer per element).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Natural<THd, TF>() where THd : struct, ITcHeadDim where TF : struct, ITcFlags
        => TF.Bias && !TF.Softcap && (THd.Tune & TcTune.BiasFfma) != 0;

    /// <summary>s·scale → softcap → + bias, in the log2 domain (visibility applied by the caller); raw scores unchanged;
    /// natural units with <see cref="Natural{THd, TF}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Elem<THd, TF>(float dot, in ScoreArgs sa, float bias, bool hasBias) where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        if (Raw<TF>()) return dot;
        if (Natural<THd, TF>()) return hasBias ? dot * sa.Scale + bias : dot * sa.Scale; // FFMA
        if (!TF.Softcap) return TF.Bias && hasBias ? dot * sa.ScaleLog2 + bias * Log2E : dot * sa.ScaleLog2; // FMUL + FFMA
        float s = dot * sa.Scale;
        if (sa.Cap > 0f) s = sa.Cap * XMath.Tanh(s / sa.Cap);
        if (TF.Bias && hasBias) s += bias;
        return s * Log2E;
    }

    /// <summary>Backward: dS = P·(dP − D); 0 where P is 0 (a select, so an unread dP never reaches the gradient).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Grad(float pr, float dp, float d) => pr != 0f ? pr * (dp - d) : 0f;

    /// <summary>Backward: d(score)/d(dot) before the bias, scale·(1 − tanh²(dot·scale/cap)); the scale without softcap.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Slope(float dot, float scale, float cap)
    {
        if (cap <= 0f) return scale;
        float t = XMath.Tanh(dot * scale / cap);
        return scale * (1f - t * t);
    }

    /// <summary>Backward: the sum of a value over the 8 lanes of a warp that share lane % 4 (the rows g of a fragment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOverRows(float x)
    {
        x += Warp.ShuffleXor(x, 4);
        x += Warp.ShuffleXor(x, 8);
        x += Warp.ShuffleXor(x, 16);
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Lo<TE>(uint w) where TE : struct, ITcElem => TE.LoToFloat(w);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Hi<TE>(uint w) where TE : struct, ITcElem => TE.HiToFloat(w);

    /// <summary>
    /// One n-tile: bits 0..3 = (row A, col), (row A, col+1), (row B, col), (row B, col+1); invisible → −∞.
    /// <paramref name="full"/> (a literal at every call): every element is visible. <paramref name="pre"/>: the bias
    /// pairs were prefetched as 32-bit words (<paramref name="wa"/>, <paramref name="wb"/>); otherwise the bias of
    /// invisible elements is not read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F4 Tile<TE, THd, TF>(F4 v, uint bits, in ScoreArgs sa, int colOff, bool full, bool hasBias, bool pre, uint wa, uint wb)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        float b0 = 0f, b1 = 0f, b2 = 0f, b3 = 0f;
        if (TF.Bias && hasBias)
        {
            if (pre)
            {
                b0 = Lo<TE>(wa); b1 = Hi<TE>(wa); b2 = Lo<TE>(wb); b3 = Hi<TE>(wb);
            }
            else
            {
                ulong cb = (ulong)(2 * (sa.Col0 + colOff));
                if (full || (bits & 1u) != 0) b0 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasA + cb));
                if (full || (bits & 2u) != 0) b1 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasA + cb + 2));
                if (full || (bits & 4u) != 0) b2 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasB + cb));
                if (full || (bits & 8u) != 0) b3 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasB + cb + 2));
            }
        }
        float x = Elem<THd, TF>(v.X, sa, b0, hasBias), y = Elem<THd, TF>(v.Y, sa, b1, hasBias);
        float z = Elem<THd, TF>(v.Z, sa, b2, hasBias), w = Elem<THd, TF>(v.W, sa, b3, hasBias);
        if (full) return new F4(x, y, z, w);
        return new F4(
            (bits & 1u) != 0 ? x : float.NegativeInfinity,
            (bits & 2u) != 0 ? y : float.NegativeInfinity,
            (bits & 4u) != 0 ? z : float.NegativeInfinity,
            (bits & 8u) != 0 ? w : float.NegativeInfinity);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StorePair<TE>(F4 v, ArrayView<ushort> dst, long offA, long offB, bool okA, bool okB, float ia, float ib)
        where TE : struct, ITcElem
    {
        if (okA)
        {
            dst[offA] = TE.FromFloat(v.X * ia);
            dst[offA + 1] = TE.FromFloat(v.Y * ia);
        }
        if (okB)
        {
            dst[offB] = TE.FromFloat(v.Z * ib);
            dst[offB + 1] = TE.FromFloat(v.W * ib);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ScoreArgs Args(in KernelArgs p, in BlockInfo blk, ulong biasG, int b, int h, int rA, bool hasBias)
    {
        var sa = new ScoreArgs { Scale = p.Scale, ScaleLog2 = p.Scale * TcScore.Log2E, Cap = p.Softcap, Col0 = 0 };
        if (hasBias)
        {
            // Rows past the sequence read the last row's bias (in bounds); their output is never written.
            int last = blk.SeqQ - 1;
            int ra = rA < last ? rA : last, rb = rA + 8 < last ? rA + 8 : last;
            sa.BiasA = biasG + (ulong)(2 * MaskBias.BiasIndex(p, b, h, ra));
            sa.BiasB = biasG + (ulong)(2 * MaskBias.BiasIndex(p, b, h, rb));
        }
        return sa;
    }

    /// <summary>Score transform of one m-tile: bias from the staged shared tile (read per n-tile), else as prefetched.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static SAcc Apply<TE, THd, TF>(SAcc s, uint bits, in ScoreArgs sa, bool full, bool hasBias, bool pre, bool staged,
        RowWords bw, uint bsA, uint bsB)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        if (TF.Bias && staged) return Frag.ScoresShared<TE, THd, TF>(s, bits, sa, full, bsA, bsB);
        return Frag.Scores<TE, THd, TF>(s, bits, sa, full, hasBias, pre, bw);
    }
}
