//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `1e3`) as numbers.
//! k8s-openapi keeps them as strings; the agent needs millicores and bytes.

/// The value in thousandths (`"250m"` → 250, `"2"` → 2000, `"1Ki"` → 1_024_000).
pub fn milli(q: &str) -> Result<u128, String> {
    let q = q.trim();
    let bad = || format!("invalid quantity {q:?}");
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    // Scale everything by 10^9 first so `m` and fractions stay exact.
    let digits = format!("{int}{frac}");
    let mut value: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    let frac_len = frac.len() as u32;
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1000u128.pow(2), 1),
        "M" => (1000u128.pow(3), 1),
        "G" => (1000u128.pow(4), 1),
        "T" => (1000u128.pow(5), 1),
        "P" => (1000u128.pow(6), 1),
        "E" => (1000u128.pow(7), 1),
        "Ki" => (1000 * (1u128 << 10), 1),
        "Mi" => (1000 * (1u128 << 20), 1),
        "Gi" => (1000 * (1u128 << 30), 1),
        "Ti" => (1000 * (1u128 << 40), 1),
        "Pi" => (1000 * (1u128 << 50), 1),
        "Ei" => (1000 * (1u128 << 60), 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: u32 = s[1..].parse().map_err(|_| bad())?;
            (1000 * 10u128.checked_pow(exp).ok_or_else(bad)?, 1)
        }
        _ => return Err(bad()),
    };
    value = value.checked_mul(multiplier).ok_or_else(bad)?;
    let scale = 10u128.checked_pow(frac_len).ok_or_else(bad)? * divisor;
    // Rounded up, as Kubernetes does for sub-milli remainders.
    Ok(value.div_ceil(scale))
}

/// The value in whole units, rounded up (`"64Mi"` → 67108864, `"100m"` → 1).
pub fn units(q: &str) -> Result<u128, String> {
    Ok(milli(q)?.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_spellings() {
        assert_eq!(milli("250m").unwrap(), 250);
        assert_eq!(milli("2").unwrap(), 2000);
        assert_eq!(milli("0.5").unwrap(), 500);
        assert_eq!(milli("1.5").unwrap(), 1500);
        assert_eq!(units("64Mi").unwrap(), 64 << 20);
        assert_eq!(units("1G").unwrap(), 1_000_000_000);
        assert_eq!(units("1e3").unwrap(), 1000);
        assert_eq!(units("100m").unwrap(), 1);
        assert!(milli("abc").is_err());
        assert!(milli("1Xi").is_err());
        assert!(milli("").is_err());
    }
}
