using FlashDmAttn.Validation;

namespace FlashDmAttn.Api;

/// <summary>
/// The kernel's view of a mask or bias of logical shape (B, H, Lq, Lk): batch, head, query and key dims may be
/// broadcast (size 1); the head dim may also be Hkv (shared by the query heads of a group). An operand broadcast over
/// keys (<see cref="KeyBroadcast"/>) holds one value per row: the attention kernels run without it and
/// <see cref="Kernels.Forward.RowBroadcastKernel"/> applies it to the finished rows.
/// </summary>
internal readonly record struct BroadcastOperand(long StrideB, long StrideH, long StrideQ, int HeadDiv, bool KeyBroadcast)
{
    public static BroadcastOperand Resolve(string name, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, long viewLength,
        long batch, long heads, long kvHeads, long seqQ, long seqK)
    {
        Check.Rank(shape, 4, "(batch, heads, seqlen_q, seqlen_k)", name);
        Check.Layout(shape, strides, viewLength, name);
        if (shape[0] != batch && shape[0] != 1)
            throw new ArgumentException($"{name}: expected batch dim {batch} or 1, got {shape[0]} in shape {Check.Dims(shape)}", name);
        if (shape[1] != heads && shape[1] != kvHeads && shape[1] != 1)
            throw new ArgumentException($"{name}: expected head dim {heads} (heads), {kvHeads} (kv heads) or 1, got {shape[1]} in shape {Check.Dims(shape)}", name);
        if (shape[2] != seqQ && shape[2] != 1)
            throw new ArgumentException($"{name}: expected seqlen_q dim {seqQ} or 1, got {shape[2]} in shape {Check.Dims(shape)}", name);
        if (shape[3] != seqK && shape[3] != 1)
            throw new ArgumentException($"{name}: expected seqlen_k dim {seqK} or 1, got {shape[3]} in shape {Check.Dims(shape)}", name);
        int headDiv = shape[1] == heads ? 1 : shape[1] == kvHeads ? (int)(heads / kvHeads) : 1;
        return new BroadcastOperand(
            shape[0] == 1 ? 0 : strides[0],
            shape[1] == 1 ? 0 : strides[1],
            shape[2] == 1 ? 0 : strides[2],
            headDiv,
            // With one key the operand is also a full one: the kernels take it directly.
            shape[3] == 1 && seqK != 1);
    }
}
