using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

namespace FlashDmAttn.Tests.Support;

/// <summary>
/// A fixture of category GPU, built only where the machine has a CUDA device: elsewhere a plain run has no such tests
/// at all (not ~250 "skipped" notices of six lines each, which explicit or ignored fixtures still print), and
/// <see cref="GpuCategoryTests"/> says so once. The arguments are the fixture's constructor arguments, as
/// <see cref="TestFixtureAttribute"/>'s.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class CudaFixtureAttribute(params object?[] arguments) : NUnitAttribute, IFixtureBuilder2
{
    public const string Category = "GPU";

    public IEnumerable<TestSuite> BuildFrom(ITypeInfo typeInfo)
        => FlashDmAttention.CudaAvailable ? Fixture.BuildFrom(typeInfo) : Empty(typeInfo);

    public IEnumerable<TestSuite> BuildFrom(ITypeInfo typeInfo, IPreFilter filter)
        => FlashDmAttention.CudaAvailable ? Fixture.BuildFrom(typeInfo, filter) : Empty(typeInfo);

    private TestFixtureAttribute Fixture => new(arguments) { Category = Category };

    /// <summary>
    /// Without CUDA: nothing, where the class has other fixtures (the CPU one). A class with only GPU fixtures gets a
    /// fixture without tests (NUnit would build a class that yields no fixture at all as a plain fixture with all its
    /// tests).
    /// </summary>
    private IEnumerable<TestSuite> Empty(ITypeInfo typeInfo)
    {
        if (typeInfo.GetCustomAttributes<IFixtureBuilder>(false).Any(a => a is not CudaFixtureAttribute))
            return [];
        return [new TestFixture(typeInfo) { RunState = RunState.Ignored }];
    }
}

/// <summary>The one notice a run on a machine without CUDA gives for the GPU tests it has not built.</summary>
[TestFixture]
public class GpuCategoryTests
{
    [Test]
    public void GpuTestsNeedCuda()
    {
        if (!FlashDmAttention.CudaAvailable)
            Assert.Ignore($"no CUDA device: the tests of category {CudaFixtureAttribute.Category} are not built here " +
                          $"(on a CUDA machine: FlashDmAttn.Tests --filter \"TestCategory={CudaFixtureAttribute.Category}\")");
    }
}
