//! Kafka's default key partitioner: 32-bit murmur2 over the key bytes, made non-negative, modulo the
//! partition count. Keys written by a Kafka producer and by this log land in the same partition.

/// Kafka's `org.apache.kafka.common.utils.Utils.murmur2`: MurmurHash2 (32-bit) with seed `0x9747b28c`,
/// computed in Java's wrapping `int` arithmetic.
///
/// ```
/// assert_eq!(rtb_stream::log::murmur2(b"foobar"), -790_332_482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java keeps the length in an `int`; the hash only ever sees its low 32 bits.
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;

    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java reads the tail as signed bytes and masks each with `& 0xff`, i.e. as unsigned bytes; the
    // `switch` falls through from case 3 to case 1, and only a non-empty tail multiplies by `m`.
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }

    // Java's `>>>` is a logical shift: on `u32`, `>>` is the same.
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`: `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// `partitions` must be at least 1; 0 is treated as 1 (every key maps to partition 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    const KAFKA_VECTORS: &[(&str, i32)] = &[
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ("abc", 479_470_107),
        ("", 275_646_681),
    ];

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        for (input, expected) in KAFKA_VECTORS {
            assert_eq!(murmur2(input.as_bytes()), *expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn murmur2_covers_every_tail_length() {
        // Lengths 0..=3 modulo 4 all appear in the Kafka vectors ("" 0, "abc" 3, "21" 2, "foobar" 2,
        // 24 → 0, 26 → 2, 48 → 0); add a 1-byte tail and a byte above 0x7f, which Java sees as negative.
        let lens: Vec<usize> = KAFKA_VECTORS.iter().map(|(s, _)| s.len() % 4).collect();
        assert!(lens.contains(&0) && lens.contains(&2) && lens.contains(&3));
        // Reference values computed by hand-translating Java's loop with signed bytes (see
        // `java_reference` below); the point is that bytes >= 0x80 are masked, not sign-extended.
        for data in [&b"x"[..], &[0xff], &[0x80, 0x01, 0xfe, 0x7f, 0x90], &[0xc3, 0xa9, 0xff]] {
            assert_eq!(murmur2(data), java_reference(data), "{data:?}");
        }
    }

    /// A literal transcription of Java's `Utils.murmur2`, with `i8` bytes and `i32` arithmetic.
    fn java_reference(bytes: &[u8]) -> i32 {
        let data: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let length = data.len() as i32;
        let seed = 0x9747_b28c_u32 as i32;
        let m = 0x5bd1_e995_i32;
        let r = 24;
        let mut h = seed ^ length;
        let length4 = length / 4;
        for i in 0..length4 {
            let i4 = (i * 4) as usize;
            let mut k = (i32::from(data[i4]) & 0xff)
                + ((i32::from(data[i4 + 1]) & 0xff) << 8)
                + ((i32::from(data[i4 + 2]) & 0xff) << 16)
                + ((i32::from(data[i4 + 3]) & 0xff) << 24);
            k = k.wrapping_mul(m);
            k ^= ((k as u32) >> r) as i32;
            k = k.wrapping_mul(m);
            h = h.wrapping_mul(m);
            h ^= k;
        }
        let base = (length & !3) as usize;
        let rem = length % 4;
        if rem == 3 {
            h ^= (i32::from(data[base + 2]) & 0xff) << 16;
        }
        if rem >= 2 {
            h ^= (i32::from(data[base + 1]) & 0xff) << 8;
        }
        if rem >= 1 {
            h ^= i32::from(data[base]) & 0xff;
            h = h.wrapping_mul(m);
        }
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(m);
        h ^= ((h as u32) >> 15) as i32;
        h
    }

    #[test]
    fn partition_is_positive_hash_modulo_count() {
        // -790332482 & 0x7fffffff = 1357151166.
        assert_eq!(partition_for_key(b"foobar", 8), 1_357_151_166 % 8);
        assert_eq!(partition_for_key(b"foobar", 3), 1_357_151_166 % 3);
        // "abc" hashes positive: the mask is a no-op.
        assert_eq!(partition_for_key(b"abc", 7), 479_470_107 % 7);
    }

    #[test]
    fn partitioning_is_stable_and_in_range() {
        for n in [1_u32, 2, 3, 8, 13] {
            for i in 0..500 {
                let key = format!("key-{i}");
                let p = partition_for_key(key.as_bytes(), n);
                assert!(p < n);
                assert_eq!(p, partition_for_key(key.as_bytes(), n), "deterministic");
            }
        }
    }

    #[test]
    fn partitioning_spreads_keys() {
        let mut counts = [0_u32; 8];
        for i in 0..8_000 {
            counts[partition_for_key(format!("user-{i}").as_bytes(), 8) as usize] += 1;
        }
        for c in counts {
            assert!((800..1_200).contains(&c), "skewed partitioning: {counts:?}");
        }
    }

    #[test]
    fn zero_partitions_maps_to_partition_zero() {
        assert_eq!(partition_for_key(b"anything", 0), 0);
    }
}
