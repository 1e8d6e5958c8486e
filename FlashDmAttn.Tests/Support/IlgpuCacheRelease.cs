using System;
using FlashDmAttn;
using ILGPU;
using NUnit.Framework;
using NUnit.Framework.Interfaces;

// After every test, the shared ILGPU context drops the IR it imported (every kernel specialization a test compiled,
// unrolled fragment code included). Kept, it grew past the 24 GB of the CI machine in one test process and the OOM
// killer ended the run. Loaded kernels stay in the accelerators' caches, so a later test that reuses one does not
// compile it again.
[assembly: FlashDmAttn.Tests.Support.IlgpuCacheRelease]

namespace FlashDmAttn.Tests.Support;

[AttributeUsage(AttributeTargets.Assembly)]
public sealed class IlgpuCacheReleaseAttribute : Attribute, ITestAction
{
    public ActionTargets Targets => ActionTargets.Test;

    public void BeforeTest(ITest test) { }

    public void AfterTest(ITest test) => FlashDmAttention.Context.ClearCache(ClearCacheMode.Everything);
}
