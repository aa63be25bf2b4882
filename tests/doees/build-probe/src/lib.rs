//! The Doee is trivial; its build script is the point (see build.rs).

use doee_sdk::{Context, Doee, Error, export_doee};

#[derive(Default)]
struct Probe;

impl Doee for Probe {
    fn execute(&mut self, _ctx: &mut Context, _input: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(env!("PROBE_REPORT").as_bytes().to_vec())
    }
}

export_doee!(Probe);
