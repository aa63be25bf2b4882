use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use isms::cli::{self, ApiArgs};
use isms::config::Config;
use isms_ipc::ServiceKind;
use std::path::PathBuf;
use std::process::ExitCode;

/// ISMS: a self-hosted serverless platform for IoT.
#[derive(Parser)]
#[command(name = "isms", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform: the kernel and every service, on embedded defaults.
    Up {
        /// Where the platform keeps its state.
        #[arg(long, env = "ISMS_DATA_DIR", default_value = "./isms-data")]
        data_dir: PathBuf,
        /// A TOML file with options (see below).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show every service instance, its health, load and restarts.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Log in to a platform and keep the token.
    Login(cli::login::LoginArgs),
    /// Create or list projects.
    Project {
        #[command(subcommand)]
        command: cli::project::ProjectCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create a new Doee from a template, with a test.
    New(cli::new::NewArgs),
    /// Upload a Doee directory; the platform builds a new version of it.
    Deploy(cli::deploy::DeployArgs),
    /// Run a Doee once and print its output.
    Invoke(cli::invoke::InvokeArgs),
    /// Run one service (started by `isms up`).
    #[command(hide = true)]
    Service {
        service: ServiceKind,
        #[arg(long)]
        instance: Option<String>,
        #[arg(long, env = "ISMS_DATA_DIR", default_value = "./isms-data")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the Doee Executor inside a Worker (started by the Doer).
    #[command(hide = true)]
    Executor {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        doee: PathBuf,
    },
}

fn main() -> ExitCode {
    let command = Cli::command().mut_subcommand("up", |up| up.after_help(Config::options_help()));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        // The Executor runs inside the sandbox: no runtime, no logging setup.
        Command::Executor { socket, doee } => {
            let code = isms_doer::executor::run(&socket, &doee);
            return Ok(ExitCode::from(code as u8));
        }
        Command::Service {
            service,
            instance,
            data_dir,
            config,
        } => {
            let instance = instance.unwrap_or_else(|| format!("{service}-1"));
            isms::service::run(service, &instance, &absolute(&data_dir)?, config.as_deref())?;
        }
        Command::Up { data_dir, config } => isms::supervisor::up(isms::supervisor::Up {
            data_dir: absolute(&data_dir)?,
            config_file: config.map(|c| absolute(&c)).transpose()?,
        })?,
        Command::New(args) => cli::new::run(args)?,
        Command::Status { api } => runtime()?.block_on(cli::status::run(&api))?,
        Command::Login(args) => runtime()?.block_on(cli::login::run(args))?,
        Command::Project { command, api } => {
            runtime()?.block_on(cli::project::run(command, &api))?
        }
        Command::Deploy(args) => runtime()?.block_on(cli::deploy::run(args))?,
        Command::Invoke(args) => runtime()?.block_on(cli::invoke::run(args))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a path absolute without requiring it to exist.
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}
