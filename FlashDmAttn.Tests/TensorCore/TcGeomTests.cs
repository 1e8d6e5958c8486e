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
                int r = rA + ((e & 2) << 2), c = k0 + 8 * j + 2 * t + (e & 1);
                if (r < seqQ && c < kEnd && (!causal || c <= r + diag)) want |= 1u << (4 * j + e);
            }
            uint got = TcGeom.Bits(bc, rA, seqQ, k0 + 2 * t, kEnd, causal, diag);
            if (got != want)
                Assert.Fail($"bc={bc} causal={causal} seqQ={seqQ} diag={diag} kEnd={kEnd} rA={rA} k0={k0} t={t}: got {got:X8}, want {want:X8}");
            checkedCount++;
        }
        Assert.That(checkedCount, Is.GreaterThan(10000));
    }
}
