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
            Assert.That(TensorCorePtx.CheckBarrierOrder(e.Ptx), Is.Null, $"{e.Name}: barrier order");
        }
    }

    /// <summary>
    /// Writes the PTX of every launched specialization (<see cref="TensorCorePtx.Specializations"/> and
    /// <see cref="TensorCorePtx.ExtraSpecializations"/>) for ptxas -v on a GPU host, into the directory of the test
    /// parameter ptx-dir (default: tc-ptx-all in the work directory). Explicit: about a minute of compiling.
    /// </summary>
    [Test, Explicit("writes PTX for ptxas; run by tools/gpu.sh bundle --ptx")]
    public void DumpLaunchedKernels()
    {
        string dir = TestContext.Parameters.Get("ptx-dir", Path.Combine(TestContext.CurrentContext.WorkDirectory, "tc-ptx-all"));
        TestContext.Out.WriteLine(TensorCorePtx.Dump(dir, null, out var entries, extra: true));
        Assert.That(entries, Has.Count.EqualTo(TensorCorePtx.Specializations.Length + TensorCorePtx.ExtraSpecializations.Length
            + 3 * (TensorCorePtx.BackwardSpecializations.Length + TensorCorePtx.ExtraBackwardSpecializations.Length)));
    }

    /// <summary>The tensor-core backward's kernels: register-only fragments (no local memory), no calls, mma, ordered
    /// barriers (shared P and dS tiles are written by st.shared and read back transposed by ldmatrix).</summary>
    [Test]
    public void BackwardKernelsCompileWithoutLocalMemoryAndKeepBarrierOrder()
    {
        var entries = TensorCorePtx.CompileBackward(TensorCorePtx.BackwardSpecializations);
        Assert.That(entries, Has.Count.EqualTo(3 * TensorCorePtx.BackwardSpecializations.Length));
        foreach (var e in entries)
        {
            TestContext.Out.WriteLine($"{e.Name}: {e.Mma} mma, {e.LdMatrix} ldmatrix, {e.CpAsync} cp.async, {e.BarSync} barriers, {e.SharedStores} st.shared");
            Assert.That(e.LocalDecls + e.LocalLoads + e.LocalStores, Is.Zero, $"{e.Name}: .local / ld.local / st.local in the PTX");
            Assert.That(e.Calls, Is.Zero, $"{e.Name}: call in the PTX");
            Assert.That(e.Mma, Is.GreaterThan(0), $"{e.Name}: no mma.sync");
            Assert.That(e.Ptx, Does.Contain(".maxntid 128, 1, 1"));
            Assert.That(TensorCorePtx.CheckBarrierOrder(e.Ptx), Is.Null, $"{e.Name}: barrier order");
        }
    }

    [TestCase("cp.async.wait_group 0;\nbar.sync 0;\nldmatrix.sync.aligned.m8n8.x4.shared.b16 {a}, [r];", true)]
    [TestCase("cp.async.wait_group 0;\nbar.red.or.pred p, 0, q;\ncp.async.cg.shared.global [d], [s], 16, 16;\nld.shared.u32 x, [r];", true)]
    [TestCase("cp.async.wait_group 0;\nldmatrix.sync.aligned.m8n8.x4.shared.b16 {a}, [r];\nbar.sync 0;", false)]
    [TestCase("bar.sync 0;\ncp.async.wait_group 0;\nld.shared.u32 x, [r];\nbar.sync 0;", false)]
    [TestCase("cp.async.wait_group 0;\n@p cp.async.cg.shared.global [d], [s], 16, 16;\nbar.sync 0;", false)]
    [TestCase("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {a}, [r];", false)]
    public void BarrierOrderCheckFindsReadsAndCopiesBeforeTheBarrier(string ptx, bool ok)
        => Assert.That(TensorCorePtx.CheckBarrierOrder(ptx) is null, Is.EqualTo(ok), TensorCorePtx.CheckBarrierOrder(ptx) ?? "ok");
}
