//! Byte codecs behind one small trait, so the wire and state formats can change without touching
//! operators. State stores use [`Bincode`] (bincode 2 over serde); wire formats typically use [`Json`].

use serde::{de::DeserializeOwned, Serialize};

/// Encodes and decodes values of `T`.
pub trait Codec<T>: Send + Sync {
    /// Appends the encoding of `value` to `out`.
    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String>;
    /// Decodes a value from `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<T, String>;
    /// Encodes into a fresh buffer.
    fn encode(&self, value: &T) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }
}

/// Compact binary encoding (bincode 2, standard config: varint integers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl<T: Serialize + DeserializeOwned> Codec<T> for Bincode {
    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, String> {
        let (v, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(v)
    }
}

/// JSON (serde_json).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_round_trip_and_trailing_bytes() {
        let v: (String, i64, Vec<u32>) = ("k".into(), -5, vec![1, 2]);
        let mut b = Codec::<(String, i64, Vec<u32>)>::encode(&Bincode, &v).expect("encode");
        let back: (String, i64, Vec<u32>) = Bincode.decode(&b).expect("decode");
        assert_eq!(back, v);
        b.push(0);
        assert!(Codec::<(String, i64, Vec<u32>)>::decode(&Bincode, &b).is_err());
    }

    #[test]
    fn json_rejects_garbage() {
        assert!(Codec::<u32>::decode(&Json, b"{nope").is_err());
        assert_eq!(Codec::<u32>::decode(&Json, b"7"), Ok(7));
    }
}
