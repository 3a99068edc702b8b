//! A process run under a pseudo-terminal: its size, and how it reads.

use serde::{Deserialize, Serialize};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for TtySize {
    /// 80 columns by 24 rows, the size terminals have started at since the VT100.
    fn default() -> Self {
        TtySize { cols: 80, rows: 24 }
    }
}

impl TtySize {
    /// The terminal a front end was asked for: `tty` (on or off, if given)
    /// and `tty_size` (text; it implies `tty`), the size `default` gives
    /// when none is. Options are named with `flag` before them (`"--"` on
    /// the command line, as `--tty-size`; `""` elsewhere, as `tty_size`).
    ///
    /// # Errors
    /// A size that does not read, or one given with `tty` off.
    pub fn asked(
        tty: Option<bool>,
        size: Option<&str>,
        default: impl FnOnce() -> TtySize,
        flag: &str,
    ) -> Result<Option<TtySize>, String> {
        let name = |n: &str| {
            if flag.is_empty() {
                n.to_owned()
            } else {
                format!("{flag}{}", n.replace('_', "-"))
            }
        };
        match (tty, size) {
            (Some(false), Some(_)) => Err(format!("{} needs {}", name("tty_size"), name("tty"))),
            (_, Some(size)) => size
                .parse()
                .map(Some)
                .map_err(|e| format!("{}: {e}", name("tty_size"))),
            (Some(true), None) => Ok(Some(default())),
            (_, None) => Ok(None),
        }
    }
}

impl std::fmt::Display for TtySize {
    /// `120x40`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

impl std::str::FromStr for TtySize {
    type Err = String;

    /// `COLSxROWS`: `120x40`, each from 1 to 10,000.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a terminal size: COLUMNSxROWS, as 120x40");
        let (cols, rows) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let cell = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(bad)
        };
        Ok(TtySize {
            cols: cell(cols)?,
            rows: cell(rows)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_columns_by_rows() {
        assert_eq!(
            "120x40".parse(),
            Ok(TtySize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(" 80X24 ".parse(), Ok(TtySize::default()));
        for bad in ["", "120", "0x40", "120x", "ax b", "120x40x2", "99999x1"] {
            assert!(bad.parse::<TtySize>().is_err(), "{bad}");
        }
        assert_eq!(
            TtySize {
                cols: 120,
                rows: 40
            }
            .to_string(),
            "120x40"
        );
    }

    #[test]
    fn a_front_end_asks_for_a_terminal_by_its_own_names() {
        let wide = || TtySize {
            cols: 200,
            rows: 50,
        };
        assert_eq!(TtySize::asked(None, None, wide, "--"), Ok(None));
        assert_eq!(
            TtySize::asked(Some(true), None, wide, "--"),
            Ok(Some(wide()))
        );
        assert_eq!(
            TtySize::asked(None, Some("100x30"), wide, ""),
            Ok(Some(TtySize {
                cols: 100,
                rows: 30
            }))
        );
        let e = TtySize::asked(None, Some("wide"), wide, "--").expect_err("wide");
        assert!(e.starts_with("--tty-size:"), "{e}");
        assert_eq!(
            TtySize::asked(Some(false), Some("80x24"), wide, ""),
            Err("tty_size needs tty".into())
        );
    }
}
