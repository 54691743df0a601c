//! `pilotfish demo`: a whole mesh on loopback, in one command.
//!
//! Three demo services (`users`, `orders`, `notifications`, see [`app`]),
//! each with its own sidecar; an event broker (`events`: Debian's
//! `redis-server`, see [`broker`]) with its own sidecar too; a `client`
//! sidecar that stands for the user's own app so that a curl can enter the
//! mesh; and an edge `gateway`, the way in for clients from outside, which
//! checks their tokens (signed with a demo key, `pilotfish token`):
//!
//! ```text
//! curl -> client sidecar ==mTLS==> orders sidecar -> orders app
//! curl (Bearer token) -> gateway ==mTLS==> orders sidecar -> orders app (x-user-id)
//!         orders app -> orders sidecar ==mTLS==> users sidecar -> users app
//!                                      ==mTLS==> notifications sidecar -> notifications app
//!         orders app (XADD) -> orders sidecar ==mTLS, raw TCP==> events sidecar -> redis-server
//! notifications app (XREADGROUP) -> notifications sidecar ==mTLS, raw TCP==> events sidecar
//! ```
//!
//! In order: look for `redis-server` (without it the demo runs without its
//! asynchronous path, and says so), plan the ports (the gateway on 8080
//! when it is free), make a CA and certificates and the token signing key,
//! write one config per sidecar and the gateway's, start the broker, every app
//! and sidecar as child processes (this same executable), wait until all
//! are ready, print what runs where, then wait for Ctrl-C (or SIGTERM) and
//! stop the children. `DEMO_FAIL_RATE`, `DEMO_DELAY` and `DEMO_HANG` in the
//! environment reach every demo service (see [`app::knobs`]).

pub mod app;
mod banner;
mod broker;
mod children;
pub mod job;
mod plan;
mod ready;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use self::children::{Children, tail};
use self::plan::{Beside, Events, Files, Mesh, Node, TlsPaths};
use self::ready::{Check, NotReady, Probe};
use crate::certs::{self, Workload};

/// Longest wait for every app and sidecar to be ready.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long children get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the running mesh is checked for children that died.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Lines of a child's log shown when it fails.
const TAIL_LINES: usize = 20;
/// Lifetime of the demo's CA and certificates.
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Options of `pilotfish demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the certificates, configs and logs (default: a new
    /// temporary folder). It is kept after exit; files of an earlier demo
    /// in it are overwritten.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Send every sidecar's spans to this OTLP/gRPC collector, such as
    /// Jaeger's `http://127.0.0.1:4317` (every demo request is traced).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
}

/// Runs the demo mesh until Ctrl-C or SIGTERM; an error if it cannot start
/// or a child dies on its own.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run_mesh(args))
}

async fn run_mesh(args: DemoArgs) -> anyhow::Result<()> {
    // First, so that Ctrl-C during start-up also stops the children.
    let mut signals = Signals::install()?;
    // The demo services read these too; a typo is clearer reported here.
    app::knobs::Knobs::from_env().context("the DEMO_* variables are for the demo services")?;
    let dir = prepare_dir(args.dir)?;
    println!("Demo files: {}", dir.display());
    let events = broker::find();
    if let Events::Off(why) = &events {
        println!("Events: off. {why}");
    }
    let ports = plan::free_ports(Mesh::ports_needed(&events)).context("cannot find free ports")?;
    let mut mesh = Mesh::new(&ports, events).context("not enough free ports")?;
    mesh.otlp = args.otlp;
    // The README's line names this port; when it is taken the gateway
    // keeps the free one it was given, and the banner says which.
    let wanted = std::net::SocketAddr::from(([127, 0, 0, 1], plan::GATEWAY_PORT));
    if std::net::TcpListener::bind(wanted).is_ok() {
        mesh.set_gateway_listen(wanted);
    }
    let identities = write_files(&mesh, &dir)?;
    let mut children = Children::default();
    let result = start_and_watch(&mesh, &dir, &identities, &mut children, &mut signals).await;
    println!("Stopping the demo mesh...");
    let _ = std::io::stdout().flush();
    let killed = children.stop(STOP_GRACE).await;
    if killed == 0 {
        println!("Stopped.");
    } else {
        println!("Stopped; {killed} process(es) had to be killed.");
    }
    result
}

/// The folder to use, made absolute so the configs name absolute paths.
fn prepare_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("pilotfish-demo-")
            .tempdir()
            .context("cannot make a temporary folder")?
            .keep(),
    };
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Writes the CA, one certificate per workload, the token signing key
/// pair, and one config per sidecar; returns each workload's SPIFFE id.
fn write_files(mesh: &Mesh, dir: &Path) -> anyhow::Result<HashMap<&'static str, String>> {
    let certs_dir = dir.join("certs");
    let ca = certs::make_ca(&certs_dir, CERT_TTL, true).context("cannot make the demo CA")?;
    let jwt_public = make_jwt_keys(dir)?;
    let mut identities = HashMap::new();
    for node in &mesh.nodes {
        let workload = Workload::new(node.name, "default", "cluster.local")?;
        let issued = certs::issue(&certs_dir, &workload, CERT_TTL, &certs_dir, true)
            .with_context(|| format!("cannot issue the certificate of {}", node.name))?;
        let files = Files {
            tls: TlsPaths {
                ca: &ca.cert,
                cert: &issued.cert,
                key: &issued.key,
            },
            jwt_public: &jwt_public,
        };
        let path = config_path(dir, node);
        std::fs::write(&path, mesh.sidecar_config(node, &files))
            .with_context(|| format!("cannot write {}", path.display()))?;
        identities.insert(node.name, issued.identity.to_string());
    }
    Ok(identities)
}

/// Makes the key pair demo tokens are signed with (`DIR/jwt.key`, for
/// `pilotfish token --key`) and checked with (`DIR/jwt.pub`, the
/// gateway's); returns the public key's path. The key of an earlier demo
/// in `dir` is kept, so tokens made for it stay good.
fn make_jwt_keys(dir: &Path) -> anyhow::Result<PathBuf> {
    let files = certs::make_jwt_keys(dir).context("cannot make the token signing key")?;
    Ok(files.public)
}

fn config_path(dir: &Path, node: &Node) -> PathBuf {
    match node.beside {
        Beside::Gateway => dir.join(format!("{}.yaml", node.name)),
        _ => dir.join(format!("{}-sidecar.yaml", node.name)),
    }
}

/// The name of a workload's Pilotfish process, for its log and messages.
fn pilotfish_name(node: &Node) -> String {
    match node.beside {
        Beside::Gateway => node.name.to_owned(),
        _ => format!("{}-sidecar", node.name),
    }
}

async fn start_and_watch(
    mesh: &Mesh,
    dir: &Path,
    identities: &HashMap<&'static str, String>,
    children: &mut Children,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let probes = spawn_all(mesh, dir, children)?;
    tokio::select! {
        result = ready::wait(children, &probes, START_LIMIT) => match result {
            Ok(()) => {}
            Err(NotReady::Exited(exited)) if exited.by_ctrl_c() => return Ok(()),
            Err(why) => return Err(report_not_ready(why)),
        },
        name = signals.recv() => {
            println!("{name} received during start-up.");
            return Ok(());
        }
    }
    let identity = |name: &str| identities.get(name).cloned().unwrap_or_default();
    let exe = std::env::current_exe().context("cannot find the pilotfish executable")?;
    let token_key = dir.join("jwt.key");
    let token = banner::Token {
        exe: &exe,
        key: &token_key,
    };
    print!("{}", banner::render(mesh, identity, dir, &token));
    let _ = std::io::stdout().flush();
    watch(children, signals).await
}

/// Starts the broker, every demo app and every sidecar; returns what to
/// check for readiness.
fn spawn_all(mesh: &Mesh, dir: &Path, children: &mut Children) -> anyhow::Result<Vec<Probe>> {
    let exe = std::env::current_exe().context("cannot find the pilotfish executable")?;
    let logs = dir.join("logs");
    let mut probes = Vec::new();
    let mut start = |name: String, program: &Path, args: Vec<OsString>, addr, check| {
        let log = logs.join(format!("{name}.log"));
        children.spawn(&name, program, &args, log.clone())?;
        anyhow::Ok(Probe {
            child: name,
            log,
            addr,
            check,
        })
    };
    for node in &mesh.nodes {
        match (node.beside, node.app, &mesh.events) {
            (Beside::App, Some(app), _) => {
                let name = format!("{}-app", node.name);
                probes.push(start(
                    name,
                    &exe,
                    app_args(node, app),
                    app,
                    Check::Get("/health"),
                )?);
            }
            (Beside::Broker, Some(addr), Events::On(program)) => {
                let work = broker::dir(dir);
                std::fs::create_dir_all(&work)
                    .with_context(|| format!("cannot create {}", work.display()))?;
                let name = format!("{}-redis", node.name);
                probes.push(start(
                    name,
                    program,
                    broker::args(addr, &work),
                    addr,
                    Check::Ping,
                )?);
            }
            _ => {}
        }
        let args = vec![
            "run".into(),
            "--config".into(),
            config_path(dir, node).into(),
        ];
        let ready = start(
            pilotfish_name(node),
            &exe,
            args,
            node.admin,
            Check::Get("/ready"),
        )?;
        if let Some(gateway) = node.gateway {
            // The way in for clients answers too (its public route).
            probes.push(Probe {
                addr: gateway,
                check: Check::Get("/healthz"),
                ..ready.clone()
            });
        }
        probes.push(ready);
    }
    Ok(probes)
}

/// `pilotfish demo-app` for `node`'s app listening on `app`: it calls other
/// services through its sidecar's outbound listener and reaches the
/// broker at its sidecar's local address for it (the app knows only an
/// address, not the mesh).
fn app_args(node: &Node, app: std::net::SocketAddr) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "demo-app".into(),
        "--name".into(),
        node.name.into(),
        "--listen".into(),
        app.to_string().into(),
    ];
    if let Some(outbound) = node.outbound {
        args.extend(["--sidecar".into(), outbound.to_string().into()]);
    }
    if let Some(broker) = node.broker {
        args.extend(["--redis".into(), broker.to_string().into()]);
    }
    args
}

/// Prints which child failed to start and the end of its log.
fn report_not_ready(why: NotReady) -> anyhow::Error {
    match why {
        NotReady::Exited(exited) => {
            eprintln!(
                "{exited} during start-up; last lines of {}:\n{}\n",
                exited.log.display(),
                tail(&exited.log, TAIL_LINES)
            );
            anyhow::anyhow!("the demo mesh did not start: {exited}")
        }
        NotReady::TimedOut(probes) => {
            for probe in &probes {
                eprintln!(
                    "{} did not answer {} on {} within {}s; last lines of {}:\n{}\n",
                    probe.child,
                    probe.check,
                    probe.addr,
                    START_LIMIT.as_secs(),
                    probe.log.display(),
                    tail(&probe.log, TAIL_LINES)
                );
            }
            let names: Vec<&str> = probes.iter().map(|p| p.child.as_str()).collect();
            anyhow::anyhow!(
                "the demo mesh did not start within {}s: {} not ready",
                START_LIMIT.as_secs(),
                names.join(", ")
            )
        }
    }
}

/// Watches the running mesh until a signal (`Ok`) or a child's death (`Err`).
async fn watch(children: &mut Children, signals: &mut Signals) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            name = signals.recv() => {
                println!("{name} received.");
                return Ok(());
            }
            () = tokio::time::sleep(WATCH_EVERY) => {
                let Some(exited) = children.first_exited() else { continue };
                if exited.by_ctrl_c() {
                    return Ok(()); // the terminal sent SIGINT to the group
                }
                eprintln!(
                    "{exited} unexpectedly; last lines of {}:\n{}\n",
                    exited.log.display(),
                    tail(&exited.log, TAIL_LINES)
                );
                anyhow::bail!("{exited} unexpectedly; the demo mesh was stopped");
            }
        }
    }
}

/// SIGINT and SIGTERM, the two ways to stop the demo.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let install = |kind| signal(kind).context("cannot install a signal handler");
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    /// Waits for either signal; its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
