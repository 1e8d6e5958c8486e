using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// Forward calls from several host threads on one backend. Calls with a mask broadcast over queries list their visible
/// keys in a scratch buffer that every call on the accelerator shares; each call's table and attention launches must not
/// interleave with another call's (one thread's table read by the other's attention gave wrong outputs).
/// </summary>
[TestFixture]
public class ConcurrentCallsTests
{
    [Test]
    public void TwoThreadsWithPerKeyMasksMatchTheReference()
    {
        var backend = FlashDmAttention.Auto("cpu");
        // Different key counts, so the two calls' key tables differ in length and content; masks (B, H, 1, Lk).
        AttentionCase[] cases =
        [
            new("fp32", 2, 24, 40, 2, 1, 16, MaskShape: [0, 0, 1, 0]),
            new("fp32", 1, 17, 72, 3, 3, 16, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]),
        ];
        var tasks = cases.Select(c => Task.Run(() =>
        {
            for (int i = 0; i < 12; i++) CaseRunner.Run(backend, c);
        })).ToArray();
        Assert.That(() => Task.WaitAll(tasks), Throws.Nothing);
    }
}
