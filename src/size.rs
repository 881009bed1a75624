//! Human-readable byte sizes for configuration: `"64 MiB"`, `"512KB"`, `"1g"`, or a plain integer.
//!
//! Binary suffixes (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024; decimal ones (`KB`, `MB`, `GB`, `TB`)
//! are powers of 1000; a single letter (`k`, `m`, `g`, `t`) is taken as binary, like most tools do.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, read from `"64 MiB"`-style strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num = num.replace('_', "");
        if num.is_empty() {
            return Err(format!(
                "`{s}` is not a size (expected e.g. \"64 MiB\" or \"512KB\")"
            ));
        }
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "`{s}` has an unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ))
            }
        };
        if !num.contains('.') {
            // A whole number: exact, however large (an f64 is not past 2^53).
            let value: u64 = num.parse().map_err(|_| format!("`{s}` is out of range"))?;
            return value
                .checked_mul(mult)
                .map(ByteSize)
                .ok_or_else(|| format!("`{s}` is out of range"));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (bad number `{num}`)"))?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

const UNITS: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

impl ByteSize {
    /// The size in the largest binary unit that holds it exactly, else in bytes: `"64 MiB"`,
    /// `"918525215 B"`. What a configuration prints with (unlike [`fmt::Display`], which rounds
    /// to one decimal for people), so that it reads back as the same number of bytes.
    pub fn exact(self) -> String {
        UNITS
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
            .map_or_else(
                || format!("{} B", self.0),
                |(name, size)| format!("{} {name}", self.0 / size),
            )
    }
}

/// In the largest binary unit, to one decimal when it is not a whole number of them (`"4.7 GiB"`);
/// see [`ByteSize::exact`] for the form that reads back the same.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, size) in UNITS {
            if self.0 >= size {
                return if self.0.is_multiple_of(size) {
                    write!(f, "{} {name}", self.0 / size)
                } else {
                    write!(f, "{:.1} {name}", self.0 as f64 / size as f64)
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.exact())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64 MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!("64 MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(64));
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(64));
        assert_eq!("512KB".parse::<ByteSize>().unwrap(), ByteSize(512_000));
        assert_eq!("1g".parse::<ByteSize>().unwrap(), ByteSize::gib(1));
        assert_eq!("1.5 KiB".parse::<ByteSize>().unwrap(), ByteSize(1536));
        assert_eq!("1_000".parse::<ByteSize>().unwrap(), ByteSize(1000));
    }

    #[test]
    fn a_bad_unit_is_named_in_the_error() {
        let err = "12 parsecs".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("parsecs"), "{err}");
        assert!("MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn a_size_serializes_exactly_so_that_a_printed_config_reads_back_the_same_size() {
        // The config fuzz target's input `[wal]\nsegment_size = "000918525215"`: 918525215 bytes
        // printed as "876.0 MiB", which reads back as 918552576 bytes (and then prints "876 MiB").
        for bytes in [
            918_525_215,
            1536,
            1000,
            5_000_000_000,
            0,
            1,
            1 << 20,
            (1 << 60) + 1,
            u64::MAX,
        ] {
            let printed = serde_json::to_string(&ByteSize(bytes)).unwrap();
            let back: ByteSize = serde_json::from_str(&printed).unwrap();
            assert_eq!(back, ByteSize(bytes), "{bytes} printed as {printed}");
        }
        assert_eq!(
            serde_json::to_string(&ByteSize::mib(64)).unwrap(),
            "\"64 MiB\""
        );
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
        assert_eq!(ByteSize(1024).to_string(), "1 KiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(5_000_000_000).to_string(), "4.7 GiB");
    }
}
