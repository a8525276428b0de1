//! Placeholder.
use super::super::{Context, Repetition, Workload};
/// Placeholder.
pub struct Bonnie;
impl Workload for Bonnie {
    fn name(&self) -> &'static str { "bonnie" }
    fn summary(&self) -> &'static str { "todo" }
    fn check(&self, _: &serde_json::Value) -> Result<(), String> { Ok(()) }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> { Err("todo".into()) }
}
