//! Human sizes and rates, as the command line, config files and scenarios write them, and in output.

/// Parses a byte size: a plain number of bytes, or a number with a unit. Binary units (`KiB`,
/// `MiB`, `GiB`, `TiB`, and the short `K`, `M`, `G`, `T`) are powers of 1024; decimal units
/// (`KB`, `MB`, `GB`, `TB`) are powers of 1000. Case does not matter.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: use bytes, or a unit as in 4MiB or 10GB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
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
                "{text:?} has an unknown unit {other:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 || bytes.fract() != 0.0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a bandwidth into bytes per second. Bit rates are decimal and end in `bit`
/// (`500kbit`, `100mbit`, `10gbit`); byte rates are a [size](parse_size) per second (`12MiB/s`,
/// `50MB/s`); a plain number is bytes per second. Case does not matter.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let bad = || format!("{text:?} is not a rate: use forms like 100mbit, 1gbit or 12MiB/s");
    if let Some(number) = lower.strip_suffix("bit") {
        let (number, multiplier) = match number.chars().last() {
            Some('k') => (&number[..number.len() - 1], 1e3),
            Some('m') => (&number[..number.len() - 1], 1e6),
            Some('g') => (&number[..number.len() - 1], 1e9),
            _ => (number, 1.0),
        };
        let bits: f64 = number.trim().parse().map_err(|_| bad())?;
        let bytes = bits * multiplier / 8.0;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        return Ok(bytes as u64);
    }
    let size = lower.strip_suffix("/s").unwrap_or(&lower);
    let bytes = parse_size(size).map_err(|_| bad())?;
    if bytes == 0 {
        return Err(format!(
            "{text:?} is zero: leave the limit out for no limit"
        ));
    }
    Ok(bytes)
}

/// Formats bytes with a binary unit, e.g. `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_bits_and_bytes() {
        assert_eq!(parse_rate("100mbit"), Ok(12_500_000));
        assert_eq!(parse_rate("1Gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(62_500));
        assert_eq!(parse_rate("12MiB/s"), Ok(12 * 1024 * 1024));
        assert_eq!(parse_rate("50MB/s"), Ok(50_000_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        for bad in ["", "fast", "100mbps", "-5mbit", "0", "0mbit", "1.5x/s"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("0.5B").is_err());
    }

    #[test]
    fn sizes_print() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
