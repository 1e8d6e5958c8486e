using NUnit.Framework;

namespace FlashDmAttn.Tests.Support;

/// <summary>Backends for fixtures: GPU fixtures are ignored where the machine has no such device.</summary>
public static class TestBackends
{
    public static AttentionBackend Get(string name)
    {
        if (!FlashDmAttention.GetAvailableBackends().Contains(name))
            Assert.Ignore($"backend '{name}' has no device on this machine");
        return FlashDmAttention.Auto(name);
    }
}
