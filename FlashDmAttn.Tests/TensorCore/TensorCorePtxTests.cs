using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>PTX of every specialization, compiled without a GPU: register-only fragments and ordered barriers.</summary>
[TestFixture]
public class TensorCorePtxTests
{
    [Test]
    public void AllSpecializationsCompileWithoutLocalMemoryAndKeepBarrierOrder()
    {
        string dir = Path.Combine(TestContext.CurrentContext.WorkDirectory, "tc-ptx");
        string summary = TensorCorePtx.Dump(dir, null, out var entries);
        TestContext.Out.WriteLine($"PTX in {dir}");
        TestContext.Out.WriteLine(summary);
        Assert.That(entries, Has.Count.EqualTo(TensorCorePtx.Specializations.Length));
        foreach (var e in entries)
        {
            Assert.That(e.LocalDecls + e.LocalLoads + e.LocalStores, Is.Zero, $"{e.Name}: .local / ld.local / st.local in the PTX");
            Assert.That(e.Calls, Is.Zero, $"{e.Name}: call in the PTX");
            Assert.That(e.Mma, Is.GreaterThan(0), $"{e.Name}: no mma.sync");
            // Shared memory is written only by cp.async and read by ldmatrix, plus ld.shared of staged bias tiles.
            Assert.That(e.SharedStores, Is.Zero, $"{e.Name}: st.shared");
            bool bias = e.Name.EndsWith("_cmb", StringComparison.Ordinal) || e.Name.EndsWith("_all", StringComparison.Ordinal);
            if (!bias) Assert.That(e.SharedLoads, Is.Zero, $"{e.Name}: ld.shared without a bias");
            Assert.That(e.Ptx, Does.Contain(".maxntid 128, 1, 1"));
            // The text-order check only holds for straight-line tile bodies (Q in registers, D <= 128). For D = 192/256
            // the Q·Kᵀ k-loop body is laid out after the closing bar.sync and branched to from inside the window.
            if (!e.Name.EndsWith("d192", StringComparison.Ordinal) && !e.Name.EndsWith("d256", StringComparison.Ordinal))
                Assert.That(TensorCorePtx.CheckBarrierOrder(e.Ptx), Is.Null, $"{e.Name}: barrier order");
        }
    }
}
