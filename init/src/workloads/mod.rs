//! The workload set: what a run measures, and the framework every workload plugs into.
//!
//! A workload is a value implementing [`Workload`]; [`registry`] lists them. Adding one is one
//! new file in this folder (a unit struct implementing the trait, with a serde params struct) and
//! one line in [`REGISTRY`] (plus its `mod` line). The runner ([`crate::runner`]) executes each
//! in a forked child, calls [`Workload::run`] once per repetition through [`measure`], and turns
//! the samples into [`Metric`]s with median and coefficient of variation ([`stats`]).

mod crypto;
pub mod disk;
mod fault;
pub mod http;
pub mod smtp;
pub mod stats;
pub mod tools;
pub mod unixbench;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::results::schema::{Metric, ToolVersion};

/// A benchmark (or a fault injector for tests).
pub trait Workload: Sync {
    /// Registry name, as profiles write it (`crypto`).
    fn name(&self) -> &'static str;
    /// One line on what it measures.
    fn summary(&self) -> &'static str;
    /// Checks parameters (a JSON object) without running anything; the message says what is
    /// wrong. Profiles are validated with it when they are loaded or built.
    fn check(&self, params: &serde_json::Value) -> Result<(), String>;
    /// Why the workload cannot run here (an external tool that is absent or whose shared
    /// libraries are missing), checked once before the first repetition; `None` to run it. A
    /// reason makes the workload `skipped` rather than `failed`.
    fn unavailable(&self, _params: &serde_json::Value, _ctx: &Context) -> Option<String> {
        None
    }
    /// Runs one repetition. Called in a child process that the runner kills at the timeout, so
    /// it may block, crash or panic without harming the run.
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String>;
}

/// What a workload may use.
#[derive(Debug, Clone)]
pub struct Context {
    /// A scratch directory on the filesystem under test, empty at the first repetition.
    pub workdir: PathBuf,
    /// Online CPUs.
    pub online_cpus: usize,
    /// This repetition, from 0.
    pub repetition: u32,
    /// Repetitions in all.
    pub repetitions: u32,
}

/// One measured value of one repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Metric name, unique within the workload and the same in every repetition.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// What distinguishes the metric (algorithm, size…).
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// True when larger is better.
    pub higher_is_better: bool,
    /// The value; must be finite.
    pub value: f64,
}

impl Sample {
    /// A value of `metric` in `unit`, without parameters.
    pub fn new(
        metric: impl Into<String>,
        unit: &str,
        higher_is_better: bool,
        value: f64,
    ) -> Sample {
        Sample {
            metric: metric.into(),
            unit: unit.into(),
            parameters: BTreeMap::new(),
            higher_is_better,
            value,
        }
    }

    /// The same sample with these parameters.
    pub fn with_parameters(mut self, params: &[(&str, serde_json::Value)]) -> Sample {
        self.parameters = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self
    }
}

/// What one repetition produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repetition {
    /// Measured values.
    pub samples: Vec<Sample>,
    /// The external tool run, if any.
    pub tool: Option<ToolVersion>,
    /// Facts worth keeping (implementation, CPU features).
    pub info: BTreeMap<String, serde_json::Value>,
}

/// All repetitions of a workload, aggregated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// One metric per distinct sample name.
    pub metrics: Vec<Metric>,
    /// Tool of the last repetition.
    pub tool: Option<ToolVersion>,
    /// Info of the last repetition.
    pub info: BTreeMap<String, serde_json::Value>,
    /// Why the workload was not run ([`Workload::unavailable`]); no metrics then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Every workload, in listing order. Fault workloads exist for tests and are used only by
/// profiles that name them.
pub const REGISTRY: &[&dyn Workload] = &[
    &unixbench::UnixBench,
    &disk::Disk,
    &crypto::Crypto,
    &http::Http,
    &smtp::Smtp,
    &tools::bonnie::Bonnie,
    &tools::openssl::OpensslSpeed,
    &tools::ab::Ab,
    &tools::unixbench_run::UnixBenchRun,
    &tools::postal::Postal,
    &fault::Hang,
    &fault::Segv,
    &fault::Panic,
    &fault::PanicKernel,
    &fault::FillDisk,
];

/// Every workload.
pub fn registry() -> &'static [&'static dyn Workload] {
    REGISTRY
}

/// The workload registered as `name`.
pub fn find(name: &str) -> Option<&'static dyn Workload> {
    REGISTRY.iter().copied().find(|w| w.name() == name)
}

/// Registry names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|w| w.name()).collect()
}

/// Parses a workload's parameter object (null counts as `{}`) into its params struct.
pub fn parse_params<T: DeserializeOwned>(params: &serde_json::Value) -> Result<T, String> {
    let value = if params.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        params.clone()
    };
    serde_json::from_value(value).map_err(|e| format!("bad params: {e}"))
}

/// Runs `repetitions` repetitions of `workload` in this process and aggregates them.
pub fn measure(
    workload: &dyn Workload,
    params: &serde_json::Value,
    base: &Context,
    repetitions: u32,
) -> Result<Measured, String> {
    if let Some(reason) = workload.unavailable(params, base) {
        return Ok(Measured {
            skipped: Some(reason),
            ..Measured::default()
        });
    }
    let mut reps = Vec::new();
    let mut last = Repetition::default();
    for repetition in 0..repetitions {
        let ctx = Context {
            repetition,
            repetitions,
            ..base.clone()
        };
        let rep = workload
            .run(params, &ctx)
            .map_err(|e| format!("repetition {} of {repetitions}: {e}", repetition + 1))?;
        reps.push(rep.samples.clone());
        last = rep;
    }
    Ok(Measured {
        metrics: stats::aggregate(&reps)?,
        tool: last.tool,
        info: last.info,
        skipped: None,
    })
}

/// The argument that makes the init binary a helper process of a workload rather than an init
/// (the execl test re-executes `/proc/self/exe` with it).
pub const HELPER_ARG: &str = "--imgbuild-workload-helper";

/// When the process was started as a workload helper (`argv[1]` is [`HELPER_ARG`]), runs it and
/// returns the exit status; `None` otherwise. `main` calls this first. PID 1 never takes this
/// path, so a stray kernel argument cannot end the init.
pub fn helper_entry() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != HELPER_ARG {
        return None;
    }
    if std::process::id() == 1 {
        return None;
    }
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    Some(unixbench::helper_main(&rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_findable() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for name in names {
            assert_eq!(find(name).unwrap().name(), name);
            assert!(!find(name).unwrap().summary().is_empty());
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn null_params_mean_defaults() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            #[serde(default)]
            n: u32,
        }
        assert_eq!(parse_params::<P>(&serde_json::Value::Null).unwrap().n, 0);
        assert!(parse_params::<P>(&serde_json::json!({"m": 1})).is_err());
    }
}
