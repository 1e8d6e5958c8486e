using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>The closed-form fragment visibility against the element-by-element definition, exhaustively on small ranges.</summary>
[TestFixture]
public class TcGeomTests
{
    [Test]
    public void ClosedFormMatchesElementwiseDefinition()
    {
        int checkedCount = 0;
        foreach (int bc in new[] { 32, 64 })
        foreach (bool causal in new[] { false, true })
        foreach (int seqQ in new[] { 1, 9, 70 })
        foreach (int diag in new[] { -80, -3, 0, 5, 130 })
        foreach (int kEnd in new[] { 0, 1, 17, 64, 100, 200 })
        for (int rA = 0; rA < 80; rA += 3)
        for (int k0 = 0; k0 < 200; k0 += bc)
        for (int t = 0; t < 4; t++)
        {
            uint want = 0;
            for (int j = 0; j < bc / 8; j++)
            for (int e = 0; e < 4; e++)
            {
                int r = rA + ((e & 2) << 2), c = k0 + TcKeyOrder.KeyOfColumn(bc, 8 * j + 2 * t + (e & 1));
                if (r < seqQ && c < kEnd && (!causal || c <= r + diag)) want |= 1u << (4 * j + e);
            }
            uint got = TcGeom.Bits(bc, rA, seqQ, k0 + TcKeyOrder.LaneKey0(bc, t), kEnd, causal, diag);
            if (got != want)
                Assert.Fail($"bc={bc} causal={causal} seqQ={seqQ} diag={diag} kEnd={kEnd} rA={rA} k0={k0} t={t}: got {got:X8}, want {want:X8}");
            checkedCount++;
        }
        Assert.That(checkedCount, Is.GreaterThan(10000));
    }

    /// <summary>The limits the causal kernels derive from row A's (TcGeom.Shifted) equal the rows' own wherever those rows
    /// are inside Lq (the only rows the kernel writes), with kEnd as the kernel computes it for a block at q0.</summary>
    [Test]
    public void ShiftedLimitsMatchTheRowsOwnInsideLq()
    {
        int checkedCount = 0;
        foreach (bool causal in new[] { false, true })
        foreach (int seqQ in new[] { 1, 9, 70, 200 })
        foreach (int seqK in new[] { 1, 5, 64, 150, 300 })
        foreach (int q0 in new[] { 0, 64, 128 })
        {
            if (q0 >= seqQ) continue;
            int diag = seqK - seqQ, rows = System.Math.Min(seqQ - q0, 128);
            int e1 = q0 + rows + diag;
            int kEnd = causal ? System.Math.Clamp(e1, 0, seqK) : seqK;
            for (int rA = q0; rA < q0 + 128; rA++)
            foreach (int d in new[] { 8, 16, 24 })
            {
                if (rA + d >= seqQ) continue;
                int own = TcGeom.Limit(rA + d, seqQ, kEnd, causal, diag);
                int derived = TcGeom.Shifted(TcGeom.Limit(rA, seqQ, kEnd, causal, diag), d, kEnd);
                if (own != derived)
                    Assert.Fail($"causal={causal} seqQ={seqQ} seqK={seqK} q0={q0} rA={rA} d={d}: derived {derived}, own {own}");
                checkedCount++;
            }
        }
        Assert.That(checkedCount, Is.GreaterThan(5000));
    }

    [TestCase(32)]
    [TestCase(64)]
    public void KeyOrderIsABijectionWithContiguousLaneKeys(int bc)
    {
        var seen = new bool[bc];
        for (int c = 0; c < bc; c++)
        {
            int key = TcKeyOrder.KeyOfColumn(bc, c);
            Assert.That(key, Is.InRange(0, bc - 1));
            Assert.That(seen[key], Is.False, $"key {key} twice");
            seen[key] = true;
            int j = c >> 3, t = (c >> 1) & 3, u = c & 1;
            Assert.That(key, Is.EqualTo(TcKeyOrder.LaneKey0(bc, t) + 2 * j + u), $"column {c}");
        }
    }

    /// <summary>TcMask.Bits against the definition: bit 4j + e is set when row (e &lt; 2 ? A : B)'s byte of key 2j + (e &amp; 1) is nonzero.</summary>
    [Test]
    public void MaskWordsToBitsMatchesDefinition()
    {
        var rng = new System.Random(12345);
        byte[] special = { 0, 1, 0x7F, 0x80, 0x81, 0xFE, 0xFF };
        for (int iter = 0; iter < 20000; iter++)
        {
            var a = new byte[16];
            var b = new byte[16];
            for (int i = 0; i < 16; i++)
            {
                a[i] = rng.Next(3) == 0 ? (byte)0 : special[rng.Next(special.Length)];
                b[i] = rng.Next(3) == 0 ? (byte)0 : (byte)rng.Next(256);
            }
            U4 wa = Words(a), wb = Words(b);
            uint want64 = 0, want32 = 0;
            for (int j = 0; j < 8; j++)
            for (int e = 0; e < 4; e++)
            {
                byte v = (e & 2) == 0 ? a[2 * j + (e & 1)] : b[2 * j + (e & 1)];
                if (v != 0)
                {
                    want64 |= 1u << (4 * j + e);
                    if (j < 4) want32 |= 1u << (4 * j + e);
                }
            }
            Assert.That(TcMask.Bits<Hd64>(wa, wb), Is.EqualTo(want64), $"iteration {iter}");
            Assert.That(TcMask.Bits<Hd256>(wa, wb), Is.EqualTo(want32), $"iteration {iter} (32 keys)");
        }
    }

    private static U4 Words(byte[] x) => new(System.BitConverter.ToUInt32(x, 0), System.BitConverter.ToUInt32(x, 4),
        System.BitConverter.ToUInt32(x, 8), System.BitConverter.ToUInt32(x, 12));
}
