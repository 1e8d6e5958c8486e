using System.Diagnostics;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>TensorCoreFragments.g.cs is what GenFragments.py writes: regenerated here and compared.</summary>
[TestFixture]
public class GeneratedFragmentsTests
{
    [Test]
    public void FragmentsMatchTheirGenerator()
    {
        string dir = Path.Combine(RepositoryRoot(), "FlashDmAttn.Kernels", "TensorCore", "Device");
        var start = new ProcessStartInfo("python3", "GenFragments.py")
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Assert.Ignore("python3 is not installed: the generator cannot be run here");
            return;
        }
        string generated = process.StandardOutput.ReadToEnd();
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, errors);
        string committed = File.ReadAllText(Path.Combine(dir, "TensorCoreFragments.g.cs"));
        Assert.That(generated.ReplaceLineEndings(), Is.EqualTo(committed.ReplaceLineEndings()),
            "TensorCoreFragments.g.cs differs from GenFragments.py's output: run `python3 GenFragments.py > TensorCoreFragments.g.cs`");
    }

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "FlashDmAttn.sln")))
                return d.FullName;
        throw new DirectoryNotFoundException($"no FlashDmAttn.sln above {AppContext.BaseDirectory}");
    }
}
