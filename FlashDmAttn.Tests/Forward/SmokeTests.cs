using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

public class SmokeTests
{
    [Test]
    public void Fp32Small() => CaseRunner.Run(FlashDmAttention.Auto("cpu"), new AttentionCase("fp32", 1, 17, 17, 2, 1, 32, Causal: true));
}
