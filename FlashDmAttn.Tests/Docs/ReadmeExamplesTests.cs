using System.Text.RegularExpressions;
using FlashDmAttn.Demo;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Docs;

/// <summary>The README's examples are the code in FlashDmAttn.Demo/Examples.cs, and that code runs.</summary>
public class ReadmeExamplesTests
{
    private static string RepoFile(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, name);
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException(name);
    }

    private static string Normalise(string code)
    {
        var lines = code.Replace("\r", "").Split('\n').Select(l => l.TrimEnd()).Where(l => l.Length > 0).ToArray();
        int indent = lines.Min(l => l.Length - l.TrimStart().Length);
        return string.Join("\n", lines.Select(l => l[indent..]));
    }

    [TestCase("usings")]
    [TestCase("standard")]
    [TestCase("dynamic-mask")]
    [TestCase("gqa")]
    [TestCase("varlen")]
    [TestCase("host-tensors")]
    [TestCase("training")]
    [TestCase("generation")]
    [TestCase("warm-up")]
    public void ReadmeShowsTheExampleVerbatim(string name)
    {
        var readme = File.ReadAllText(RepoFile("README.md"));
        var source = File.ReadAllText(RepoFile(Path.Combine("FlashDmAttn.Demo", "Examples.cs")));
        var doc = Regex.Match(readme, $@"<!-- example: {Regex.Escape(name)} -->\s*```csharp\n(.*?)```", RegexOptions.Singleline);
        var code = Regex.Match(source, $@"// region: {Regex.Escape(name)}\n(.*?)// endregion", RegexOptions.Singleline);
        Assert.That(doc.Success, $"README.md has no example '{name}'");
        Assert.That(code.Success, $"Examples.cs has no region '{name}'");
        Assert.That(Normalise(doc.Groups[1].Value), Is.EqualTo(Normalise(code.Groups[1].Value)));
    }

    /// <summary>The examples use only the library and the usings shown (no helper of the demo).</summary>
    [Test]
    public void ExamplesNeedNothingButTheUsingsShown()
    {
        var source = File.ReadAllText(RepoFile(Path.Combine("FlashDmAttn.Demo", "Examples.cs")));
        var usings = Regex.Matches(source, @"^using [^;]+;", RegexOptions.Multiline).Select(m => m.Value).ToArray();
        var shown = Regex.Match(source, @"// region: usings\n(.*?)// endregion", RegexOptions.Singleline).Groups[1].Value;
        Assert.That(usings, Is.Not.Empty);
        foreach (var u in usings)
            Assert.That(shown, Does.Contain(u), "a using of Examples.cs that the README does not show");
        var outside = Regex.Replace(source, @"// region: (.*?)// endregion", "", RegexOptions.Singleline);
        Assert.That(Regex.IsMatch(outside, @"\b(static|public)\b[^\n]*\("), Is.False,
            "Examples.cs has members outside the README's regions (the examples would not compile on their own)");
    }

    [Test]
    public void WarmUpRuns()
    {
        string dir = Path.Combine(Path.GetTempPath(), "fdm-readme-cache-" + Guid.NewGuid().ToString("N"));
        int kernels = Examples.WarmUp(dir);
        // CUDA: the tensor-core kernels of both shapes; elsewhere the portable kernel runs, with nothing to warm up.
        Assert.That(kernels, Is.EqualTo(FlashDmAttention.Auto().Name == "cuda" ? 2 : 0));
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
    }

    [Test]
    public void StandardRuns()
    {
        using var o = Examples.Standard(B: 1, L: 40, H: 2, D: 128);
        Assert.That(o.Shape.ToArray(), Is.EqualTo(new long[] { 1, 40, 2, 128 }));
        Assert.That(o.ToHost().All(x => float.IsFinite(x)), "finite output");
    }

    [Test]
    public void DynamicMaskRuns()
    {
        using var o = Examples.DynamicMaskAttention(B: 1, H: 2, L: 48, keepWindowSize: 16);
        Assert.That(o.Shape.ToArray(), Is.EqualTo(new long[] { 1, 48, 2, 128 }));
        Assert.That(o.ToHost().All(x => float.IsFinite(x)), "finite output");
    }

    [Test]
    public void GqaRuns()
    {
        using var o = Examples.GroupedQueryAttention(B: 1, L: 24, H: 8, Hkv: 2, D: 64);
        Assert.That(o.Shape.ToArray(), Is.EqualTo(new long[] { 1, 24, 8, 64 }));
        Assert.That(o.ToHost().All(x => float.IsFinite(x)), "finite output");
    }

    [Test]
    public void VarlenRuns()
    {
        using var o = Examples.VariableLength([5, 17, 9], H: 2, D: 32);
        Assert.That(o.Shape.ToArray(), Is.EqualTo(new long[] { 31, 2, 32 }));
        Assert.That(o.ToHost().All(x => float.IsFinite(x)), "finite output");
    }

    [Test]
    public void HostTensorsRuns()
    {
        var o = Examples.HostTensors(B: 1, L: 20, H: 2, D: 16);
        Assert.That(o.Lengths.ToArray(), Is.EqualTo(new nint[] { 1, 20, 2, 16 }));
        var flat = new float[(int)o.FlattenedLength];
        o.FlattenTo(flat);
        Assert.That(flat.All(float.IsFinite), "finite output");
    }

    [Test]
    public void GenerationRuns()
    {
        // A prompt of 5 and 6 steps over pages of 4: appends cross pages, the last step sees 11 tokens.
        using var o = Examples.Generation(B: 2, prompt: 5, steps: 6, H: 4, Hkv: 2, D: 32, pageSize: 4);
        Assert.That(o.Shape.ToArray(), Is.EqualTo(new long[] { 2, 1, 4, 32 }));
        Assert.That(o.ToHost().All(x => float.IsFinite(x)), "finite output");
    }

    [Test]
    public void TrainingRuns()
    {
        using var g = Examples.TrainingStep(B: 1, L: 24, H: 2, D: 32, keepWindowSize: 8);
        Assert.That(g.DQuery.Shape.ToArray(), Is.EqualTo(new long[] { 1, 24, 2, 32 }));
        Assert.That(g.DBias!.Shape.ToArray(), Is.EqualTo(new long[] { 1, 2, 1, 24 }));
        foreach (var t in new[] { g.DQuery, g.DKey, g.DValue, g.DBias })
            Assert.That(t.ToHost().All(x => float.IsFinite((float)x)), "finite gradients");
        Assert.That(g.DValue.ToHost().Any(x => (float)x != 0f), "a nonzero dv");
    }
}
