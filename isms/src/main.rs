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
    /// Run a Doer or a CommServer on this host for a kernel on another one,
    /// and keep it joined.
    Join {
        /// The kernel's address: tcp://<kernel-host>:<port> (its `kernel.listen`).
        endpoint: String,
        /// Which service to run here.
        #[arg(long, value_parser = ["doer", "commserver"])]
        service: String,
        #[command(flatten)]
        membership: isms::join::Membership,
        /// This instance's name after `<service>@` [default: the host name]
        #[arg(long)]
        name: Option<String>,
        /// Where this host keeps its state.
        #[arg(long, env = "ISMS_DATA_DIR", default_value = "./isms-data")]
        data_dir: PathBuf,
        /// A TOML file with options for the service (see `isms up --help`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the key other hosts join this kernel with (`isms join`).
    JoinKey {
        /// The kernel's data directory.
        #[arg(long, env = "ISMS_DATA_DIR", default_value = "./isms-data")]
        data_dir: PathBuf,
        /// Replace the key: every host that joined with the old one is cut off.
        #[arg(long)]
        rotate: bool,
    },
    /// Show every service instance, its health, load and restarts.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Log in to a platform and keep the token.
    Login(cli::login::LoginArgs),
    /// Log out: revoke the stored token and forget it.
    Logout {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create, list, show or delete projects; manage their members.
    Project {
        #[command(subcommand)]
        command: cli::project::ProjectCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List, show, roll back or delete Doees.
    Doee {
        #[command(subcommand)]
        command: cli::doee::DoeeCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a project's Doee and build logs; -f follows them live.
    Logs(cli::logs::LogsArgs),
    /// Run SQL on a project's database.
    Sql(cli::sql::SqlArgs),
    /// List a project's recent invocations.
    Invocations(cli::invocation::ListArgs),
    /// Show one invocation and its output (the result of an async call).
    Invocation(cli::invocation::ShowArgs),
    /// Manage users (admins).
    User {
        #[command(subcommand)]
        command: cli::user::UserCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create, list or revoke API tokens.
    Token {
        #[command(subcommand)]
        command: cli::token::TokenCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create, list or revoke a project's MQTT devices.
    Device {
        #[command(subcommand)]
        command: cli::device::DeviceCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set, list or delete a project's secrets (values from stdin).
    Secret {
        #[command(subcommand)]
        command: cli::secret::SecretCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A project's MQTT dead letters: list, run again, purge.
    Mqtt {
        #[command(subcommand)]
        command: cli::mqtt::MqttCommand,
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
        /// A kernel on another host (started by `isms join`).
        #[arg(long, requires = "key_file")]
        kernel: Option<String>,
        #[command(flatten)]
        membership: isms::join::Membership,
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
            kernel,
            membership,
        } => {
            let instance = instance.unwrap_or_else(|| format!("{service}-1"));
            let remote = kernel
                .map(|endpoint| isms::join::remote(&endpoint, &membership, config.as_deref()))
                .transpose()?;
            let ran = isms::service::run(
                service,
                &instance,
                &absolute(&data_dir)?,
                config.as_deref(),
                remote,
            );
            if let Err(err) = &ran
                && isms::service::is_refusal(err)
            {
                eprintln!("error: {err:#}");
                return Ok(ExitCode::from(isms::service::REFUSED_EXIT_CODE));
            }
            ran?;
        }
        Command::Join {
            endpoint,
            service,
            membership,
            name,
            data_dir,
            config,
        } => isms::join::join(isms::join::Join {
            endpoint,
            service: service.parse().map_err(anyhow::Error::msg)?,
            membership,
            key: std::env::var("ISMS_JOIN_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            name,
            data_dir: absolute(&data_dir)?,
            config_file: config.map(|c| absolute(&c)).transpose()?,
        })?,
        Command::JoinKey { data_dir, rotate } => {
            isms::join::join_key(&absolute(&data_dir)?, rotate)?
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
        Command::Logout { api } => runtime()?.block_on(cli::login::logout(&api))?,
        Command::Doee { command, api } => runtime()?.block_on(cli::doee::run(command, &api))?,
        Command::Logs(args) => runtime()?.block_on(cli::logs::run(args))?,
        Command::Sql(args) => runtime()?.block_on(cli::sql::run(args))?,
        Command::Invocations(args) => runtime()?.block_on(cli::invocation::list(args))?,
        Command::Invocation(args) => runtime()?.block_on(cli::invocation::show(args))?,
        Command::User { command, api } => runtime()?.block_on(cli::user::run(command, &api))?,
        Command::Token { command, api } => runtime()?.block_on(cli::token::run(command, &api))?,
        Command::Device { command, api } => runtime()?.block_on(cli::device::run(command, &api))?,
        Command::Mqtt { command, api } => runtime()?.block_on(cli::mqtt::run(command, &api))?,
        Command::Secret { command, api } => runtime()?.block_on(cli::secret::run(command, &api))?,
        Command::Deploy(args) => runtime()?.block_on(cli::deploy::run(args))?,
        Command::Invoke(args) => runtime()?.block_on(cli::invoke::run(args))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a path absolute without requiring it to exist.
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}
