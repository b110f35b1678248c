//! Reading variables: every problem is collected, none stops the reading,
//! and no value that may hold a secret is ever echoed.

use std::fmt;

/// Every invalid or missing setting, with the variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for (var, problem) in &self.problems {
            writeln!(f, "  {var}: {problem}")?;
        }
        write!(f, "See the configuration table in README.md.")
    }
}

impl std::error::Error for SettingsError {}

/// Reads variables through `lookup`, collecting problems instead of stopping
/// at the first.
pub(crate) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) problems: Vec<(String, String)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The value, unless unset or blank.
    pub(crate) fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    pub(crate) fn problem(&mut self, var: &str, message: impl Into<String>) {
        self.problems.push((var.to_owned(), message.into()));
    }

    pub(crate) fn parsed<T: std::str::FromStr>(&mut self, var: &str, default: T, what: &str) -> T {
        match self.raw(var) {
            None => default,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                self.problem(var, format!("must be {what} (got {v:?})"));
                default
            }),
        }
    }

    /// A number within `min..=max`; outside it is a problem, not a silent clamp.
    pub(crate) fn ranged<T>(&mut self, var: &str, default: T, min: T, max: T, unit: &str) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let what = format!("a number of {unit} from {min} to {max}");
        let v = self.parsed(var, default, &what);
        if v < min || v > max {
            self.problem(var, format!("must be {what} (got {v})"));
            return default;
        }
        v
    }

    pub(crate) fn bool(&mut self, var: &str, default: bool) -> bool {
        match self.raw(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problem(var, format!("must be true or false (got {v:?})"));
                default
            }
        }
    }

    /// A URL with one of `schemes`. The value is never echoed: it may hold a password.
    pub(crate) fn url(&mut self, var: &str, default: &str, schemes: &[&str]) -> String {
        let value = self.string(var, default);
        match url::Url::parse(&value) {
            Ok(u) if schemes.contains(&u.scheme()) && u.has_host() => {}
            Ok(_) | Err(_) => self.problem(
                var,
                format!(
                    "must be a {} URL",
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
        }
        value
    }

    /// `secs` seconds within `min..=max` seconds.
    pub(crate) fn seconds(
        &mut self,
        var: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> std::time::Duration {
        std::time::Duration::from_secs(self.ranged(var, default, min, max, "seconds"))
    }

    /// Milliseconds within `min..=max`.
    pub(crate) fn millis(
        &mut self,
        var: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> std::time::Duration {
        std::time::Duration::from_millis(self.ranged(var, default, min, max, "milliseconds"))
    }
}
