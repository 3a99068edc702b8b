//! Resource limits on a process and its tree: memory, CPU share, number of
//! processes, open files. The domain holds what was asked for and how it
//! reads and prints; which mechanism enforces each limit (a cgroup or
//! `setrlimit`) is the OS adapter's to find out.

use serde::{Deserialize, Serialize};

/// The most `cpu_max` may be: a hundred CPUs' worth.
pub const MAX_CPU_PERCENT: u32 = 10_000;

/// What a process (and every process it starts) may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory, in bytes: the tree is killed when it needs more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// CPU time, as a percentage of one CPU (200: two CPUs' worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<u32>,
    /// How many processes (and threads) the tree may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
    /// How many files each process may hold open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
}

impl ResourceLimits {
    /// Whether no limit is set.
    pub const fn is_empty(&self) -> bool {
        self.memory_max.is_none()
            && self.cpu_max.is_none()
            && self.pids_max.is_none()
            && self.nofile.is_none()
    }

    /// Each limit set, as `(its option's name, its value as text)`, in a
    /// fixed order: `("memory_max", "256 MiB")`.
    pub fn each(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(("memory_max", size_text(m)));
        }
        if let Some(c) = self.cpu_max {
            out.push(("cpu_max", format!("{c}%")));
        }
        if let Some(p) = self.pids_max {
            out.push(("pids_max", p.to_string()));
        }
        if let Some(n) = self.nofile {
            out.push(("nofile", n.to_string()));
        }
        out
    }
}

impl std::fmt::Display for ResourceLimits {
    /// `memory 256 MiB, cpu 50%, pids 64, open files 1024`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self
            .each()
            .into_iter()
            .map(|(name, value)| format!("{} {value}", limit_word(name)))
            .collect();
        f.write_str(&words.join(", "))
    }
}

/// How a limit is called in text for people: `memory`, `cpu`, `pids`,
/// `open files`.
pub fn limit_word(name: &str) -> &'static str {
    match name {
        "memory_max" => "memory",
        "cpu_max" => "cpu",
        "pids_max" => "pids",
        _ => "open files",
    }
}

/// Why a process ended, beyond its exit status, when a limit ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    /// The kernel killed it for needing more than its memory limit.
    Memory {
        /// The limit, in bytes.
        max: u64,
    },
}

impl std::fmt::Display for LimitHit {
    /// `memory limit (256 MiB)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory { max } => write!(f, "memory limit ({})", size_text(*max)),
        }
    }
}

/// Limits as a front end receives them: text, each named as that front end
/// names it (`--memory-max` on the command line, `memory_max` elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsAsked<'a> {
    /// `memory_max`: a size (`512M`, `2G`, `1048576`).
    pub memory_max: Option<&'a str>,
    /// `cpu_max`: a percentage of one CPU (`50`, `50%`, `200%`).
    pub cpu_max: Option<&'a str>,
    /// `pids_max`: a count.
    pub pids_max: Option<&'a str>,
    /// `nofile`: a count.
    pub nofile: Option<&'a str>,
}

impl LimitsAsked<'_> {
    /// The limits asked for, if any.
    ///
    /// # Errors
    /// A value that does not read, named with `flag` before the option's
    /// name (`"--"` for the command line, `""` elsewhere).
    pub fn limits(&self, flag: &str) -> Result<Option<ResourceLimits>, String> {
        let name = |n: &str| {
            if flag.is_empty() {
                n.to_owned()
            } else {
                format!("{flag}{}", n.replace('_', "-"))
            }
        };
        let count = |text: &str, what: &str, max: u64| -> Result<u64, String> {
            match text.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{}: {text:?} is not a whole number from 1 to {max}",
                    name(what)
                )),
            }
        };
        let limits = ResourceLimits {
            memory_max: self
                .memory_max
                .map(|t| parse_size(t).map_err(|e| format!("{}: {e}", name("memory_max"))))
                .transpose()?,
            cpu_max: self
                .cpu_max
                .map(|t| {
                    let number = t.trim().strip_suffix('%').unwrap_or(t.trim());
                    count(number, "cpu_max", MAX_CPU_PERCENT.into())
                        .map(|n| u32::try_from(n).unwrap_or(MAX_CPU_PERCENT))
                })
                .transpose()?,
            pids_max: self
                .pids_max
                .map(|t| {
                    count(t, "pids_max", u32::MAX.into()).map(|n| u32::try_from(n).unwrap_or(1))
                })
                .transpose()?,
            nofile: self
                .nofile
                .map(|t| count(t, "nofile", 1 << 30))
                .transpose()?,
        };
        Ok((!limits.is_empty()).then_some(limits))
    }
}

/// The least `memory_max` may be: less and the program cannot even start.
pub const MIN_MEMORY: u64 = 1 << 20;

/// Reads a size: a number of bytes, or a number with a binary unit
/// (`K`, `M`, `G`, `T`, with or without `iB` or `B`; `1.5G`).
///
/// # Errors
/// Text that is not such a size, or a size under 1 MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: a number of bytes, or with K, M, G or T (512M, 2G)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            format!("{text:?} is not a size: a number of bytes, or with K, M, G or T (512M, 2G)")
        })?;
    let bytes = value * 2f64.powi(shift);
    if bytes >= 2f64.powi(62) {
        return Err(format!("{text:?} is too large"));
    }
    // In range, checked above; a fraction of a byte is dropped.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes = bytes as u64;
    if bytes < MIN_MEMORY {
        return Err(format!(
            "{text:?} is under 1 MiB, too little for any program"
        ));
    }
    Ok(bytes)
}

/// A size for people: `256 MiB`, `1.5 GiB`, `1000000 bytes`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        let one = 1u64 << shift;
        if bytes >= one {
            if bytes.is_multiple_of(one) {
                return format!("{} {unit}", bytes / one);
            }
            if bytes.checked_mul(10).is_some_and(|b| b.is_multiple_of(one)) {
                return format!("{}.{} {unit}", bytes / one, (bytes * 10 / one) % 10);
            }
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_units_and_print_back() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2097152"), Ok(2 << 20));
        assert_eq!(size_text(256 << 20), "256 MiB");
        assert_eq!(size_text(3 << 29), "1.5 GiB");
        assert_eq!(size_text(1_000_001), "1000001 bytes");
        for bad in ["", "M", "12X", "-5M", "0", "1K", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_read_and_name_the_option_at_fault() {
        let asked = LimitsAsked {
            memory_max: Some("64M"),
            cpu_max: Some("50%"),
            pids_max: Some("32"),
            nofile: Some("256"),
        };
        let l = asked.limits("--").expect("limits").expect("some");
        assert_eq!(
            l.to_string(),
            "memory 64 MiB, cpu 50%, pids 32, open files 256"
        );
        assert_eq!(LimitsAsked::default().limits("--"), Ok(None));
        let e = LimitsAsked {
            pids_max: Some("0"),
            ..LimitsAsked::default()
        }
        .limits("--")
        .expect_err("0");
        assert!(e.starts_with("--pids-max:"), "{e}");
        let e = LimitsAsked {
            memory_max: Some("lots"),
            ..LimitsAsked::default()
        }
        .limits("")
        .expect_err("lots");
        assert!(e.starts_with("memory_max:"), "{e}");
        assert_eq!(
            LimitHit::Memory { max: 64 << 20 }.to_string(),
            "memory limit (64 MiB)"
        );
    }
}
