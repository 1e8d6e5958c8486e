using NUnit.Framework;
namespace FlashDmAttn.Tests;
public class SmokeTests { [Test] public void Works() => Assert.That(1 + 1, Is.EqualTo(2)); }
