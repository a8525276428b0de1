//! Placeholder.
use super::super::{Context, Repetition, Workload};
/// Placeholder.
pub struct OpensslSpeed;
impl Workload for OpensslSpeed {
    fn name(&self) -> &'static str { "openssl-speed" }
    fn summary(&self) -> &'static str { "todo" }
    fn check(&self, _: &serde_json::Value) -> Result<(), String> { Ok(()) }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> { Err("todo".into()) }
}
