//! `pilotfish demo-job`: the app of a Job's pod. It calls one demo service
//! through its sidecar, prints the answer, then asks the sidecar to stop
//! (`POST /shutdown` on its admin port), as a Job's app must where the
//! sidecar is an ordinary container that would otherwise keep the pod
//! running. Exits 0 when both worked.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::app::downstream::Call;

/// Arguments of `pilotfish demo-job`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The sidecar's outbound listener.
    #[arg(long, value_name = "ADDR")]
    pub sidecar: SocketAddr,
    /// The sidecar's admin listener, to stop it when done.
    #[arg(long, value_name = "ADDR")]
    pub admin: SocketAddr,
    /// The service to call: users, orders or notifications.
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// The path to GET.
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub path: String,
}

/// Runs the job.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let service = match args.service.as_str() {
        "users" => "users",
        "orders" => "orders",
        "notifications" => "notifications",
        other => bail!("--service {other:?}: one of users, orders, notifications"),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let headers = HeaderMap::new();
            let call = Call {
                service,
                method: Method::GET,
                path: args.path.clone(),
                body: None,
                headers: &headers,
            };
            let what = call.describe();
            let answer = call.send(args.sidecar).await;
            // The sidecar is stopped either way: the job is over.
            let stopped = stop_sidecar(args.admin).await;
            match answer {
                Ok(value) => println!("{value}"),
                Err(e) => bail!("{}", e.to_json(&what)),
            }
            stopped.context("cannot stop the sidecar")
        })
}

/// `POST /shutdown` on the sidecar's admin port; it answers 202 and drains.
async fn stop_sidecar(admin: SocketAddr) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(admin)
        .await
        .with_context(|| format!("connect to {admin}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::post("/shutdown")
        .header(HOST, "admin")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::ACCEPTED {
        bail!(
            "POST /shutdown: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    eprintln!("asked the sidecar at {admin} to stop");
    Ok(())
}
