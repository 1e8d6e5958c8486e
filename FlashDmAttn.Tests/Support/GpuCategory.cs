using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

// Where the machine has no CUDA device, the fixtures of category GPU are made explicit: a plain run leaves them out
// instead of reporting each of their ~160 tests as skipped (six lines each in `dotnet test`), and one test below
// says so in a single notice. A filter that names the category (`--filter "TestCategory=GPU"`) still selects them.
// On a CUDA machine nothing changes: a plain run and the category filter both run them.
[assembly: FlashDmAttn.Tests.Support.GpuCategory]

namespace FlashDmAttn.Tests.Support;

[AttributeUsage(AttributeTargets.Assembly)]
public sealed class GpuCategoryAttribute : Attribute, IApplyToTest
{
    public const string Name = "GPU";

    /// <summary>How many test cases this run left out for want of a CUDA device.</summary>
    internal static int LeftOut;

    /// <summary>NUnit applies assembly attributes once the whole tree of fixtures is built.</summary>
    public void ApplyToTest(Test test)
    {
        if (!FlashDmAttention.CudaAvailable) LeftOut = MakeExplicit(test);
    }

    private static int MakeExplicit(ITest test)
    {
        if (test is Test t && t.RunState == RunState.Runnable && t.Properties[PropertyNames.Category].Contains(Name))
        {
            t.RunState = RunState.Explicit;
            t.Properties.Set(PropertyNames.SkipReason, "no CUDA device on this machine");
            return t.TestCaseCount;
        }
        int n = 0;
        foreach (var child in test.Tests) n += MakeExplicit(child);
        return n;
    }
}

/// <summary>The one notice a run on a machine without CUDA gives for the GPU tests it left out.</summary>
[TestFixture]
public class GpuCategoryTests
{
    [Test]
    public void GpuTestsNeedCuda()
    {
        if (GpuCategoryAttribute.LeftOut > 0)
            Assert.Ignore($"no CUDA device: the {GpuCategoryAttribute.LeftOut} tests of category {GpuCategoryAttribute.Name} were left out " +
                          $"(on a CUDA machine: FlashDmAttn.Tests --filter \"TestCategory={GpuCategoryAttribute.Name}\")");
    }
}
