//! `hearth`: the one command of the Hearth federated customer-service system.
//!
//! Each subcommand lives in its own module and does three things: parse its arguments (clap), load its
//! configuration ([`config`]), call into the service crates. Errors carry context naming the file or the
//! peer; `main` prints the whole cause chain and exits non-zero.
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod bench_audit;
mod bench_encoder;
mod bench_load;
mod bench_serve;
mod budget;
mod config;
mod data;
mod demo;
mod encoder_setup;
mod inference;
mod keys;
mod members;
mod model;
mod node;
mod operator;
mod otlp;
mod pki;
mod query;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Hearth: privacy-preserving federated learning for customer service.
///
/// Institutions in a consortium train intent, emotion and recommendation models together without any
/// customer data leaving an institution. A coordinator orchestrates rounds; each institution runs a participant that trains on
/// its own data and serves the resulting model to its customer-service apps. All traffic is gRPC over
/// TLS 1.3 with mutual authentication.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  hearth demo                      # intent, emotion and recommendation, federated, then serve\n  hearth demo --task emotion       # one task alone\n  hearth demo --no-serve --json    # scripted run, JSON summary on stdout\n  hearth pki init --dir pki --participants bank-a,bank-b\n  hearth coordinator --config coordinator.toml\n  hearth participant --config bank-a.toml\n  hearth keys list --state-dir hearth-data/coordinator\n  hearth audit export --state-dir hearth-data/coordinator -o audit.jsonl\n  hearth audit verify audit.jsonl --trusted-key @coordinator.vkeys"
)]
struct Cli {
    /// How the services log to stderr: `text` (for people) or `json` (one JSON object per line, with
    /// the span of each round and request, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HEARTH_LOG_FORMAT")]
    log_format: LogFormat,
    /// Also send the services' spans (each request, each round) to an OpenTelemetry collector, as
    /// OTLP/HTTP JSON: `http://HOST:PORT` (`/v1/traces` is added) or a full `http://` URL. Off unless
    /// given; a collector that is down costs the service nothing but the spans.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The log format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; colour only at a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run complete federated trainings on loopback: PKI, one coordinator, N participant processes; intent,
    /// emotion and recommendation.
    Demo(demo::DemoArgs),
    /// Run the coordinator service.
    #[command(
        after_help = "Examples:\n  hearth coordinator --config coordinator.toml\n  HEARTH_COORDINATOR__LISTEN=0.0.0.0:7700 hearth coordinator\n\nEvery field of the configuration file is optional; see README.md for the full list.\nEnvironment variables HEARTH_COORDINATOR__<FIELD>[__<SUBFIELD>] override the file."
    )]
    Coordinator(ServiceArgs),
    /// Run a participant: train on this institution's data, serve inference.
    #[command(
        after_help = "Examples:\n  hearth participant --config bank-a.toml\n  HEARTH_PARTICIPANT__COORDINATOR=coord.example:7700 hearth participant --config bank-a.toml\n\nEnvironment variables HEARTH_PARTICIPANT__<FIELD>[__<SUBFIELD>] override the file."
    )]
    Participant(ServiceArgs),
    /// Run an inference replica: serve the institution's intent and emotion endpoints from the models its
    /// participant serves; stateless, as many copies as traffic needs.
    #[command(
        after_help = "Examples:\n  hearth inference --participant bank-a.example.org:7800 --cert /etc/hearth/inference.pem --key /etc/hearth/inference.key\n  HEARTH_INFERENCE_PARTICIPANT=participant:7800 HEARTH_INFERENCE_OPS_LISTEN=0.0.0.0:9900 hearth inference\n\nThe replica keeps nothing on disk. Every few seconds (--poll-seconds) it asks its participant\n(hearth.v1.ModelSource, mutual TLS) whether the model it serves of each family changed, and swaps in\nthe participant's choice: the promoted model, a pinned one, or the one a rollback put back. It serves\nPOST /v1/intent and /v1/emotion, GET /v1/health and hearth.v1.Inference to the institution's apps and\noperators; recommendations stay with the participant (they need the purchase histories), so\n/v1/recommend answers 503 not_served_here."
    )]
    Inference(inference::InferenceArgs),
    /// Manage the consortium's certificates.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Submit and follow training jobs (operator).
    Job {
        #[command(subcommand)]
        command: operator::JobCommand,
    },
    /// Federated analytics queries (analyst): noisy, securely aggregated, charged to the budget.
    Query {
        #[command(subcommand)]
        command: query::QueryCommand,
    },
    /// The consortium's member list, signed by the institutions: who may be in a secure-aggregation round.
    Members {
        #[command(subcommand)]
        command: members::MembersCommand,
    },
    /// Privacy budgets: the DPO's policy, what each institution has spent and has left.
    Budget {
        #[command(subcommand)]
        command: budget::BudgetCommand,
    },
    /// Load an institution's data (conversations, emotion labels, transactions) into its participant store.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Inspect model files (their card: data, rounds, privacy).
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Benchmarks that print tables.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// List and rotate a node's keys (keystore: sealed file or PKCS#11 token).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Export, verify, query and report on a node's signed audit log; cosign as a witness.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Print the shell completion script for `hearth`.
    #[command(
        after_help = "Examples:\n  hearth completions bash > /etc/bash_completion.d/hearth\n  hearth completions zsh > \"${fpath[1]}/_hearth\"\n  hearth completions fish > ~/.config/fish/completions/hearth.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command to a directory.
    #[command(
        after_help = "Examples:\n  hearth man | man -l -\n  hearth man --out-dir /usr/local/share/man/man1   # hearth.1, hearth-pki.1, hearth-pki-request.1, ..."
    )]
    Man {
        /// Write hearth.1 and one page per subcommand (hearth-keys-rewrap.1, ...) here instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// Arguments shared by the long-running services.
#[derive(Debug, clap::Args)]
struct ServiceArgs {
    /// TOML configuration file (optional: defaults and environment variables apply).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write the bound address to this file once listening (used by the demo and tests); the operations
    /// endpoints' address, when `ops_listen` is set, goes beside it with the extension `.ops`.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn init_logging(default: &str, format: LogFormat, otlp: Option<otlp::OtlpLayer>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(otlp);
    match format {
        LogFormat::Json => registry.with(fmt.json().with_current_span(true).with_span_list(true)).init(),
        LogFormat::Text => {
            // Colour only for a person at a terminal: log files and journals get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            registry.with(fmt.with_ansi(ansi)).init()
        }
    }
}

/// Writes the manual pages of `cmd` and its subcommands to `dir`: `hearth.1`, `hearth-pki.1`,
/// `hearth-pki-request.1`, ...; `parents` are the commands above `cmd`. Returns how many.
fn write_man_pages(cmd: clap::Command, parents: &[String], dir: &std::path::Path) -> anyhow::Result<usize> {
    let mut words = parents.to_vec();
    words.push(cmd.get_name().to_string());
    let (file, invoked) = (words.join("-"), words.join(" "));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone().display_name(file.clone()).bin_name(invoked))
        .title(file.clone())
        .render(&mut page)?;
    let path = dir.join(format!("{file}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        n += write_man_pages(sub.clone(), &words, dir)?;
    }
    Ok(n)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match cli.command {
        Command::Coordinator(_) => Some("hearth-coordinator"),
        Command::Participant(_) => Some("hearth-participant"),
        Command::Inference(_) => Some("hearth-inference"),
        _ => None,
    };
    let otlp = match (&cli.otlp_endpoint, service) {
        (Some(url), Some(service)) => match otlp::Endpoint::parse(url) {
            Ok(e) => Some(otlp::OtlpLayer::start(e, service)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    init_logging(if service.is_some() { "info" } else { "warn" }, cli.log_format, otlp);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let unit: anyhow::Result<()> = match cli.command {
        // The only command whose exit status carries a verdict (verify: 1 when the log does not verify).
        Command::Audit { command } => return audit::run(command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Coordinator(args) => {
            let cfg: hearth_coordinator::CoordinatorConfig =
                config::load(args.config.as_deref(), "HEARTH_COORDINATOR")?;
            let running = hearth_coordinator::start(cfg, shutdown_signal()).await?;
            if let (Some(path), Some(ops)) = (args.ready_file.as_deref(), running.ops_addr) {
                write_ready(Some(&path.with_extension("ops")), &ops.to_string())?;
            }
            write_ready(args.ready_file.as_deref(), &running.addr.to_string())?;
            running.done.await.context("coordinator task")?
        }
        Command::Participant(args) => {
            let cfg: hearth_participant::ParticipantConfig =
                config::load(args.config.as_deref(), "HEARTH_PARTICIPANT")?;
            let running = hearth_participant::start(cfg, shutdown_signal()).await?;
            if let (Some(path), Some(local)) = (args.ready_file.as_deref(), running.local_addr) {
                // Written first: a reader waiting for the main ready file then finds this one too.
                write_ready(Some(&path.with_extension("local")), &local.to_string())?;
            }
            if let (Some(path), Some(ops)) = (args.ready_file.as_deref(), running.ops_addr) {
                write_ready(Some(&path.with_extension("ops")), &ops.to_string())?;
            }
            write_ready(args.ready_file.as_deref(), &running.inference_addr.to_string())?;
            running.done.await.context("participant task")?
        }
        Command::Inference(args) => inference::run(args).await,
        Command::Pki { command } => pki::run(command),
        Command::Job { command } => operator::run(command).await,
        Command::Budget { command } => budget::run(command).await,
        Command::Members { command } => members::run(command),
        Command::Query { command } => query::run(command).await,
        Command::Data { command } => data::run(command),
        Command::Model { command } => model::run(command),
        Command::Bench { command } => bench::run(command).await,
        Command::Keys { command } => keys::run(command),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hearth", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir } => {
            use clap::CommandFactory;
            match out_dir {
                None => {
                    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
                }
                Some(dir) => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                    let n = write_man_pages(Cli::command(), &[], &dir)?;
                    eprintln!("wrote {n} manual pages to {}", dir.display());
                }
            }
            Ok(())
        }
    };
    unit.map(|()| ExitCode::SUCCESS)
}

/// Writes `addr` atomically (write then rename) so a reader never sees half an address.
fn write_ready(path: Option<&std::path::Path>, addr: &str) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
