//! The listeners (admin, inbound, outbound, opaque destinations, the
//! gateway's two) and their accept loops.
//! Binding is separate from starting, so that start-up and config reloads
//! bind every new address first and give up cleanly if one is taken.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use super::{Live, serve};
use crate::admin::{self, AdminState};
use crate::build::BuildError;
use crate::config::Config;
use crate::drain;
use crate::metrics::ConnectionMetrics;

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Health, metrics, config.
    Admin,
    /// mTLS from other sidecars.
    Inbound,
    /// Plain HTTP from the app.
    Outbound,
    /// Raw TCP from the app for an opaque destination (its `listen`).
    Opaque,
    /// Plain HTTP from clients outside the mesh.
    Gateway,
    /// HTTPS from clients outside the mesh.
    GatewayTls,
}

impl Role {
    /// The listener's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Opaque => "opaque",
            Self::Gateway => "gateway",
            Self::GatewayTls => "gateway-tls",
        }
    }
}

/// What accept loops need.
#[derive(Debug, Clone)]
pub struct Context {
    /// The state in force.
    pub live: Live,
    /// What the admin endpoints report.
    pub admin: Arc<AdminState>,
    /// Held by every proxied connection, so a drain can wait for them.
    pub watch: drain::Watch,
    /// Where accepted connections are counted.
    pub connections: ConnectionMetrics,
}

struct Running {
    role: Role,
    configured: SocketAddr,
    task: JoinHandle<()>,
}

/// New sockets bound for a config, not yet serving.
#[derive(Debug, Default)]
pub struct Prepared {
    bound: Vec<(Role, SocketAddr, TcpListener)>,
    stop: Vec<(Role, SocketAddr)>,
}

/// The running accept loops.
#[derive(Default)]
pub struct Listeners {
    running: Vec<Running>,
}

impl Listeners {
    /// Binds every listener `config` wants that is not already running at
    /// the same configured address. Nothing changes if one bind fails.
    pub async fn prepare(&self, config: &Config) -> Result<Prepared, BuildError> {
        let wanted = wanted(config);
        let mut prepared = Prepared::default();
        for &(role, addr) in &wanted {
            let unchanged = self
                .running
                .iter()
                .any(|r| r.role == role && r.configured == addr);
            if !unchanged {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| BuildError::Bind {
                            name: role.name(),
                            addr,
                            source,
                        })?;
                prepared.bound.push((role, addr, listener));
            }
        }
        for running in &self.running {
            let kept = wanted
                .iter()
                .any(|&(role, addr)| role == running.role && addr == running.configured);
            if !kept {
                prepared.stop.push((running.role, running.configured));
            }
        }
        Ok(prepared)
    }

    /// Stops the listeners `prepared` replaces or drops (their open
    /// connections carry on) and starts the new ones.
    pub fn commit(&mut self, prepared: Prepared, ctx: &Context) {
        self.running.retain(|running| {
            let stop = prepared.stop.contains(&(running.role, running.configured));
            if stop {
                running.task.abort();
                info!(listener = running.role.name(), addr = %running.configured, "stopped listening");
            }
            !stop
        });
        for (role, configured, listener) in prepared.bound {
            if let Ok(addr) = listener.local_addr() {
                info!(listener = role.name(), %addr, "listening");
            }
            let task = match role {
                Role::Admin => tokio::spawn(admin::serve(listener, ctx.admin.clone())),
                Role::Inbound => tokio::spawn(serve::accept_inbound(
                    listener,
                    ctx.live.clone(),
                    ctx.watch.clone(),
                    ctx.connections.for_listener(role.name()),
                )),
                Role::Outbound => tokio::spawn(serve::accept_outbound(
                    listener,
                    ctx.live.clone(),
                    ctx.watch.clone(),
                    ctx.connections.for_listener(role.name()),
                )),
                Role::Gateway | Role::GatewayTls => tokio::spawn(serve::accept_gateway(
                    listener,
                    role == Role::GatewayTls,
                    ctx.live.clone(),
                    ctx.watch.clone(),
                    ctx.connections.for_listener(role.name()),
                )),
                Role::Opaque => tokio::spawn(serve::accept_opaque(
                    listener,
                    configured,
                    ctx.live.clone(),
                    ctx.watch.clone(),
                    ctx.connections.for_listener(role.name()),
                )),
            };
            self.running.push(Running {
                role,
                configured,
                task,
            });
        }
    }

    /// Stops the accept loops of `roles`; their sockets are closed when
    /// this returns.
    pub async fn stop(&mut self, roles: &[Role]) {
        let (stop, keep): (Vec<Running>, Vec<Running>) = self
            .running
            .drain(..)
            .partition(|r| roles.contains(&r.role));
        self.running = keep;
        for running in &stop {
            running.task.abort();
        }
        for running in stop {
            let _ = running.task.await;
        }
    }
}

/// The listeners a config asks for, with their configured addresses.
fn wanted(config: &Config) -> Vec<(Role, SocketAddr)> {
    let mut wanted = vec![(Role::Admin, *config.admin.listen)];
    if let Some(inbound) = &config.inbound {
        wanted.push((Role::Inbound, *inbound.listen));
    }
    if let Some(outbound) = &config.outbound {
        wanted.push((Role::Outbound, *outbound.listen));
        for dst in outbound.services.values() {
            if let Some(listen) = &dst.listen {
                wanted.push((Role::Opaque, *listen.get()));
            }
        }
    }
    if let Some(gateway) = &config.gateway {
        if let Some(listen) = &gateway.listen {
            wanted.push((Role::Gateway, *listen.get()));
        }
        if let Some(tls) = &gateway.tls {
            wanted.push((Role::GatewayTls, *tls.listen.get()));
        }
    }
    wanted
}
