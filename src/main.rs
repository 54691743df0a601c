//! The `pilotfish` command: `run`, `check`, `certs`, `demo`.
//!
//! `run`: argv -> config::load -> telemetry::init -> runtime -> App::build -> App::run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use pilotfish::app::{self, App};
use pilotfish::config::{self, HumanDuration};
use pilotfish::{capture, certs, demo, telemetry};

/// mimalloc: a proxy allocates and frees small blocks per request, where
/// glibc's malloc spends several hundred instructions a pair (one hop:
/// 67.3k -> 60.0k instructions per request, `benches/callgrind.sh`). Built
/// with `no_thp`: on kernels with transparent huge pages its arenas took
/// 2 MiB pages, 10.8 MiB resident at idle instead of 1.9.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "pilotfish",
    version,
    about = "A small, fast service-mesh sidecar: mTLS, routing and telemetry beside every service."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// The YAML config file.
        #[arg(long, short, env = "PILOTFISH_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate config files; print FILE:LINE:COLUMN for each problem.
    Check {
        /// Config files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Make development certificates (a CA, and workload certificates).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Send a pod's TCP through its sidecar: iptables rules in this
    /// network namespace (as root with NET_ADMIN, before the app starts).
    Capture {
        #[command(subcommand)]
        command: CaptureCommand,
    },
    /// Print a signed JWT, to try the gateway's token checks.
    Token(TokenArgs),
    /// Run the demo mesh on loopback: demo services, one sidecar each, mTLS.
    Demo(demo::DemoArgs),
    /// A demo service (plain HTTP, no mesh logic); started by `demo`.
    #[command(hide = true)]
    DemoApp(demo::app::AppArgs),
    /// A Job's app: one call through its sidecar, then stops the sidecar.
    #[command(hide = true)]
    DemoJob(demo::job::JobArgs),
}

#[derive(Debug, Subcommand)]
enum CaptureCommand {
    /// Install the rules; run again, it replaces them.
    Install {
        /// UID the sidecar runs as: its own connections are not captured.
        #[arg(long, default_value_t = 2102, value_name = "UID")]
        proxy_uid: u32,
        /// The outbound listener's port (outbound.listen).
        #[arg(long, default_value_t = 15001, value_name = "PORT")]
        outbound_port: u16,
        /// The mTLS listener's port (inbound.listen).
        #[arg(long, default_value_t = 15006, value_name = "PORT")]
        inbound_port: u16,
        /// Destination ports of the app's connections to leave alone
        /// (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "PORTS")]
        skip_outbound_ports: Vec<u16>,
        /// Ports of the pod not captured (comma-separated): the admin port,
        /// and permissive ports whose plaintext reaches the app as it came.
        #[arg(long, value_delimiter = ',', value_name = "PORTS")]
        skip_inbound_ports: Vec<u16>,
        /// The iptables program (its `-restore` sibling loads the rules).
        #[arg(long, default_value = "iptables", value_name = "PROGRAM")]
        iptables: String,
        /// Print the rules instead of installing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the rules `install` added.
    Remove {
        /// The iptables program.
        #[arg(long, default_value = "iptables", value_name = "PROGRAM")]
        iptables: String,
    },
}

/// `pilotfish token`: what the token says and what signs it.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("signing").required(true).args(["key", "secret_file"])))]
struct TokenArgs {
    /// PEM private key: Ed25519 (EdDSA), EC P-256 (ES256) or RSA (RS256);
    /// `certs jwt` makes one.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// A file with an HMAC secret (HS256), 32 bytes at least.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// The subject (`sub`, sent upstream as x-user-id).
    #[arg(long, value_name = "NAME")]
    sub: String,
    /// Roles (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "ROLES")]
    roles: Vec<String>,
    /// Scopes (space-separated, one argument): "orders:read orders:write".
    #[arg(long, value_name = "SCOPES")]
    scope: Option<String>,
    /// `iss` (empty: none).
    #[arg(long, default_value = "https://pilotfish.demo", value_name = "URL")]
    issuer: String,
    /// `aud` (empty: none).
    #[arg(long, default_value = "demo", value_name = "NAME")]
    audience: String,
    /// How long the token is good for.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// `kid` in the token's header (`demo`: the key of `certs jwt`'s
    /// jwks.json; default none).
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make a development CA: DIR/ca.pem and DIR/ca-key.pem.
    Ca {
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Lifetime of the CA certificate.
        #[arg(long, default_value = "365days", value_parser = parse_duration)]
        ttl: Duration,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// A development mesh in one step: the CA in DIR (kept if DIR has one)
    /// and a fresh certificate for each service. For a container's one-shot
    /// set-up (deploy/compose), so `up` can run again.
    Mesh {
        /// Output folder (the CA's and every certificate's).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A service to issue a certificate for; repeat for more.
        #[arg(long = "service", value_name = "NAME", required = true)]
        services: Vec<String>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// Issue a workload certificate: DIR/NAME.pem and DIR/NAME-key.pem.
    Issue {
        /// Folder holding ca.pem and ca-key.pem.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Service (account) name; the identity is spiffe://TD/ns/NS/sa/NAME.
        #[arg(long, value_name = "NAME")]
        service: String,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// A development token signing key: DIR/jwt.key (Ed25519, kept if
    /// there), DIR/jwt.pub and DIR/jwks.json (kid `demo`).
    Jwt {
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Where a workload certificate's identity lives, and how long it lasts.
#[derive(Debug, clap::Args)]
struct WorkloadArgs {
    /// Namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    namespace: String,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local", value_name = "TD")]
    trust_domain: String,
    /// Lifetime of the workload certificate(s).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
}

/// The CA `certs mesh` makes lives as long as `certs ca`'s default.
const MESH_CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_duration(text: &str) -> Result<Duration, String> {
    HumanDuration::parse(text).map(|d| d.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { files } => return check(&files),
        Command::Certs { command } => certs_command(command),
        Command::Token(args) => token_command(args),
        Command::Capture { command } => capture_command(command),
        Command::Demo(args) => demo::run(args),
        Command::DemoApp(args) => demo::app::run(args),
        Command::DemoJob(args) => demo::job::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pilotfish: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let (config, digest) =
        config::load_file(path, app::check_files).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let log = telemetry::init(&config.log.level, config.log.format);
    telemetry::log_panics();
    for warning in config::warnings(&config, path) {
        tracing::warn!("{warning}");
    }
    let workers = *config.runtime.worker_threads;
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let shutdown = app::shutdown_signal()?;
        let source = app::ConfigSource {
            path: path.to_owned(),
            digest,
        };
        let app = App::build(config, Some(source), Some(log)).await?;
        app.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Connections still open after the drain timeout are cut here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    // Access log lines are written in batches; the last one goes out now.
    pilotfish::access_log::flush();
    Ok(())
}

fn check(files: &[PathBuf]) -> ExitCode {
    let report = config::check_files(files, app::check_files);
    for problem in report.errors.iter().chain(&report.warnings) {
        println!("{problem}");
    }
    if report.errors.is_empty() {
        for file in files {
            println!("{}: ok", file.display());
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn capture_command(command: CaptureCommand) -> anyhow::Result<()> {
    match command {
        CaptureCommand::Install {
            proxy_uid,
            outbound_port,
            inbound_port,
            skip_outbound_ports,
            skip_inbound_ports,
            iptables,
            dry_run,
        } => {
            let rules = capture::Capture {
                proxy_uid,
                outbound_port,
                inbound_port,
                skip_outbound_ports,
                skip_inbound_ports,
            };
            if dry_run {
                print!("{}", rules.ruleset());
                return Ok(());
            }
            capture::install(&rules, &iptables)?;
            println!(
                "capture installed: outbound TCP to :{outbound_port}, inbound TCP to :{inbound_port}, except UID {proxy_uid}"
            );
        }
        CaptureCommand::Remove { iptables } => {
            capture::remove(&iptables)?;
            println!("capture removed");
        }
    }
    Ok(())
}

fn token_command(args: TokenArgs) -> anyhow::Result<()> {
    let key = match (args.key, args.secret_file) {
        (Some(key), _) => certs::SigningKey::Pem(key),
        (None, Some(secret)) => certs::SigningKey::SecretFile(secret),
        (None, None) => anyhow::bail!("give --key or --secret-file"),
    };
    let claims = certs::TokenClaims {
        subject: args.sub,
        roles: args.roles.into_iter().filter(|r| !r.is_empty()).collect(),
        scope: args.scope,
        issuer: args.issuer,
        audience: args.audience,
        ttl: args.ttl,
        kid: args.kid,
    };
    println!("{}", certs::sign_token(&key, &claims)?);
    Ok(())
}

fn certs_command(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Jwt { out } => {
            let files = certs::make_jwt_keys(&out)?;
            if files.kept {
                println!("kept {}", files.key.display());
            } else {
                println!("wrote {}", files.key.display());
            }
            println!(
                "wrote {} and {}",
                files.public.display(),
                files.jwks.display()
            );
        }
        CertsCommand::Ca { out, ttl, force } => {
            let files = certs::make_ca(&out, ttl, force)?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
        }
        CertsCommand::Mesh {
            out,
            services,
            workload:
                WorkloadArgs {
                    namespace,
                    trust_domain,
                    ttl,
                },
        } => {
            // Validate every name before writing anything.
            let workloads = services
                .iter()
                .map(|service| certs::Workload::new(service, &namespace, &trust_domain))
                .collect::<Result<Vec<_>, _>>()?;
            if out.join("ca.pem").exists() {
                println!("kept the CA in {}", out.display());
            } else {
                let files = certs::make_ca(&out, MESH_CA_TTL, false)?;
                println!("wrote {} and {}", files.cert.display(), files.key.display());
            }
            for workload in &workloads {
                let files = certs::issue(&out, workload, ttl, &out, true)?;
                println!("wrote {} for {}", files.cert.display(), files.identity);
            }
        }
        CertsCommand::Issue {
            ca,
            service,
            workload:
                WorkloadArgs {
                    namespace,
                    trust_domain,
                    ttl,
                },
            out,
            force,
        } => {
            let workload = certs::Workload::new(&service, &namespace, &trust_domain)?;
            let files = certs::issue(&ca, &workload, ttl, &out, force)?;
            println!(
                "wrote {} and {} for {}",
                files.cert.display(),
                files.key.display(),
                files.identity
            );
        }
    }
    Ok(())
}
