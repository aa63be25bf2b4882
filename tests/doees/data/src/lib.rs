//! Hands its input to the project's databases and answers what they said.
//!
//! The input's first line picks the call, the rest is its argument:
//!
//! - `sql <query>` then a line of JSON parameters: `ctx.sql`;
//! - `doc <op> <collection>` then the JSON: `ctx.docs()`;
//! - `count`: adds one to the `calls` counter, in one statement;
//! - `bench <n>`: one indexed insert and one select by that index.
//!
//! A refused call is the invocation's error, so the caller sees the message.

use doee_sdk::{Context, Doee, Error, export_doee};

#[derive(Default)]
struct Data;

impl Doee for Data {
    fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        let input = String::from_utf8_lossy(input);
        let (first, rest) = input.split_once('\n').unwrap_or((&input, ""));
        let (verb, argument) = first.split_once(' ').unwrap_or((first, ""));
        let answer = match verb {
            "sql" => ctx.sql(argument, rest)?,
            "doc" => {
                let (op, collection) = argument.split_once(' ').unwrap_or((argument, ""));
                let mut docs = ctx.docs();
                match op {
                    "insert" => docs.insert(collection, rest)?,
                    "find" => docs.find(collection, rest)?,
                    "update" => docs.update(collection, rest)?,
                    "delete" => docs.delete(collection, rest)?,
                    other => return Err(Error::new(format!("unknown document call `{other}`"))),
                }
            }
            "count" => ctx.sql(
                "INSERT INTO counter (name, n) VALUES ('calls', 1) \
                 ON CONFLICT (name) DO UPDATE SET n = counter.n + 1",
                "[]",
            )?,
            "bench" => {
                let params = format!("[\"{}\"]", argument.trim());
                ctx.sql("INSERT INTO readings (device, value) VALUES ($1, 1.5)", &params)?;
                ctx.sql(
                    "SELECT id, value FROM readings WHERE device = $1 LIMIT 1",
                    &params,
                )?
            }
            other => return Err(Error::new(format!("unknown call `{other}`"))),
        };
        Ok(answer.into_bytes())
    }
}

export_doee!(Data);
