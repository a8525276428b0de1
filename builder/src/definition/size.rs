//! Sizes as users write them: `4096`, `"512M"`, `"2G"`, `"auto"`, `"20%"`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A byte count, written as an integer or a string with a binary suffix (K, M, G, T).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A size string that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a size (examples: 4096, \"512M\", \"2G\")")]
pub struct BadSize(String);

impl FromStr for ByteSize {
    type Err = BadSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSize(s.to_string());
        let t = s.trim();
        let (number, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(bad()),
        };
        if number.is_empty() {
            return Err(bad());
        }
        if let Ok(n) = number.parse::<u64>() {
            return n.checked_mul(1u64 << shift).map(ByteSize).ok_or_else(bad);
        }
        let f: f64 = number.parse().map_err(|_| bad())?;
        let bytes = f * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
        for (unit, shift) in UNITS {
            if self.0 >= 1 << shift && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 4096, \"512M\" or \"2G\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom("a size cannot be negative"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The filesystem size: computed from the contents, or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeSpec {
    /// Contents plus metadata plus the free share.
    #[default]
    Auto,
    /// Exactly this many bytes.
    Fixed(ByteSize),
}

impl<'de> Deserialize<'de> for SizeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a size such as \"2G\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeSpec, E> {
                SizeVisitor.visit_i64(v).map(SizeSpec::Fixed)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeSpec, E> {
                Ok(SizeSpec::Fixed(ByteSize(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeSpec, E> {
                if v.eq_ignore_ascii_case("auto") {
                    Ok(SizeSpec::Auto)
                } else {
                    v.parse().map(SizeSpec::Fixed).map_err(E::custom)
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Free space left in an automatically sized filesystem: a share of the contents or a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpace {
    /// This percentage of the used space, added on top.
    Percent(f64),
    /// This many bytes, added on top.
    Bytes(ByteSize),
}

impl Default for FreeSpace {
    fn default() -> Self {
        FreeSpace::Percent(25.0)
    }
}

impl FreeSpace {
    /// The free bytes to add to `used` bytes.
    pub fn bytes_for(self, used: u64) -> u64 {
        match self {
            FreeSpace::Percent(p) => (used as f64 * p / 100.0).ceil() as u64,
            FreeSpace::Bytes(b) => b.0,
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FreeSpace;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as \"25%\" or a size such as \"256M\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FreeSpace, E> {
                SizeVisitor.visit_i64(v).map(FreeSpace::Bytes)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FreeSpace, E> {
                Ok(FreeSpace::Bytes(ByteSize(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FreeSpace, E> {
                if let Some(p) = v.trim().strip_suffix('%') {
                    let p: f64 = p
                        .trim()
                        .parse()
                        .map_err(|_| E::custom(format!("{v:?} is not a percentage")))?;
                    if !(0.0..=10_000.0).contains(&p) {
                        return Err(E::custom(format!(
                            "{v:?}: the percentage must be 0 to 10000"
                        )));
                    }
                    Ok(FreeSpace::Percent(p))
                } else {
                    v.parse().map(FreeSpace::Bytes).map_err(E::custom)
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!("512M".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("1.5G".parse::<ByteSize>().unwrap(), ByteSize(3 << 29));
        assert_eq!("2 GiB".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert!("12Q".parse::<ByteSize>().is_err());
        assert!("M".parse::<ByteSize>().is_err());
        assert!("99999999999T".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(512 << 20).to_string(), "512M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[derive(Deserialize)]
    struct T {
        size: SizeSpec,
        free: FreeSpace,
    }

    #[test]
    fn parses_specs() {
        let t: T = toml::from_str("size = \"auto\"\nfree = \"20%\"").unwrap();
        assert_eq!(t.size, SizeSpec::Auto);
        assert_eq!(t.free.bytes_for(1000), 200);
        let t: T = toml::from_str("size = \"1G\"\nfree = \"64M\"").unwrap();
        assert_eq!(t.size, SizeSpec::Fixed(ByteSize(1 << 30)));
        assert_eq!(t.free.bytes_for(1), 64 << 20);
        assert!(toml::from_str::<T>("size = -1\nfree = 0").is_err());
    }
}
