using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

namespace FlashDmAttn.Tests.Support;

/// <summary>
/// A fixture of category GPU, built only where the machine has a CUDA device: elsewhere a plain run has no such tests
/// at all (not ~250 "skipped" notices of six lines each), and <see cref="GpuCategoryTests"/> says so once. The arguments
/// are the fixture's constructor arguments, as <see cref="TestFixtureAttribute"/>'s.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class CudaFixtureAttribute(params object?[] arguments) : NUnitAttribute, IFixtureBuilder2
{
    public const string Category = "GPU";

    public IEnumerable<TestSuite> BuildFrom(ITypeInfo typeInfo)
        => FlashDmAttention.CudaAvailable ? Fixture.BuildFrom(typeInfo) : Explicit.BuildFrom(typeInfo);

    public IEnumerable<TestSuite> BuildFrom(ITypeInfo typeInfo, IPreFilter filter)
        => FlashDmAttention.CudaAvailable ? Fixture.BuildFrom(typeInfo, filter) : Explicit.BuildFrom(typeInfo, filter);

    private TestFixtureAttribute Fixture => new(arguments) { Category = Category };

    /// <summary>Without CUDA: NUnit would build a class with no fixture at all as a plain fixture, so the fixture is
    /// built explicit (a plain run leaves it out).</summary>
    private TestFixtureAttribute Explicit => new(arguments) { Category = Category, Explicit = true, Reason = "no CUDA device on this machine" };
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
