//! Placeholder.
use super::{Context, Repetition, Workload};
/// Placeholder.
pub struct Disk;
impl Workload for Disk {
    fn name(&self) -> &'static str { "disk" }
    fn summary(&self) -> &'static str { "todo" }
    fn check(&self, _: &serde_json::Value) -> Result<(), String> { Ok(()) }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> { Err("todo".into()) }
}
