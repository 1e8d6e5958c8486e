using System.Diagnostics;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

public class SmokeTests
{
    [Test]
    public void Timing()
    {
        var be = FlashDmAttention.Auto("cpu");
        foreach (var c in new[] {
            new AttentionCase("fp32", 1, 17, 17, 2, 1, 32, Causal: true),
            new AttentionCase("fp32", 1, 1000, 1000, 1, 1, 32),
            new AttentionCase("bf16", 1, 257, 257, 1, 1, 256),
            new AttentionCase("fp16", 2, 128, 128, 8, 2, 64, MaskShape: [0,0,0,0], BiasShape: [0,0,0,0]),
        })
        {
            var sw = Stopwatch.StartNew();
            CaseRunner.Run(be, c);
            TestContext.Out.WriteLine($"{c}: {sw.ElapsedMilliseconds} ms");
        }
    }
}
