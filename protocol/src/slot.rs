//! Key → hash slot mapping (CRC16-XMODEM mod 16384, with `{hash tags}`).

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// The part of `key` that is hashed: the content of the first `{...}` if non-empty, else the key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The cluster hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) & 0x3fff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        let cases: &[(&str, u16)] = &[
            ("foo", 12182),
            ("hello", 866),
            ("key1", 9189),
            ("key2", 4998),
            ("key3", 935),
            ("key4", 13120),
            ("KEY1", 5259),
            ("master", 5565),
            ("master1", 170),
            ("master2", 12489),
        ];
        for (k, s) in cases {
            assert_eq!(key_slot(k.as_bytes()), *s, "slot of {k}");
        }
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
    }
}
