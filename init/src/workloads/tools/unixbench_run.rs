//! Placeholder.
use super::super::{Context, Repetition, Workload};
/// Placeholder.
pub struct UnixBenchRun;
impl Workload for UnixBenchRun {
    fn name(&self) -> &'static str { "unixbench-run" }
    fn summary(&self) -> &'static str { "todo" }
    fn check(&self, _: &serde_json::Value) -> Result<(), String> { Ok(()) }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> { Err("todo".into()) }
}
