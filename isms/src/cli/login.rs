//! `isms login`: asks for what it is not given, stores the token.

use super::credentials::{self, Credentials};
use crate::client;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use std::io::{BufRead, IsTerminal, Write};

/// `isms login`'s arguments.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The Control Gate's URL [default: the stored one, else http://127.0.0.1:7780]
    #[arg(long, env = "ISMS_URL")]
    pub url: Option<String>,
    /// The user [default: asked]
    #[arg(long)]
    pub username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
}

/// Logs in and stores the token.
pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let stored = Credentials::load()?;
    let url = args
        .url
        .or(stored.url)
        .unwrap_or_else(|| credentials::DEFAULT_URL.to_string());
    let url = url.trim_end_matches('/').to_string();
    let username = match args.username {
        Some(username) => username,
        None => prompt("Username: ")?,
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        prompt_hidden("Password: ")?
    };
    if password.is_empty() {
        bail!("no password given");
    }
    let body = serde_json::json!({ "username": username, "password": password });
    let response = client::request(
        "POST",
        &format!("{url}/api/v1/auth/login"),
        None,
        Some("application/json"),
        Bytes::from(body.to_string()),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if response.status != 200 {
        bail!("login failed: {}", response.error_message());
    }
    let json = response.json().map_err(anyhow::Error::msg)?;
    let token = json
        .get("token")
        .and_then(|t| t.as_str())
        .context("the server answered without a token")?
        .to_string();
    let path = Credentials {
        url: Some(url.clone()),
        token: Some(token),
        user: Some(username.clone()),
    }
    .save()?;
    println!(
        "Logged in to {url} as {username} (token saved in {}).",
        path.display()
    );
    Ok(())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Reads a line without echoing it when standard input is a terminal.
fn prompt_hidden(question: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return prompt(question);
    }
    use std::os::fd::AsRawFd;
    let fd = stdin.as_raw_fd();
    // SAFETY: termios calls on the terminal's descriptor with a valid struct.
    let saved = unsafe {
        let mut term: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut term) != 0 {
            return prompt(question);
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &term);
        saved
    };
    let answer = prompt(question);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    eprintln!();
    answer
}

/// Revokes the stored token on the platform and forgets it here.
pub async fn logout(args: &super::ApiArgs) -> anyhow::Result<()> {
    let api = super::Api::new(args)?;
    if api.token().is_none() {
        bail!("not logged in");
    }
    // Forget the token even if the platform cannot be reached: the user
    // asked to be logged out here.
    let revoked = api
        .post_json("/api/v1/auth/logout", &serde_json::json!({}))
        .await;
    let mut stored = Credentials::load()?;
    stored.token = None;
    stored.save()?;
    match revoked {
        Ok(_) => println!("Logged out; the token is revoked."),
        Err(err) => println!("Logged out here; the platform could not revoke the token: {err}"),
    }
    Ok(())
}
