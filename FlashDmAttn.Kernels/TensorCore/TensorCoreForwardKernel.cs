using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Per-tile arguments of the score transform (this lane's two rows).</summary>
public struct ScoreArgs
{
    public float Scale, ScaleLog2, Cap;
    public int Plain, HasBias;
    public long BiasRowA, BiasRowB;
    /// <summary>Key index of this lane's first column in the tile: k0 + 2·(lane % 4).</summary>
    public int Col0;
}

internal static class TcScore
{
    public const float Log2E = 1.44269504088896340736f;
    public const float Ln2 = 0.693147180559945309417f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max(float a, float b) => a > b ? a : b;

    /// <summary>s·scale → softcap → + bias, in the log2 domain; invisible → −∞ (bias not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Elem<TE>(float dot, bool visible, in ScoreArgs sa, ArrayView<ushort> bias, long biasRow, int col)
        where TE : struct, ITcElem
    {
        if (!visible) return float.NegativeInfinity;
        if (sa.Plain != 0) return dot * sa.ScaleLog2;
        float s = dot * sa.Scale;
        if (sa.Cap > 0f) s = sa.Cap * XMath.Tanh(s / sa.Cap);
        if (sa.HasBias != 0) s += TE.ToFloat(bias[biasRow + col]);
        return s * Log2E;
    }

    /// <summary>One n-tile: bits 0..3 = (row A, col), (row A, col+1), (row B, col), (row B, col+1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F4 Tile<TE>(F4 v, uint bits, in ScoreArgs sa, ArrayView<ushort> bias, int colOff) where TE : struct, ITcElem
    {
        int c = sa.Col0 + colOff;
        return new F4(
            Elem<TE>(v.X, (bits & 1u) != 0, sa, bias, sa.BiasRowA, c),
            Elem<TE>(v.Y, (bits & 2u) != 0, sa, bias, sa.BiasRowA, c + 1),
            Elem<TE>(v.Z, (bits & 4u) != 0, sa, bias, sa.BiasRowB, c),
            Elem<TE>(v.W, (bits & 8u) != 0, sa, bias, sa.BiasRowB, c + 1));
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
}

/// <summary>
/// FlashAttention-2-style forward kernel on mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate), same semantics as
/// <see cref="PortableForwardKernel"/>. One group = 4 warps = 64 query rows of one (batch, head); each warp owns 16
/// rows and keeps S, P and O as register fragments. K/V tiles of Bc keys are double-buffered in dynamic shared
/// memory and loaded with cp.async (ragged rows zero-filled). The visibility of the next tile (causal band, mask,
/// lengths) is computed first, one bit per fragment element; a tile that is invisible for all 64 rows
/// (Group.BarrierOr) is skipped before its K, V or bias is read.
/// Grid: (ceil(max Lq / 64), Batch·Heads), group 128 threads, shared bytes <see cref="SharedBytes{THd}"/>.
/// </summary>
public static class TensorCoreForwardKernel
{
    public const int Rows = 64, Threads = 128;

    public static int SharedBytes<THd>() where THd : struct, ITcHeadDim => (Rows + 4 * THd.Bc) * THd.RowBytes;

    /// <summary>Visibility bits of this lane's fragment elements of the tile at k0 (bit 4j+e, see TcScore.Tile).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint TileBits<THd>(in FwdParams p, in BlockInfo blk, ArrayView<byte> mask, int k0, int kEnd,
        int rA, long mRowA, long mRowB, int col0) where THd : struct, ITcHeadDim
    {
        uint bits = 0;
        for (int j = 0; j < THd.Bc / 8; j++)
        {
            for (int e = 0; e < 4; e++)
            {
                int r = rA + ((e & 2) << 2);
                int c = k0 + 8 * j + col0 + (e & 1);
                bool vis = r < blk.SeqQ && c < kEnd && MaskBias.CausalVisible(p, blk, r, c);
                if (vis && p.HasMask != 0)
                    vis = MaskBias.MaskVisible(p, mask, (e & 2) != 0 ? mRowB : mRowA, c);
                if (vis) bits |= 1u << (4 * j + e);
            }
        }
        return bits;
    }

    /// <summary>cp.async of the K and V rows [k0, k0 + Bc) into shared memory; rows at or past kEnd are zero-filled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadKv<THd>(in FwdParams p, in BlockInfo blk, ArrayView<int> seqInfo, ulong kG, ulong vG,
        uint kS, uint vS, int k0, int kEnd, int hk, int tid) where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8;
        for (int e = tid; e < THd.Bc * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            int j = k0 + r;
            uint dst = (uint)(r * THd.RowBytes + c * 16);
            if (j < kEnd)
            {
                long ko = blk.KOffset(p, seqInfo, p.KStrideB, p.KStrideL, p.KStrideH, j, hk);
                long vo = blk.KOffset(p, seqInfo, p.VStrideB, p.VStrideL, p.VStrideH, j, hk);
                Ptx.CpAsync16(kS + dst, kG + (ulong)(ko * 2 + c * 16), 16u);
                Ptx.CpAsync16(vS + dst, vG + (ulong)(vo * 2 + c * 16), 16u);
            }
            else
            {
                Ptx.CpAsync16(kS + dst, kG, 0u);
                Ptx.CpAsync16(vS + dst, vG, 0u);
            }
        }
    }

    public static void Run<TE, THd>(
        ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> o,
        ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        FwdParams p)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
    {
        var smem = SharedMemory.GetDynamic<Chunk16>();
        uint sBase = Ptx.SharedAddr(ref smem[0]);
        int tid = Group.IdxX;
        int lane = Warp.LaneIdx, warp = tid >> 5;
        int g = lane >> 2, t = lane & 3;

        int bh = Grid.IdxY;
        int b = bh / p.Heads, h = bh - b * p.Heads, hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int q0 = Grid.IdxX * Rows;
        if (q0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - q0 < Rows ? blk.SeqQ - q0 : Rows;

        int rowBytes = THd.RowBytes;
        uint qS = sBase;
        uint kv0 = sBase + (uint)(Rows * rowBytes);
        uint tileBytes = (uint)(THd.Bc * rowBytes);

        ulong qG = Ptx.GlobalAddr(ref q[0]);
        ulong kG = Ptx.GlobalAddr(ref k[0]);
        ulong vG = Ptx.GlobalAddr(ref v[0]);

        // Q tile → shared (rows past the sequence zero-filled).
        int cpr = THd.D / 8;
        for (int e = tid; e < Rows * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            uint dst = qS + (uint)(r * rowBytes + c * 16);
            if (r < rows)
                Ptx.CpAsync16(dst, qG + (ulong)(blk.QOffset(p.QStrideB, p.QStrideL, p.QStrideH, q0 + r, h) * 2 + c * 16), 16u);
            else
                Ptx.CpAsync16(dst, qG, 0u);
        }
        Ptx.CpAsyncCommit();

        // This lane's rows (A = g, B = g + 8 of the warp's 16) and their mask/bias rows.
        int rA = q0 + warp * 16 + g, rB = rA + 8;
        long mRowA = MaskBias.MaskIndex(p, b, h, rA), mRowB = MaskBias.MaskIndex(p, b, h, rB);
        var sa = new ScoreArgs
        {
            Scale = p.Scale,
            ScaleLog2 = p.Scale * TcScore.Log2E,
            Cap = p.Softcap,
            Plain = p.Softcap > 0f || p.HasBias != 0 ? 0 : 1,
            HasBias = p.HasBias,
            BiasRowA = MaskBias.BiasIndex(p, b, h, rA),
            BiasRowB = MaskBias.BiasIndex(p, b, h, rB),
            Col0 = 0,
        };

        int kEnd = blk.KeyEnd(p, q0 + rows);
        int nTiles = (kEnd + THd.Bc - 1) / THd.Bc;

        // First visible tile.
        int cur = 0;
        uint curBits = 0;
        while (cur < nTiles)
        {
            curBits = TileBits<THd>(p, blk, mask, cur * THd.Bc, kEnd, rA, mRowA, mRowB, 2 * t);
            if (Group.BarrierOr(curBits != 0)) break;
            cur++;
        }
        if (cur < nTiles)
            LoadKv<THd>(p, blk, seqInfo, kG, vG, kv0, kv0 + tileBytes, cur * THd.Bc, kEnd, hk, tid);
        Ptx.CpAsyncCommit();

        // Q fragments (the Q group is complete once at most the K/V group is pending).
        Ptx.CpAsyncWait(1);
        Group.Barrier();
        uint qLane = qS + (uint)((warp * 16 + (lane & 15)) * rowBytes + (lane >> 4) * 16);
        QFrag qf = Frag.LoadQ<THd>(qLane);

        uint kLaneOff = (uint)((((lane >> 4) << 3) + (lane & 7)) * rowBytes + ((lane >> 3) & 1) * 16);
        uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * rowBytes + (lane >> 4) * 16);

        float mA = float.NegativeInfinity, mB = float.NegativeInfinity, lA = 0f, lB = 0f;
        OAcc acc = default;
        int buf = 0;
        while (cur < nTiles)
        {
            // Visibility of the next visible tile, then its K/V loads into the other buffer.
            int nxt = cur + 1;
            uint nxtBits = 0;
            while (nxt < nTiles)
            {
                nxtBits = TileBits<THd>(p, blk, mask, nxt * THd.Bc, kEnd, rA, mRowA, mRowB, 2 * t);
                if (Group.BarrierOr(nxtBits != 0)) break;
                nxt++;
            }
            uint kCur = kv0 + (uint)buf * 2u * tileBytes;
            uint kNxt = kv0 + (uint)(buf ^ 1) * 2u * tileBytes;
            if (nxt < nTiles)
                LoadKv<THd>(p, blk, seqInfo, kG, vG, kNxt, kNxt + tileBytes, nxt * THd.Bc, kEnd, hk, tid);
            Ptx.CpAsyncCommit();
            Ptx.CpAsyncWait(1);
            Group.Barrier();

            // S = Q·Kᵀ.
            uint kA = kCur + kLaneOff;
            SAcc s;
            if (THd.QInRegs)
            {
                s = Frag.QkRegs<TE, THd>(qf, kA);
            }
            else
            {
                s = default;
                for (int kk = 0; kk < THd.D / 16; kk++)
                    s = Frag.QkStep<TE, THd>(s, Ptx.LdMatrixX4(qLane + (uint)(kk * 32)), kA + (uint)(kk * 32));
            }

            // Scores, online softmax (log2 domain), P·V.
            sa.Col0 = cur * THd.Bc + 2 * t;
            s = Frag.Scores<TE, THd>(s, curBits, sa, bias);
            F2 mx = Frag.RowMax<THd>(s);
            mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 1));
            mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 2));
            mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 1));
            mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 2));
            float nA = TcScore.Max(mA, mx.A), nB = TcScore.Max(mB, mx.B);
            float alphaA = nA == float.NegativeInfinity ? 1f : Ptx.Ex2(mA - nA);
            float alphaB = nB == float.NegativeInfinity ? 1f : Ptx.Ex2(mB - nB);
            PExp pe = Frag.Exp<TE, THd>(s, nA == float.NegativeInfinity ? 0f : nA, nB == float.NegativeInfinity ? 0f : nB);
            lA = lA * alphaA + pe.La;
            lB = lB * alphaB + pe.Lb;
            mA = nA;
            mB = nB;
            acc = Frag.Rescale<THd>(acc, alphaA, alphaB);
            acc = Frag.Pv<TE, THd>(acc, pe.P, kCur + tileBytes + vLaneOff);

            Group.Barrier(); // all warps are done with this buffer before it is refilled
            cur = nxt;
            curBits = nxtBits;
            buf ^= 1;
        }
        Ptx.CpAsyncWait(0);

        // Epilogue: row sums across the quad, normalise, write; empty rows give 0 and LSE −∞.
        lA += Warp.ShuffleXor(lA, 1);
        lA += Warp.ShuffleXor(lA, 2);
        lB += Warp.ShuffleXor(lB, 1);
        lB += Warp.ShuffleXor(lB, 2);
        bool okA = rA < blk.SeqQ, okB = rB < blk.SeqQ;
        long oA = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, rA, h) + 2 * t;
        long oB = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, rB, h) + 2 * t;
        Frag.Store<TE, THd>(acc, o, oA, oB, okA, okB, OnlineSoftmax.Normaliser(lA), OnlineSoftmax.Normaliser(lB));
        if (p.WriteLse != 0 && t == 0)
        {
            long lrow = b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0;
            if (okA) lse[lrow + rA] = lA > 0f ? mA * TcScore.Ln2 + XMath.Log(lA) : float.NegativeInfinity;
            if (okB) lse[lrow + rB] = lB > 0f ? mB * TcScore.Ln2 + XMath.Log(lB) : float.NegativeInfinity;
        }
    }
}
