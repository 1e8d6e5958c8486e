using System.Security.Cryptography;
using System.Text;

namespace FlashDmAttn.Kernels.Caching;

/// <summary>
/// Compiled kernels kept on disk across processes, one file per key. An entry is the key's text (everything that changes
/// the code), the payload (what the compiler produced), and a SHA-256 of both: a truncated, corrupt or foreign entry
/// (another key's file under this name) reads as a miss and is replaced by the next write. Writes go to a temporary
/// file in the same directory, then are renamed over the entry, so concurrent writers (threads or processes) leave one
/// complete entry; a reader sees the old file or the new one, never a partial one.
/// </summary>
internal sealed class KernelDiskCache
{
    private static readonly byte[] Magic = "FDMK1\n"u8.ToArray();

    public KernelDiskCache(string directory)
    {
        Directory = directory;
    }

    /// <summary>Where the entries live.</summary>
    public string Directory { get; }

    /// <summary>The cache in <see cref="DefaultDirectory"/>.</summary>
    public static KernelDiskCache Default { get; } = new(DefaultDirectory);

    /// <summary>The per-user default: the platform's local application-data folder, FlashDmAttn/kernels.</summary>
    public static string DefaultDirectory
        => Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify),
            "FlashDmAttn", "kernels");

    /// <summary>The entry file of a key: the key text's SHA-256 in hex.</summary>
    public string PathOf(string keyText) => Path.Combine(Directory, Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(keyText))) + ".kernel");

    /// <summary>The payload stored under <paramref name="keyText"/>, or null when there is no valid entry.</summary>
    public byte[]? TryRead(string keyText)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(PathOf(keyText));
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
        return Decode(bytes, keyText);
    }

    /// <summary>Stores <paramref name="payload"/> under <paramref name="keyText"/> (temporary file, then rename). An
    /// I/O failure (read-only or full disk) leaves the cache as it was: the cache is an optimisation.</summary>
    public bool Write(string keyText, ReadOnlySpan<byte> payload)
    {
        string path = PathOf(keyText);
        string temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            File.WriteAllBytes(temp, Encode(keyText, payload));
            File.Move(temp, path, overwrite: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (Exception d) when (d is IOException or UnauthorizedAccessException) { }
            return false;
        }
    }

    /// <summary>magic, key length, key, payload length, payload, SHA-256(key ‖ payload).</summary>
    internal static byte[] Encode(string keyText, ReadOnlySpan<byte> payload)
    {
        byte[] key = Encoding.UTF8.GetBytes(keyText);
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(key.Length);
            w.Write(key);
            w.Write((long)payload.Length);
            w.Write(payload);
            w.Write(Checksum(key, payload));
        }
        return ms.ToArray();
    }

    /// <summary>The payload of an encoded entry for <paramref name="keyText"/>, or null if the bytes are not one.</summary>
    internal static byte[]? Decode(ReadOnlySpan<byte> bytes, string keyText)
    {
        byte[] key = Encoding.UTF8.GetBytes(keyText);
        int pos = 0;
        if (bytes.Length < Magic.Length + 4 || !bytes[..Magic.Length].SequenceEqual(Magic)) return null;
        pos += Magic.Length;
        int keyLength = BitConverter.ToInt32(bytes[pos..]);
        pos += 4;
        if (keyLength != key.Length || bytes.Length - pos < keyLength + 8) return null;
        if (!bytes.Slice(pos, keyLength).SequenceEqual(key)) return null;
        pos += keyLength;
        long payloadLength = BitConverter.ToInt64(bytes[pos..]);
        pos += 8;
        if (payloadLength < 0 || bytes.Length - pos != payloadLength + SHA256.HashSizeInBytes) return null;
        var payload = bytes.Slice(pos, (int)payloadLength);
        if (!bytes[(pos + (int)payloadLength)..].SequenceEqual(Checksum(key, payload))) return null;
        return payload.ToArray();
    }

    private static byte[] Checksum(ReadOnlySpan<byte> key, ReadOnlySpan<byte> payload)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(key);
        sha.AppendData(payload);
        return sha.GetHashAndReset();
    }
}
