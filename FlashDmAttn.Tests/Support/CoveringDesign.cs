namespace FlashDmAttn.Tests.Support;

/// <summary>
/// A deterministic pairwise covering design: every value of each parameter and every pair of values of two
/// parameters appears in some row that satisfies the constraint (pairs no valid row can hold are skipped).
/// Greedy in the AETG style: each new row is the best of several candidates seeded with an uncovered pair.
/// </summary>
public static class CoveringDesign
{
    public static List<int[]> Generate(int[] levels, Func<int[], bool> valid, int seed = 12345, int candidates = 40)
    {
        var rng = new Random(seed);
        int n = levels.Length;
        var uncovered = new HashSet<(int, int, int, int)>();
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++)
                for (int x = 0; x < levels[a]; x++)
                    for (int y = 0; y < levels[b]; y++)
                        uncovered.Add((a, x, b, y));
        var rows = new List<int[]>();
        while (uncovered.Count > 0)
        {
            var target = uncovered.First();
            int[]? best = null;
            int bestGain = -1;
            for (int t = 0; t < candidates * 10 && (best is null || t < candidates); t++)
            {
                var row = new int[n];
                for (int i = 0; i < n; i++) row[i] = rng.Next(levels[i]);
                row[target.Item1] = target.Item2;
                row[target.Item3] = target.Item4;
                if (!valid(row)) continue;
                int gain = Gain(row, uncovered);
                if (gain > bestGain) { best = row; bestGain = gain; }
            }
            if (best is null)
            {
                uncovered.Remove(target); // no valid row holds this pair
                continue;
            }
            rows.Add(best);
            for (int a = 0; a < n; a++)
                for (int b = a + 1; b < n; b++)
                    uncovered.Remove((a, best[a], b, best[b]));
        }
        return rows;
    }

    private static int Gain(int[] row, HashSet<(int, int, int, int)> uncovered)
    {
        int g = 0;
        for (int a = 0; a < row.Length; a++)
            for (int b = a + 1; b < row.Length; b++)
                if (uncovered.Contains((a, row[a], b, row[b]))) g++;
        return g;
    }
}
