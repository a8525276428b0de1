//! Profiles: which workloads a run executes, how long, how often. Profiles are data.
//!
//! Built-in profiles (`smoke`, `quick`, `paper`) are JSON files in `init/profiles/` embedded in
//! the binary. An image definition may carry its own under `[workloads.profiles.NAME]`; the builder
//! converts the chosen one to JSON, checks it with [`Profile::from_value`] and writes it to
//! [`PROFILE_PATH`]. On the kernel command line `imgbuild.profile=NAME` picks another.
//!
//! ```json
//! {"name": "mine", "verify_digest": true, "repetitions": 3, "timeout_s": 300,
//!  "workloads": [{"workload": "crypto", "name": "crypto-short", "repetitions": 5,
//!                 "timeout_s": 60, "params": {"seconds": 0.1, "block_sizes": [16, 16384]}}]}
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::workloads;

/// Where the builder puts the image's profile.
pub const PROFILE_PATH: &str = "/etc/imgbuild/profile.json";

/// Names of the built-in profiles.
pub const BUILTIN_NAMES: [&str; 3] = ["smoke", "quick", "paper"];

const SMOKE: &str = include_str!("../profiles/smoke.json");
const QUICK: &str = include_str!("../profiles/quick.json");
const PAPER: &str = include_str!("../profiles/paper.json");

/// Largest repetition count accepted.
pub const MAX_REPETITIONS: u32 = 1000;
/// Longest timeout accepted: a week.
pub const MAX_TIMEOUT_S: f64 = 7.0 * 86400.0;

/// A run profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Compute the rootfs digest in the guest and compare it with the build's.
    #[serde(default = "yes")]
    pub verify_digest: bool,
    /// Default repetitions per workload.
    #[serde(default = "default_repetitions")]
    pub repetitions: u32,
    /// Default timeout per workload (all repetitions), seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Workloads, run in this order.
    pub workloads: Vec<WorkloadSpec>,
}

/// One workload entry of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Registry name ([`workloads::registry`]).
    pub workload: String,
    /// Instance name, unique in the profile; the registry name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repetitions; the profile's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<u32>,
    /// Timeout, seconds; the profile's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// Workload parameters (each workload documents its own).
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
}

fn yes() -> bool {
    true
}
fn default_repetitions() -> u32 {
    3
}
fn default_timeout() -> f64 {
    600.0
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A workload entry with the profile's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedWorkload {
    /// Instance name.
    pub name: String,
    /// Registry name.
    pub workload: String,
    /// Repetitions.
    pub repetitions: u32,
    /// Timeout, seconds.
    pub timeout_s: f64,
    /// Parameters.
    pub params: serde_json::Value,
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not valid JSON for a profile.
    #[error("cannot parse profile {source_name}: {message}")]
    Parse {
        /// Where it came from.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// Parsed, but inconsistent.
    #[error("profile {profile}: {message}")]
    Invalid {
        /// Profile name.
        profile: String,
        /// What is wrong.
        message: String,
    },
    /// No built-in profile of that name.
    #[error("no profile named {0:?} (built-in: smoke, quick, paper)")]
    Unknown(String),
}

impl Profile {
    /// The built-in profile `name`.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let text = match name {
            "smoke" => SMOKE,
            "quick" => QUICK,
            "paper" => PAPER,
            _ => return Err(ProfileError::Unknown(name.to_owned())),
        };
        Profile::from_json(text, &format!("builtin:{name}"))
    }

    /// Parses and validates a profile in JSON; `source_name` names it in errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Converts and validates a profile given as a JSON value (the builder converts the TOML
    /// table of a definition to one).
    pub fn from_value(
        value: serde_json::Value,
        source_name: &str,
    ) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_value(value).map_err(|e| ProfileError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Checks names, counts, timeouts and every workload's parameters.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            profile: self.name.clone(),
            message,
        };
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(invalid("name must have 1 to 64 characters".into()));
        }
        check_repetitions(self.repetitions).map_err(&invalid)?;
        check_timeout(self.timeout_s).map_err(&invalid)?;
        let mut names = BTreeSet::new();
        for (i, spec) in self.workloads.iter().enumerate() {
            let Some(workload) = workloads::find(&spec.workload) else {
                return Err(invalid(format!(
                    "workload {i}: unknown workload {:?} (known: {})",
                    spec.workload,
                    workloads::names().join(", ")
                )));
            };
            let name = spec.name.as_deref().unwrap_or(&spec.workload);
            if name.is_empty() || name.len() > 64 || !names.insert(name.to_owned()) {
                return Err(invalid(format!(
                    "workload {i}: instance name {name:?} is empty, too long or used twice"
                )));
            }
            if let Some(r) = spec.repetitions {
                check_repetitions(r).map_err(|m| invalid(format!("workload {name}: {m}")))?;
            }
            if let Some(t) = spec.timeout_s {
                check_timeout(t).map_err(|m| invalid(format!("workload {name}: {m}")))?;
            }
            if !spec.params.is_object() {
                return Err(invalid(format!(
                    "workload {name}: params must be an object"
                )));
            }
            workload
                .check(&spec.params)
                .map_err(|m| invalid(format!("workload {name}: {m}")))?;
        }
        Ok(())
    }

    /// The workloads with defaults applied, in run order.
    pub fn resolved(&self) -> Vec<ResolvedWorkload> {
        self.workloads
            .iter()
            .map(|spec| ResolvedWorkload {
                name: spec.name.clone().unwrap_or_else(|| spec.workload.clone()),
                workload: spec.workload.clone(),
                repetitions: spec.repetitions.unwrap_or(self.repetitions),
                timeout_s: spec.timeout_s.unwrap_or(self.timeout_s),
                params: spec.params.clone(),
            })
            .collect()
    }
}

fn check_repetitions(r: u32) -> Result<(), String> {
    if (1..=MAX_REPETITIONS).contains(&r) {
        Ok(())
    } else {
        Err(format!("repetitions {r} outside 1..={MAX_REPETITIONS}"))
    }
}

fn check_timeout(t: f64) -> Result<(), String> {
    if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S {
        Ok(())
    } else {
        Err(format!("timeout_s {t} outside (0, {MAX_TIMEOUT_S}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_validate() {
        for name in BUILTIN_NAMES {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
            assert!(!p.workloads.is_empty());
            assert!(p.verify_digest);
        }
        assert!(matches!(
            Profile::builtin("nope"),
            Err(ProfileError::Unknown(_))
        ));
    }

    #[test]
    fn defaults_apply_and_overrides_win() {
        let p = Profile::from_json(
            r#"{"name":"t","repetitions":4,"workloads":[
                {"workload":"crypto"},
                {"workload":"crypto","name":"c2","repetitions":1,"timeout_s":5,"params":{"seconds":0.01}}]}"#,
            "test",
        )
        .unwrap();
        let r = p.resolved();
        assert_eq!(
            (r[0].name.as_str(), r[0].repetitions, r[0].timeout_s),
            ("crypto", 4, 600.0)
        );
        assert_eq!(
            (r[1].name.as_str(), r[1].repetitions, r[1].timeout_s),
            ("c2", 1, 5.0)
        );
        assert!(p.verify_digest);
    }

    #[test]
    fn bad_profiles_are_rejected_with_reasons() {
        let cases = [
            (
                r#"{"name":"t","workloads":[{"workload":"nope"}]}"#,
                "unknown workload",
            ),
            (
                r#"{"name":"t","workloads":[{"workload":"crypto"},{"workload":"crypto"}]}"#,
                "twice",
            ),
            (
                r#"{"name":"t","repetitions":0,"workloads":[]}"#,
                "repetitions",
            ),
            (r#"{"name":"t","timeout_s":-1,"workloads":[]}"#, "timeout"),
            (r#"{"name":"t","workloads":[],"extra":1}"#, "unknown field"),
            (
                r#"{"name":"t","workloads":[{"workload":"crypto","params":{"bogus":1}}]}"#,
                "bogus",
            ),
            (
                r#"{"name":"t","workloads":[{"workload":"crypto","params":[]}]}"#,
                "object",
            ),
            (r#"{"name":"","workloads":[]}"#, "name"),
        ];
        for (text, needle) in cases {
            let err = Profile::from_json(text, "test").unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn fault_workloads_are_selectable_from_a_profile() {
        let p = Profile::from_json(
            r#"{"name":"f","workloads":[{"workload":"fault-hang","timeout_s":1},
                {"workload":"fault-segv"},{"workload":"fault-panic"}]}"#,
            "test",
        )
        .unwrap();
        assert_eq!(p.resolved().len(), 3);
        for name in BUILTIN_NAMES {
            let builtin = Profile::builtin(name).unwrap();
            assert!(builtin
                .workloads
                .iter()
                .all(|w| !w.workload.starts_with("fault-")));
        }
    }

    #[test]
    fn from_value_accepts_toml_like_integers() {
        let v = serde_json::json!({"name": "d", "timeout_s": 30, "workloads": [{"workload": "crypto"}]});
        let p = Profile::from_value(v, "definition").unwrap();
        assert_eq!(p.timeout_s, 30.0);
    }
}
