namespace FlashDmAttn.Tests.Support;

/// <summary>Which entry point a case goes through.</summary>
public enum ApiPath { Dense, QkvPacked, KvPacked, Varlen, Paged }

/// <summary>How a mask is stored.</summary>
public enum MaskKind { Byte, Bool, Dtype }

/// <summary>
/// One point of the parameter space. Mask/bias shapes use 0 for "full size" and 1 for "broadcast"; the head entry
/// may also be -1 for "kv heads". Lq/Lk are the lengths (for varlen: the longest sequence; with UniformQ every
/// sequence has Lq queries, the key lengths still vary).
/// </summary>
public sealed record AttentionCase(
    string DType, int Batch, int Lq, int Lk, int Heads, int KvHeads, int HeadDim,
    bool Causal = false, int[]? MaskShape = null, MaskKind MaskKind = MaskKind.Byte, int[]? BiasShape = null,
    float? Softcap = null, float? Scale = null, bool Lse = true, bool Strided = false,
    ApiPath Path = ApiPath.Dense, int PageSize = 16, bool UniformQ = false)
{
    public override string ToString()
    {
        string Shape(int[]? s) => s is null ? "-" : string.Join("x", s.Select(x => x == 0 ? "F" : x == -1 ? "Hkv" : x.ToString()));
        return $"{Path} {DType} B{Batch} Lq{Lq} Lk{Lk} H{Heads}/{KvHeads} D{HeadDim}{(Causal ? " causal" : "")}" +
               $" mask:{Shape(MaskShape)}{(MaskShape is null ? "" : "/" + MaskKind)} bias:{Shape(BiasShape)}" +
               $"{(Softcap is null ? "" : " cap" + Softcap)}{(Strided ? " strided" : "")}{(UniformQ ? " uniform-q" : "")}";
    }
}
