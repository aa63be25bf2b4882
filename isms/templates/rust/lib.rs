//! %NAME%: an ISMS Doee.
//!
//! Test it here with `cargo test`; deploy it with
//! `isms deploy . --project <project> --wait`.

use doee_sdk::{Context, Doee, Error, export_doee};

#[derive(Default)]
pub struct Greeter {
    greeting: String,
}

impl Doee for Greeter {
    fn initialize(&mut self, ctx: &mut Context) -> Result<(), Error> {
        self.greeting = ctx.param("greeting").unwrap_or("Hello").to_string();
        Ok(())
    }

    fn execute(&mut self, _ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        let name = String::from_utf8_lossy(input);
        let name = match name.trim() {
            "" => "world",
            name => name,
        };
        Ok(format!("{}, {name}!", self.greeting).into_bytes())
    }
}

export_doee!(Greeter);

#[cfg(test)]
mod tests {
    use super::*;
    use doee_sdk::testing::TestContext;

    #[test]
    fn greets_whoever_is_named_in_the_body() {
        let mut host = TestContext::new().param("greeting", "Hello");
        let mut doee = Greeter::default();
        host.initialize(&mut doee).unwrap();
        assert_eq!(host.execute(&mut doee, b"world").unwrap(), b"Hello, world!");
        assert_eq!(host.execute(&mut doee, b"").unwrap(), b"Hello, world!");
    }
}
