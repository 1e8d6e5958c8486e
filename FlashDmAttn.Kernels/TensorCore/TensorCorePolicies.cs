// The 64-row shapes (Rows64) of D ≤ 128 with their measured TcTune bits (PERF-NOTES v7, v9, v10): D = 64 bias scores as
// one FFMA; D = 128 late mask bits and the rescale skip, and for gathered keys (perkey) neither (+2.9 % with late bits).
global using Hd32R64 = FlashDmAttn.Kernels.TensorCore.Rows64<FlashDmAttn.Kernels.TensorCore.Hd32, FlashDmAttn.Kernels.TensorCore.NoTuneBits>;
global using Hd64R64 = FlashDmAttn.Kernels.TensorCore.Rows64<FlashDmAttn.Kernels.TensorCore.Hd64, FlashDmAttn.Kernels.TensorCore.BiasFfmaBits>;
global using Hd96R64 = FlashDmAttn.Kernels.TensorCore.Rows64<FlashDmAttn.Kernels.TensorCore.Hd96, FlashDmAttn.Kernels.TensorCore.NoTuneBits>;
global using Hd128R64 = FlashDmAttn.Kernels.TensorCore.Rows64<FlashDmAttn.Kernels.TensorCore.Hd128,
    FlashDmAttn.Kernels.TensorCore.Bits<FlashDmAttn.Kernels.TensorCore.LateBitsBits, FlashDmAttn.Kernels.TensorCore.SkipBits>>;
global using Hd128R64Gather = FlashDmAttn.Kernels.TensorCore.Rows64<FlashDmAttn.Kernels.TensorCore.Hd128, FlashDmAttn.Kernels.TensorCore.NoTuneBits>;
using System.Runtime.CompilerServices;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Element type of the tensor-core kernel (16-bit storage, fp32 accumulation): its mma, packing and codec.</summary>
public interface ITcElem
{
    static abstract F4 Mma(U4 a, U2 b, F4 c);
    /// <summary>Two fp32 values → one register of two 16-bit values (lo in bits 0..15), round to nearest even.</summary>
    static abstract uint Pack(float lo, float hi);
    static abstract float ToFloat(ushort value);
    static abstract ushort FromFloat(float value);
    /// <summary>The value in bits 0..15 of a register of two (bf16: one shift).</summary>
    static abstract float LoToFloat(uint pair);
    /// <summary>The value in bits 16..31 of a register of two (bf16: one AND, where ToFloat of the shifted half took a
    /// shift and a multiply).</summary>
    static abstract float HiToFloat(uint pair);
}

public readonly struct Bf16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaBf16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackBf16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Bf16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Bf16Codec.FromFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoToFloat(uint pair) => ILGPU.Interop.IntAsFloat(pair << 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HiToFloat(uint pair) => ILGPU.Interop.IntAsFloat(pair & 0xFFFF0000u);
}

public readonly struct Fp16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaF16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackF16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Fp16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Fp16Codec.FromFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoToFloat(uint pair) => Fp16Codec.ToFloat((ushort)pair);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HiToFloat(uint pair) => Fp16Codec.ToFloat((ushort)(pair >> 16));
}

/// <summary>
/// Head dim and tile shape. Br = 64·Mt query rows per group (4 warps, each Mt m-tiles of 16 rows that share every
/// K/V ldmatrix fragment). Shared memory: Q tile (Br rows) + double-buffered K and V tiles (Bc rows each), rows
/// padded by 16 bytes (row stride (D + 8)·2 bytes: an odd number of 16-byte chunks, so ldmatrix and cp.async rows
/// are conflict-free).
/// </summary>
public interface ITcHeadDim
{
    static abstract int D { get; }
    /// <summary>Keys per tile (a multiple of 16, at most 64).</summary>
    static abstract int Bc { get; }
    /// <summary>Q fragments kept in registers; otherwise re-read from shared memory by ldmatrix each tile.</summary>
    static abstract bool QInRegs { get; }
    static abstract int RowBytes { get; }
    /// <summary>m-tiles (16 rows each) per warp: 1 or 2.</summary>
    static abstract int Mt { get; }
    /// <summary>Loop-shape switches (<see cref="TcTune"/> bits): each policy's are its measured best; <see cref="Tuned{THd, TBits}"/>
    /// replaces them for A/B timing.</summary>
    static abstract int Tune { get; }
}

/// <summary>
/// Bits of <see cref="ITcHeadDim.Tune"/>: loop-shape variants of the kernel, chosen per policy by A/B timing on the GPU.
/// Variants that lost their A/B were removed (per-m-tile rescale branches, two barriers per tile: PERF-NOTES v6); always
/// rescaling is what a policy without <see cref="SkipRescale"/> does.
/// </summary>
public static class TcTune
{
    /// <summary>The next tile's V copies issued after this tile's Q·Kᵀ (its K copies stay right after the barrier), so
    /// that the copies' address registers and the Q·Kᵀ fragments do not meet. On for the 128-row D = 64/128 shapes (at
    /// the register limit): two H100 A/B calls, D = 128 −0.4..−2 % at L ≥ 4096; off for 64 rows (maskbias +3 %).</summary>
    public const int SplitKv = 8;

    /// <summary>Bias without softcap as one FFMA per score (natural units; log2(e) in the exponent), see TcScore.Natural.
    /// On for D = 64 with a bias (Hd64R64): H100 A/B maskbias D64 −2..3 %; for D = 128 (Hd128R64) maskbias was
    /// −2.6..+1.2 % across shapes, so it stays off there.</summary>
    public const int BiasFfma = 16;

    /// <summary>With a mask: a next tile below the causal band's partial tiles decides the barrier's skip test from "any
    /// mask word nonzero" (a few ORs) and turns its words into bits after the barrier, beside the copies, instead of
    /// before it (~50 dependent instructions off the barrier's path). On for Hd128R64 with a mask: H100 A/B maskbias
    /// −1.8..2.6 %, maskonly −7.9 %; gathered keys (perkey, which never takes the word path) ran +2.9 % with it compiled
    /// in, so the launcher sends them to Hd128R64 without it.</summary>
    public const int LateBits = 32;

    /// <summary>Skip O·α in the lanes none of whose rows changed its max (lazy rescale, see TcSoftmax.Rescale; the test is
    /// per lane, so lanes of a warp may diverge); otherwise every tile multiplies. On for D = 128 on 128 rows (−11 %,
    /// PERF-NOTES v6), D = 64 on 128 rows (L16384 −2.3 %, L ≤ 4096 ±0.5 %) and D = 128 on 64 rows with a mask or bias
    /// (maskbias −0.3..−2 %: H100 A/B, PERF-NOTES v10); before the joint softmax step the branch had cost D = 64 and the
    /// 64-row shapes +6..16 % (v4), and the others were not measured again.</summary>
    public const int SkipRescale = 64;

    /// <summary>Launch-level, not compiled into the kernel: equal-work launches of this policy (no causal band, mask,
    /// bias, variable lengths, paging or gathered keys) on a CUDA accelerator run stream-K (<see cref="TcStreamK"/>)
    /// when its plan shortens the launch. On for D = 64 on 128 rows: H100 A/B (PERF-NOTES v12) L4096 −2.2 %, L16384
    /// −1.7 %, L1024 ±0; D = 128 ran 1–5 % slower with it (its stream-K kernel spills 32 B), so it is off there.</summary>
    public const int StreamK = 256;
}

/// <summary>Bits for <see cref="Tuned{THd, TBits}"/>.</summary>
public interface ITuneBits { static abstract int V { get; } }
public readonly struct SplitKvBits : ITuneBits { public static int V => TcTune.SplitKv; }
public readonly struct NoTuneBits : ITuneBits { public static int V => 0; }
public readonly struct BiasFfmaBits : ITuneBits { public static int V => TcTune.BiasFfma; }
public readonly struct LateBitsBits : ITuneBits { public static int V => TcTune.LateBits; }
public readonly struct SkipBits : ITuneBits { public static int V => TcTune.SkipRescale; }
/// <summary>The bits of both (combinations are written with this, not as structs of their own).</summary>
public readonly struct Bits<TA, TB> : ITuneBits where TA : struct, ITuneBits where TB : struct, ITuneBits { public static int V => TA.V | TB.V; }

/// <summary>A head-dim policy with other <see cref="TcTune"/> bits (FLASHDMATTN_TC_TUNE), for A/B timing.</summary>
public readonly struct Tuned<THd, TBits> : ITcHeadDim where THd : struct, ITcHeadDim where TBits : struct, ITuneBits
{
    public static int D => THd.D;
    public static int Bc => THd.Bc;
    public static bool QInRegs => THd.QInRegs;
    public static int RowBytes => THd.RowBytes;
    public static int Mt => THd.Mt;
    public static int Tune => TBits.V;
}

public readonly struct Hd32 : ITcHeadDim { public static int D => 32; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (32 + 8) * 2; public static int Mt => 2; public static int Tune => 0; }
public readonly struct Hd64 : ITcHeadDim { public static int D => 64; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (64 + 8) * 2; public static int Mt => 2; public static int Tune => TcTune.SplitKv | TcTune.SkipRescale | TcTune.StreamK; }
public readonly struct Hd96 : ITcHeadDim { public static int D => 96; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (96 + 8) * 2; public static int Mt => 2; public static int Tune => 0; }
public readonly struct Hd128 : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (128 + 8) * 2; public static int Mt => 2; public static int Tune => TcTune.SplitKv | TcTune.SkipRescale; }
public readonly struct Hd192 : ITcHeadDim { public static int D => 192; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (192 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
public readonly struct Hd256 : ITcHeadDim { public static int D => 256; public static int Bc => 32; public static bool QInRegs => false; public static int RowBytes => (256 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }

/// <summary>
/// A head dim's 64-row shape: one m-tile per warp, Q fragments in registers, and its own <see cref="TcTune"/> bits (the
/// shapes' measured bits are named at the top of this file: Hd32R64 … Hd128R64). D ≤ 128 with a mask, bias or gathered
/// keys runs it: there the 128-row shapes spilled 100–740 B and were slower (PERF-NOTES v2, v7).
/// </summary>
public readonly struct Rows64<THd, TBits> : ITcHeadDim where THd : struct, ITcHeadDim where TBits : struct, ITuneBits
{
    public static int D => THd.D;
    public static int Bc => THd.Bc;
    public static bool QInRegs => true;
    public static int RowBytes => THd.RowBytes;
    public static int Mt => 1;
    public static int Tune => TBits.V;
}

/// <summary>A compile-time boolean (FlashAttention's static_switch): kernels specialise on these, branches fold away.</summary>
public interface IStaticBool { static abstract bool V { get; } }
public readonly struct On : IStaticBool { public static bool V => true; }
public readonly struct Off : IStaticBool { public static bool V => false; }

/// <summary>Which score features a specialisation handles; a feature that is off costs nothing in the kernel.</summary>
public interface ITcFlags
{
    static abstract bool Causal { get; }
    static abstract bool Mask { get; }
    static abstract bool Bias { get; }
    static abstract bool Softcap { get; }
    /// <summary>Stream-K launch (<see cref="TcStreamK"/>): the last waves' key tiles spread evenly over the resident groups.</summary>
    static abstract bool StreamK { get; }
}

public readonly struct TcFlags<TCausal, TMask, TBias, TCap> : ITcFlags
    where TCausal : struct, IStaticBool where TMask : struct, IStaticBool
    where TBias : struct, IStaticBool where TCap : struct, IStaticBool
{
    public static bool Causal => TCausal.V;
    public static bool Mask => TMask.V;
    public static bool Bias => TBias.V;
    public static bool Softcap => TCap.V;
    public static bool StreamK => false;
}

/// <summary>The stream-K specialisation: no causal band, mask or bias (every block has the same work); softcap as
/// <typeparamref name="TCap"/>.</summary>
public readonly struct TcStreamKFlags<TCap> : ITcFlags where TCap : struct, IStaticBool
{
    public static bool Causal => false;
    public static bool Mask => false;
    public static bool Bias => false;
    public static bool Softcap => TCap.V;
    public static bool StreamK => true;
}
