//! The demo's call path as real processes: a client sidecar (standing for
//! a gateway or the user's app) calls orders, whose demo app calls users
//! and notifications through its own sidecar, copying the trace and id
//! headers as every meshed app must.
//!
//! ```text
//! test -> client sidecar => orders sidecar -> orders app -> orders sidecar => users sidecar -> users app
//!                                                                          => notifications sidecar -> notifications app
//! ```

use super::{Certs, DemoApp, Sidecar, SidecarConfig, free_addr};

/// Four sidecars and three demo apps.
pub struct Mesh {
    pub client: Sidecar,
    pub orders: Sidecar,
    pub users: Sidecar,
    pub notifications: Sidecar,
    pub orders_app: DemoApp,
    pub users_app: DemoApp,
    pub notifications_app: DemoApp,
    pub certs: Certs,
}

impl Mesh {
    /// Starts the mesh; `extra` is top-level YAML every sidecar gets
    /// (`tracing:`, `access_log:`, ...).
    pub fn start(extra: &str) -> Self {
        let certs = Certs::new();
        let users_app = DemoApp::start("users", &[]);
        let notifications_app = DemoApp::start("notifications", &[]);
        let users = Sidecar::start(
            &SidecarConfig::new("users", &certs)
                .inbound(users_app.addr)
                .extra(extra),
        );
        let notifications = Sidecar::start(
            &SidecarConfig::new("notifications", &certs)
                .inbound(notifications_app.addr)
                .extra(extra),
        );
        // orders' app needs its sidecar's outbound address, and the
        // sidecar the app's: the app's is settled first.
        let orders_app_addr = free_addr();
        let orders = Sidecar::start(
            &SidecarConfig::new("orders", &certs)
                .inbound(orders_app_addr)
                .service("users", &[users.inbound()], "")
                .service("notifications", &[notifications.inbound()], "")
                .extra(extra),
        );
        let orders_app = DemoApp::start_at("orders", orders_app_addr, Some(orders.outbound()), &[]);
        let client = Sidecar::start(
            &SidecarConfig::new("client", &certs)
                .service("orders", &[orders.inbound()], "")
                .extra(extra),
        );
        Self {
            client,
            orders,
            users,
            notifications,
            orders_app,
            users_app,
            notifications_app,
            certs,
        }
    }

    /// Every sidecar with its service name.
    pub fn sidecars(&self) -> [(&'static str, &Sidecar); 4] {
        [
            ("client", &self.client),
            ("orders", &self.orders),
            ("users", &self.users),
            ("notifications", &self.notifications),
        ]
    }
}
