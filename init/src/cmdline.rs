//! The kernel command line, split as the kernel splits it.
//!
//! Parameters with a dot (`imgbuild.mode=root`) are taken by the kernel as module parameters
//! and never reach init's argv or environment, so the init reads /proc/cmdline itself.

/// Parsed kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// The text as read.
    pub raw: String,
    params: Vec<(String, Option<String>)>,
}

/// Where the kernel shows its command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

impl Cmdline {
    /// Splits `text` on blanks outside double quotes; quotes are removed, `key=value` split at
    /// the first `=`.
    pub fn parse(text: &str) -> Cmdline {
        let mut params = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut quoted = false;
        for c in text.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    in_word = true;
                }
                c if c.is_whitespace() && !quoted => {
                    if in_word {
                        params.push(split(&word));
                        word.clear();
                        in_word = false;
                    }
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            params.push(split(&word));
        }
        Cmdline {
            raw: text.trim_end().to_owned(),
            params,
        }
    }

    /// Reads /proc/cmdline; `None` when /proc is not mounted.
    pub fn read() -> Option<Cmdline> {
        std::fs::read_to_string(PROC_CMDLINE)
            .ok()
            .map(|t| Cmdline::parse(&t))
    }

    /// The value of the last `key=value`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// True when `key` appears, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// The value of `key` as seconds, when present and a finite non-negative number.
    pub fn seconds(&self, key: &str) -> Option<f64> {
        self.get(key)?
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
    }
}

fn split(word: &str) -> (String, Option<String>) {
    match word.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (word.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let c = Cmdline::parse(
            "root=UUID=0a1b console=ttyS0 quiet imgbuild.mode=root foo=\"a b\" \"x=y z\" root=/dev/vda\n",
        );
        assert_eq!(c.get("root"), Some("/dev/vda"), "last one wins");
        assert_eq!(c.get("imgbuild.mode"), Some("root"));
        assert_eq!(c.get("foo"), Some("a b"));
        assert_eq!(c.get("x"), Some("y z"));
        assert!(c.has("quiet"));
        assert_eq!(c.get("quiet"), None);
        assert!(!c.has("loud"));
        assert!(!c.raw.ends_with('\n'));
    }

    #[test]
    fn seconds_are_validated() {
        let c = Cmdline::parse("a=2.5 b=-1 c=x d=inf");
        assert_eq!(c.seconds("a"), Some(2.5));
        assert_eq!(c.seconds("b"), None);
        assert_eq!(c.seconds("c"), None);
        assert_eq!(c.seconds("d"), None);
    }
}
