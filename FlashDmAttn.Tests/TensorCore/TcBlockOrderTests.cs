using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>The launch grid of the tensor-core kernel: heads first when asked and the blocks fit the grid's y size.
/// That the kernel maps either grid back to the right rows is shown by the TensorCore CPU and GPU tests (causal and
/// variable-length cases run heads first, the others blocks first).</summary>
[TestFixture]
public class TcBlockOrderTests
{
    [TestCase(32, 24, true, 24, 32, true)]
    [TestCase(32, 24, false, 32, 24, false)]
    [TestCase(70000, 2, true, 70000, 2, false)] // blocks over the y limit: blocks first
    [TestCase(3, 70000, false, 70000, 3, true)] // heads over the y limit: heads first
    [TestCase(TcBlockOrder.MaxGridY, 5, true, 5, TcBlockOrder.MaxGridY, true)]
    public void GridFitsCudaLimits(int blocks, int heads, bool prefer, int x, int y, bool headsFirst)
    {
        var g = TcBlockOrder.Grid2D(blocks, heads, prefer);
        Assert.That((g.X, g.Y, g.HeadsFirst), Is.EqualTo((x, y, headsFirst)));
        Assert.That(g.Y, Is.LessThanOrEqualTo(TcBlockOrder.MaxGridY));
    }
}
