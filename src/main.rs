//! The `tgrelay` command: run the relay, or check a configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use tgrelay::app::Relay;
use tgrelay::config::{Config, LogFormat};
use tgrelay::preflight;
use tgrelay::reload::ConfigSource;
use tgrelay::supervisor::webhook_registration;
use tgrelay::telegram::BotApi;

// glibc's malloc spent a tenth of the relay's CPU in allocation, trimming and arena
// locks under load (see docs/benchmarks.md); mimalloc keeps per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit statuses beyond 0 and 1 (a failure while running), from sysexits.h as Vector
/// and other daemons use them. A bad command line: EX_USAGE.
const EXIT_USAGE: u8 = 64;
/// A configuration that is not valid (file or environment): EX_CONFIG.
const EXIT_BAD_CONFIG: u8 = 78;
/// A valid configuration whose bots or broker fail `check-config --connect`: EX_UNAVAILABLE.
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    version,
    about = "Relays Telegram Bot API updates into message brokers, at least once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run(ConfigArg),
    /// Print the effective configuration (secrets redacted), or every problem with it.
    CheckConfig(CheckConfigArgs),
    /// Manage a bot's webhook at Telegram.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Call setWebhook with the bot's configured url, secret and settings.
    Set(WebhookArgs),
    /// Call deleteWebhook (pending updates are kept).
    Delete(WebhookArgs),
    /// Print getWebhookInfo.
    Info(WebhookArgs),
}

#[derive(clap::Args)]
struct WebhookArgs {
    /// The bot's name in the configuration.
    #[arg(long)]
    bot: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct CheckConfigArgs {
    /// Also check what only the network can tell: each bot's getMe, the broker, its
    /// stream or topics (changing nothing); exits 69 listing every problem.
    #[arg(long)]
    connect: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file; `TGRELAY_*` environment variables override it.
    #[arg(long, short, env = "TGRELAY_CONFIG", default_value = "config.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on its own; a bad command line is EX_USAGE, help is no error.
            let _ = e.print();
            return match e.use_stderr() {
                true => ExitCode::from(EXIT_USAGE),
                false => ExitCode::SUCCESS,
            };
        }
    };
    let arg = match &cli.command {
        Command::Run(arg) | Command::CheckConfig(CheckConfigArgs { config: arg, .. }) => arg,
        Command::Webhook(
            WebhookCommand::Set(w) | WebhookCommand::Delete(w) | WebhookCommand::Info(w),
        ) => &w.config,
    };
    // The default file may be absent (environment-only setups); a named one must exist.
    let required = arg.config.as_os_str() != "config.toml";
    let config = match Config::load(&arg.config, required) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig(args) => {
            print!("{}", config.to_redacted_toml());
            if args.connect {
                check_connect(&config)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run(arg) => run(
            config,
            ConfigSource {
                path: arg.config,
                required,
            },
        ),
        Command::Webhook(command) => webhook(config, command),
    }
}

/// `tgrelay webhook set|delete|info --bot NAME`.
fn webhook(config: Config, command: WebhookCommand) -> ExitCode {
    let (WebhookCommand::Set(args) | WebhookCommand::Delete(args) | WebhookCommand::Info(args)) =
        &command;
    let Some(bot) = config.bots.get(&args.bot) else {
        eprintln!("no bot named {:?} in the configuration", args.bot);
        return ExitCode::from(EXIT_USAGE);
    };
    let http = BotApi::http_client_with(&config.telegram).expect("validated with the config");
    let api = BotApi::new(http, &bot.api_url, bot.token().clone());
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match command {
            WebhookCommand::Set(_) if bot.webhook_secret_generated => Err(
                "configure bots.<name>.webhook.secret_token (or secret_token_file) first: \
                 a generated secret would not be known to the running relay"
                    .to_owned(),
            ),
            WebhookCommand::Set(_) => webhook_registration(bot)
                .apply(&api, true)
                .await
                .map(|_| "webhook set".to_owned())
                .map_err(|e| e.to_string()),
            WebhookCommand::Delete(_) => api
                .delete_webhook(false)
                .await
                .map(|_| "webhook deleted (pending updates kept)".to_owned())
                .map_err(|e| e.to_string()),
            WebhookCommand::Info(_) => api
                .get_webhook_info()
                .await
                .map(|info| serde_json::to_string_pretty(&info).expect("info serializes"))
                .map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config --connect`: every finding on stderr (stdout keeps the configuration).
fn check_connect(config: &Config) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let report = runtime.block_on(preflight::check(config));
    // A Kafka metadata fetch cut off by its deadline may still hold a blocking thread.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    eprint!("{report}");
    if report.problems().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNAVAILABLE)
    }
}

fn run(config: Config, source: ConfigSource) -> ExitCode {
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_threads())
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Handlers first: a SIGTERM while the sink connects must not kill the process.
        tokio::spawn(cancel_on_signal(Signals::install(), shutdown.clone()));
        Relay::new(config)
            .reloading_from(source)
            .run(shutdown)
            .await
    });
    // `run` has drained; a blocking call still out (a Kafka metadata probe cut short
    // by a SIGTERM at start) must not hold the exit for its whole timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tgrelay failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colours only for a person at a terminal: a log file or Kubernetes keeps plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM (Kubernetes) and SIGINT (Ctrl-C), caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    /// SIGHUP reloads the bots (see `reload`); caught from the start, so that one
    /// arriving before the reloader listens does not end the process.
    _hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
            _hup: signal(SignalKind::hangup()).expect("SIGHUP handler installs"),
        }
    }
}

async fn cancel_on_signal(mut signals: Signals, shutdown: CancellationToken) {
    tokio::select! {
        _ = signals.term.recv() => tracing::info!("SIGTERM received"),
        _ = signals.int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
