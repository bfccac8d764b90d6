//! Placeholder until the pipeline example lands.
fn main() {}
